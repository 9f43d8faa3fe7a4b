"""The daemon's acquisitions, one at a time: the state machine behind the commands.

``idle → configured → acquiring → finalizing → idle``; a failed acquisition ends in
``error`` (``configure`` leaves it). Each command checks the state it is allowed in and
refuses others with ``invalid_state``. ``configure`` opens the microscope, applies the
camera settings and refuses, with its reason, what ``start`` would refuse (a
destination, a channel, memory or disk); ``start`` runs the acquisition on its own
thread (:class:`~acqwriter.control.session.Session`), whose events come back through
:attr:`Acquisitions.inbox` and are taken by the server loop (:meth:`take_events`).

The transport (sockets, request parsing, replies) is :mod:`acqwriter.control.server`'s;
this class only decides and publishes through the ``publish`` callback it is given.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

from acqwriter.acquisition.spec import AcquisitionSpec
from acqwriter.control.paths import check_out
from acqwriter.control.protocol import ControlError, DevicesParams, StatusResult
from acqwriter.control.session import Session
from acqwriter.spec.location import ObjectURL
from acqwriter.spec.model import SpecError
from acqwriter.store.folders import missing_parents, nearest_existing

__all__ = ["Acquisitions", "give_back_memory", "spec_message"]


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


def spec_message(exc: SpecError) -> str:
    """A spec error's fields on one line: ``field: expected …; other: …``."""
    text = str(exc)
    if text.startswith("invalid spec:\n  "):
        return text.removeprefix("invalid spec:\n  ").replace("\n  ", "; ")
    return text.removeprefix("invalid spec: ")


class Acquisitions:
    """One acquisition at a time (see the module docstring)."""

    def __init__(
        self,
        *,
        root: Path | None,
        object_root: ObjectURL | None = None,
        default_camera: str,
        publish: Callable[[str, dict[str, Any]], None],
        shutting_down: Callable[[], bool],
    ) -> None:
        self._root = root
        self._object_root = object_root  # where object-store outputs may go (a URL prefix)
        self._default_camera = default_camera
        self._publish = publish
        self._shutting_down = shutting_down
        self.state = "idle"
        self.error: str | None = None
        self.spec: AcquisitionSpec | None = None
        self._scope: Any = None
        self._scope_key: Any = None
        self._description: dict[str, Any] | None = None
        self.session: Session | None = None
        self.last_report: dict[str, Any] | None = None
        self.inbox: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()

    def devices(self, params: DevicesParams) -> Any:
        if self.state in ("acquiring", "finalizing"):
            return self._description  # never touch the core under a running acquisition
        camera = params.camera or (self.spec.camera if self.spec else self._default_camera)
        if self.state == "configured" and self.spec and camera != self.spec.camera:
            raise ControlError(
                "invalid_state",
                f"configured for camera {self.spec.camera!r}; configure again to change it",
            )
        if self._scope is None or self._scope_key is None or self._scope_key[0] != camera:
            self._open_scope(camera, {})
        return self._describe()

    def configure(self, spec: AcquisitionSpec) -> Any:
        self.require("idle", "configured", "error")
        spec = spec.model_copy(update={"out": check_out(self._root, spec, self._object_root)})
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
        self.spec = spec
        self._description = self._describe()
        self.error = None
        self._set_state("configured")
        return {
            "state": self.state,
            "acquires": acquires,
            "spec": spec.model_dump(mode="json", exclude_defaults=True),
            "devices": self._description,
            "creates_folders": []
            if isinstance(spec.out, ObjectURL)
            else [str(p) for p in missing_parents(spec.out)],
        }

    def start(self) -> Any:
        self.require("configured")
        assert self.spec is not None
        check_out(self._root, self.spec, self._object_root)  # it may have appeared since
        session = Session(self.spec)
        session.thread = threading.Thread(
            target=session.run,
            args=(self._scope, self.inbox),
            name="acqwriter-acquisition",
            daemon=True,
        )
        self.session = session
        self.last_report = None
        self._set_state("acquiring")
        session.thread.start()
        return {"state": self.state, "out": str(self.spec.out)}

    def stop(self) -> dict[str, Any] | None:
        """Ask the running acquisition to finish; its report (None: it is still
        running, the report comes when it is done)."""
        if self.state in ("idle", "error") and self.last_report is not None:
            return self.last_report  # it ended by itself: stopping it gives its report
        if self.state not in ("acquiring", "finalizing") or self.session is None:
            raise ControlError("invalid_state", f"no acquisition to stop (state {self.state})")
        self.session.stop.set()
        return None

    def abort(self) -> Any:
        if self.state not in ("acquiring", "finalizing") or self.session is None:
            raise ControlError("invalid_state", f"no acquisition to abort (state {self.state})")
        self.session.abort.set()
        self.session.stop.set()
        return {"state": self.state, "aborting": True}

    def status(self) -> dict[str, Any]:
        session = self.session
        out = self.spec.out if self.spec else None
        return StatusResult(
            state=self.state,
            spec=None if self.spec is None else self.spec.model_dump(mode="json"),
            progress=None if session is None else session.progress,
            disk_free_bytes=None if out is None else _disk_free(out),
            last_summary=None if self.last_report is None else self.last_report["summary"],
            last_report=self.last_report,
            error=self.error,
        ).model_dump(mode="json")

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

    def require(self, *states: str) -> None:
        if self._shutting_down():
            raise ControlError("invalid_state", "the server is shutting down")
        if self.state not in states:
            raise ControlError(
                "invalid_state", f"not allowed while {self.state}; allowed in: {', '.join(states)}"
            )

    def take_events(self) -> list[Session]:
        """Events the acquisition thread queued: ``finalizing`` changes the state,
        ``progress`` is published; returns the sessions that are done (finished here)."""
        done = []
        while True:
            try:
                kind, session, *payload = self.inbox.get_nowait()
            except queue.Empty:
                return done
            if session is not self.session:
                continue
            if kind == "finalizing":
                self._set_state("finalizing")
            elif kind == "progress":
                self.publish_progress(session, payload[0])
            elif kind == "done":
                self.finish(session)
                done.append(session)

    def publish_progress(self, session: Session, snapshot: dict[str, Any] | None = None) -> None:
        snap = dict(snapshot or session.progress or {})
        snap["disk_free_bytes"] = _disk_free(session.spec.out)
        self._publish("progress", {"state": self.state, **snap})
        for warning in session.warnings(snap):
            self._publish("warning", warning)

    def finish(self, session: Session) -> None:
        """The acquisition thread of ``session`` is done: publish its report, leave the
        configuration (used once) and the memory of the run, and go idle (or error)."""
        if session.thread is not None:
            session.thread.join(timeout=5)
        if session.progress is not None:
            self.publish_progress(session)
        report = session.report
        if report is not None:
            self.last_report = report.to_dict()
            self._publish("summary", self.last_report)
            failed = report.error not in (None, "aborted") or report.summary.state not in (
                "complete",
                "aborted",
            )
            self.error = report.reason() if failed else None
        else:
            self.last_report = None
            self.error = session.error
        if self.error:
            self._publish("error", {"message": self.error})
        self.session = None
        self.spec = None  # a configuration is used once: configure again for the next run
        give_back_memory()
        self._set_state("error" if self.error else "idle")

    def close(self) -> None:
        if self._scope is not None:
            self._scope.close()
            self._scope = None


def _disk_free(path: Path) -> int | None:
    """Free bytes where ``path`` is or will be (None when even that cannot be read)."""
    try:
        return psutil.disk_usage(str(nearest_existing(Path(path)))).free
    except OSError:
        return None
