"""Where each frame goes: the arithmetic between frame indices, chunks and extents.

The writer receives a flat sequence of frames (index 0, 1, 2, …). This module maps a
frame index to its coordinates over the non-frame axes (C order, first axis slowest
and unbounded), batches frames into *chunk batches* (all frames that share the same
chunk coordinates along t/c/z; a batch becomes one chunk per (y, x) tile) and tells
how many frames a batch needs before it is complete. It also computes the smallest
ring that can hold every batch that is open at once, so a spec that would deadlock
is refused up front.

Nothing here touches disk or threads; it is pure and cheap, and the writer, the
pyramid builder and the tests share it.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from acqwriter.plan.sharding import SEGMENT_BYTES, ShardPlan, shard_factors

if TYPE_CHECKING:
    from acqwriter.spec.model import StreamSpec

BatchKey = tuple[int, ...]


class FrameLayout:
    """Index ↔ coordinate ↔ chunk arithmetic for one stream spec."""

    def __init__(self, spec: StreamSpec) -> None:
        self.dims = spec.dims
        self.outer_dims = spec.outer_dims
        self.outer_sizes = spec.outer_sizes()
        self.frame_shape: tuple[int, int] = tuple(spec.shape)  # type: ignore[assignment]
        self.dtype = np.dtype(spec.dtype)
        self.chunk_shape = spec.resolved_chunks()
        n_outer = len(self.outer_dims)
        self.outer_chunks = self.chunk_shape[:n_outer]
        self.tile_shape: tuple[int, int] = self.chunk_shape[n_outer:]  # type: ignore[assignment]
        self.tiles_y = math.ceil(self.frame_shape[0] / self.tile_shape[0])
        self.tiles_x = math.ceil(self.frame_shape[1] / self.tile_shape[1])
        self.tiles_per_batch = self.tiles_y * self.tiles_x
        # frames per step of the first (growing) axis
        self.frames_per_row = math.prod(s for s in self.outer_sizes[1:] if s is not None)
        # Zarr v3 shards (None: one file per chunk). A *block* — the unit by which the
        # extent grows — is one chunk, or one shard, along the first axis.
        self.shard_factors = shard_factors(spec)
        self.shards = (
            ShardPlan(self, self.shard_factors) if any(f > 1 for f in self.shard_factors) else None
        )
        self.rows_per_block = self.outer_chunks[0] * self.shard_factors[0]
        self.frames_per_block = self.frames_per_row * self.rows_per_block
        self.frames_per_chunk = math.prod(self.outer_chunks)
        self.frame_bytes = math.prod(self.frame_shape) * self.dtype.itemsize
        self.chunk_bytes = math.prod(self.chunk_shape) * self.dtype.itemsize
        self.max_frames = (
            None if self.outer_sizes[0] is None else self.outer_sizes[0] * self.frames_per_row
        )
        # A frame fills a whole chunk on its own: compress straight from the ring slot.
        self.frame_is_chunk = (
            all(c == 1 for c in self.outer_chunks) and self.tile_shape == self.frame_shape
        )
        self.min_ring_frames = self._min_ring_frames()
        # Compressed chunks staged in shards open at the same time (a segment each, at
        # least one chunk), beyond the first shard's segment (part of the writer's fixed
        # overhead, as it always was): memory beside the ring's, so it comes out of
        # ring_bytes (acqwriter.plan.resources.Resources). 0 unless a shard spans the first
        # axis of a layout with other axes (t-shards of a t × c × z stack: 59 segments of 8 MiB).
        self.extra_staging_bytes = (
            0
            if self.shards is None
            else (self.shards.open_at_once() - 1) * max(SEGMENT_BYTES, self.chunk_bytes)
        )

    @property
    def shard_shape(self) -> tuple[int, ...] | None:
        """The shard (the array's stored chunk) shape, or None when not sharded."""
        return None if self.shards is None else self.shards.shape

    # -- coordinates ------------------------------------------------------------------
    def coords(self, index: int) -> tuple[int, ...]:
        """Coordinates over the non-frame axes of frame ``index`` (first axis unbounded)."""
        out = []
        rest = index
        for size in reversed(self.outer_sizes[1:]):
            rest, r = divmod(rest, size)  # type: ignore[operator]
            out.append(r)
        out.append(rest)
        return tuple(reversed(out))

    def batch_of(self, index: int) -> BatchKey:
        return tuple(c // k for c, k in zip(self.coords(index), self.outer_chunks, strict=True))

    def block_of(self, batch: BatchKey) -> int:
        """The block (unit of extent growth: a chunk or shard along the first axis)."""
        return batch[0] // self.shard_factors[0]

    def batch_frame_count(self, batch: BatchKey, total_rows: int | None = None) -> int:
        """Frames a batch holds when complete (edges clipped to bounded sizes).

        ``total_rows`` clips the first axis too (used at close, when the stream ended).
        """
        count = 1
        for axis_i, (g, k) in enumerate(zip(batch, self.outer_chunks, strict=True)):
            if axis_i:
                size = self.outer_sizes[axis_i]
            else:
                size = total_rows if total_rows is not None else self.outer_sizes[0]
            if size is None:
                count *= k
            else:
                count *= max(0, min(k, size - g * k))
        return count

    def batches_per_block(self) -> int:
        return self.shard_factors[0] * math.prod(
            math.ceil(s / k)
            for s, k in zip(self.outer_sizes[1:], self.outer_chunks[1:], strict=True)
        )

    def position_in_batch(self, index: int) -> tuple[int, ...]:
        return tuple(c % k for c, k in zip(self.coords(index), self.outer_chunks, strict=True))

    def tile_slices(self, ty: int, tx: int) -> tuple[slice, slice, int, int]:
        """Frame slices of tile (ty, tx) and the tile's valid height and width."""
        cy, cx = self.tile_shape
        y0, x0 = ty * cy, tx * cx
        y1, x1 = min(y0 + cy, self.frame_shape[0]), min(x0 + cx, self.frame_shape[1])
        return slice(y0, y1), slice(x0, x1), y1 - y0, x1 - x0

    def chunk_coords(self, batch: BatchKey, ty: int, tx: int) -> tuple[int, ...]:
        """Grid coordinates of tile (ty, tx) of ``batch``'s chunks (unsharded)."""
        return (*batch, ty, tx)

    def rows_for_frames(self, n_frames: int) -> int:
        """Extent of the first axis needed to hold ``n_frames`` frames."""
        return math.ceil(n_frames / self.frames_per_row)

    def array_shape(self, rows: int) -> tuple[int, ...]:
        return (rows, *self.outer_sizes[1:], *self.frame_shape)  # type: ignore[return-value]

    # -- ring sizing ------------------------------------------------------------------
    def _min_ring_frames(self) -> int:
        """Most frames resident at once if the writer were infinitely fast.

        Frames of a batch stay in the ring until the whole batch is written; with chunks
        spanning several t/c/z steps several batches are open at once. The pattern repeats
        every block of the first axis, so one block is simulated (cheap: counts only).
        """
        if self.frames_per_block > 5_000_000:  # pathological; bound by the whole block
            return self.frames_per_block
        resident = 0
        peak = 0
        open_counts: dict[BatchKey, int] = {}
        for index in range(self.frames_per_block):
            batch = self.batch_of(index)
            open_counts[batch] = open_counts.get(batch, 0) + 1
            resident += 1
            peak = max(peak, resident)
            if open_counts[batch] == self.batch_frame_count(batch):
                resident -= open_counts.pop(batch)
        return peak
