"""The acqwriter daemon: one engine, driven over a ZeroMQ ROUTER socket, reporting on PUB.

Threads and data flow::

    clients ──JSON──▶ ROUTER ─┐                       ┌─▶ PUB ──▶ subscribers
                              ▼                       │   (state, progress, warning,
                      server loop (one thread: owns   │    error, summary)
                      both sockets and the state) ────┘
                              │ start / stop / abort        ▲ ("finalizing", "done")
                              ▼                             │ via a queue
                      acquisition thread: run_acquisition(camera → dataset)

Pixels never cross the control socket: they go camera → ring → disk inside the
acquisition thread. The server loop never blocks on a client or on the acquisition: it
polls the ROUTER with a short timeout, answers each request at once (``stop`` with
``wait`` is answered later, when the dataset is finished), publishes queued events and
progress at a fixed interval, and checks the acquisition thread for completion.

The state machine (``idle → configured → acquiring → finalizing → idle``, ``error``)
and the commands' decisions are :class:`~acqwriter.control.acquisitions.Acquisitions`';
this module is the transport. Every request is validated (UTF-8, JSON, object, pydantic
models) and every handler runs under a catch-all, so no input can stop the loop or
disturb a running acquisition.
"""

from __future__ import annotations

import contextlib
import gc
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zmq
from pydantic import BaseModel, ValidationError

from acqwriter import jsonio
from acqwriter._version import __version__
from acqwriter.acquisition.spec import AcquisitionSpec
from acqwriter.control.acquisitions import Acquisitions, spec_message
from acqwriter.control.protocol import (
    COMMANDS,
    DEFAULT_CONTROL,
    DEFAULT_EVENTS,
    MAX_REQUEST_BYTES,
    MAX_WIRE_BYTES,
    PROTOCOL_VERSION,
    ControlError,
    DevicesParams,
    NoParams,
    Request,
    ShutdownParams,
    StopParams,
    json_schema,
)
from acqwriter.control.security import CurveServer, is_local_endpoint
from acqwriter.spec.location import parse_object_url
from acqwriter.spec.model import format_validation_error

__all__ = ["Server"]


@dataclass
class _Waiter:
    envelope: list[bytes]
    request_id: Any
    deadline: float


def _format_error(exc: ValidationError) -> str:
    return spec_message(format_validation_error(exc))


