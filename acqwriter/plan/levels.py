"""The lower levels an image writes live (``pyramid.when="live"``), and what they hold.

A live level is written like level 0, by the same writer: it has a stream spec of its
own (:func:`acqwriter.plan.pyramid.level_spec`) and so a :class:`FrameLayout` with its
own chunks, shards and extent, and its frames are the frames of the level above,
downsampled as they pass (:mod:`acqwriter.engine.levels`).

What a level holds in memory, beside ``ring_bytes`` (:func:`live_level_bytes`, in the
plan's ``memory()`` as ``live_levels``): the frames of its chunks that wait for the
rest of their frames (:func:`live_level_frames`); with z downsampling, pairs of planes
of the level above whose partner has not come yet (at most the frames between two z
planes in index order, plus one per thread); per thread, one chunk of staging and the
accumulators of the downsampling; the staging of its open shards.

A thread that handles a chunk batch of level 0 makes the level frames of all its
frames at once, and without z downsampling they fill one batch of each level (level
chunks have level 0's extent along t, c and z), which is then complete and written:
so each thread holds at most one batch of each level. With z downsampling a level
batch takes planes from two batches of the level above and may wait for the second,
as level 0's batches wait for their frames (``min_ring_frames``).

Pure: no I/O, no threads.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from acqwriter.format.versions import array_document
from acqwriter.plan.layout import FrameLayout
from acqwriter.plan.pyramid import level_spec
from acqwriter.plan.sharding import SEGMENT_BYTES

if TYPE_CHECKING:
    from acqwriter.spec.model import StreamSpec

__all__ = ["LiveLevel", "live_level_bytes", "live_level_frames", "live_levels"]


@dataclass(frozen=True)
class LiveLevel:
    """One lower level written during acquisition: its number, spec and layout."""

    index: int
    spec: StreamSpec
    layout: FrameLayout

    def array_document(self) -> dict[str, Any]:
        """Its array metadata as first written (the first axis empty)."""
        layout = self.layout
        return array_document(
            self.spec, layout.array_shape(0), layout.chunk_shape, layout.shard_shape
        )


def live_levels(
    spec: StreamSpec, shapes: list[tuple[int, ...]], *, grows: bool
) -> tuple[LiveLevel, ...]:
    """The live levels 1.. of an image of ``spec`` whose lower levels have ``shapes``
    (none unless ``pyramid.when`` is ``"live"``)."""
    if spec.pyramid.when != "live":
        return ()
    out = []
    for k, shape in enumerate(shapes, start=1):
        lspec = level_spec(spec, shape, grows=grows)
        out.append(LiveLevel(k, lspec, FrameLayout(lspec)))
    return tuple(out)


def z_stride(layout: FrameLayout) -> int:
    """Frames between two neighbouring z planes in index order (0: no z axis)."""
    if "z" not in layout.outer_dims:
        return 0
    i = layout.outer_dims.index("z")
    return math.prod(s or 1 for s in layout.outer_sizes[i + 1 :])


def live_level_frames(layout: FrameLayout, threads: int, *, downsample_z: bool) -> int:
    """The frames a live level of ``layout`` holds at most, made by ``threads`` threads
    (see the module docstring)."""
    frames = threads * layout.frames_per_chunk
    return frames + (layout.min_ring_frames if downsample_z else 0)


def live_level_bytes(
    source: FrameLayout, levels: tuple[LiveLevel, ...], threads: int, *, downsample_z: bool
) -> int:
    """The memory ``levels`` hold at most (see the module docstring); ``source`` is
    level 0's layout, ``threads`` the threads that make level frames (the compressors,
    and the producer or the closing thread, which compress beside them)."""
    total = 0
    above = source
    for level in levels:
        layout = level.layout
        total += live_level_frames(layout, threads, downsample_z=downsample_z) * layout.frame_bytes
        total += threads * (layout.chunk_bytes + above.frame_bytes)  # staging, accumulators
        if downsample_z and "z" in source.outer_dims:
            total += (z_stride(above) + threads) * 2 * above.frame_bytes
        if layout.shards is not None:
            total += layout.extra_staging_bytes + max(SEGMENT_BYTES, layout.chunk_bytes)
        above = layout
    return total
