"""One image of a stream or a dataset: where its frames go and what its metadata says.

An :class:`ImageWriter` owns one multiscale image at its path in the dataset (the root
for a one-image dataset, ``"2"`` or ``"B/3/0"`` in a collection or a plate; its store
is a :class:`~acqwriter.store.prefixed.PrefixedStore` then): its frame ledger, its
level-0 :class:`~acqwriter.engine.array.ArrayWriter`, its group document (OME-NGFF
multiscales, omero, state and summary) and its pyramid. Frames reach it through the
shared :class:`~acqwriter.engine.pipeline.Pipeline`.

A frame placed here goes to a free frame slot; when the slots are full under the
``block`` policy a frame that is one whole unsharded chunk is compressed on the
producer's own thread instead (no slot copy: the writer gets faster exactly when it
cannot keep up; ``frames_inline`` counts them), and for big chunks the producer does so
as soon as the compressors have a backlog and an encoded buffer is free at once; any
other frame waits for a slot. Under ``drop`` a frame that finds no slot is recorded as
dropped (fill value on disk, flagged).
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

import numpy as np

from acqwriter.engine.array import ArrayWriter
from acqwriter.engine.errors import FrameError, StreamError
from acqwriter.engine.ledger import MAX_ROWS_AHEAD, FrameLedger
from acqwriter.engine.levels import wire_live_levels
from acqwriter.engine.pipeline import Pipeline
from acqwriter.engine.workers import EncodedBuffer
from acqwriter.format.display import MEASURED_KEY
from acqwriter.format.image import STAGE_KEY, Level, image_group, level0
from acqwriter.format.model import GroupMetadata, ImageMetadata, SceneImage
from acqwriter.format.placement import stage_attributes
from acqwriter.format.summary import MAX_LISTED, Summary, index_ranges
from acqwriter.format.versions import array_keys, write_group
from acqwriter.format.zarr_v3 import encode_array_metadata
from acqwriter.plan.dataset import ImagePlan
from acqwriter.plan.pyramid import level_factors
from acqwriter.post.pyramid import BuildProgress, build_levels
from acqwriter.store.base import Store

__all__ = ["UNWRITTEN", "ImageWriter", "checked_frame"]

# the drop reason of frames the writer took and could not get on disk before it stopped
UNWRITTEN = "not written: the writer stopped"


class ImageWriter:
    """One image (see the module docstring)."""

    def __init__(
        self, plan: ImagePlan, store: Store, pipeline: Pipeline, *, by_index: bool = False
    ) -> None:
        self.spec = spec = plan.spec
        self.plan = plan
        self.resources = plan.resources
        self.layout = layout = plan.layout
        self.store = store
        self._pipeline = pipeline
        self.attrs = dict(plan.attrs)  # carried in attributes.acqwriter (translation, key)
        self.keys = array_keys("0", spec.ngff_version)  # level 0
        self._array_meta = plan.array_document()
        self.levels = [level0(spec)]
        self.metadata: ImageMetadata | None = None  # what the image's group last said
        self.ledger = FrameLedger(layout, by_index=by_index)
        self.writer = ArrayWriter(
            layout=layout,
            keys=self.keys,
            array_meta=self._array_meta,
            encoder=pipeline.encoder(spec.codec, layout.dtype),
            store=store,
            slots=pipeline.slots,
            compressors=pipeline.compressors,
            io=pipeline.io,
            encoded=pipeline.encoded,
            ledger=self.ledger,
            health=pipeline.health,
            guard=pipeline.guard,
            commits=pipeline.commits,
            shard_seal_s=spec.shard_seal_s,
        )
        pipeline.arrays.append(self.writer)
        # levels 1.. made from the frames as they pass, listed from the start
        self.live = wire_live_levels(plan, store, pipeline, self.writer)
        self._total_rows = 0  # level 0's extent at close
        for level in plan.live:
            factors = level_factors(spec, level.index)
            self.levels.append(Level(str(level.index), factors, spec.pyramid.method))
        self._early_inline = plan.resources.producer_compresses and pipeline.io is not None
        self.pyramid_duration_s = 0.0
        # why the image has no lower level, when that is not the spec's own doing
        self.pyramid_note: str | None = None

    # -- metadata --------------------------------------------------------------------------
    def write_first_metadata(self) -> None:
        """The array first, then the group that points at it: a reader never finds a
        multiscale whose dataset is missing."""
        self.store.write_atomic(
            self.keys.metadata,
            encode_array_metadata(self._array_meta, self.layout.array_shape(0)),
        )
        self.store.write_atomic(self.keys.frame_metadata, b"")
        for level, writer in zip(self.plan.live, self.arrays()[1:], strict=True):
            self.store.write_atomic(
                writer.keys.metadata,
                encode_array_metadata(level.array_document(), level.layout.array_shape(0)),
            )
        self._write_group(self.group_document("acquiring"))

    def _write_group(self, group: GroupMetadata) -> None:
        write_group(self.store.write_atomic, group, self.spec.ngff_version)
        self.metadata = group.image

    def group_document(self, state: str, extra: dict[str, Any] | None = None) -> GroupMetadata:
        attrs = {**self.attrs, **(extra or {})}
        return image_group(
            self.spec, self.levels, state=state, extra=attrs, no_pyramid=self.plan.no_pyramid
        )

    def record_stage(self, stage: dict[str, Any]) -> bool:
        """Record the stage position read back when the image's first frame was taken
        (``x``, ``y``, optionally ``z`` and the pixel ``affine``), once: its group is
        rewritten to place it there (the planned position until then). Returns whether
        anything changed."""
        known = self.attrs.get(STAGE_KEY) or {}
        if known.get("read_back") or "x" not in stage or "y" not in stage:
            return False
        given = {"affine": known.get("affine"), "z": known.get("z"), **stage}
        self.attrs[STAGE_KEY] = {**stage_attributes(given), "read_back": True}
        self._write_group(self.group_document("acquiring"))
        return True

    def scene_image(self) -> SceneImage:
        """This image in its dataset's scene: its path, placement and axes, as its own
        group last said them."""
        image = self.metadata or self.group_document("acquiring").image
        assert image is not None
        return SceneImage(self.plan.path, image.placement, image.axes)

    # -- frames in (the producer's thread, under the stream's append lock) -------------------
    def index_of(self, index: dict[str, Any], image: str) -> int:
        """The frame index of coordinates ``index`` (omitted axes mean 0), or
        :class:`FrameError` naming the image and the axis."""
        if not isinstance(index, dict):
            raise FrameError(
                f"index: expected a mapping of axis to position, e.g. {{'t': 0}}, for image "
                f"{image!r}, got {index!r}; nothing was written"
            )
        layout = self.layout
        flat = 0
        for axis, size in zip(layout.outer_dims, layout.outer_sizes, strict=True):
            value = index.get(axis, 0)
            if isinstance(value, bool) or not isinstance(value, int | np.integer):
                raise FrameError(
                    f"index.{axis}: expected an integer for image {image!r}, got {value!r}; "
                    "nothing was written"
                )
            if value < 0 or (size is not None and value >= size):
                bound = "0 or more" if size is None else f"0..{size - 1}"
                raise FrameError(
                    f"index.{axis}: expected {bound} for image {image!r}, got {value}; "
                    "nothing was written"
                )
            if size is None and value >= self.ledger.next_row_limit():
                raise FrameError(
                    f"index.{axis}: {value} is more than {MAX_ROWS_AHEAD} beyond the frames "
                    f"given so far to image {image!r} (every frame in between would be "
                    "recorded missing); nothing was written"
                )
            flat = flat * (size or 1) + int(value)  # C order; the first axis is slowest
        for axis in index:
            if axis not in layout.outer_dims:
                raise FrameError(
                    f"index.{axis}: image {image!r} has no axis {axis!r} (its frame axes are "
                    f"{list(layout.outer_dims)}); nothing was written"
                )
        return flat

    def place(
        self,
        index: int,
        frame: np.ndarray,
        metadata: dict[str, Any] | None,
        taken_s: float | None,
    ) -> int:
        """Take frame ``index`` (claimed in the ledger); returns ``index``."""
        pipeline = self._pipeline
        pipeline.guard.accepted(self.layout.frame_bytes)
        self.ledger.sample(index, frame)
        encoded = self._spare_encoded_buffer(frame)
        if encoded is not None:
            return self._write_inline(index, frame, metadata, encoded, taken_s)
        slot = pipeline.slots.acquire(0)
        if slot is None and self.spec.overflow == "block":
            if self.resources.producer_compresses and frame.flags.c_contiguous:
                return self._write_inline(index, frame, metadata, None, taken_s)
            if pipeline.slots_all_waiting():
                self.ledger.unclaim(index)
                raise StreamError(
                    f"ring_bytes: all {pipeline.slots.capacity} frame slots hold frames whose "
                    "chunks wait for frames not given yet (frames arrive in an order that "
                    "keeps more chunks open than the ring holds); raise ring_bytes, or use "
                    "chunks of one frame along the non-frame axes; frame not accepted"
                )
            slot = pipeline.slots.acquire(None, abort=pipeline.health.abort)
            if slot is None:
                self.ledger.unclaim(index)
                raise StreamError(
                    f"writer failed, frame {index} not accepted: {pipeline.health.error}"
                )
        if slot is not None:
            self.writer.frame(slot)[...] = frame
        dropped = None if slot is not None else "ring_full"
        self.ledger.record(index, metadata, dropped=dropped, taken_s=taken_s)
        self.writer.add(index, slot)
        return index

    def skip(self, index: int, metadata: dict[str, Any] | None, reason: str) -> None:
        """Frame ``index`` (claimed) never came: fill value, flagged as dropped."""
        self.ledger.record(index, metadata, dropped=reason, received=False)
        self.writer.add(index, None)

    def _spare_encoded_buffer(self, frame: np.ndarray) -> EncodedBuffer | None:
        """An encoded-chunk buffer for compressing ``frame`` on the producer's thread
        now, or None: copy it into a slot instead. Only when the compressors already
        have a backlog (they are the bottleneck) and a buffer is free at once (the I/O
        threads keep up; while the disk stalls, frames go to the slots, which absorb
        the stall). A short backlog touches only the first slots."""
        pipeline = self._pipeline
        if not self._early_inline or pipeline.compressors.backlog() < pipeline.inline_backlog:
            return None
        if not frame.flags.c_contiguous:
            return None
        assert pipeline.encoded is not None
        return pipeline.encoded.take_now()

    def _write_inline(
        self,
        index: int,
        frame: np.ndarray,
        metadata: dict[str, Any] | None,
        encoded: EncodedBuffer | None,
        taken_s: float | None,
    ) -> int:
        """Compress ``frame`` (one whole chunk) on the producer's thread instead of
        waiting for a slot: waiting would leave this thread idle while the compressors
        work through the backlog."""
        self.ledger.record(index, metadata, dropped=None, taken_s=taken_s, inline=True)
        if not self.writer.write_from_producer(index, frame, encoded):
            raise StreamError(f"writer failed on frame {index}: {self._pipeline.health.error}")
        return index

    # -- close -------------------------------------------------------------------------------
    def flush(self) -> None:
        """No frame follows: flag what never came and queue the incomplete batches."""
        layout = self.layout
        total_rows = layout.rows_for_frames(self.ledger.next_index)
        self.ledger.set_missing(total_rows * layout.frames_per_row)
        batches = self.ledger.batches_by_block(self.writer.committer.committed_blocks)
        self.writer.flush(total_rows, batches)
        self._total_rows = total_rows

    def finish_arrays(self) -> None:
        """After level 0's last chunk is compressed: finish the live levels (their last
        frames and incomplete chunks, written on the calling thread), then every
        level's open shards."""
        if self.live is not None:
            try:
                self.live.flush(self._total_rows)
            except Exception as exc:  # a level that cannot finish must not lose level 0
                self._pipeline.health.fail(exc)
        for array in self.arrays():
            array.finish_shards()

    def builds_at_close(self) -> bool:
        """Its lower levels are built after the last frame, from level 0 on disk."""
        return self.spec.pyramid.when == "close" and self.writer.committer.committed_rows > 0

    def list_whole_levels(self) -> None:
        """After the final commits: list only the live levels that hold every row of
        level 0 (after a failure a lower level may be short; a reader sizing the image by
        level 0 must not meet it). The rest are removed, for ``acqwriter pyramid`` to
        build again."""
        if self.live is None:
            return
        rows = self.writer.committer.committed_rows
        for k, writer in enumerate(self.live.writers(), start=1):
            if writer.committer.committed_rows < self.live.committer.rows_of(k, rows):
                self.pyramid_note = (
                    f"levels {k}-{len(self.levels) - 1} not listed: not all written before "
                    f"the writer stopped (acqwriter pyramid PATH builds them)"
                )
                for gone in range(k, len(self.levels)):
                    with contextlib.suppress(OSError):  # unlisted: nothing reads it
                        self.store.remove_tree(str(gone))
                self.levels = self.levels[:k]
                return

    def final_commit(self) -> None:
        """The last extent of each level: everything written (live levels to level 0's
        rows, lowest first)."""
        if self.live is None:
            self.writer.committer.commit()
        else:
            self.live.committer.final()

    def arrays(self) -> list[ArrayWriter]:
        """Level 0's writer and the live levels' writers."""
        return [self.writer, *(self.live.writers() if self.live is not None else [])]

    def build_pyramid(self, progress: BuildProgress) -> None:
        """Levels 1.. (if the spec asks and level 0 has data); a failure fails the
        stream but level 0 stays."""
        if self.live is not None:
            return  # written as the frames passed
        if not (self.spec.pyramid.enabled and self.writer.committer.committed_rows > 0):
            if self.spec.pyramid.enabled:
                self.pyramid_note = "not built: no frame reached the dataset"
            return
        t0 = time.perf_counter()
        try:
            self.levels = build_levels(self.store, self.spec, progress=progress)
        except Exception as exc:  # a failed pyramid must not lose level 0
            self._pipeline.health.fail(exc)
        self.pyramid_duration_s = time.perf_counter() - t0

    def frames_in_extent(self) -> int:
        """Frames inside the committed extent that came and are not dropped: exactly
        what readers get."""
        rows = self.writer.committer.committed_rows
        return self.ledger.frames_in(rows * self.layout.frames_per_row)

    def summary(self, *, state: str, duration: float) -> Summary:
        """What this image holds so far, as the summary model."""
        ledger = self.ledger
        missing = sorted(ledger.missing)
        dropped, by_reason = ledger.drops()
        written = self.frames_in_extent()
        stored = self.writer.stored_bytes
        rows = self.writer.committer.committed_rows
        if state != "acquiring":  # closed: what was taken and is not on disk is lost
            lost = ledger.unwritten(rows * self.layout.frames_per_row)
            if lost:
                dropped = sorted([*dropped, *lost])
                by_reason = {**by_reason, UNWRITTEN: by_reason.get(UNWRITTEN, 0) + len(lost)}
        raw = written * self.layout.frame_bytes
        slots = self._pipeline.slots
        return Summary(
            path=str(self.spec.out),
            state=state,
            frames_received=ledger.frames_received,
            frames_written=written,
            frames_dropped=len(dropped),
            dropped_indices=dropped,
            dropped_by_reason=by_reason,
            frames_missing=len(missing),
            missing_indices=missing[:MAX_LISTED],
            missing_ranges=index_ranges(missing),
            shape=list(self.layout.array_shape(rows)),
            raw_bytes=raw,
            stored_bytes=stored,
            compression_ratio=(raw / stored) if stored else None,
            duration_s=duration,
            write_duration_s=duration,
            throughput_mb_s=raw / 1e6 / duration if duration > 0 else 0.0,
            frames_per_s=written / duration if duration > 0 else 0.0,
            ring_capacity_frames=slots.capacity,
            ring_high_water_frames=slots.high_water,
            ring_bytes=slots.capacity * slots.slot_bytes,
            frames_inline=ledger.frames_inline,
            pyramid_levels=len(self.levels),
            pyramid_note=self.pyramid_note
            or (self.plan.no_pyramid if len(self.levels) == 1 else None),
            error=self._pipeline.health.describe(),
            **ledger.latencies(),
        )

    def write_final(self, state: str, summary: Summary) -> None:
        """The group's last document: state, summary, and what the frames showed."""
        measured = self.ledger.measured()
        summary.time_increment_s = measured.get("time_increment_s")
        extra = {"summary": summary.model_dump(), MEASURED_KEY: measured}
        self._write_group(self.group_document(state, extra))


def checked_frame(frame: Any, image: ImageWriter) -> np.ndarray:
    """``frame`` as an array of the image's shape and dtype (the other byte order is
    converted), or :class:`FrameError`."""
    layout = image.layout
    arr = frame if isinstance(frame, np.ndarray) else np.asarray(frame)
    if arr.shape != layout.frame_shape:
        raise FrameError(
            f"frame.shape: expected {layout.frame_shape} (the stream's shape), "
            f"got {tuple(arr.shape)}; nothing was written"
        )
    if arr.dtype != layout.dtype:
        if arr.dtype.newbyteorder("=") == layout.dtype:  # the other byte order
            return arr.astype(layout.dtype)  # stored as the metadata says
        want, got = layout.dtype.name, arr.dtype.name
        if want == got:  # same name, other layout: show what differs
            want, got = layout.dtype.str, arr.dtype.str
        raise FrameError(f"frame.dtype: expected {want}, got {got}; nothing was written")
    return arr
