"""Python client for the acqwriter daemon (any language can do the same: see README).

A DEALER socket sends ``{"id", "command", "params"}`` and waits for the reply with the
same ``id`` (stale replies to earlier, timed-out requests are discarded), so a lost
reply never leaves the client stuck the way a REQ socket would be. :meth:`Client.events`
subscribes to the PUB endpoint.

    from acqwriter.control import Client
    with Client() as c:
        c.configure(camera="sim", shape=[2048, 2048], frames=500, out="/data/x.ome.zarr")
        c.start()
        report = c.stop(wait=True)
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import zmq

from acqwriter import jsonio
from acqwriter.control.protocol import DEFAULT_CONTROL, DEFAULT_EVENTS, ControlError
from acqwriter.control.security import apply_client_curve

__all__ = ["Client", "ControlError", "TimeoutError"]


class Client:
    def __init__(
        self,
        control: str = DEFAULT_CONTROL,
        events: str = DEFAULT_EVENTS,
        *,
        timeout_s: float = 10.0,
        curve_secret: Path | None = None,
        curve_server: Path | None = None,
    ) -> None:
        self.control = control
        self.events_endpoint = events
        self.timeout_s = timeout_s
        self._curve = (curve_secret, curve_server) if curve_secret and curve_server else None
        self.context: zmq.Context[Any] = zmq.Context()
        self._sock = self.context.socket(zmq.DEALER)
        self._sock.setsockopt(zmq.LINGER, 0)
        if self._curve:
            apply_client_curve(self._sock, *self._curve)
        self._sock.connect(control)
        self._ids = itertools.count(1)

    def close(self) -> None:
        self._sock.close(linger=0)
        self.context.term()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(
        self, command: str, params: dict[str, Any] | None = None, *, timeout_s: float | None = None
    ) -> Any:
        """Send one request; return its ``result`` or raise :class:`ControlError`.

        Raises ``TimeoutError`` when no reply comes within the timeout.
        """
        request_id = next(self._ids)
        body = {"id": request_id, "command": command, "params": params or {}}
        deadline = time.monotonic() + (self.timeout_s if timeout_s is None else timeout_s)
        # A DEALER with no live connection (server down, CURVE handshake refused) blocks on
        # send: wait for it to become writable, within the same deadline.
        if not self._sock.poll(max(0, int((deadline - time.monotonic()) * 1000)), zmq.POLLOUT):
            raise TimeoutError(f"cannot send {command!r} to {self.control}: no connection")
        self._sock.send(jsonio.dumps(body, default=str).encode(), zmq.NOBLOCK)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self._sock.poll(int(remaining * 1000)):
                raise TimeoutError(
                    f"no reply to {command!r} from {self.control} within the timeout"
                )
            reply = json.loads(self._sock.recv())
            if reply.get("id") != request_id:
                continue  # a late reply to an earlier request
            if reply.get("ok"):
                return reply.get("result")
            error = reply.get("error") or {}
            raise ControlError(error.get("code", "internal"), error.get("message", ""))

    # -- commands ------------------------------------------------------------------------
    def ping(self) -> dict[str, Any]:
        return self.request("ping")

    def version(self) -> dict[str, Any]:
        return self.request("version")

    def schema(self) -> dict[str, Any]:
        return self.request("schema")

    def devices(self, camera: str | None = None) -> dict[str, Any]:
        return self.request(
            "devices", {"camera": camera} if camera else {}, timeout_s=max(self.timeout_s, 60)
        )

    def configure(self, **params: Any) -> dict[str, Any]:
        return self.request("configure", params, timeout_s=max(self.timeout_s, 60))

    def start(self) -> dict[str, Any]:
        return self.request("start")

    def stop(self, *, wait: bool = False, timeout_s: float = 600.0) -> dict[str, Any]:
        params = {"wait": wait, "timeout_s": timeout_s}
        return self.request("stop", params, timeout_s=timeout_s + 5 if wait else None)

    def abort(self) -> dict[str, Any]:
        return self.request("abort")

    def status(self) -> dict[str, Any]:
        return self.request("status")

    def shutdown(self, *, abort: bool = False) -> dict[str, Any]:
        return self.request("shutdown", {"abort": abort})

    # -- events --------------------------------------------------------------------------
    def events(
        self,
        topics: tuple[str, ...] = ("",),
        *,
        timeout_s: float | None = None,
        tick_s: float | None = None,
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        """Yield ``(topic, event)`` from the PUB endpoint; stops after ``timeout_s`` of
        silence. With ``tick_s``, every ``tick_s`` of silence yields ``("", {})`` instead,
        so the caller can ask :meth:`status` about what it may have missed (a subscriber
        only gets what is published after its subscription reached the server)."""
        if tick_s is not None:
            timeout_s = tick_s
        sub = self.context.socket(zmq.SUB)
        sub.setsockopt(zmq.LINGER, 0)
        if self._curve:
            apply_client_curve(sub, *self._curve)
        for topic in topics:
            sub.setsockopt(zmq.SUBSCRIBE, topic.encode())
        sub.connect(self.events_endpoint)
        try:
            while True:
                if not sub.poll(None if timeout_s is None else int(timeout_s * 1000)):
                    if tick_s is None:
                        return
                    yield "", {}
                    continue
                topic, payload = sub.recv_multipart()
                yield topic.decode(), json.loads(payload)
        finally:
            sub.close(linger=0)
