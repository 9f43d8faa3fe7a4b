"""Run one acquisition: a microscope's frames into a dataset, whatever its shape.

:func:`run_acquisition` is the one runner the CLI, the daemon and scripts share. It
takes a :class:`~acqwriter.devices.Microscope` (the hardware layer) and an
:class:`~acqwriter.acquisition.spec.AcquisitionSpec`, and runs one of three shapes:

* **a camera stream** (no positions, no sequence): one camera sequence into one image
  at the root (:func:`acqwriter.open_stream`);
* **positions** (``positions``/``stage_positions``): each time point, the XY stage moves
  to each position and that position's frames are taken there, each position an image
  of a collection placed where the stage read back it was (:func:`acqwriter.open_dataset`);
* **a sequence** (a useq ``MDASequence``): pymmcore-plus's MDA engine runs it on the
  core, written by :class:`acqwriter.mda.MDAWriter`.

Every shape follows the same rules. Each :class:`CameraFrame` becomes an ``append``
with its metadata, each :class:`LostFrames` a ``skip`` (lost frame numbers keep their
place, flagged as dropped). ``should_stop()`` finishes the time point in progress and
the dataset (pyramid included); ``should_abort()`` stops now and leaves the dataset
``aborted`` (valid, no pyramid); ``on_finalizing()`` is called when frames stop and the
dataset is being finished; progress goes to ``on_progress`` every
``progress_interval_s``. The result is an :class:`AcquisitionReport`.

Per-frame metadata of a camera stream or positions: ``camera``, ``image_number``
(core), ``camera_frame_number``, ``elapsed_ms`` (core clock since the sequence
started), ``time_received_by_core``, ``exposure_ms``, ``x_um``/``y_um``(/``z_um``), the
``position`` key at positions, and the camera's raw ``tags``. Stage positions are read
when a sequence starts (after the move, at positions): nothing moves the stages during
a camera sequence, and polling a serial stage per frame would stall a fast camera's
drain loop.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from acqwriter.acquisition.report import AcquisitionReport
from acqwriter.acquisition.spec import AcquisitionSpec
from acqwriter.devices.camera import CameraFrame, DeviceError, LostFrames, SequenceEnded
from acqwriter.devices.microscope import Microscope
from acqwriter.engine.dataset import DatasetWriter, open_dataset
from acqwriter.engine.slots import FrameSlots
from acqwriter.engine.stream import FrameStream, StreamError, open_stream
from acqwriter.format.summary import Summary
from acqwriter.mda.placement import image_axes
from acqwriter.mda.sequence import check_core, parse_sequence
from acqwriter.mda.writer import MDAWriter
from acqwriter.spec.dataset import IMAGE_FIELDS, WRITER_FIELDS
from acqwriter.spec.model import StreamSpec
from acqwriter.store.base import Store

__all__ = [
    "RunControls",
    "configure_camera",
    "mda_options",
    "positions_dataset",
    "run_acquisition",
    "stream_spec_for",
]


@dataclass(frozen=True)
class RunControls:
    """How the caller follows and steers a run (see the module docstring)."""

    on_progress: Callable[[dict[str, Any]], None] | None = None
    progress_interval_s: float = 0.2
    should_stop: Callable[[], bool] | None = None
    should_abort: Callable[[], bool] | None = None
    on_finalizing: Callable[[], None] | None = None

    def stop_asked(self) -> bool:
        return self.should_stop is not None and self.should_stop()

    def abort_asked(self) -> bool:
        return self.should_abort is not None and self.should_abort()


def configure_camera(scope: Microscope, spec: AcquisitionSpec) -> None:
    """Apply binning, ROI and exposure from ``spec`` (binning first: it resets the ROI)."""
    camera = scope.camera
    if spec.binning is not None:
        camera.binning = spec.binning
    if spec.roi is not None:
        camera.roi = spec.roi
    if spec.exposure_ms is not None:
        camera.exposure_ms = spec.exposure_ms


def stream_spec_for(scope: Microscope, spec: AcquisitionSpec) -> StreamSpec:
    """The writer spec for this camera's frames; calibration from the core unless set."""
    camera = scope.camera
    stream_spec = spec.stream_spec(camera.shape, camera.dtype.name)
    if "pixel_size" not in spec.model_fields_set and scope.pixel_size_um:
        stream_spec = stream_spec.model_copy(update={"pixel_size": scope.pixel_size_um})
    return stream_spec


