"""Drive one acquisition: camera sequence → :class:`acqwriter.FrameStream`.

This is the only place where Micro-Manager meets the writer, and it meets it through
the writer's public API: each :class:`CameraFrame` becomes ``stream.append(image,
metadata)``, each :class:`LostFrames` becomes ``stream.skip(n, reason)`` (so the lost
frame numbers keep their place in the array, flagged as dropped), and the stream's
summary plus the camera's account become an :class:`AcquisitionReport`.

Per-frame metadata written for every frame: ``camera``, ``image_number`` (core),
``camera_frame_number``, ``elapsed_ms`` (core clock since sequence start),
``time_received_by_core``, ``exposure_ms``, ``x_um``/``y_um``/``z_um`` and the camera's raw
tags. Stage positions are read once when the sequence starts: nothing moves the
stages during a sequence acquisition, and polling a serial stage per frame would stall
the drain loop of a fast camera.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from acqwriter.acquisition.spec import AcquisitionSpec
from acqwriter.devices.camera import (
    CameraFrame,
    DeviceError,
    LostFrames,
    SequenceEnded,
)
from acqwriter.devices.microscope import Microscope
from acqwriter.engine.dataset import open_dataset
from acqwriter.engine.slots import FrameSlots
from acqwriter.engine.stream import StreamError, open_stream
from acqwriter.format.summary import Summary
from acqwriter.mda.placement import image_axes
from acqwriter.mda.sequence import check_core, parse_sequence
from acqwriter.spec.dataset import IMAGE_FIELDS, WRITER_FIELDS
from acqwriter.spec.model import StreamSpec
from acqwriter.store.base import Store
from acqwriter.validation import SpecError

__all__ = ["AcquisitionReport", "check_sequence", "configure_camera", "run_acquisition"]


@dataclass(frozen=True)
class _Hooks:
    """How the caller follows and steers an acquisition (see :func:`run_acquisition`)."""

    on_progress: Callable[[dict[str, Any]], None] | None
    progress_interval_s: float
    should_stop: Callable[[], bool] | None
    should_abort: Callable[[], bool] | None
    on_finalizing: Callable[[], None] | None


@dataclass
class AcquisitionReport:
    summary: Summary
    frames_requested: int | None
    frames_delivered: int
    lost_camera_frames: list[int] = field(default_factory=list)
    error: str | None = None
    stopped: bool = False  # ended early on request (stop or duration), not by a fault
    allow_partial: bool = False  # an incomplete last time point was asked for

    @property
    def ok(self) -> bool:
        """Every requested frame was delivered and written; nothing failed; no time
        point is left incomplete unless that was asked for (a stop, ``allow_partial``)."""
        complete = (
            self.stopped
            or self.frames_requested is None
            or self.summary.frames_written == self.frames_requested
        )
        return self.error is None and self.summary.ok and complete and not self._missing_unasked

    @property
    def _missing_unasked(self) -> bool:
        return bool(self.summary.frames_missing) and not (self.stopped or self.allow_partial)

    def reason(self) -> str | None:
        """Why the acquisition is not ok (None when it is)."""
        if self.error:
            return self.error
        if self.summary.error:
            return self.summary.error
        if self.summary.frames_dropped:
            return (
                f"{self.summary.frames_dropped} frame(s) dropped: {self.summary.dropped_by_reason}"
            )
        if self._missing_unasked:
            return (
                f"the last time point is incomplete: {self.summary.frames_missing} frame(s) "
                "missing (flagged in the per-frame metadata)"
            )
        if (
            not self.stopped
            and self.frames_requested is not None
            and self.summary.frames_written != self.frames_requested
        ):
            return f"{self.summary.frames_written} of {self.frames_requested} frames written"
        if (
            self.stopped
            and self.frames_requested is not None
            and self.summary.frames_written < self.frames_requested
        ):  # ok (it was asked for), but say why the dataset is shorter
            return (
                f"stopped on request after {self.summary.frames_written} of "
                f"{self.frames_requested} frames"
            )
        return None

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "reason": self.reason(),
            "frames_requested": self.frames_requested,
            "frames_delivered": self.frames_delivered,
            "lost_camera_frames": self.lost_camera_frames,
            "stopped": self.stopped,
            "summary": self.summary.model_dump(),
        }


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


def run_acquisition(
    scope: Microscope,
    spec: AcquisitionSpec,
    *,
    on_progress: Callable[[dict[str, Any]], None] | None = None,
    progress_interval_s: float = 0.2,
    should_stop: Callable[[], bool] | None = None,
    should_abort: Callable[[], bool] | None = None,
    on_finalizing: Callable[[], None] | None = None,
    ring: FrameSlots | None = None,
    store: Store | None = None,
) -> AcquisitionReport:
    """Acquire ``spec.frames`` frames (or for ``spec.duration`` s) into ``spec.out``.

    ``should_stop()`` true: stop the camera and finish the dataset cleanly (pyramid
    included). ``should_abort()`` true: stop now and skip the pyramid (the dataset is
    valid either way). ``on_finalizing()`` is called when acquisition ends and the dataset
    is being finished. ``ring``: a preallocated ring (:func:`acqwriter.engine.preflight.ring_for`)
    so the first frame does not wait for the ring to be touched. ``store``: where to
    write instead of a new directory at ``spec.out`` (see :func:`acqwriter.open_stream`).
    """
    configure_camera(scope, spec)
    hooks = _Hooks(on_progress, progress_interval_s, should_stop, should_abort, on_finalizing)
    if spec.sequence is not None:
        return _run_sequence(scope, spec, hooks, store)
    if spec.position_count > 1:
        return _run_positions(scope, spec, hooks, store)
    camera = scope.camera
    stream = open_stream(stream_spec_for(scope, spec), ring=ring, store=store)
    per_tp = spec.frames_per_timepoint
    base_meta: dict[str, Any] = {"camera": camera.label, **scope.positions()}
    exposure = camera.exposure_ms
    deadline = None if spec.duration is None else time.monotonic() + spec.duration
    lost: list[int] = []
    delivered = 0
    error: str | None = None
    last_progress = 0.0

    def stop_now() -> bool:
        if should_abort is not None and should_abort():
            return True
        if stream.frames_appended % per_tp:
            return False  # a stop or the deadline waits for the time point to end
        if should_stop is not None and should_stop():
            return True
        return deadline is not None and time.monotonic() >= deadline

    try:
        for event in camera.sequence(
            spec.frames, frame_timeout_s=spec.frame_timeout_s, should_stop=stop_now
        ):
            if isinstance(event, CameraFrame):
                tags = event.metadata
                meta = {
                    **base_meta,
                    "image_number": int(tags.get("ImageNumber", event.number)),
                    "camera_frame_number": event.number,
                    "elapsed_ms": float(tags.get("ElapsedTime-ms", "nan")),
                    "time_received_by_core": tags.get("TimeReceivedByCore"),
                    "exposure_ms": float(tags.get("Exposure-ms", exposure)),
                    "tags": tags,
                }
                elapsed = meta["elapsed_ms"]  # the core's clock: when the camera took it
                taken = elapsed / 1000 if math.isfinite(elapsed) else None
                stream.append(event.image, meta, taken_s=taken)
                delivered += 1
            elif isinstance(event, LostFrames):
                lost.extend(event.numbers)
                stream.skip(len(event.numbers), reason=event.reason)
            elif (
                isinstance(event, SequenceEnded)
                and spec.frames is not None
                and event.delivered < spec.frames
                and not stop_now()
            ):
                error = (
                    f"camera {camera.label!r} ended the sequence after "
                    f"{event.delivered} of {spec.frames} frames"
                )
            now = time.monotonic()
            if on_progress is not None and now - last_progress >= progress_interval_s:
                last_progress = now
                on_progress(stream.progress())
    except (DeviceError, StreamError) as exc:
        error = str(exc)
    except KeyboardInterrupt:
        error = "interrupted"
    finally:
        summary, aborted = _close_run(stream, hooks, error, aborted=False)
        if aborted and error is None:
            error = "aborted"
    stopped = _stopped(hooks, deadline) and not aborted
    return AcquisitionReport(
        summary, spec.frames, delivered, lost, error, stopped, spec.allow_partial
    )


def _close_run(
    writer: Any, hooks: _Hooks, error: str | None, aborted: bool
) -> tuple[Summary, bool]:
    """End a run: tell the caller, close the stream or dataset (no pyramid after an
    abort, the reason in the summary), report the final progress (its rate the
    streaming rate, pyramid excluded). Returns the summary and whether it was aborted."""
    if hooks.on_finalizing is not None:
        hooks.on_finalizing()
    aborted = aborted or (hooks.should_abort is not None and hooks.should_abort())
    reason = "aborted on request" if aborted else None
    if error == "interrupted":
        reason = "interrupted (Ctrl-C)"
    summary = writer.close(
        pyramid=not aborted,
        aborted=reason,
        on_progress=hooks.on_progress,
        progress_interval_s=hooks.progress_interval_s,
    )
    if hooks.on_progress is not None:
        hooks.on_progress({**writer.progress(), "mb_per_s": summary.throughput_mb_s})
    return summary, aborted


def _stopped(hooks: _Hooks, deadline: float | None) -> bool:
    """The run ended on request or at its deadline (not by a fault)."""
    by_request = hooks.should_stop is not None and hooks.should_stop()
    return by_request or (deadline is not None and time.monotonic() >= deadline)


def _places(
    scope: Microscope, spec: AcquisitionSpec, step_um: float
) -> list[tuple[str, float, float]]:
    """(image key, x, y) of each position: the given stage positions, or N places one
    field of view apart along x from where the stage is."""
    if spec.stage_positions is not None:
        return [(p.name or f"p{i}", p.x, p.y) for i, p in enumerate(spec.stage_positions)]
    x0, y0 = scope.xy_stage.position  # type: ignore[union-attr]
    return [(f"p{i}", x0 + i * step_um, y0) for i in range(spec.position_count)]


def _run_positions(
    scope: Microscope,
    spec: AcquisitionSpec,
    hooks: _Hooks,
    store: Store | None,
) -> AcquisitionReport:
    """Every time point, move the XY stage to each position in turn and take that
    position's frames there; each position is an image of a collection, placed where the
    stage read back it was (its ``translation``) and each frame's metadata carries the
    stage position read back after the move."""
    on_progress, progress_interval_s = hooks.on_progress, hooks.progress_interval_s
    should_stop, should_abort = hooks.should_stop, hooks.should_abort
    camera = scope.camera
    stage = scope.xy_stage
    if stage is None:
        raise DeviceError(f"positions: {scope.source!r} has no XY stage to move")
    image = stream_spec_for(scope, spec)
    places = _places(scope, spec, camera.shape[1] * image.pixel_size)
    to_image = image_axes(scope.core)
    fields = {name: getattr(image, name) for name in IMAGE_FIELDS}
    writer = {name: getattr(spec, name) for name in WRITER_FIELDS}
    if writer.get("expected_frames") is None and spec.frames is not None:
        writer["expected_frames"] = spec.frames * len(places)
    dataset = open_dataset(
        {
            **writer,
            "out": spec.out,
            "layout": "collection",
            "images": {key: {**fields, "translation": to_image(x, y)} for key, x, y in places},
        },
        store=store,
    )
    per_tp = spec.frames_per_timepoint
    deadline = None if spec.duration is None else time.monotonic() + spec.duration
    lost: list[int] = []
    delivered = 0
    error: str | None = None
    last_progress = 0.0
    aborted = False

    def abort_now() -> bool:
        return should_abort is not None and should_abort()

    try:
        t = 0
        while spec.frames is None or t * per_tp < spec.frames:
            if t and (
                (should_stop is not None and should_stop())
                or (deadline is not None and time.monotonic() >= deadline)
            ):
                break  # a stop or the deadline waits for the time point to end
            count = per_tp if spec.frames is None else min(per_tp, spec.frames - t * per_tp)
            for key, x, y in places:
                if abort_now():
                    raise KeyboardInterrupt
                stage.move(x, y)
                at_x, at_y = stage.position
                for event in camera.sequence(
                    count, frame_timeout_s=spec.frame_timeout_s, should_stop=abort_now
                ):
                    if isinstance(event, CameraFrame):
                        tags = event.metadata
                        elapsed = float(tags.get("ElapsedTime-ms", "nan"))
                        meta = {
                            "camera": camera.label,
                            "position": key,
                            "x_um": at_x,
                            "y_um": at_y,
                            "elapsed_ms": elapsed,
                            "tags": tags,
                        }
                        taken = elapsed / 1000 if math.isfinite(elapsed) else None
                        dataset.append(event.image, image=key, metadata=meta, taken_s=taken)
                        delivered += 1
                    elif isinstance(event, LostFrames):
                        lost.extend(event.numbers)
                        dataset.skip(len(event.numbers), reason=event.reason, image=key)
                now = time.monotonic()
                if on_progress is not None and now - last_progress >= progress_interval_s:
                    last_progress = now
                    on_progress(dataset.progress())
            t += 1
    except (DeviceError, StreamError) as exc:
        error = str(exc)
    except KeyboardInterrupt:
        aborted = abort_now()
        error = "aborted" if aborted else "interrupted"
    finally:
        summary, aborted = _close_run(dataset, hooks, error, aborted)
    stopped = _stopped(hooks, deadline) and not aborted
    requested = None if spec.frames is None else spec.frames * len(places)
    return AcquisitionReport(
        summary, requested, delivered, lost, error, stopped, spec.allow_partial
    )


def _run_sequence(
    scope: Microscope,
    spec: AcquisitionSpec,
    hooks: _Hooks,
    store: Store | None,
) -> AcquisitionReport:
    """Run ``spec.sequence`` (a useq MDASequence) with pymmcore-plus's MDA engine on the
    scope's core, written by :class:`acqwriter.mda.MDAWriter` connected to the core (frames
    reach the ring on the acquisition thread). A stop or an abort cancels the sequence:
    what was acquired is kept, the rest flagged ``missing``; a stop finishes the dataset
    (pyramid included), an abort leaves it ``aborted``."""
    on_progress, progress_interval_s = hooks.on_progress, hooks.progress_interval_s
    should_stop, should_abort = hooks.should_stop, hooks.should_abort
    on_finalizing = hooks.on_finalizing
    import threading

    from acqwriter.mda import MDAWriter

    sequence = parse_sequence(spec.sequence)
    check_core(scope.core, sequence)
    options = {name: getattr(spec, name) for name in WRITER_FIELDS if name != "overwrite"}
    options.update(chunks=spec.chunks, shards=spec.shards, pyramid=spec.pyramid.model_dump())
    if spec.channels:
        options["channels"] = [channel.model_dump() for channel in spec.channels]
    core = scope.core
    writer = MDAWriter(spec.out, core=core, overwrite=spec.overwrite, store=store, **options)
    done = threading.Event()
    stopped = [False]

    def watch() -> None:
        while not done.wait(progress_interval_s):
            if should_abort is not None and should_abort():
                stopped[0] = True
                core.mda.cancel()  # the dataset is left aborted, no pyramid
            elif should_stop is not None and should_stop():
                stopped[0] = True
                writer.stop(core)  # finished: pyramid built, what never came flagged
            dataset = writer.dataset
            if on_progress is not None and dataset is not None and not dataset.closed:
                on_progress(dataset.progress())

    watcher = threading.Thread(target=watch, name="acqwriter-sequence-watch", daemon=True)
    watcher.start()
    error = None
    try:
        core.run_mda(sequence, block=True)
    except Exception as exc:  # the engine's own failure: the dataset is closed regardless
        error = f"{type(exc).__name__}: {exc}"
    finally:
        done.set()
        watcher.join()
        writer.detach()
        if on_finalizing is not None:
            on_finalizing()
    summary = writer.summary
    if summary is None:
        raise DeviceError(writer.error or f"the sequence did not start: {error or 'no frames'}")
    error = error or writer.error
    if on_progress is not None and writer.dataset is not None:
        on_progress({**writer.dataset.progress(), "mb_per_s": summary.throughput_mb_s})
    aborted = should_abort is not None and should_abort()
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


def acquisition_plan(spec: AcquisitionSpec, stream_spec: StreamSpec) -> dict[str, Any]:
    """What ``spec`` will acquire, said concisely: where, the images (key, axes and sizes,
    channels; the first 20 of a long list), frames, camera frame and bytes."""
    frame_bytes = int(np.prod(stream_spec.shape)) * np.dtype(stream_spec.dtype).itemsize
    images: dict[str, Any] = {}
    if spec.sequence is not None:
        from acqwriter.mda.mapping import plan_sequence

        plan = plan_sequence(parse_sequence(spec.sequence))
        frames: int | None = plan.events
        layout = plan.layout
        for key, image in plan.images.items():
            images[key] = {
                "dims": image.dims(),
                "sizes": {a: image.sizes[a] for a in image.dims()[:-2]},
                "channels": [image.channels.get(c, f"Channel {c}") for c in
                             range(image.sizes.get("c", 0))],
            }  # fmt: skip
    else:
        sizes = dict(zip(stream_spec.outer_dims, stream_spec.outer_sizes(), strict=True))
        positions = spec.position_count
        layout = "collection" if positions > 1 else "image"
        frames = None if spec.frames is None else spec.frames * positions
        for i in range(positions):
            key = "image" if positions == 1 else f"p{i}"
            if spec.stage_positions is not None and spec.stage_positions[i].name:
                key = spec.stage_positions[i].name
            images[key] = {
                "dims": stream_spec.dims,
                "sizes": sizes,
                "channels": [c.name for c in stream_spec.channels],
            }
    shown = dict(list(images.items())[:20])
    return {
        "out": str(spec.out),
        "layout": layout,
        "image_count": len(images),
        "images": shown,
        "frames": frames,
        "frame": {"shape": list(stream_spec.shape), "dtype": str(stream_spec.dtype)},
        "bytes": None if frames is None else frames * frame_bytes,
        "duration_s": spec.duration,
    }


def describe_plan(acquires: dict[str, Any]) -> str:
    """:func:`acquisition_plan` as a few lines for a terminal."""
    size = acquires.get("bytes")
    frames = acquires.get("frames")
    frame = acquires["frame"]
    count = acquires["image_count"]
    head = f"configured: {count} image(s) ({acquires['layout']}) -> {acquires['out']}"
    amount = (
        f"{frames} frames of {frame['shape'][0]}x{frame['shape'][1]} {frame['dtype']}, "
        f"{size / 1e6:.1f} MB uncompressed"
        if frames is not None and size is not None
        else f"frames of {frame['shape'][0]}x{frame['shape'][1]} {frame['dtype']} "
        f"for {acquires.get('duration_s')} s"
    )
    lines = [head, f"  {amount}"]
    for key, image in acquires["images"].items():
        sizes = " ".join(f"{a}={n if n is not None else '…'}" for a, n in image["sizes"].items())
        channels = f", channels {', '.join(image['channels'])}" if image["channels"] else ""
        lines.append(f"  {key}: {image['dims']} {sizes}{channels}")
    if count > len(acquires["images"]):
        lines.append(f"  … and {count - len(acquires['images'])} more image(s)")
    return "\n".join(lines)


def check_sequence(scope: Microscope, spec: AcquisitionSpec) -> None:
    """Refuse, before anything starts, a sequence this scope cannot run (a channel its
    core does not have)."""
    if spec.sequence is not None:
        try:
            # made from the options (--channel): name the option, not the sequence
            prefix = "" if spec.channels else "sequence"
            check_core(scope.core, parse_sequence(spec.sequence), prefix)
        except SpecError as exc:
            raise DeviceError(str(exc)) from None
