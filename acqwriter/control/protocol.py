"""The control protocol: message shapes, error codes, limits, JSON Schema (version 1).

Transport (ZeroMQ):

* **control**: the server binds a ROUTER socket (default ``tcp://127.0.0.1:5555``).
  Clients connect a DEALER (frames: ``[payload]``) or a REQ (frames: ``[b"", payload]``)
  socket; the reply comes back on the same socket in the same framing. ROUTER means a
  slow or vanished client cannot wedge the server.
* **events**: the server binds a PUB socket (default ``tcp://127.0.0.1:5556``). Each
  event is two frames: ``[topic, payload]``, topic one of ``state``, ``progress``,
  ``warning``, ``error``, ``summary``; subscribe to a topic prefix (``b""`` = all).

Payloads are single-frame UTF-8 JSON objects. A request::

    {"id": <any JSON value>, "command": "<name>", "params": {...}}

and its reply echoes ``id`` (``null`` when the request could not be parsed)::

    {"id": ..., "ok": true,  "result": {...}}
    {"id": ..., "ok": false, "error": {"code": "<stable code>", "message": "<...>"}}

Limits: a request larger than :data:`MAX_REQUEST_BYTES` is answered with
``too_large``; one larger than :data:`MAX_WIRE_BYTES` is dropped by ZeroMQ itself
(``ZMQ_MAXMSGSIZE``: the connection is closed, the server never buffers it).

Events carry ``{"seq": n, "time": unix_s, "state": ..., ...}``; a client that connects
late gets the current state from ``status``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue

PROTOCOL_VERSION = 1
MAX_REQUEST_BYTES = 1 << 20  # 1 MiB: specs are a few hundred bytes
MAX_WIRE_BYTES = 16 << 20  # beyond this ZeroMQ drops the connection
DEFAULT_CONTROL = "tcp://127.0.0.1:5555"
DEFAULT_EVENTS = "tcp://127.0.0.1:5556"

State = Literal["idle", "configured", "acquiring", "finalizing", "error"]
EVENT_TOPICS = ("state", "progress", "warning", "error", "summary")

# Stable error codes (clients switch on these; messages are for humans).
ERROR_CODES: dict[str, str] = {
    "bad_json": "the payload is not UTF-8 JSON",
    "bad_request": "the JSON is not a request object (id, command, params)",
    "too_large": "the request exceeds the size limit",
    "unknown_command": "no such command",
    "invalid_params": "params do not validate; the message names the field",
    "invalid_state": "the command is not allowed in the current state",
    "path_refused": "the output path is not allowed (exists, parent missing, outside --root)",
    "device_error": "a device could not be opened or configured",
    "timeout": "stop with wait: the dataset was not finished within timeout_s",
    "internal": "an unexpected server error (the server keeps running)",
}

COMMANDS = (
    "ping",
    "version",
    "schema",
    "devices",
    "configure",
    "start",
    "stop",
    "abort",
    "status",
    "shutdown",
)


class ControlError(Exception):
    """A protocol-level error with a stable ``code``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class Request(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: JsonValue = None
    command: str = Field(min_length=1, max_length=64)
    params: dict[str, JsonValue] = Field(default_factory=dict)


class ErrorBody(BaseModel):
    code: str
    message: str


class Reply(BaseModel):
    id: JsonValue = None
    ok: bool
    result: JsonValue = None
    error: ErrorBody | None = None


class NoParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DevicesParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    camera: str | None = Field(None, description="open this source ('sim', 'demo', config path)")


class StopParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    wait: bool = Field(False, description="reply only when the dataset is finished")
    timeout_s: float = Field(600.0, gt=0, description="with wait: give up after this long")


class ShutdownParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    abort: bool = Field(False, description="abort a running acquisition instead of finishing it")


class StatusResult(BaseModel):
    state: State
    protocol: int = PROTOCOL_VERSION
    spec: dict[str, Any] | None = None
    progress: dict[str, Any] | None = None
    disk_free_bytes: int | None = None
    last_summary: dict[str, Any] | None = None
    last_report: dict[str, Any] | None = None
    error: str | None = None


def json_schema() -> dict[str, Any]:
    """JSON Schema of every message (the ``schema`` command returns this)."""
    from acqwriter.acquisition.spec import AcquisitionSpec

    params = {
        "ping": NoParams,
        "version": NoParams,
        "schema": NoParams,
        "devices": DevicesParams,
        "configure": AcquisitionSpec,
        "start": NoParams,
        "stop": StopParams,
        "abort": NoParams,
        "status": NoParams,
        "shutdown": ShutdownParams,
    }
    return {
        "protocol": PROTOCOL_VERSION,
        "request": Request.model_json_schema(),
        "reply": Reply.model_json_schema(),
        "params": {name: model.model_json_schema() for name, model in params.items()},
        "results": {"status": StatusResult.model_json_schema()},
        "error_codes": ERROR_CODES,
        "event_topics": list(EVENT_TOPICS),
        "limits": {"max_request_bytes": MAX_REQUEST_BYTES, "max_wire_bytes": MAX_WIRE_BYTES},
    }
