"""Pyramid levels written while the frames pass (``pyramid.when="live"``).

Each lower level of an image is an :class:`~acqwriter.engine.array.ArrayWriter` of its
own (its layout from :mod:`acqwriter.plan.levels`): its chunks, shards, extent
committer and place in the commit loop are level 0's kind, so a reader, a crash or a
full disk finds every level as it finds level 0 — an extent that only covers what is
on disk. What differs is where its frames come from: a :class:`LevelFeed`.

Data flow, on the thread that handles a level-0 chunk batch (a compressor thread, or
the producer for a frame it compresses itself)::

    level-0 frame (its slot) ─▶ LevelFeed 1: downsample ─▶ level-1 frame (LevelFrames)
        ├─▶ LevelFeed 2: downsample ─▶ level-2 frame ─▶ …
        └─▶ level-1 ArrayWriter.add ─▶ batch complete? compress and write it here

A level frame goes to the next level before its own chunk is written, so each level
is computed from the one above exactly as the offline builder computes it
(:func:`acqwriter.post.downsample.downsample`; the same values pixel for pixel). A
level's chunks are compressed on the thread that completes them (no queue): nothing
waits for a slot, so the levels cannot stall the writer threads they run on, and
they hold only the frames of their chunks still waiting for frames
(:func:`acqwriter.plan.levels.live_level_bytes`).

With z downsampled, a level frame needs two planes of the level above: the first to
come waits (copied) for its partner; a plane with no partner (the last of an odd z)
is downsampled alone, which is the clipped-edge mean. A frame that never reached
level 0 — dropped, or missing at close — counts as the fill value, as a reader of
level 0 sees it; a level frame whose every source was dropped is dropped (fill).

Close (:meth:`LiveLevels.flush`, after level 0's last chunk is compressed): each
level in turn settles its z pairs whose partner never came, and writes its
incomplete chunks, padded with the fill value, on the closing thread.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

import numpy as np

from acqwriter.engine.commit import LevelsCommitter
from acqwriter.format.versions import array_keys
from acqwriter.post.downsample import downsample

if TYPE_CHECKING:
    from acqwriter.engine.array import ArrayWriter
    from acqwriter.engine.assembly import ChunkBatch
    from acqwriter.engine.pipeline import Pipeline
    from acqwriter.plan.dataset import ImagePlan
    from acqwriter.plan.layout import FrameLayout
    from acqwriter.store.base import Store

__all__ = [
    "InlineCompressor",
    "LevelFeed",
    "LevelFrames",
    "LevelLedger",
    "LiveLevels",
    "wire_live_levels",
]


class LevelFrames:
    """The frames of one level waiting for their chunk to be written: numbered slots
    like :class:`~acqwriter.engine.slots.FrameSlots`, made as needed and reused (what
    they hold is bounded by the layout, not by a count: see the module docstring)."""

    def __init__(self, shape: tuple[int, int], dtype: np.dtype) -> None:
        self._shape = shape
        self._dtype = dtype
        self._frames: list[np.ndarray] = []
        self._free: list[int] = []
        self._lock = threading.Lock()
        self.occupancy = 0
        self.high_water = 0

    def acquire(self) -> int:
        with self._lock:
            if self._free:
                slot = self._free.pop()
            else:
                slot = len(self._frames)
                self._frames.append(np.empty(self._shape, self._dtype))
            self.occupancy += 1
            self.high_water = max(self.high_water, self.occupancy)
            return slot

    def view(self, slot: int, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        return self._frames[slot]

    def release(self, slots: list[int]) -> None:
        with self._lock:
            self._free.extend(slots)
            self.occupancy -= len(slots)


class InlineCompressor:
    """The compressor of a lower level: a complete batch's tiles are compressed and
    written at once, on the thread that completed it, with that thread's own staging."""

    def __init__(self) -> None:
        self._local = threading.local()

    def submit(self, writer: ArrayWriter, batch: ChunkBatch, ty: int, tx: int) -> None:
        staging: dict[Any, np.ndarray | None] | None = getattr(self._local, "staging", None)
        if staging is None:
            staging = self._local.staging = {}
        if writer not in staging:
            staging[writer] = writer.new_staging()
        writer.process_tile(batch, ty, tx, staging[writer])


