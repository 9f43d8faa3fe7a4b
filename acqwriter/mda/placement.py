"""Where a stage position lands in the image's own axes (the ``translation`` of a
position, a grid field or a well).

Micro-Manager relates the camera to the stage by the pixel configuration's affine
(``getPixelSizeAffine``: stage µm = A · (pixel x, pixel y, 1)). A viewer lays images
out in their own axes (y down), so a stage displacement is turned into image axes by
A's inverse and scaled by the pixel size: images then sit beside each other as the
camera saw them, whichever way the stage's axes point.

An identity affine (Micro-Manager's value when no one calibrated it) says nothing about
the stage's axes; it is then assumed that the stage's y grows upwards and x to the
right — the convention of useq's grid and well-plate plans, where grid row 1 and plate
row B lie at a smaller y than row 0 and row A — so image y is the stage's y negated.
The assumption is recorded beside the data (``attributes.acqwriter.mda.stage_to_image``).
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["StageToImage", "image_axes"]

_IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


class StageToImage:
    """Stage (x, y) in µm → {"x", "y"} in the image's axes, µm."""

    def __init__(self, affine: tuple[float, ...] | None, pixel_size: float) -> None:
        self.calibrated = affine is not None and tuple(affine) != _IDENTITY
        if self.calibrated:
            a, b, _, d, e, _ = affine  # type: ignore[misc]
            det = a * e - b * d
            self.calibrated = math.isfinite(det) and abs(det) > 1e-12
        if self.calibrated:
            self._inverse = (e / det, -b / det, -d / det, a / det)
            self._pixel = pixel_size
            self.describe = {"affine": list(affine), "assumed": None}  # type: ignore[arg-type]
        else:
            self._inverse = (1.0, 0.0, 0.0, -1.0)
            self._pixel = 1.0
            self.describe = {
                "affine": list(affine) if affine is not None else None,
                "assumed": "uncalibrated (identity) pixel affine: stage y up, x right; "
                "image y is the stage y negated",
            }

    def __call__(self, x: float, y: float) -> dict[str, float]:
        i00, i01, i10, i11 = self._inverse
        px, py = i00 * x + i01 * y, i10 * x + i11 * y
        return {"x": px * self._pixel + 0.0, "y": py * self._pixel + 0.0}


def image_axes(core: Any) -> StageToImage:
    """The stage-to-image mapping of ``core``'s current pixel configuration."""
    affine = None
    pixel = 1.0
    if core is not None:
        try:
            affine = tuple(float(v) for v in core.getPixelSizeAffine())
            pixel = float(core.getPixelSizeUm()) or 1.0
        except Exception:  # no pixel configuration, or a core without one: assume
            affine = None
    return StageToImage(affine, pixel)