class Server:
    """Serve until ``shutdown`` (or :meth:`request_shutdown`); returns an exit status."""

    def __init__(
        self,
        control: str = DEFAULT_CONTROL,
        events: str = DEFAULT_EVENTS,
        *,
        root: Path | None = None,
        object_root: str | None = None,
        curve: CurveServer | None = None,
        default_camera: str = "sim",
        progress_interval_s: float = 0.5,
    ) -> None:
        for name, endpoint in (("--control", control), ("--events", events)):
            if not is_local_endpoint(endpoint) and curve is None:
                raise ValueError(
                    f"{name} {endpoint} is not a loopback address: binding it requires CURVE "
                    "authentication (--curve-secret SERVER.key_secret --curve-clients DIR; "
                    "create keys with 'acqwriter keys')"
                )
        self.control_endpoint = control
        self.events_endpoint = events
        self.root = None if root is None else Path(root).resolve()
        if self.root is not None and not self.root.is_dir():
            raise ValueError(f"--root: {root} is not a directory")
        try:
            self.object_root = None if object_root is None else parse_object_url(object_root)
        except ValueError as exc:
            raise ValueError(f"--object-root: {exc}") from None
        self.curve = curve
        self.progress_interval_s = progress_interval_s
        self._waiters: list[_Waiter] = []
        self._shutdown = threading.Event()
        self.acquisitions = acq = Acquisitions(
            root=self.root,
            object_root=self.object_root,
            default_camera=default_camera,
            publish=self._publish,
            shutting_down=self._shutdown.is_set,
        )
        self._shutdown_abort = threading.Event()
        self._seq = 0
        self._next_progress = 0.0
        self._handlers: dict[
            str, tuple[type[BaseModel], Callable[[Any, list[bytes], Any], Any]]
        ] = {
            "ping": (NoParams, lambda p, e, i: {"pong": True, "state": acq.state}),
            "version": (NoParams, lambda p, e, i: self._version()),
            "schema": (NoParams, lambda p, e, i: json_schema()),
            "devices": (DevicesParams, lambda p, e, i: acq.devices(p)),
            "configure": (AcquisitionSpec, lambda p, e, i: acq.configure(p)),
            "start": (NoParams, lambda p, e, i: acq.start()),
            "stop": (StopParams, self._cmd_stop),
            "abort": (NoParams, lambda p, e, i: acq.abort()),
            "status": (NoParams, lambda p, e, i: acq.status()),
            "shutdown": (ShutdownParams, self._cmd_shutdown),
        }
        assert set(self._handlers) == set(COMMANDS)
        self.context: zmq.Context[Any] = zmq.Context()
        self._router = self._pub = None

    # -- lifetime -------------------------------------------------------------------------
    def bind(self) -> None:
        """Bind both sockets (raises with the endpoint named if one is taken)."""
        if self.curve is not None:
            self.curve.start(self.context)
        self._router = self.context.socket(zmq.ROUTER)
        self._pub = self.context.socket(zmq.PUB)
        for sock in (self._router, self._pub):
            sock.setsockopt(zmq.LINGER, 0)
            if self.curve is not None:
                self.curve.apply(sock)
        self._router.setsockopt(zmq.MAXMSGSIZE, MAX_WIRE_BYTES)
        self._router.setsockopt(zmq.SNDHWM, 1000)
        self._pub.setsockopt(zmq.SNDHWM, 10000)
        for sock, endpoint in (
            (self._router, self.control_endpoint),
            (self._pub, self.events_endpoint),
        ):
            try:
                sock.bind(endpoint)
            except zmq.ZMQError as exc:
                raise OSError(f"cannot bind {endpoint}: {exc}") from exc

    def request_shutdown(self, *, abort: bool = False) -> None:
        """Thread- and signal-safe: finish (or abort) any acquisition, then exit."""
        if abort or self._shutdown.is_set():
            self._shutdown_abort.set()
        self._shutdown.set()

    def serve_forever(self) -> int:
        if self._router is None:
            self.bind()
        poller = zmq.Poller()
        poller.register(self._router, zmq.POLLIN)
        try:
            while True:
                for sock, _ in poller.poll(50):
                    self._drain(sock)
                self._pump()
                if self._shutdown.is_set():
                    session = self.acquisitions.session
                    if session is not None:
                        session.stop.set()
                        if self._shutdown_abort.is_set():
                            session.abort.set()
                    elif not self._waiters:
                        break
        finally:
            self._close()
        return 0

    def _close(self) -> None:
        self._publish("state", {"state": "shutdown"})
        time.sleep(0.05)  # let the last events leave
        self.acquisitions.close()
        for sock in (self._router, self._pub):
            if sock is not None:
                sock.close(linger=0)
        if self.curve is not None:
            self.curve.stop()
        self.context.term()
        gc.collect()

    # -- requests ------------------------------------------------------------------------
    def _drain(self, sock: zmq.Socket[Any]) -> None:
        for _ in range(100):  # bounded per poll round: events and progress keep flowing
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            self._handle(frames)

    def _handle(self, frames: list[bytes]) -> None:
        identity, rest = frames[0], frames[1:]
        if rest and rest[0] == b"":
            envelope, body = [identity, b""], rest[1:]
        else:
            envelope, body = [identity], rest
        request_id: Any = None
        try:
            if len(body) != 1:
                raise ControlError("bad_request", f"expected one payload frame, got {len(body)}")
            payload = body[0]
            if len(payload) > MAX_REQUEST_BYTES:
                raise ControlError(
                    "too_large", f"request of {len(payload)} bytes exceeds {MAX_REQUEST_BYTES}"
                )
            try:
                data = jsonio.loads(payload.decode("utf-8"), oversized="mark")
            except (UnicodeDecodeError, ValueError, RecursionError) as exc:
                raise ControlError(
                    "bad_json", f"payload is not UTF-8 JSON (strict): {exc}"
                ) from None
            if not isinstance(data, dict):
                raise ControlError(
                    "bad_request", f"expected a JSON object, got {type(data).__name__}"
                )
            request_id = data.get("id")
            if isinstance(request_id, jsonio.OversizedNumber):
                request_id = None  # not echoed: no client sent such an id to match
                raise ControlError(
                    "bad_request",
                    f"id: an integer of {data['id'].digits} digits; at most "
                    f"{jsonio.MAX_INT_DIGITS}",
                )
            try:
                request = Request.model_validate(data)
            except ValidationError as exc:
                raise ControlError("bad_request", _format_error(exc)) from None
            if request.command not in self._handlers:
                raise ControlError(
                    "unknown_command",
                    f"command: unknown {request.command!r}; expected one of {', '.join(COMMANDS)}",
                )
            model, handler = self._handlers[request.command]
            try:
                params = model.model_validate(request.params)
            except ValidationError as exc:
                raise ControlError("invalid_params", _format_error(exc)) from None
            result = handler(params, envelope, request_id)
            if result is _DEFERRED:
                return
            self._reply(envelope, {"id": request_id, "ok": True, "result": result})
        except ControlError as exc:
            self._reply_error(envelope, request_id, exc.code, exc.message)
        except Exception as exc:  # the loop must survive anything a handler does
            self._reply_error(envelope, request_id, "internal", f"{type(exc).__name__}: {exc}")

    def _reply(self, envelope: list[bytes], reply: dict[str, Any]) -> None:
        try:
            data = jsonio.dumps(reply, default=str).encode()
        except (TypeError, ValueError) as exc:
            data = jsonio.dumps(
                {"id": None, "ok": False, "error": {"code": "internal", "message": str(exc)}}
            ).encode()
        # a client that is gone or not reading must never block the loop
        with contextlib.suppress(zmq.ZMQError):
            self._router.send_multipart([*envelope, data], zmq.NOBLOCK)

    def _reply_error(self, envelope: list[bytes], request_id: Any, code: str, message: str) -> None:
        self._reply(
            envelope, {"id": request_id, "ok": False, "error": {"code": code, "message": message}}
        )

    # -- commands ------------------------------------------------------------------------
    def _version(self) -> dict[str, Any]:
        return {"acqwriter": __version__, "protocol": PROTOCOL_VERSION}

    def _cmd_stop(self, params: StopParams, envelope: list[bytes], rid: Any) -> Any:
        report = self.acquisitions.stop()
        if report is not None:
            return report
        if params.wait:
            self._waiters.append(_Waiter(envelope, rid, time.monotonic() + params.timeout_s))
            return _DEFERRED
        return {"state": self.acquisitions.state, "stopping": True}

    def _cmd_shutdown(self, params: ShutdownParams, envelope: list[bytes], rid: Any) -> Any:
        self.request_shutdown(abort=params.abort)
        return {"state": self.acquisitions.state, "shutting_down": True, "abort": params.abort}

    # -- events ------------------------------------------------------------------------
    def _publish(self, topic: str, payload: dict[str, Any]) -> None:
        if self._pub is None:
            return
        self._seq += 1
        data = {"seq": self._seq, "time": time.time(), "topic": topic, **payload}
        with contextlib.suppress(zmq.ZMQError):
            self._pub.send_multipart(
                [topic.encode(), jsonio.dumps(data, default=str).encode()], zmq.NOBLOCK
            )

    # -- acquisition thread and its reports -----------------------------------------------
    def _pump(self) -> None:
        """Events from the acquisition thread, progress, warnings, waiters' timeouts."""
        acq = self.acquisitions
        for _ in acq.take_events():
            self._answer_waiters()
        session = acq.session
        now = time.monotonic()
        if session is not None and session.progress is not None and now >= self._next_progress:
            self._next_progress = now + self.progress_interval_s
            acq.publish_progress(session)
        for waiter in [w for w in self._waiters if now > w.deadline]:
            self._waiters.remove(waiter)
            self._reply_error(
                waiter.envelope,
                waiter.request_id,
                "timeout",
                "the dataset was not finished in time",
            )

    def _answer_waiters(self) -> None:
        """``stop`` requests that waited for the dataset: its report, or its error."""
        acq = self.acquisitions
        for waiter in self._waiters:
            if acq.last_report is not None:
                self._reply(
                    waiter.envelope,
                    {"id": waiter.request_id, "ok": True, "result": acq.last_report},
                )
            else:
                self._reply_error(
                    waiter.envelope,
                    waiter.request_id,
                    "internal",
                    acq.error or "acquisition failed",
                )
        self._waiters.clear()


_DEFERRED = object()