class LevelLedger:
    """A lower level's ledger for its extent committer: per-frame metadata lines belong
    to level 0, so a level has none to write and its extent waits only for chunks."""

    def lines(self, first: int, end: int) -> tuple[int, list[str]]:
        return end, []

    def lines_written(self, start: int, written: int) -> int:
        return start + written

    def committed(self, first: int, end: int) -> None:
        pass


def _ravel(coords: tuple[int, ...], sizes: tuple[int | None, ...]) -> int:
    index = 0
    for c, size in zip(coords, sizes, strict=True):
        index = index * (size or 1) + c
    return index


class LevelFeed:
    """Makes one level's frames from the level above's and hands them to its writer
    and to the level below (see the module docstring)."""

    def __init__(
        self,
        *,
        source: FrameLayout,
        layout: FrameLayout,
        writer: ArrayWriter,
        frames: LevelFrames,
        method: str,
        downsample_z: bool,
        below: LevelFeed | None,
    ) -> None:
        self.source = source
        self.layout = layout
        self.writer = writer
        self.frames = frames  # the writer's slots
        self.below = below
        self._method = method
        dims = source.outer_dims
        self._z = dims.index("z") if downsample_z and "z" in dims else None
        # per frame: (z, y, x) factors with z pairs stacked, else (y, x)
        self._factors = (2, 2, 2) if self._z is not None else (2, 2)
        self._local = threading.local()
        self._lock = threading.Lock()
        self._pairs: dict[int, tuple[np.ndarray, list[bool | None]]] = {}  # index -> planes
        self._spare: list[np.ndarray] = []  # pair buffers to reuse

    # -- frames in (any writer thread) ---------------------------------------------------------
    def offer(self, index: int, frame: np.ndarray | None) -> None:
        """Frame ``index`` of the level above (None: it has no pixels); the array is
        read before this returns and not kept."""
        if self._z is None:
            self._make(index, frame)
            return
        coords = list(self.source.coords(index))
        z = coords[self._z]
        coords[self._z] = z // 2
        target = _ravel(tuple(coords), self.layout.outer_sizes)
        size = self.source.outer_sizes[self._z]
        if z % 2 == 0 and size is not None and z + 1 == size:  # the last of an odd z
            self._make(target, None if frame is None else frame[np.newaxis])
            return
        with self._lock:
            pair = self._pairs.get(target)
            if pair is None:
                planes = self._spare.pop() if self._spare else self._new_pair()
                pair = self._pairs[target] = (planes, [None, None])
            planes, seen = pair
            if frame is None:
                planes[z % 2].fill(0)
            else:
                planes[z % 2] = frame
            seen[z % 2] = frame is not None
            if None in seen:
                return
            del self._pairs[target]
        self._make(target, planes if any(seen) else None)
        with self._lock:
            if len(self._spare) < 4:
                self._spare.append(planes)

    def _new_pair(self) -> np.ndarray:
        return np.empty((2, *self.source.frame_shape), self.source.dtype)

    def _make(self, index: int, source: np.ndarray | None) -> None:
        """Level frame ``index`` from ``source`` (a frame, or stacked z planes; None:
        every source was dropped): to the level below, then into its chunk."""
        if source is None:
            if self.below is not None:
                self.below.offer(index, None)
            self.writer.add(index, None)
            return
        scratch = getattr(self._local, "scratch", None)
        if scratch is None:
            scratch = self._local.scratch = {}
        slot = self.frames.acquire()
        frame = self.frames.view(slot, self.layout.frame_shape, self.layout.dtype)
        into = frame[np.newaxis] if source.ndim == 3 else frame  # z pairs: one plane out
        downsample(source, self._factors, self._method, scratch=scratch, out=into)
        if self.below is not None:
            self.below.offer(index, frame)
        self.writer.add(index, slot)

    # -- close (the closing thread) ------------------------------------------------------------
    def flush(self, source_rows: int) -> int:
        """No frame follows: z pairs whose partner never came are made (a partner inside
        the level above's extent was missing: the fill value; beyond it, the plane is the
        last of an odd z: alone), then the incomplete chunks are written. ``source_rows``:
        the extent of the level above; returns this level's."""
        rows = source_rows
        if self._z is not None:
            if self._z == 0:
                rows = -(-source_rows // 2)
            source_frames = source_rows * self.source.frames_per_row
            with self._lock:
                pending = list(self._pairs.items())
                self._pairs.clear()
            for target, (planes, seen) in pending:
                missing = seen.index(None)
                coords = list(self.layout.coords(target))
                coords[self._z] = 2 * coords[self._z] + missing
                partner = _ravel(tuple(coords), self.source.outer_sizes)
                if partner < source_frames:  # missing: the fill value, as level 0 reads
                    planes[missing].fill(0)
                    self._make(target, planes if any(seen) else None)
                else:  # the odd edge: the clipped mean of the plane alone
                    self._make(target, planes[:1] if seen[0] else None)
        self.writer.flush(rows, self.writer.batches_by_block())
        return rows


class LiveLevels:
    """The chain of an image's live levels, top first."""

    def __init__(self, feeds: list[LevelFeed], committer: LevelsCommitter) -> None:
        self.feeds = feeds
        self.committer = committer  # their extents and level 0's, together

    @property
    def first(self) -> LevelFeed:
        return self.feeds[0]

    def flush(self, rows: int) -> None:
        """Level 0 ended at ``rows`` and its last chunk is compressed: finish each level."""
        for feed in self.feeds:
            rows = feed.flush(rows)

    def writers(self) -> list[ArrayWriter]:
        return [feed.writer for feed in self.feeds]


def wire_live_levels(
    plan: ImagePlan, store: Store, pipeline: Pipeline, top: ArrayWriter
) -> LiveLevels | None:
    """An image's live levels, each an array writer on the pipeline's health, disk
    guard and commit loop, fed from ``top`` (level 0's writer); None when the plan has
    none."""
    if not plan.live:
        return None
    from acqwriter.engine.array import ArrayWriter  # the array module imports this one

    spec = plan.spec
    version = spec.ngff_version
    writers = []
    frames = []
    for level in plan.live:
        layout = level.layout
        frames.append(LevelFrames(layout.frame_shape, layout.dtype))
        writers.append(
            ArrayWriter(
                layout=layout,
                keys=array_keys(str(level.index), version),
                array_meta=level.array_document(),
                encoder=pipeline.encoder(spec.codec, layout.dtype),
                store=store,
                slots=frames[-1],  # type: ignore[arg-type]
                compressors=InlineCompressor(),  # type: ignore[arg-type]
                # big unsharded chunks go to the I/O threads, as level 0's do: the
                # thread that made them goes on compressing instead of waiting for a write
                io=pipeline.io if layout.shards is None else None,
                encoded=pipeline.encoded if layout.shards is None else None,
                ledger=LevelLedger(),  # type: ignore[arg-type]
                health=pipeline.health,
                guard=pipeline.guard,
                commits=pipeline.commits,
                shard_seal_s=spec.shard_seal_s,
            )
        )
    feeds: list[LevelFeed] = []
    below: LevelFeed | None = None
    layouts = [plan.layout, *(level.layout for level in plan.live)]
    for k in range(len(writers), 0, -1):
        below = LevelFeed(
            source=layouts[k - 1],
            layout=layouts[k],
            writer=writers[k - 1],
            frames=frames[k - 1],
            method=spec.pyramid.method,
            downsample_z=spec.pyramid.downsample_z,
            below=below,
        )
        feeds.insert(0, below)
    top.below = feeds[0]  # each feed hands its frames on to the next itself
    pipeline.arrays.extend(writers)
    # the levels' extents grow together (LevelsCommitter), not each on its own
    committers = [top.committer, *(writer.committer for writer in writers)]
    halves = spec.pyramid.downsample_z and spec.dims[0] == "z"
    together = LevelsCommitter(committers, halves=halves)
    pipeline.commits.group(together)
    return LiveLevels(feeds, together)
