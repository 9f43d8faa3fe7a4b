"""An image's metadata from its spec: axes and units, levels and their scale, the
``omero`` display settings, where the stage put it, and the ``acqwriter`` attributes
(writer version, state, where the per-frame metadata lives, the spec, what was
measured). Builds the version-neutral :class:`~acqwriter.format.model.GroupMetadata`
that each version renders (:mod:`acqwriter.format.versions`); never writes.

Dataset layout of one image::

    out.ome.zarr/
      zarr.json                 root group: ome (multiscales, omero), acqwriter
      0/zarr.json, 0/c/...      full resolution, axes = dims (e.g. t, c, z, y, x)
      1/, 2/, ...               pyramid levels
      0/frame_metadata.jsonl    one JSON object per frame index (see docs/format.md)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from acqwriter._version import __version__
from acqwriter.format.display import measured_from
from acqwriter.format.keys import LEVEL0
from acqwriter.format.model import Axis, GroupMetadata, ImageLevel, ImageMetadata
from acqwriter.format.placement import image_placement
from acqwriter.spec.model import StreamSpec
from acqwriter.spec.palette import channel_color

__all__ = [
    "FINISHED_STATES",
    "FRAME_METADATA_KEY",
    "STAGE_KEY",
    "TRANSLATION_KEY",
    "Level",
    "carried_attrs",
    "frame_metadata_key",
    "image_group",
    "level0",
    "time_scale",
]

# States written by a writer (or recover) that finished the dataset; ``acquiring`` and
# ``recovering`` mean a live process owns it, or that process died.
FINISHED_STATES = ("complete", "aborted", "failed", "recovered")

# Per-frame metadata lives inside the level-0 array's folder: Zarr readers never list an
# array's folder for members (at the root, zarr-python warns that it "is not recognized
# as a component of a Zarr hierarchy"), and it stays with the image it describes.
FRAME_METADATA_KEY = LEVEL0.frame_metadata
TRANSLATION_KEY = "translation"  # attributes.acqwriter: the image's origin in its own axes
STAGE_KEY = "stage"  # attributes.acqwriter: stage x, y (z) and pixel affine it was taken at
LEGACY_FRAME_METADATA_KEY = "frame_metadata.jsonl"  # datasets written before the move


def frame_metadata_key(acq_attrs: dict[str, Any] | None) -> str:
    """Where a dataset keeps its per-frame metadata: the key its root group names
    (``attributes.acqwriter.frame_metadata``), else the legacy root location."""
    key = (acq_attrs or {}).get("frame_metadata")
    if isinstance(key, str) and key and not key.startswith("/") and ".." not in key.split("/"):
        return key
    return LEGACY_FRAME_METADATA_KEY


_AXIS_TYPE = {"t": "time", "c": "channel", "z": "space", "y": "space", "x": "space"}


@dataclass(frozen=True)
class Level:
    """One multiscale level: its path and per-axis downsampling factor."""

    path: str
    factors: tuple[int, ...]  # per axis in dims order (1 for t and c)
    method: str = "mean"

    def scale(self, spec: StreamSpec, dt: float | None = None) -> list[float]:
        base = _base_scale(spec, dt)
        return [b * f for b, f in zip(base, self.factors, strict=True)]

    def translation(self, spec: StreamSpec, dt: float | None = None) -> list[float] | None:
        # The mean of a 2^k block is centred half a (level-0) pixel per factor step off the
        # block's first pixel; nearest keeps the first pixel, so no shift.
        if self.method != "mean" or all(f == 1 for f in self.factors):
            return None
        base = _base_scale(spec, dt)
        return [(f - 1) / 2 * b for b, f in zip(base, self.factors, strict=True)]


def level0(spec: StreamSpec) -> Level:
    return Level("0", tuple(1 for _ in spec.dims))


# seconds per OME-NGFF time unit, to express a measured interval in the spec's unit
_SECONDS = {
    "nanosecond": 1e-9,
    "microsecond": 1e-6,
    "millisecond": 1e-3,
    "second": 1.0,
    "minute": 60.0,
    "hour": 3600.0,
    "day": 86400.0,
}


def time_scale(spec: StreamSpec, measured_s: float | None) -> tuple[float, str | None]:
    """The ``t`` scale and unit: the spec's ``time_increment`` when the user gave one;
    otherwise the measured interval (in ``time_unit`` where convertible, else seconds);
    before anything is measured, 1 with no unit (a time-point index, not a duration)."""
    if spec.time_increment is not None:
        return float(spec.time_increment), spec.time_unit
    if measured_s is None:
        return 1.0, None
    if spec.time_unit in _SECONDS:
        return measured_s / _SECONDS[spec.time_unit], spec.time_unit
    return measured_s, "second"


def _base_scale(spec: StreamSpec, dt: float | None = None) -> list[float]:
    per_axis = {
        "t": time_scale(spec, dt)[0],
        "c": 1.0,
        "z": spec.z_step,
        "y": spec.pixel_size,
        "x": spec.pixel_size,
    }
    return [float(per_axis[a]) for a in spec.dims]


def _axes(spec: StreamSpec, dt: float | None = None) -> tuple[Axis, ...]:
    units = {
        "t": time_scale(spec, dt)[1],
        "z": spec.z_unit,
        "y": spec.pixel_unit,
        "x": spec.pixel_unit,
    }
    return tuple(Axis(axis, _AXIS_TYPE[axis], units.get(axis)) for axis in spec.dims)


def _omero(spec: StreamSpec, measured_windows: list[Any] | None = None) -> dict[str, Any]:
    """``omero`` channels: names and colours from the spec; each display window is the
    one the spec gives, else the one measured from the data written (see
    :mod:`acqwriter.format.display`), else the dtype's range (before any frame was seen)."""
    sizes = dict(zip(spec.outer_dims, spec.outer_sizes(), strict=True))
    n_channels = sizes.get("c") or 1
    dtype = np.dtype(spec.dtype)
    if dtype.kind in "ui":
        lo, hi = float(np.iinfo(dtype).min), float(np.iinfo(dtype).max)
    else:
        lo, hi = 0.0, 1.0
    channels = []
    for i in range(n_channels):
        given = spec.channels[i] if i < len(spec.channels) else None
        measured = measured_windows[i] if measured_windows and i < len(measured_windows) else None
        if given and given.window:
            start, end = given.window
        elif measured:
            start, end = measured
        else:
            start, end = lo, hi
        channels.append(
            {
                "label": given.name if given else f"Channel {i}",
                "color": (given.color if given else None)
                or channel_color(given.name if given else None, i, n_channels),
                "active": True,
                "coefficient": 1.0,
                "family": "linear",
                "inverted": False,
                "window": {"min": lo, "max": hi, "start": float(start), "end": float(end)},
            }
        )
    return {
        "channels": channels,
        "rdefs": {
            "model": "greyscale" if n_channels == 1 else "color",
            "defaultT": 0,
            "defaultZ": 0,
        },
    }


