"""How chunks are packed into Zarr v3 shards: the automatic choice and the arithmetic.

Why shards: with small chunks (512² frames, one per chunk) the writer spent much of its
CPU in the kernel creating files and issuing one small I/O per chunk
(``docs/decisions.md``). A shard packs
many inner chunks into one file followed by an index (``sharding_indexed``, see
:mod:`acqwriter.format.zarr_v3`); :mod:`acqwriter.engine.shards` writes it.

Shape: a shard spans the whole frame in y and x (all tiles) and ``factors[i]`` chunks
along each non-frame axis ``i``; inner chunks are the stream's chunks. Pure arithmetic:
no I/O, no threads.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np

from acqwriter.validation import SpecError

if TYPE_CHECKING:
    from acqwriter.plan.layout import BatchKey, FrameLayout
    from acqwriter.spec.model import StreamSpec

__all__ = ["SEGMENT_BYTES", "ShardPlan", "shard_factors"]

SEGMENT_BYTES = 8 << 20  # staging segment: one direct write per this many compressed bytes
AUTO_SHARD_BELOW_BYTES = 2 << 20  # "auto" shards chunks smaller than this (raw)
AUTO_SHARD_BYTES = 16 << 20  # … into shards of about this much raw data
# … and of at most this many inner chunks: a shard's index takes 16 bytes per inner chunk
# in memory and on disk, and the ring is sized by simulating one block of frames; only
# chunks under 1 KiB reach it (a 1×1 float32 frame made shards of 4 Mi chunks: a 64 MiB
# index per open shard, and 8 s to validate the spec)
AUTO_SHARD_MAX_INNER = 16384


def shard_factors(spec: StreamSpec) -> tuple[int, ...]:
    """Inner chunks per shard along each non-frame axis (all 1: no sharding).

    ``"auto"`` shards only chunks smaller than :data:`AUTO_SHARD_BELOW_BYTES` (larger
    chunks make large files already: per-file kernel work weighs on small chunks only,
    ``docs/decisions.md``). It grows a shard from the fastest
    non-frame axis outwards (z, then c, then the first axis, t) up to
    :data:`AUTO_SHARD_BYTES` of raw data (and :data:`AUTO_SHARD_MAX_INNER` inner
    chunks), covering an axis fully before growing the next. Along the first axis
    that means 512² uint16 frames go 32 to a shard: 20 000 frames make 625 files
    instead of 20 000 (the frames/s gained are in ``docs/decisions.md``). The price
    would be a dataset, live viewers and a crash's survivors lagging by a whole shard
    at slow rates; ``shard_seal_s`` bounds that lag in time instead (an unfinished
    shard is sealed: :mod:`acqwriter.engine.open_shards`).
    """
    chunks = spec.resolved_chunks()
    n_outer = len(spec.outer_dims)
    outer_chunks = chunks[:n_outer]
    sizes = spec.outer_sizes()
    if spec.shards == "none" or spec.ngff_version == "0.4":  # Zarr v2 has no shards
        return (1,) * n_outer
    if isinstance(spec.shards, dict):
        out = []
        for axis, c in zip(spec.outer_dims, outer_chunks, strict=True):
            size = spec.shards.get(axis, c)
            if size % c:
                raise SpecError(
                    f"shards.{axis}: expected a multiple of the chunk size {c} along "
                    f"{axis!r}, got {size}"
                )
            out.append(size // c)
        return tuple(out)
    tiles = math.ceil(spec.shape[0] / chunks[-2]) * math.ceil(spec.shape[1] / chunks[-1])
    batch_bytes = math.prod(chunks) * np.dtype(spec.dtype).itemsize * tiles
    if math.prod(chunks) * np.dtype(spec.dtype).itemsize >= AUTO_SHARD_BELOW_BYTES:
        return (1,) * n_outer
    factors = [1] * n_outer
    for axis_i in reversed(range(n_outer)):
        size, c = sizes[axis_i], outer_chunks[axis_i]
        room = min(
            AUTO_SHARD_BYTES // (batch_bytes * math.prod(factors)),
            AUTO_SHARD_MAX_INNER // (tiles * math.prod(factors)),
        )
        if size is None:  # the first axis, unbounded
            factors[axis_i] = max(1, room)
            break
        limit = math.ceil(size / c)
        factors[axis_i] = max(1, min(limit, room))
        if factors[axis_i] < limit:
            break
    return tuple(factors)


class ShardPlan:
    """Shard arithmetic for one layout: keys, inner positions, batch membership."""

    def __init__(self, layout: FrameLayout, factors: tuple[int, ...]) -> None:
        self.layout = layout
        self.factors = factors
        self.grid = (*factors, layout.tiles_y, layout.tiles_x)  # inner chunks per shard
        self.n_inner = math.prod(self.grid)
        self.shape = (
            *(f * c for f, c in zip(factors, layout.outer_chunks, strict=True)),
            layout.tiles_y * layout.tile_shape[0],
            layout.tiles_x * layout.tile_shape[1],
        )

    def open_at_once(self) -> int:
        """Shards being filled at the same time while frames arrive in order (t, then c,
        then z): every shard along the axes faster than the slowest axis that a shard
        spans several chunks of. t-shards over one channel and plane: 1; t-shards of a
        t × c × z stack with 3 channels of 20 planes: 60, each holding a staging segment
        until its last chunk arrives (see ``FrameLayout.extra_staging_bytes``)."""
        layout = self.layout
        slowest = next(i for i, f in enumerate(self.factors) if f > 1)
        count = 1
        for j in range(slowest + 1, len(self.factors)):
            batches = math.ceil(layout.outer_sizes[j] / layout.outer_chunks[j])  # bounded
            count *= math.ceil(batches / self.factors[j])
        return count

    def shard_of(self, batch: BatchKey) -> tuple[int, ...]:
        return tuple(g // f for g, f in zip(batch, self.factors, strict=True))

    def grid_coords(self, shard: tuple[int, ...]) -> tuple[int, ...]:
        """The shard's coordinates in the array's chunk grid (one shard spans y and x)."""
        return (*shard, 0, 0)

    def position(self, batch: BatchKey, ty: int, tx: int) -> int:
        """Flat (C order) index of an inner chunk within its shard."""
        pos = (*(g % f for g, f in zip(batch, self.factors, strict=True)), ty, tx)
        return int(np.ravel_multi_index(pos, self.grid))

    def batches(self, shard: tuple[int, ...], total_rows: int | None = None) -> Iterator[BatchKey]:
        """The chunk batches a shard holds (clipped to bounded sizes / ``total_rows``)."""
        layout = self.layout
        ranges = []
        for axis_i, (s, f, k) in enumerate(
            zip(shard, self.factors, layout.outer_chunks, strict=True)
        ):
            size = layout.outer_sizes[axis_i] if axis_i else total_rows or layout.outer_sizes[0]
            hi = (s + 1) * f
            if size is not None:
                hi = min(hi, math.ceil(size / k))
            ranges.append(range(s * f, hi))
        return itertools.product(*ranges)
