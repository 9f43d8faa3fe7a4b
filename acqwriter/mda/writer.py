"""acqwriter as a pymmcore-plus MDA handler: ``mmc.run_mda(seq, output=MDAWriter(path))``.

Call order (pymmcore-plus's handler protocol): ``sequenceStarted(sequence, summary)``
opens the dataset the sequence fills (:mod:`acqwriter.mda.mapping`: images, axes,
sizes, channels, stage translations; frame shape, dtype and pixel size from the
summary's ``image_infos``) and stores the summary metadata (devices, config groups,
the sequence as useq JSON) once, in the root's ``attributes.acqwriter.mda``;
``frameReady(image, event, metadata)`` places each frame at its event's index in its
image, with the event's index, the stage position read back (none for a
hardware-sequenced frame) and the one the event asked for, exposure, runner time,
camera and hardware-triggered flag as its per-frame metadata; ``sequenceCanceled``
marks the run cut short; ``sequenceFinished`` closes the dataset (frames the plan
promised that never came are flagged ``missing``).

Back-pressure. pymmcore-plus relays the calls of ``output=`` handlers through a thread
with an unbounded queue: a writer slower than the camera would let frames pile up in
memory there, whatever the writer's own bound. So the writer takes frames on the
acquisition thread itself, where a frame is copied into the ring (or waits for a slot
under ``overflow="block"``, or is dropped and counted under ``"drop"``) before the next
one is taken:

* given the core (``MDAWriter(path, core=mmc)``), it connects to ``mmc.mda.events`` at
  construction and ignores the relayed calls, for every run until :meth:`detach`;
* without it (``output=MDAWriter(path)``), the relayed ``sequenceStarted`` finds the
  core running the sequence (pymmcore-plus's global core, the one ``CMMCorePlus.instance()``
  returns, when it is running; its channels are checked against the sequence's) and
  connects to its ``frameReady`` for that run. The few
  frames queued before that moment arrive relayed; from then on each frame arrives
  twice and is written by whichever call claims its event index first. Frames of
  another sequence (a second core running its own) are left to the relay. When no
  running core is found, every frame comes through the relay, and memory is bounded
  only by how far the relay falls behind.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
from pathlib import Path
from typing import Any

import numpy as np
from psygnal import SignalInstance

from acqwriter.engine.dataset import DatasetWriter, open_dataset
from acqwriter.engine.errors import FrameError, StreamError
from acqwriter.format.summary import Summary
from acqwriter.jsonio import jsonable
from acqwriter.mda.failures import ErrorRecords, count_not_taken, one_line, runner_error
from acqwriter.mda.images import (
    IMAGE_OPTIONS,
    EventImages,
    image_specs,
    only_axes,
    plate_of,
    read_back,
    split_image_options,
)
from acqwriter.mda.mapping import SequencePlan, plan_sequence
from acqwriter.mda.options import check_options
from acqwriter.mda.placement import image_axes
from acqwriter.mda.sequence import check_core
from acqwriter.mda.view import MDAView, ViewSink
from acqwriter.spec.location import as_location
from acqwriter.store.base import Store

__all__ = ["MDAWriter"]

_log = logging.getLogger("acqwriter")
_engine_log = logging.getLogger("pymmcore-plus")
FIRST = 1_000  # psygnal priority: called before handlers connected with the default 0


def connect_direct(signal: Any, slot: Any, *, first: bool = False) -> None:
    """Connect ``slot`` so that it runs on the thread that emits: the acquisition thread,
    where each frame is copied into the slots (or waits for one) before the next is
    taken. ``first``: ahead of the signal's other handlers where it can say so.

    pymmcore-plus uses psygnal, whose slots run on the emitting thread (``priority``
    orders them), or Qt's signals when a QApplication exists (pymmcore-gui, napari):
    those queue a slot to the GUI thread by default, where frames would pile up without
    bound and the dataset would open and close out of step with them; a direct
    connection runs it where psygnal would (Qt calls slots in connection order)."""
    if isinstance(signal, SignalInstance):
        signal.connect(slot, priority=FIRST if first else 0)
        return
    from qtpy.QtCore import Qt  # only here: a QApplication exists, so Qt is installed

    signal.connect(slot, Qt.ConnectionType.DirectConnection)


class MDAWriter:
    """Writes what a pymmcore-plus MDA acquires (see the module docstring).

    ``options`` are acqwriter's writer options (``codec``, ``ring_bytes``, ``overflow``,
    ``sync``, ``io``, ``threads``, ``commit_interval_s``, ``min_free_bytes``, …) and the
    per-image ``chunks``, ``shards`` and ``pyramid``, applied to every image; ``channels``
    (name, colour, display window) set how the channels of those names are shown."""

    def __init__(
        self,
        path: str | Path,
        *,
        core: Any = None,
        overwrite: bool = False,
        store: Store | None = None,
        **options: Any,
    ) -> None:
        # where the dataset goes: a path, or an object-store URL (kept whole as a URL)
        self.path = as_location(path) if isinstance(path, str) else Path(path)
        self.store = store  # where to write instead of a new directory at ``path``
        self.overwrite = overwrite
        self.options = options
        check_options(self.options, path, overwrite, store is None)
        self.dataset: DatasetWriter | None = None
        self.plan: SequencePlan | None = None
        self.summary: Summary | None = None
        self._canceled = False
        self._stop_asked = False  # a cancel that finishes the dataset (stop, not abort)
        self.error: str | None = None  # why the last run was not started or did not finish
        self._run_core: Any = None  # the core running the current run, when known
        # frames delivered after the dataset stopped taking them: (image, frame index)
        self._stopped_frames: list[tuple[str, int | None]] = []
        self._engine_errors = ErrorRecords()
        self._events: EventImages | None = None  # a run of events, not of a sequence
        self._pending: dict[str, dict[str, Any]] = {}  # planned images not made yet
        self._placed: set[str] = set()  # images placed where the stage read back it was
        self._core: Any = None  # connected at construction: every call comes from it
        self._joined: Any = None  # core whose frameReady was joined for the current run
        self._sequence: Any = None
        self._claimed: set[tuple[tuple[str, int], ...]] = set()  # arrived one way of two
        self._claim_lock = threading.Lock()
        self._views: list[MDAView] = []  # live views, bound to each run's images
        if core is not None:
            events = core.mda.events
            connect_direct(events.sequenceStarted, self._started_direct)
            # first of frameReady's handlers: one that raises stops psygnal's emission
            # for the handlers behind it, and this writer must get every frame
            connect_direct(events.frameReady, self._frame, first=True)
            connect_direct(events.sequenceCanceled, self._cancel)
            connect_direct(events.sequenceFinished, self._finished)
            self._core = core

    def view(self, image: str | None = None) -> MDAView:
        """A live, read-only array view of ``image`` (default: the run's first image),
        made before or during a run; it follows each run this writer writes
        (:mod:`acqwriter.mda.view`)."""
        view = MDAView(self, image)
        self._views.append(view)
        return view

    def bind_views(self) -> None:
        for view in self._views:
            view.bind()

    # -- the handler protocol (relayed calls are ignored when the core was given) ------------
    def sequenceStarted(self, sequence: Any, summary: dict[str, Any] | None = None) -> None:
        if self._core is None:
            core = _global_core()
            if self._start(sequence, summary, core):
                self._claimed.clear()
                if core is not None and core.mda.is_running():
                    self._join(core)

    def frameReady(self, image: np.ndarray, event: Any, metadata: dict[str, Any]) -> None:
        if self._core is None:
            self._frame_once(image, event, metadata)

    def sequenceCanceled(self, sequence: Any) -> None:
        if self._core is None:
            self._cancel(sequence)

    def sequenceFinished(self, sequence: Any) -> None:
        if self._core is None:
            self._leave()  # the relay is FIFO: every frame of the run has arrived
            self._claimed.clear()
            self._finished(sequence)

    def stop(self, core: Any) -> None:
        """End ``core``'s run early and finish the dataset as a finished one: pyramid
        built, state ``complete``, the frames never acquired flagged ``missing``
        (a cancel of the run by anyone else leaves it ``aborted``, with no pyramid)."""
        self._stop_asked = True
        core.mda.cancel()

    def detach(self) -> None:
        """Disconnect from the core given at construction."""
        if self._core is not None:
            events = self._core.mda.events
            events.sequenceStarted.disconnect(self._started_direct)
            events.frameReady.disconnect(self._frame)
            events.sequenceCanceled.disconnect(self._cancel)
            events.sequenceFinished.disconnect(self._finished)
            self._core = None
        self._run_core = None

    # -- taking frames on the acquisition thread of a run we were relayed -------------------
    def _join(self, core: Any) -> None:
        if core is not None and self.dataset is not None:
            self._joined = core
            connect_direct(core.mda.events.frameReady, self._frame_joined, first=True)

    def _leave(self) -> None:
        """Stop taking frames from the joined core. The claims stay until the run ends:
        frames it already wrote may still be queued in the relay."""
        with self._claim_lock:
            if self._joined is not None:
                self._joined.mda.events.frameReady.disconnect(self._frame_joined)
                self._joined = None

    def _frame_joined(self, image: np.ndarray, event: Any, metadata: dict[str, Any]) -> None:
        if getattr(event, "sequence", None) is not self._sequence:
            # Another run's frame (or events that do not name their sequence): this core
            # is not feeding ours, or cannot be told apart; the relay brings every frame.
            self._leave()
            return
        self._frame_once(image, event, metadata)

    def _frame_once(self, image: np.ndarray, event: Any, metadata: dict[str, Any]) -> None:
        """Write a frame that may arrive both relayed and joined, once: the first call
        claims its event index, the second finds the claim and drops it."""
        index = _event_index(event)
        key = tuple(sorted(index.items()))
        with self._claim_lock:  # held while a full ring blocks: the other path waits too
            if key in self._claimed:
                self._claimed.discard(key)
                return
            if self._joined is not None:
                self._claimed.add(key)
            self._frame(image, event, metadata, index)

    # -- what each call does ----------------------------------------------------------------
    def _started_direct(self, sequence: Any, summary: dict[str, Any] | None = None) -> None:
        self._start(sequence, summary, self._core)

    def _start(self, sequence: Any, summary: dict[str, Any] | None, core: Any) -> bool:
        """Open the dataset for a run; when it cannot be (a channel the core lacks, a
        sequence beyond the bounds, a path taken meanwhile), cancel the run before
        anything moves and say why in :attr:`error`, instead of acquiring with nothing
        written."""
        self.error = None
        self.summary = None
        self._stop_asked = False
        self._run_core = core
        self._stopped_frames, self._placed = [], set()
        self._engine_errors.clear()
        try:
            self._started(sequence, summary, core)
        except Exception as exc:
            self.error = f"the sequence was not started: {one_line(exc)}"
            _log.error("acqwriter MDAWriter: %s", self.error)
            if core is not None:
                core.mda.cancel()
            return False
        _engine_log.addHandler(self._engine_errors)
        self._offer_view(core)
        return True

    def _offer_view(self, core: Any) -> None:
        """Make ``mmc.mda.get_view()`` (what pymmcore-gui shows) return this writer's view
        when the run has no data sink of its own: pymmcore-plus asks its runner's sink
        (a private attribute, so only where it is there and empty)."""
        runner = getattr(core, "mda", None)
        if runner is not None and getattr(runner, "_sink", False) is None:
            runner._sink = ViewSink(self.view())

    def _started(
        self, sequence: Any, summary: dict[str, Any] | None = None, core: Any = None
    ) -> None:
        summary = dict(summary or {})
        core = core if core is not None else self._core
        info = (summary.get("image_infos") or [{}])[0]
        shape = tuple(info.get("plane_shape") or (info["height"], info["width"]))
        dtype = info.get("dtype", "uint16")
        pixel_size = info.get("pixel_size_um") or 1.0
        if core is not None:
            check_core(core, sequence)
        self.plan = plan = plan_sequence(sequence)
        to_image = image_axes(core)
        image_options, given = split_image_options(self.options)
        writer_options = {k: v for k, v in self.options.items() if k not in IMAGE_OPTIONS}
        self._canceled = False
        self._sequence = sequence
        self._events = None
        if not plan.images:  # a list of events, not a sequence: images as frames come
            base = {"shape": shape, "dtype": dtype, "pixel_size": pixel_size, **image_options}
            only_axes(base, "tyx")
            summary["stage_to_image"] = to_image.describe
            self._events = EventImages(base, writer_options, to_image, jsonable(summary))
            self.dataset = None
            return
        images = image_specs(plan, shape, dtype, pixel_size, image_options, given, to_image)
        summary["mda_sequence"] = sequence.model_dump(mode="json", exclude_unset=True)
        summary["stage_to_image"] = to_image.describe
        plate = plate_of(plan)
        # the first event's image now, every other one as its first frame comes: a
        # 100 x 100 grid does not create 10 000 images before its first frame, and a run
        # cancelled early leaves the images it reached; the disk is weighed for all
        first = next(iter(images))
        self._pending = {key: spec for key, spec in images.items() if key != first}
        if writer_options.get("expected_frames") is None and plan.events:
            writer_options["expected_frames"] = plan.events
        self.dataset = open_dataset(
            {
                **writer_options,
                "out": self.path,
                "overwrite": self.overwrite,
                "layout": plan.layout,
                "images": {first: images[first]},
                **({"plate": plate} if plate is not None else {}),
            },
            root_attrs={"mda": jsonable(summary)},
            store=self.store,
            more_images=bool(self._pending),
        )
        self.bind_views()

    def _frame(
        self,
        image: np.ndarray,
        event: Any,
        metadata: dict[str, Any],
        index: dict[str, int] | None = None,
    ) -> None:
        if index is None:  # connected to the core directly: the signal's three arguments
            index = _event_index(event)
        if self._events is not None:
            try:
                key, placed = self._events.place(self, event, index)
            except Exception as exc:
                self._not_taken(None, index, exc)
                return
        else:
            if self.dataset is None or self.dataset.closed or self.plan is None:
                return
            key = self.plan.key_of(index)
            if key is None:  # a position the sequence did not name (a hand-made event)
                self._not_taken(None, index, FrameError(f"index: no image for {index}"))
                return
            dims = self.plan.images[key].dims()
            placed = {a: index.get(a, 0) for a in dims[:-2]}
            if key in self._pending and self.dataset is not None:
                try:  # its first frame: the image is made now
                    self.dataset.add_image(key, self._pending.pop(key))
                    self.bind_views()
                except Exception as exc:
                    self._not_taken(key, placed, exc)
                    return
        if self.dataset is None or self.dataset.closed:
            return
        position = metadata.get("position") or {}
        record = {
            "event_index": index,
            "position_name": event.pos_name,
            "x_um": position.get("x"),
            "y_um": position.get("y"),
            "z_um": position.get("z"),
            # where the event sent the stages (a hardware-sequenced frame has no read-back)
            "target_um": {
                axis: value
                for axis, value in (("x", event.x_pos), ("y", event.y_pos), ("z", event.z_pos))
                if value is not None
            },
            "exposure_ms": metadata.get("exposure_ms"),
            "runner_time_ms": metadata.get("runner_time_ms"),
            "camera": metadata.get("camera_device"),
            "hardware_triggered": metadata.get("hardware_triggered", False),
            "channel": event.channel.config if event.channel is not None else None,
        }
        runner = metadata.get("runner_time_ms")
        taken = runner / 1000 if isinstance(runner, float | int) and math.isfinite(runner) else None
        if key not in self._placed and (stage := read_back(record, placed)) is not None:
            self._placed.add(key)
            with contextlib.suppress(Exception):  # a placement never costs a frame
                self.dataset.record_stage(key, **stage)
        try:
            self.dataset.append(image, image=key, index=placed, metadata=record, taken_s=taken)
        except Exception as exc:  # never raised into pymmcore-plus: it would stop the
            self._not_taken(key, placed, exc)  # emission to the handlers behind this one

    def _not_taken(self, key: str | None, placed: dict[str, int], exc: BaseException) -> None:
        """A delivered frame the dataset did not take: counted with its index, and when
        the writer cannot go on (a full disk, a failed write), the run is cancelled so
        the stages stop moving for frames nobody will write."""
        flat = None
        if key is not None and self.dataset is not None:
            try:
                flat = self.dataset.images[key].index_of(placed, key)
            except Exception:
                flat = None
        self._stopped_frames.append((key or "?", flat))
        if self.error is None:
            self.error = f"frames no longer written: {one_line(exc)}"
            _log.error("acqwriter MDAWriter: %s; cancelling the acquisition", self.error)
        stopped = isinstance(exc, StreamError) or (
            self.dataset is not None and self.dataset.error is not None
        )
        core = self._core or self._run_core
        if stopped and core is not None and not self._canceled:
            self._canceled = True
            core.mda.cancel()

    def _cancel(self, sequence: Any) -> None:
        self._canceled = True

    def _finished(self, sequence: Any) -> None:
        _engine_log.removeHandler(self._engine_errors)
        core = self._core or self._run_core
        self._run_core = None  # a core kept alive past its run aborts the interpreter at exit
        if self.dataset is None or self.dataset.closed:
            return
        status = getattr(getattr(core, "mda", None), "status", None)
        errored = str(getattr(status, "finish_reason", "")) == "errored"
        reason = None
        if errored:
            detail = runner_error() or self._engine_errors.last or "see pymmcore-plus's log"
            reason = f"the MDA engine failed: {detail}"
            self.error = self.error or reason
        elif self._stopped_frames:
            reason = f"acquisition cancelled: {self.error}"
        elif self._canceled and not self._stop_asked:
            reason = "sequence cancelled"
        if reason is None:  # a whole run: images no frame reached still say so
            for key, spec in list(self._pending.items()):
                with contextlib.suppress(Exception):
                    self.dataset.add_image(key, spec)  # its frames: flagged missing
        self._pending.clear()
        self.summary = summary = self.dataset.close(aborted=reason, pyramid=reason is None)
        if self._stopped_frames:
            count_not_taken(summary, self._stopped_frames)


def _event_index(event: Any) -> dict[str, int]:
    return {str(getattr(k, "value", k)): int(v) for k, v in event.index.items()}


def _global_core() -> Any:
    """pymmcore-plus's global core (the one ``CMMCorePlus.instance()`` returns), or None.

    ``CMMCorePlus.instance()`` would create a core when none is alive, so its weak
    reference is read instead; were it renamed, frames simply keep coming relayed and
    channels are checked by the engine alone."""
    try:
        from pymmcore_plus.core import _mmcore_plus
    except ImportError:
        return None
    ref = getattr(_mmcore_plus, "_instance", None)
    return ref() if callable(ref) else None