def image_group(
    spec: StreamSpec,
    levels: list[Level],
    *,
    state: str,
    extra: dict[str, Any] | None = None,
    no_pyramid: str | None = None,
) -> GroupMetadata:
    """The image group of ``spec`` with ``levels``. ``no_pyramid``: why the image gets
    no lower level, as the plan says (:mod:`acqwriter.plan.pyramid`).

    ``extra`` entries go into ``attributes.acqwriter``; its ``measured`` entry (time
    increment, display windows: :mod:`acqwriter.format.display`) also sets the ``t``
    scale and the ``omero`` windows, and its ``translation`` and ``stage`` entries
    where the stage put the image (:mod:`acqwriter.format.placement`), so viewers
    place positions and tiles where they were acquired."""
    measured = measured_from(extra)
    dt = measured.get("time_increment_s")
    given = extra or {}
    placement = image_placement(
        spec.dims,
        spec.shape,
        spec.pixel_size,
        given.get(TRANSLATION_KEY) or None,
        given.get(STAGE_KEY) or None,
        spec.pixel_unit,
    )
    image_levels = []
    for level in levels:
        offset = level.translation(spec, dt)
        image_levels.append(
            ImageLevel(
                level.path, tuple(level.scale(spec, dt)), None if offset is None else tuple(offset)
            )
        )
    method = spec.pyramid.method
    description = (
        f"2x {method} downsampling in y, x" + (" and z" if spec.pyramid.downsample_z else "")
        if no_pyramid is None
        else f"a single level: {no_pyramid}"
    )
    image = ImageMetadata(
        name=spec.name or spec.out.name.removesuffix(".zarr").removesuffix(".ome"),
        axes=_axes(spec, dt),
        levels=tuple(image_levels),
        # type/metadata describe how levels 1.. are made; written from the start (strict
        # NGFF readers require both keys even for a single level)
        method=method,
        method_metadata={
            "description": description,
            "method": f"acqwriter.post.downsample.downsample:{method}",
            "version": __version__,
        },
        omero=_omero(spec, measured.get("channel_windows")),
        placement=placement,
    )
    acq: dict[str, Any] = {
        "version": __version__,
        "state": state,
        "frame_metadata": FRAME_METADATA_KEY,
        "spec": json.loads(spec.model_dump_json()),
    }
    if extra:
        acq.update(extra)
    return GroupMetadata(image=image, attributes={"acqwriter": acq})


def carried_attrs(acqwriter_attrs: dict[str, Any]) -> dict[str, Any]:
    """The ``attributes.acqwriter`` entries that :func:`image_group` does not generate
    itself (summary, recovery account …): what a rewrite of the group must carry over."""
    own = ("version", "state", "spec")  # frame_metadata is carried: old datasets keep theirs
    return {k: v for k, v in acqwriter_attrs.items() if k not in own}
