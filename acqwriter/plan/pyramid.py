"""Which pyramid levels an image gets, and why none when it gets none.

Levels are planned from the image's size, never from its chunking: a viewer needs the
lower levels of a 2048² image whether that image is stored as one chunk per frame or
as 256² tiles. Level k+1 halves y and x (and z when ``downsample_z``); with
``levels="auto"`` levels are added until the largest of y and x is at most
:data:`VIEWER_SIZE` pixels (a size a viewer shows whole, as ngff-zarr and ome-zarr-py
stop), capped by ``max_levels`` (level 0 included). An integer ``levels`` asks for
exactly that many levels, still stopping where a level would be 1×1.

Each level gets its own chunks: the level-0 chunk shape clipped to the level's shape,
so a whole-frame chunk stays a whole frame at every level and a tiled image keeps its
tiles until a level is smaller than one.

Pure arithmetic over a spec: the writer, the offline builder, the metadata and the
tests share it.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from acqwriter.spec.model import StreamSpec

__all__ = [
    "VIEWER_SIZE",
    "level_chunks",
    "level_factors",
    "level_spec",
    "no_pyramid_reason",
    "plan_levels",
]

# The largest y or x, in pixels, of the smallest level "auto" plans: small enough that a
# viewer shows the whole image from one level, the size ngff-zarr and ome-zarr-py stop at
VIEWER_SIZE = 256


def plan_levels(spec: StreamSpec, shape: tuple[int, ...]) -> list[tuple[int, ...]]:
    """Shapes of levels 1.. for a level-0 ``shape`` (empty: no lower level; see
    :func:`no_pyramid_reason`), whether or not ``pyramid.enabled`` (the writer checks
    that; ``acqwriter pyramid`` builds them anyway)."""
    pyr = spec.pyramid
    shapes: list[tuple[int, ...]] = []
    current = tuple(shape)
    want = pyr.max_levels if pyr.levels == "auto" else pyr.levels
    while len(shapes) + 1 < want:
        if pyr.levels == "auto" and max(current[-2], current[-1]) <= VIEWER_SIZE:
            break
        if current[-2] == 1 and current[-1] == 1:
            break
        nxt = list(current)
        for i, axis in enumerate(spec.dims):
            if axis in "yx" or (axis == "z" and pyr.downsample_z):
                nxt[i] = math.ceil(current[i] / 2)
        current = tuple(nxt)
        shapes.append(current)
    return shapes


def level_factors(spec: StreamSpec, level: int) -> tuple[int, ...]:
    """How much level ``level`` is downsampled from level 0 along each axis."""
    return tuple(
        2**level if axis in "yx" or (axis == "z" and spec.pyramid.downsample_z) else 1
        for axis in spec.dims
    )


def level_chunks(spec: StreamSpec, shape: tuple[int, ...]) -> tuple[int, ...]:
    """The chunk shape of a level of ``shape``: level 0's, clipped to the level."""
    return tuple(min(c, s) for c, s in zip(spec.resolved_chunks(), shape, strict=True))


def no_pyramid_reason(spec: StreamSpec, *, rebuild: bool = False) -> str | None:
    """Why an image of ``spec`` gets no level below level 0, or None when it gets some.
    ``rebuild``: for ``acqwriter pyramid``, which builds levels whether or not the
    acquisition asked for them."""
    pyr = spec.pyramid
    if not pyr.enabled and not rebuild:
        return "no pyramid asked (pyramid.when is 'none')"
    height, width = spec.shape
    if pyr.levels == 1:
        return "pyramid.levels is 1 (level 0 only)"
    if pyr.levels == "auto" and pyr.max_levels == 1:
        return "pyramid.max_levels is 1 (level 0 only)"
    if height == 1 and width == 1:
        return "the frame is 1x1: nothing to downsample"
    if pyr.levels == "auto" and max(height, width) <= VIEWER_SIZE:
        return (
            f"the frame ({height}x{width}) is already at most {VIEWER_SIZE} pixels a side: "
            "a viewer shows it whole"
        )
    return None


def level_spec(spec: StreamSpec, shape: tuple[int, ...], *, grows: bool) -> StreamSpec:
    """The stream spec of a lower level written live: level 0's, with the level's frame
    shape, its chunks (:func:`level_chunks`; along a growing first axis level 0's, as
    that axis has no size to clip to), its z size when z is downsampled, and shard sizes
    of as many chunks per shard as level 0's. Only the engine's frame arithmetic reads
    it (:class:`acqwriter.plan.layout.FrameLayout`); it is never validated or stored."""
    chunks = list(level_chunks(spec, shape))
    base = spec.resolved_chunks()
    if grows:
        chunks[0] = base[0]
    update: dict[str, object] = {
        "shape": (shape[-2], shape[-1]),
        "chunks": dict(zip(spec.dims, chunks, strict=True)),
    }
    if "z" in spec.outer_dims and spec.pyramid.downsample_z and "z" in spec.sizes:
        update["sizes"] = {**spec.sizes, "z": shape[spec.dims.index("z")]}
    if isinstance(spec.shards, dict):
        per_axis = dict(zip(spec.dims, zip(base, chunks, strict=True), strict=True))
        update["shards"] = {
            axis: size // per_axis[axis][0] * per_axis[axis][1]
            for axis, size in spec.shards.items()
        }
    return spec.model_copy(update=update)