def mda_options(spec: AcquisitionSpec) -> dict[str, Any]:
    """The :class:`MDAWriter` options of a sequence acquisition: the writer options and
    the per-image chunks, shards, pyramid and channels."""
    options = {name: getattr(spec, name) for name in WRITER_FIELDS if name != "overwrite"}
    options.update(chunks=spec.chunks, shards=spec.shards, pyramid=spec.pyramid.model_dump())
    if spec.channels:
        options["channels"] = [channel.model_dump() for channel in spec.channels]
    return options


def positions_dataset(
    scope: Microscope, spec: AcquisitionSpec
) -> tuple[dict[str, Any], list[tuple[str, float, float]]]:
    """The collection a positions acquisition writes (its DatasetSpec fields) and its
    places, (image key, x, y): the given stage positions, or N places one field of view
    apart along x from where the stage is, each image placed where its position is."""
    camera = scope.camera
    image = stream_spec_for(scope, spec)
    if spec.stage_positions is not None:
        places = [(p.name or f"p{i}", p.x, p.y) for i, p in enumerate(spec.stage_positions)]
    else:
        if scope.xy_stage is None:
            raise DeviceError(f"positions: {scope.source!r} has no XY stage to move")
        x0, y0 = scope.xy_stage.position
        step_um = camera.shape[1] * image.pixel_size
        places = [(f"p{i}", x0 + i * step_um, y0) for i in range(spec.position_count)]
    to_image = image_axes(scope.core)
    fields = {name: getattr(image, name) for name in IMAGE_FIELDS}
    writer = {name: getattr(spec, name) for name in WRITER_FIELDS}
    if writer.get("expected_frames") is None and spec.frames is not None:
        writer["expected_frames"] = spec.frames * len(places)
    affine = to_image.describe["affine"]
    images = {
        key: {**fields, "translation": to_image(x, y), "stage": {"x": x, "y": y, "affine": affine}}
        for key, x, y in places
    }
    return {**writer, "out": spec.out, "layout": "collection", "images": images}, places


def run_acquisition(
    scope: Microscope,
    spec: AcquisitionSpec,
    *,
    on_progress: Callable[[dict[str, Any]], None] | None = None,
    progress_interval_s: float = 0.2,
    should_stop: Callable[[], bool] | None = None,
    should_abort: Callable[[], bool] | None = None,
    on_finalizing: Callable[[], None] | None = None,
    slots: FrameSlots | None = None,
    store: Store | None = None,
) -> AcquisitionReport:
    """Acquire ``spec`` on ``scope`` into ``spec.out`` (see the module docstring).

    ``slots``: preallocated frame slots (:func:`acqwriter.engine.preflight.preallocate_slots`) so
    the first frame of a camera stream does not wait for them to be backed. ``store``:
    where to write instead of a new directory at ``spec.out``."""
    controls = RunControls(
        on_progress, progress_interval_s, should_stop, should_abort, on_finalizing
    )
    return _Run(scope, spec, controls, slots, store).run()


