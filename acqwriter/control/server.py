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

State machine: ``idle → configured → acquiring → finalizing → idle``; a failed
acquisition ends in ``error`` (``configure`` leaves it). Illegal transitions are refused
with ``invalid_state``. Every request is validated (UTF-8, JSON, object, pydantic
models) and every handler runs under a catch-all, so no input can stop the loop or
disturb a running acquisition.
"""

from __future__ import annotations

import contextlib
import gc
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import zmq
from pydantic import BaseModel, ValidationError

from acqwriter import jsonio
from acqwriter._version import __version__
from acqwriter.acquisition.spec import AcquisitionSpec
from acqwriter.control.paths import check_out
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
    StatusResult,
    StopParams,
    json_schema,
)
from acqwriter.control.security import CurveServer, is_local_endpoint
from acqwriter.control.session import Session
from acqwriter.spec.model import SpecError, format_validation_error
from acqwriter.store.local import missing_parents

__all__ = ["Server"]


def give_back_memory() -> None:
    """Return what a finished run freed to the system: an idle daemon should hold what
    it held before the run, not the high-water mark of the plan and summaries of a
    16 000-position run. Python frees into glibc's arenas, which keep the pages until
    ``malloc_trim`` (glibc only; elsewhere nothing more is done)."""
    import ctypes
    import ctypes.util
    import gc

    gc.collect()
    name = ctypes.util.find_library("c")
    if name:
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(name).malloc_trim(0)


@dataclass
class _Waiter:
    envelope: list[bytes]
    request_id: Any
    deadline: float


def spec_message(exc: SpecError) -> str:
    """A spec error's fields on one line: ``field: expected …; other: …``."""
    text = str(exc)
    if text.startswith("invalid spec:\n  "):
        return text.removeprefix("invalid spec:\n  ").replace("\n  ", "; ")
    return text.removeprefix("invalid spec: ")


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
        self.curve = curve
        self.default_camera = default_camera
        self.progress_interval_s = progress_interval_s
        self.state = "idle"
        self.error: str | None = None
        self._spec: AcquisitionSpec | None = None
        self._scope: Any = None
        self._scope_key: Any = None
        self._description: dict[str, Any] | None = None
        self._session: Session | None = None
        self._last_report: dict[str, Any] | None = None
        self._inbox: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
        self._waiters: list[_Waiter] = []
        self._shutdown = threading.Event()
        self._shutdown_abort = threading.Event()
        self._seq = 0
        self._next_progress = 0.0
        self._handlers: dict[
            str, tuple[type[BaseModel], Callable[[Any, list[bytes], Any], Any]]
        ] = {
            "ping": (NoParams, lambda p, e, i: {"pong": True, "state": self.state}),
            "version": (NoParams, lambda p, e, i: self._version()),
            "schema": (NoParams, lambda p, e, i: json_schema()),
            "devices": (DevicesParams, self._cmd_devices),
            "configure": (AcquisitionSpec, self._cmd_configure),
            "start": (NoParams, self._cmd_start),
            "stop": (StopParams, self._cmd_stop),
            "abort": (NoParams, self._cmd_abort),
            "status": (NoParams, lambda p, e, i: self._status()),
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
                    session = self._session
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
        if self._scope is not None:
            self._scope.close()
            self._scope = None
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

    def _require(self, *states: str) -> None:
        if self._shutdown.is_set():
            raise ControlError("invalid_state", "the server is shutting down")
        if self.state not in states:
            raise ControlError(
                "invalid_state", f"not allowed while {self.state}; allowed in: {', '.join(states)}"
            )

    def _cmd_devices(self, params: DevicesParams, envelope: list[bytes], rid: Any) -> Any:
        if self.state in ("acquiring", "finalizing"):
            return self._description  # never touch the core under a running acquisition
        camera = params.camera or (self._spec.camera if self._spec else self.default_camera)
        if self.state == "configured" and self._spec and camera != self._spec.camera:
            raise ControlError(
                "invalid_state",
                f"configured for camera {self._spec.camera!r}; configure again to change it",
            )
        if self._scope is None or self._scope_key is None or self._scope_key[0] != camera:
            self._open_scope(camera, {})
        return self._describe()

    def _cmd_configure(self, spec: AcquisitionSpec, envelope: list[bytes], rid: Any) -> Any:
        self._require("idle", "configured", "error")
        spec = spec.model_copy(update={"out": check_out(self.root, spec)})
        sim_options: dict[str, Any] = {}
        if spec.camera == "sim":
            from acqwriter.acquisition.microscopes import sim_camera_options

            sim_options = sim_camera_options(spec)
        key = (spec.camera, repr(sorted(sim_options.items())))
        if self._scope is None or self._scope_key != key:
            self._open_scope(spec.camera, sim_options)
        from acqwriter.acquisition.preview import acquisition_plan, check_sequence
        from acqwriter.acquisition.runner import configure_camera, stream_spec_for
        from acqwriter.devices import DeviceError
        from acqwriter.engine.preflight import check_resources

        try:
            check_sequence(self._scope, spec)
            configure_camera(self._scope, spec)
            stream_spec = stream_spec_for(self._scope, spec)  # full writer validation now
        except DeviceError as exc:
            raise ControlError("device_error", str(exc)) from None
        except SpecError as exc:
            raise ControlError("invalid_params", spec_message(exc)) from None
        # What `start` would refuse is refused now: a ring beyond the memory available,
        # an acquisition beyond the free disk. The ring itself is made by `start` and
        # backed only as far as its backlog reaches (acqwriter.engine.slots), and given back at
        # the end: a configured or idle daemon holds no ring memory.
        try:
            acquires = acquisition_plan(spec, stream_spec)  # a sequence planned once
            frames = acquires["frames"]
            if spec.sequence is not None and frames and stream_spec.expected_frames is None:
                # a sequence is weighed as a stream is
                stream_spec = stream_spec.model_copy(update={"expected_frames": frames})
            check_resources(stream_spec)
        except SpecError as exc:
            raise ControlError("invalid_params", str(exc)) from None
        self._spec = spec
        self._description = self._describe()
        self.error = None
        self._set_state("configured")
        return {
            "state": self.state,
            "acquires": acquires,
            "spec": spec.model_dump(mode="json", exclude_defaults=True),
            "devices": self._description,
            "creates_folders": [str(p) for p in missing_parents(spec.out)],
        }

    def _cmd_start(self, params: NoParams, envelope: list[bytes], rid: Any) -> Any:
        self._require("configured")
        assert self._spec is not None
        check_out(self.root, self._spec)  # it may have appeared since configure
        session = Session(self._spec)
        session.thread = threading.Thread(
            target=session.run,
            args=(self._scope, self._inbox),
            name="acqwriter-acquisition",
            daemon=True,
        )
        self._session = session
        self._last_report = None
        self._set_state("acquiring")
        session.thread.start()
        return {"state": self.state, "out": str(self._spec.out)}

    def _cmd_stop(self, params: StopParams, envelope: list[bytes], rid: Any) -> Any:
        if self.state in ("idle", "error") and self._last_report is not None:
            return self._last_report  # it ended by itself: stopping it gives its report
        if self.state not in ("acquiring", "finalizing") or self._session is None:
            raise ControlError("invalid_state", f"no acquisition to stop (state {self.state})")
        self._session.stop.set()
        if params.wait:
            self._waiters.append(_Waiter(envelope, rid, time.monotonic() + params.timeout_s))
            return _DEFERRED
        return {"state": self.state, "stopping": True}

    def _cmd_abort(self, params: NoParams, envelope: list[bytes], rid: Any) -> Any:
        if self.state not in ("acquiring", "finalizing") or self._session is None:
            raise ControlError("invalid_state", f"no acquisition to abort (state {self.state})")
        self._session.abort.set()
        self._session.stop.set()
        return {"state": self.state, "aborting": True}

    def _cmd_shutdown(self, params: ShutdownParams, envelope: list[bytes], rid: Any) -> Any:
        self.request_shutdown(abort=params.abort)
        return {"state": self.state, "shutting_down": True, "abort": params.abort}

    def _status(self) -> dict[str, Any]:
        session = self._session
        out = self._spec.out if self._spec else None
        return StatusResult(
            state=self.state,
            spec=None if self._spec is None else self._spec.model_dump(mode="json"),
            progress=None if session is None else session.progress,
            disk_free_bytes=None if out is None else _disk_free(out),
            last_summary=None if self._last_report is None else self._last_report["summary"],
            last_report=self._last_report,
            error=self.error,
        ).model_dump(mode="json")

    # -- helpers -------------------------------------------------------------------------
    def _open_scope(self, camera: str, sim_options: dict[str, Any]) -> None:
        from acqwriter.acquisition.microscopes import open_microscope
        from acqwriter.devices import DeviceError

        if self._scope is not None:
            self._scope.close()
            self._scope = self._scope_key = None
        try:
            self._scope = open_microscope(camera, **sim_options)
        except (DeviceError, ValueError) as exc:
            raise ControlError("device_error", str(exc)) from None
        self._scope_key = (camera, repr(sorted(sim_options.items())))

    def _describe(self) -> dict[str, Any]:
        description = self._scope.describe(properties=True)
        description["cameras"] = [description["camera"]]
        return description

    def _set_state(self, state: str) -> None:
        if state != self.state:
            previous, self.state = self.state, state
            self._publish("state", {"state": state, "previous": previous, "error": self.error})

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
        while True:
            try:
                kind, session, *payload = self._inbox.get_nowait()
            except queue.Empty:
                break
            if session is not self._session:
                continue
            if kind == "finalizing":
                self._set_state("finalizing")
            elif kind == "progress":
                self._publish_progress(session, payload[0])
            elif kind == "done":
                self._finish(session)
        session = self._session
        now = time.monotonic()
        if session is not None and session.progress is not None and now >= self._next_progress:
            self._next_progress = now + self.progress_interval_s
            self._publish_progress(session)
        for waiter in [w for w in self._waiters if now > w.deadline]:
            self._waiters.remove(waiter)
            self._reply_error(
                waiter.envelope,
                waiter.request_id,
                "timeout",
                "the dataset was not finished in time",
            )

    def _publish_progress(self, session: Session, snapshot: dict[str, Any] | None = None) -> None:
        snap = dict(snapshot or session.progress or {})
        snap["disk_free_bytes"] = _disk_free(session.spec.out)
        self._publish("progress", {"state": self.state, **snap})
        for warning in session.warnings(snap):
            self._publish("warning", warning)

    def _finish(self, session: Session) -> None:
        if session.thread is not None:
            session.thread.join(timeout=5)
        if session.progress is not None:
            self._publish_progress(session)
        report = session.report
        if report is not None:
            self._last_report = report.to_dict()
            self._publish("summary", self._last_report)
            failed = report.error not in (None, "aborted") or report.summary.state not in (
                "complete",
                "aborted",
            )
            self.error = report.reason() if failed else None
        else:
            self._last_report = None
            self.error = session.error
        if self.error:
            self._publish("error", {"message": self.error})
        self._session = None
        self._spec = None  # a configuration is used once: configure again for the next run
        give_back_memory()
        self._set_state("error" if self.error else "idle")
        for waiter in self._waiters:
            if self._last_report is not None:
                self._reply(
                    waiter.envelope,
                    {"id": waiter.request_id, "ok": True, "result": self._last_report},
                )
            else:
                self._reply_error(
                    waiter.envelope,
                    waiter.request_id,
                    "internal",
                    self.error or "acquisition failed",
                )
        self._waiters.clear()


_DEFERRED = object()


def _disk_free(path: Path) -> int | None:
    for candidate in (Path(path), *Path(path).parents):
        try:
            return psutil.disk_usage(str(candidate)).free
        except OSError:
            continue
    return None
