"""A dataset being written: one or many images fed by one pipeline.

:class:`DatasetWriter` opens the store, lays out the hierarchy (a single image at the
root, a ``bioformats2raw.layout`` collection, or an HCS plate with its wells), starts the
shared :class:`~acqwriter.engine.pipeline.Pipeline` and routes each frame to its image
(:class:`~acqwriter.engine.image.ImageWriter`), at the index the caller gives or the
next one in C order. At close it flushes every image, finishes shards, commits every
extent, builds each pyramid and writes each image's state and summary, then the root's.

The hierarchy is valid from the first moment: every image's documents exist before the
root that points at them, and the root is rewritten last at close.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from acqwriter.codec.blosc import EncoderFactory
from acqwriter.engine.errors import FrameError, StreamError
from acqwriter.engine.hierarchy import write_groups
from acqwriter.engine.image import ImageWriter, checked_frame
from acqwriter.engine.pipeline import Pipeline
from acqwriter.engine.preflight import check_disk, check_memory, slots_for
from acqwriter.engine.progress import CloseTicker, finish_summary, progress_snapshot
from acqwriter.engine.slots import FrameSlots
from acqwriter.engine.view import ImageView, ViewNotifier
from acqwriter.format.summary import DatasetSummary, Summary
from acqwriter.plan.dataset import (
    FINAL_RESERVE_BYTES,
    RESERVE_BYTES,
    DatasetPlan,
    ImagePlan,
    SlotPlan,
)
from acqwriter.post.pyramid import BuildProgress
from acqwriter.spec.dataset import DatasetSpec
from acqwriter.spec.model import WriterOptions
from acqwriter.store.base import FINAL_RESERVE_NAME, StorageError, Store
from acqwriter.store.create import create_store
from acqwriter.store.prefixed import PrefixedStore
from acqwriter.validation import SpecError, lone_surrogate

__all__ = ["DatasetWriter", "open_dataset"]


def new_store(spec: WriterOptions) -> Store:
    """A new, locked dataset directory at ``spec.out`` with direct I/O as ``io`` asks."""
    try:
        return create_store(
            spec.out,
            overwrite=spec.overwrite,
            sync=spec.sync,
            io=spec.io,
            options=spec.storage_options,
        )
    except StorageError as exc:
        field_name = "io" if str(exc.strerror).startswith("io:") else "out"
        raise SpecError(f"{field_name}: {exc.strerror.removeprefix('io: ')}") from None
    except OSError as exc:
        raise SpecError(f"out: {exc}") from None


class DatasetWriter:
    """Writes a dataset of one or many images (see the module docstring)."""

    def __init__(
        self,
        plan: DatasetPlan,
        *,
        slots: FrameSlots | None = None,
        store: Store | None = None,
        root_attrs: dict[str, Any] | None = None,
        encoder: EncoderFactory | None = None,
    ) -> None:
        self.plan = plan
        self.spec = writer = plan.writer  # the writer options (out, ring, sync, ...)
        self.layout = plan.layout
        self._root_attrs = dict(root_attrs or {})  # stored once under attributes.acqwriter
        self._t_open = time.perf_counter()
        given = slots
        self._owns_slots = given is None
        if given is not None:
            layouts = [image.layout for image in plan.images.values()]
            if not all(given.fits(layout) for layout in layouts):
                first = layouts[0]
                raise SpecError(
                    f"ring: the given frame slots ({given.capacity} frames of "
                    f"{given.slots.shape[1:]} {given.slots.dtype}, idle: "
                    f"{given.occupancy == 0}) do not fit {first.min_ring_frames}+ frames of "
                    f"{first.frame_shape} {first.dtype}"
                )
            given.reopen()
            shape = tuple(given.slots.shape[1:])
            plan.slots = SlotPlan(given.capacity, shape, given.slots.dtype)  # what is used
        else:
            check_memory(plan)
        if writer.disk_check:
            check_disk(plan, store)
        self.store = store if store is not None else new_store(writer)
        self.slots = given if given is not None else slots_for(plan.slots)
        self.pipeline = Pipeline(plan, slots=self.slots, store=self.store, encoder=encoder)
        self.images: dict[str, ImageWriter] = {}
        for image in plan.images.values():
            self._wire(image)
        if self.layout == "image":  # the root is the image's group: they go there
            next(iter(self.images.values())).attrs.update(self._root_attrs)
        self._single = next(iter(self.images.values())) if len(self.images) == 1 else None
        self._write_hierarchy("acquiring")
        self.store.reserve(RESERVE_BYTES)
        self.store.reserve(FINAL_RESERVE_BYTES, FINAL_RESERVE_NAME)
        self._append_lock = threading.Lock()  # appends from several threads stay ordered
        self._closed = False
        self._summary: Summary | None = None
        self._phase = "acquiring"  # → flushing → pyramid → done (progress())
        self._on_progress: Callable[[dict[str, Any]], None] | None = None
        self._build = BuildProgress(on_level=self._report_progress)
        self._notifier: ViewNotifier | None = None  # live views' signals, once one exists
        self.pipeline.start()

    def _wire(self, image: ImagePlan) -> ImageWriter:
        view = PrefixedStore(self.store, image.path) if image.path else self.store
        writer = ImageWriter(image, view, self.pipeline, by_index=self.plan.by_index)
        self.images[image.key] = writer
        return writer

    def __enter__(self) -> DatasetWriter:
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        """A block that ends by an exception leaves the dataset ``aborted`` (valid, every
        frame received written, no pyramid, the reason in the summary); the exception
        propagates unchanged."""
        if exc_type is None:
            self.close()
        else:
            self.close(pyramid=False, aborted=f"{exc_type.__name__}: {exc}")

    @property
    def summary(self) -> Summary:
        """The summary after close (a :class:`DatasetSummary` with one summary per image,
        but for the one-image layout); a live snapshot before."""
        if self._summary is not None:
            return self._summary
        duration = time.perf_counter() - self._t_open
        parts = {k: i.summary(state="acquiring", duration=duration) for k, i in self.images.items()}
        if self.layout == "image":
            return next(iter(parts.values()))
        return DatasetSummary.of(str(self.spec.out), "acquiring", self.layout, parts)

    @property
    def error(self) -> BaseException | None:
        return self.pipeline.health.error

    # -- the hierarchy -------------------------------------------------------------------------
    def _write_hierarchy(self, state: str, summary: DatasetSummary | None = None) -> None:
        """Each image's documents, then the groups over them (``adding``: one more image)."""
        if state == "adding":
            state = "acquiring"
        elif state == "acquiring":
            for image in self.images.values():
                image.write_first_metadata()
        write_groups(self.plan, self.store, self.images, state, self._root_attrs, summary)

    def add_image(self, key: str, image: dict[str, Any]) -> None:
        """Add image ``key`` (ImageSpec fields) to an open collection or plate as its first
        frame comes: a list of events names its positions only then, and a 10 000-field
        grid should not make 10 000 images before its first frame. Its frames must fit
        the shared slots; its documents come before the groups."""
        with self._append_lock:
            if self._closed:
                raise SpecError(f"images.{key}: the dataset is closed")
            added = self.plan.add_image(key, image)  # checked against the slots in use
            self._wire(added).write_first_metadata()
            self._single = None
            self._write_hierarchy("adding")

    def record_stage(self, image: str | None, **stage: Any) -> None:
        """The stage read back at ``image``'s first frame (``ImageWriter.record_stage``)."""
        with self._append_lock:  # the root's scene places it too
            placed = not self._closed and self.image(image)[1].record_stage(stage)
            if placed and self.plan.has_scene:
                self._write_hierarchy("placed")

    def view(self, image: str | None = None) -> ImageView:
        """A live view of ``image`` (default: the only one): :mod:`acqwriter.engine.view`."""
        writer = self.image(image)[1]
        with self._append_lock:  # after close: nothing left to signal
            self._notifier = self._notifier or ViewNotifier(stopped=self._closed)
        return ImageView(writer, self._notifier)

    # -- frames in -------------------------------------------------------------------------------
    def image(self, key: str | None) -> tuple[str, ImageWriter]:
        if key is None:
            if self._single is None:
                raise FrameError(
                    f"image: this dataset has {len(self.images)} images; name one of "
                    f"{sorted(self.images)[:10]}"
                )
            return next(iter(self.images)), self._single
        try:
            return key, self.images[key]
        except KeyError:
            raise FrameError(
                f"image: no image {key!r} in this dataset (images: {sorted(self.images)[:10]}"
                f"{' …' if len(self.images) > 10 else ''}); nothing was written"
            ) from None

    def _claim(self, key: str, image: ImageWriter, index: dict[str, Any] | None) -> int:
        if self._closed:
            raise StreamError("stream is closed; append after close is not allowed")
        health = self.pipeline.health
        if health.error is not None:
            raise StreamError(f"writer failed; no more frames accepted: {health.error}")
        if health.stop_reason is not None:
            raise StreamError(f"stream stopped; no more frames accepted: {health.stop_reason}")
        ledger = image.ledger
        if index is None and ledger.by_index:
            flat = ledger.next_index
            limit = image.layout.max_frames
            if limit is not None and flat >= limit:
                raise StreamError(
                    f"image {key!r} is full: all {limit} frames of its sizes already given"
                )
        elif index is None:
            try:
                return ledger.claim()
            except OverflowError as exc:
                raise StreamError(str(exc)) from None
        else:
            flat = image.index_of(index, key)
        if not ledger.claim_at(flat):
            where = index if index is not None else {"frame": flat}
            raise FrameError(
                f"index: image {key!r} already has the frame at {where}; nothing was written"
            )
        return flat

    def append(
        self,
        frame: np.ndarray,
        *,
        image: str | None = None,
        index: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
        taken_s: float | None = None,
    ) -> int:
        """Take ``frame`` for ``image`` at coordinates ``index`` (omitted axes: 0;
        without ``index``: the image's next frame in C order); returns its frame index
        within the image. The caller may reuse ``frame``'s buffer once this returns."""
        key, writer = self.image(image)
        arr = checked_frame(frame, writer)
        with self._append_lock:
            flat = self._claim(key, writer, index)
            return writer.place(flat, arr, metadata, taken_s)

    def skip(
        self,
        count: int = 1,
        reason: str = "camera",
        metadata: dict[str, Any] | None = None,
        *,
        image: str | None = None,
        index: dict[str, Any] | None = None,
    ) -> list[int]:
        """Record frames the source lost (fill value, flagged as dropped): ``count``
        next frames of ``image``, or the one at ``index``."""
        key, writer = self.image(image)
        if not isinstance(reason, str) or not reason or lone_surrogate(reason) is not None:
            raise FrameError(
                f"reason: expected non-empty text, got {reason!r}; nothing was written"
            )
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise FrameError(
                f"count: expected 0 or more frames, got {count!r}; nothing was written"
            )
        if index is not None and count != 1:
            raise FrameError("count: one frame is skipped at a given index; nothing was written")
        indices = []
        with self._append_lock:
            limit = writer.layout.max_frames
            if index is None and limit is not None and writer.ledger.next_index + count > limit:
                raise FrameError(
                    f"count: image {key!r} has room for {limit - writer.ledger.next_index} "
                    f"more of its {limit} frames, {count} skipped; nothing was written"
                )
            for _ in range(count):
                flat = self._claim(key, writer, index)
                writer.skip(flat, metadata, reason)
                indices.append(flat)
        return indices

    # -- progress ----------------------------------------------------------------------------------
    def progress(self) -> dict[str, Any]:
        """A cheap live snapshot for progress bars and status replies."""
        return progress_snapshot(
            self.images,
            self.slots,
            phase=self._phase,
            elapsed=time.perf_counter() - self._t_open,
            error=self.pipeline.health.error,
            per_image=self.layout != "image",
            building=self._build.snapshot(),
        )

    def _set_phase(self, phase: str) -> None:
        self._phase = phase
        self._report_progress()

    def _report_progress(self) -> None:
        if self._on_progress is not None:
            self._on_progress(self.progress())

    # -- close ---------------------------------------------------------------------------------
    @property
    def closed(self) -> bool:
        return self._closed

    def close(
        self,
        *,
        pyramid: bool = True,
        aborted: str | None = None,
        on_progress: Callable[[dict[str, Any]], None] | None = None,
        progress_interval_s: float = 0.2,
    ) -> Summary:
        """Finish the dataset (see :meth:`acqwriter.engine.stream.FrameStream.close`)."""
        if self._summary is not None:
            return self._summary
        self._on_progress = on_progress  # each phase and level is reported as it starts
        self._set_phase("flushing")
        ticker = None
        if on_progress is not None:
            ticker = CloseTicker(self.progress, on_progress, progress_interval_s)
        try:
            return self._close(pyramid=pyramid, aborted=aborted)
        finally:
            if ticker is not None:
                ticker.stop()

    def _close(self, *, pyramid: bool, aborted: str | None) -> Summary:
        health = self.pipeline.health
        with self._append_lock:
            self._closed = True
        for image in self.images.values():
            image.flush()
        self.pipeline.drain()
        if self._owns_slots:  # every frame has left its slot: unmap beside the fsyncs
            self.slots.release_memory()
        try:
            for image in self.images.values():
                image.finish_arrays()  # live levels' last frames, every open shard
            self.pipeline.stop_commits()
            for image in self.images.values():
                image.final_commit()  # the final extents: everything written
            self.store.flush()
        except OSError as exc:
            health.fail(exc)
        for image in self.images.values():
            image.list_whole_levels()
        write_duration = time.perf_counter() - self._t_open
        building = [i for i in self.images.values() if i.builds_at_close()]
        if pyramid and health.error is None and building:
            self._set_phase("pyramid")
            for image in building:
                if health.error is None:
                    image.build_pyramid(self._build)
        elif building and building[0].plan.no_pyramid is None:
            why = "the writer failed" if health.error is not None else "the run was cut short"
            for image in building:
                image.pyramid_note = f"not built: {why} (acqwriter pyramid PATH builds it)"

        if self._notifier is not None:  # a last signal: the views show the final extent
            self._notifier.stop()
        self.slots.close()
        self.store.free_reserve()
        self.store.free_reserve(FINAL_RESERVE_NAME)
        if health.error is not None:
            state = "failed"
        elif aborted is not None:
            state = "aborted"
        else:
            state = "complete"
        duration = time.perf_counter() - self._t_open
        summaries = {}
        try:
            for key, image in self.images.items():
                summary = image.summary(state=state, duration=duration)
                finish_summary(summary, write_duration, image.pyramid_duration_s, aborted)
                summary.created_folders = list(self.store.created_folders)
                summaries[key] = summary  # its counts stand even if the store refuses it
                image.write_final(state, summary)
            if self._single is not None and self.layout == "image":
                result: Summary = next(iter(summaries.values()))
            else:
                result = DatasetSummary.of(str(self.spec.out), state, self.layout, summaries)
                result.created_folders = list(self.store.created_folders)
                if state == "aborted":
                    result.error = aborted
                self._write_hierarchy(state, result)
            self.store.flush()
        except OSError as exc:
            health.fail(exc)
            result = summaries.get(next(iter(self.images))) or Summary(
                path=str(self.spec.out), state="failed"
            )
            if self.layout != "image":
                result = DatasetSummary.of(str(self.spec.out), "failed", self.layout, summaries)
            result.state, result.error = "failed", str(health.error)
        self._summary = result
        self.store.release_lock()
        self._set_phase("done")
        return result


def open_dataset(
    spec: DatasetSpec | dict[str, Any],
    *,
    slots: FrameSlots | None = None,
    ring: FrameSlots | None = None,
    store: Store | None = None,
    root_attrs: dict[str, Any] | None = None,
    more_images: bool = False,
    encoder: EncoderFactory | None = None,
) -> DatasetWriter:
    """Validate ``spec`` and open a dataset of many images: the whole hierarchy exists
    (valid, empty) on return. Frames go to ``append(frame, image=KEY, index={...})``.
    ``more_images``: images will be added as their frames come
    (:meth:`DatasetWriter.add_image`); they are laid out as images of a dataset of many.

    Images without their own shard sizes are not sharded along the first axis: with
    many images open at once, each image's open t-shard would hold a staging segment
    beside the frame slots, outside the memory bound. ``root_attrs``: what to store once
    under the root's ``attributes.acqwriter`` (JSON values; e.g. an MDA's summary)."""
    spec = DatasetSpec.parse(spec)
    plan = DatasetPlan.of(spec, more_images=more_images)
    given = slots if slots is not None else ring
    return DatasetWriter(plan, slots=given, store=store, root_attrs=root_attrs, encoder=encoder)