@dataclass
class _Run:
    """One run's state: what came, what was lost, what failed (see the module docstring)."""

    scope: Microscope
    spec: AcquisitionSpec
    controls: RunControls
    slots: FrameSlots | None
    store: Store | None
    delivered: int = 0
    lost: list[int] = field(default_factory=list)
    error: str | None = None
    deadline: float | None = None
    _last_progress: float = 0.0

    def run(self) -> AcquisitionReport:
        configure_camera(self.scope, self.spec)
        if self.spec.duration is not None:
            self.deadline = time.monotonic() + self.spec.duration
        if self.spec.sequence is not None:
            return self._sequence()
        if self.spec.position_count > 1:
            return self._positions()
        return self._camera_stream()

    # -- shared --------------------------------------------------------------------------
    def _past_deadline(self) -> bool:
        return self.deadline is not None and time.monotonic() >= self.deadline

    def _take(
        self,
        events: Iterable[Any],
        writer: FrameStream | DatasetWriter,
        base: dict[str, Any],
        image: str | None = None,
        on_end: Callable[[SequenceEnded], None] | None = None,
    ) -> None:
        """Write a camera sequence's frames and account for its lost ones; ``on_end``
        sees how the sequence ended."""
        camera = self.scope.camera
        exposure = camera.exposure_ms
        where = {} if image is None else {"image": image}
        for event in events:
            if isinstance(event, CameraFrame):
                meta = _frame_metadata(event, base, exposure)
                elapsed = meta["elapsed_ms"]  # the core's clock: when the camera took it
                taken = elapsed / 1000 if math.isfinite(elapsed) else None
                writer.append(event.image, metadata=meta, taken_s=taken, **where)
                self.delivered += 1
            elif isinstance(event, LostFrames):
                self.lost.extend(event.numbers)
                writer.skip(len(event.numbers), reason=event.reason, **where)
            elif isinstance(event, SequenceEnded) and on_end is not None:
                on_end(event)
            self._progress(writer)

    def _progress(self, writer: Any) -> None:
        on_progress = self.controls.on_progress
        now = time.monotonic()
        if (
            on_progress is not None
            and now - self._last_progress >= self.controls.progress_interval_s
        ):
            self._last_progress = now
            on_progress(writer.progress())

    def _finish(self, writer: Any, aborted: bool, requested: int | None) -> AcquisitionReport:
        """Close the stream or dataset (no pyramid after an abort, the reason in the
        summary), report the final progress (its rate the streaming rate, pyramid
        excluded) and account for the run."""
        controls = self.controls
        if controls.on_finalizing is not None:
            controls.on_finalizing()
        aborted = aborted or controls.abort_asked()
        reason = "aborted on request" if aborted else None
        if self.error == "interrupted":
            reason = "interrupted (Ctrl-C)"
        summary: Summary = writer.close(
            pyramid=not aborted,
            aborted=reason,
            on_progress=controls.on_progress,
            progress_interval_s=controls.progress_interval_s,
        )
        if controls.on_progress is not None:
            controls.on_progress({**writer.progress(), "mb_per_s": summary.throughput_mb_s})
        if aborted and self.error is None:
            self.error = "aborted"
        stopped = (controls.stop_asked() or self._past_deadline()) and not aborted
        return AcquisitionReport(
            summary,
            requested,
            self.delivered,
            self.lost,
            self.error,
            stopped,
            self.spec.allow_partial,
        )

    # -- a camera stream -----------------------------------------------------------------
    def _camera_stream(self) -> AcquisitionReport:
        spec, controls = self.spec, self.controls
        camera = self.scope.camera
        stream = open_stream(stream_spec_for(self.scope, spec), slots=self.slots, store=self.store)
        per_tp = spec.frames_per_timepoint

        def stop_now() -> bool:
            if controls.abort_asked():
                return True
            if stream.frames_appended % per_tp:
                return False  # a stop or the deadline waits for the time point to end
            return controls.stop_asked() or self._past_deadline()

        def ended(event: SequenceEnded) -> None:  # short of its frames, unasked: a fault
            if spec.frames is not None and event.delivered < spec.frames and not stop_now():
                self.error = (
                    f"camera {camera.label!r} ended the sequence after "
                    f"{event.delivered} of {spec.frames} frames"
                )

        base = {"camera": camera.label, **self.scope.positions()}
        try:
            events = camera.sequence(
                spec.frames, frame_timeout_s=spec.frame_timeout_s, should_stop=stop_now
            )
            self._take(events, stream, base, on_end=ended)
        except (DeviceError, StreamError) as exc:
            self.error = str(exc)
        except KeyboardInterrupt:
            self.error = "interrupted"
        finally:
            report = self._finish(stream, False, spec.frames)
        return report

    # -- positions -----------------------------------------------------------------------
    def _positions(self) -> AcquisitionReport:
        scope, spec, controls = self.scope, self.spec, self.controls
        camera = scope.camera
        stage = scope.xy_stage
        if stage is None:
            raise DeviceError(f"positions: {scope.source!r} has no XY stage to move")
        dataset_spec, places = positions_dataset(scope, spec)
        dataset = open_dataset(dataset_spec, store=self.store)
        per_tp = spec.frames_per_timepoint
        aborted = False
        try:
            t = 0
            while spec.frames is None or t * per_tp < spec.frames:
                if t and (controls.stop_asked() or self._past_deadline()):
                    break  # a stop or the deadline waits for the time point to end
                count = per_tp if spec.frames is None else min(per_tp, spec.frames - t * per_tp)
                for key, x, y in places:
                    if controls.abort_asked():
                        raise KeyboardInterrupt
                    stage.move(x, y)
                    at_x, at_y = stage.position
                    if t == 0:  # placed where the stage read back it was
                        dataset.record_stage(key, x=at_x, y=at_y)
                    events = camera.sequence(
                        count,
                        frame_timeout_s=spec.frame_timeout_s,
                        should_stop=controls.abort_asked,
                    )
                    base = {"camera": camera.label, "position": key, "x_um": at_x, "y_um": at_y}
                    self._take(events, dataset, base, image=key)
                t += 1
        except (DeviceError, StreamError) as exc:
            self.error = str(exc)
        except KeyboardInterrupt:
            aborted = controls.abort_asked()
            self.error = "aborted" if aborted else "interrupted"
        finally:
            requested = None if spec.frames is None else spec.frames * len(places)
            report = self._finish(dataset, aborted, requested)
        return report

    # -- a sequence ----------------------------------------------------------------------
    def _sequence(self) -> AcquisitionReport:
        """pymmcore-plus's MDA engine runs ``spec.sequence`` on the scope's core, written
        by :class:`MDAWriter` connected to the core (frames reach the slots on the
        acquisition thread). A stop or an abort cancels the sequence: what was acquired
        is kept, the rest flagged ``missing``; a stop finishes the dataset (pyramid
        included), an abort leaves it ``aborted``."""
        spec, controls = self.spec, self.controls
        sequence = parse_sequence(spec.sequence)
        core = self.scope.core
        check_core(core, sequence)
        options = mda_options(spec)
        writer = MDAWriter(
            spec.out, core=core, overwrite=spec.overwrite, store=self.store, **options
        )
        done = threading.Event()
        stopped = [False]

        def watch() -> None:
            while not done.wait(controls.progress_interval_s):
                if controls.abort_asked():
                    stopped[0] = True
                    core.mda.cancel()  # the dataset is left aborted, no pyramid
                elif controls.stop_asked():
                    stopped[0] = True
                    writer.stop(core)  # finished: pyramid built, what never came flagged
                dataset = writer.dataset
                if controls.on_progress is not None and dataset is not None and not dataset.closed:
                    controls.on_progress(dataset.progress())

        watcher = threading.Thread(target=watch, name="acqwriter-sequence-watch", daemon=True)
        watcher.start()
        try:
            core.run_mda(sequence, block=True)
        except Exception as exc:  # the engine's own failure: the dataset is closed regardless
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            done.set()
            watcher.join()
            writer.detach()
            if controls.on_finalizing is not None:
                controls.on_finalizing()
        summary = writer.summary
        if summary is None:
            reason = writer.error or f"the sequence did not start: {self.error or 'no frames'}"
            raise DeviceError(reason)
        error = self.error or writer.error
        if controls.on_progress is not None and writer.dataset is not None:
            controls.on_progress({**writer.dataset.progress(), "mb_per_s": summary.throughput_mb_s})
        aborted = controls.abort_asked()
        plan = writer.plan
        requested = plan.events if plan is not None and not stopped[0] else None
        return AcquisitionReport(
            summary,
            requested,
            summary.frames_received,
            [],
            error or ("aborted" if aborted else None),
            stopped[0] and not aborted,
            True,  # frames the plan promised and never came are flagged, by design
        )


def _frame_metadata(event: CameraFrame, base: dict[str, Any], exposure: float) -> dict[str, Any]:
    tags = event.metadata
    return {
        **base,
        "image_number": int(tags.get("ImageNumber", event.number)),
        "camera_frame_number": event.number,
        "elapsed_ms": float(tags.get("ElapsedTime-ms", "nan")),
        "time_received_by_core": tags.get("TimeReceivedByCore"),
        "exposure_ms": float(tags.get("Exposure-ms", exposure)),
        "tags": tags,
    }
