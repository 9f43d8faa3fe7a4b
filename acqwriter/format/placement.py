"""Where the stage put an image: the affine map from the image's physical coordinates
(µm along its own axes, y down) to the stage's (µm along the stage's x, y and z).

Micro-Manager relates camera pixels to the stage by the pixel configuration's affine
(``getPixelSizeAffine``: stage µm = A · (pixel x, pixel y, 1)), recorded with the
stage position beside each image (``attributes.acqwriter.stage``). A feature at pixel
``p`` of an image taken with the stage at ``s`` sits at ``s + A·(p - centre)`` in the
stage's coordinates: the stage position is the centre of the field of view. In
physical units (pixel × pixel size) the linear part is ``A / pixel_size`` — a rotation,
flip or axis swap, the identity when camera and stage axes agree.

An identity affine is Micro-Manager's value when no one calibrated it: it says nothing
about the stage's axes. The stage's y is then assumed to grow upwards and x to the
right (the convention of useq's grid and well-plate plans), so the stage's y is the
image's y negated — the assumption :mod:`acqwriter.mda.placement` makes for OME-NGFF
0.4 and 0.5 translations, and which the image's attributes record.

The focus position of an image's first plane is the stage z of its ``z = 0``; time and
channel pass through unchanged. Stage positions are in µm; an image whose pixel size is
in another length unit gets its placement in that unit.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from acqwriter.format.model import Placement

__all__ = ["UNCALIBRATED", "image_placement", "linear_part", "stage_attributes"]

_IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
UNCALIBRATED = (
    "uncalibrated (identity) pixel affine: stage y up, x right; the stage's y is the "
    "image's y negated"
)


def _clean(value: float) -> float:
    """``value`` with the rounding of a division by the pixel size taken off (an
    affine of 0.65 over a pixel size of 0.65 is 1, not 0.9999999999999999)."""
    for exact in (0.0, 1.0, -1.0):
        if abs(value - exact) < 1e-12:
            return exact
    return value


def calibrated(affine: Sequence[float] | None) -> bool:
    """Whether ``affine`` says how the stage's axes lie (not missing, not the identity)."""
    return affine is not None and tuple(float(v) for v in affine) != _IDENTITY


def stage_attributes(stage: Mapping[str, Any]) -> dict[str, Any]:
    """What ``attributes.acqwriter.stage`` records: the stage position, the affine and,
    when it is uncalibrated, the assumption the placement rests on."""
    out = {k: v for k, v in stage.items() if v is not None}
    out["affine"] = list(stage["affine"]) if stage.get("affine") is not None else None
    if not calibrated(stage.get("affine")):
        out["assumed"] = UNCALIBRATED
    return out


# the length units OME-NGFF names, per µm (a stage reports µm)
PER_MICROMETER = {
    "angstrom": 1e4,
    "nanometer": 1e3,
    "micrometer": 1.0,
    "millimeter": 1e-3,
    "centimeter": 1e-4,
    "meter": 1e-6,
}


def linear_part(
    affine: Sequence[float] | None, pixel_size: float, per_um: float = 1.0
) -> tuple[float, ...]:
    """(xx, xy, yx, yy): stage length per physical length of the image, from
    Micro-Manager's affine (µm per pixel; the stage-y-up assumption when it is missing
    or the identity); ``per_um``: the image's length unit per µm."""
    if not calibrated(affine):
        return (1.0, 0.0, 0.0, -1.0)
    a, b, _, d, e, _ = (float(v) for v in affine)
    return tuple(_clean(v * per_um / pixel_size) for v in (a, b, d, e))


def image_placement(
    dims: str,
    shape: tuple[int, int],
    pixel_size: float,
    translation: Mapping[str, float] | None,
    stage: Mapping[str, Any] | None,
    unit: str | None = "micrometer",
) -> Placement | None:
    """The placement of an image of axes ``dims`` and frame ``shape`` (rows, columns),
    pixels of ``pixel_size`` ``unit``.

    ``stage``: the stage position it was taken at (``x``, ``y``, optionally ``z``, µm)
    and the pixel affine (``affine``); ``translation``: its origin in its own axes,
    as OME-NGFF 0.4/0.5 store it. With neither, or a stage position and a pixel unit
    that is not a length acqwriter converts, the image is not placed (``None``)."""
    offset = None
    if translation:
        offset = tuple(float(translation.get(axis, 0.0)) for axis in dims)
    n = len(dims)
    per_um = PER_MICROMETER.get(unit or "")
    if not stage or "x" not in stage or "y" not in stage or per_um is None:
        return Placement.shift(offset, "translation", offset) if offset is not None else None
    rows = [list(r) for r in Placement.shift([0.0] * n, "stage").matrix]
    xx, xy, yx, yy = linear_part(stage.get("affine"), pixel_size, per_um)
    iy, ix = dims.index("y"), dims.index("x")
    cy, cx = (shape[0] - 1) / 2 * pixel_size, (shape[1] - 1) / 2 * pixel_size
    rows[ix][ix], rows[ix][iy] = xx, xy
    rows[iy][ix], rows[iy][iy] = yx, yy
    rows[ix][n] = float(stage["x"]) * per_um - (xx * cx + xy * cy)
    rows[iy][n] = float(stage["y"]) * per_um - (yx * cx + yy * cy)
    if "z" in dims:
        z0 = stage.get("z")
        if z0 is None and translation:
            z0 = translation.get("z")
        rows[dims.index("z")][n] = float(z0 or 0.0) * per_um
    return Placement(
        tuple(tuple(_clean(v) if j < n else v for j, v in enumerate(r)) for r in rows),
        offset,
        "stage",
    )
