"""What to acquire: a camera source, how many frames, and how to write them.

:class:`AcquisitionSpec` is the one description shared by ``acqwriter acquire`` (its
options and ``--spec`` file) and, later, the daemon's ``configure`` command: the same
field names everywhere (``camera``, ``shape``, ``dtype``, ``frames``, ``duration``,
``codec``, ``chunks``, ``out`` …). It holds every :class:`WriterOptions` field plus the
camera side; once the camera is open its real frame shape and dtype turn it into a
:class:`StreamSpec` with :meth:`AcquisitionSpec.stream_spec`.

``camera`` is ``"sim"`` (our Python simulator), ``"demo"`` (Micro-Manager's
DemoCamera from mm-test-adapters) or the path of a Micro-Manager configuration file.
Nothing here imports Micro-Manager.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import Field, ValidationError, field_validator, model_validator

from acqwriter.spec import (
    PositiveFloat,
    PositiveInt,
    StreamSpec,
    StrictModel,
    WriterOptions,
    format_validation_error,
)

__all__ = ["AcquisitionSpec", "parse_duration"]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|sec|m|min|h)?\s*$")
_UNIT_S = {"ms": 1e-3, "s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, None: 1.0}


def parse_duration(value: Any) -> float:
    """``10``, ``"10s"``, ``"500ms"``, ``"2m"``, ``"1.5h"`` → seconds."""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration such as 10s, 500ms or 2m, got {value!r}")
    if isinstance(value, int | float):
        return float(value)
    match = _DURATION.match(str(value))
    if not match:
        raise ValueError(f"expected a duration such as 10s, 500ms or 2m, got {value!r}")
    return float(match.group(1)) * _UNIT_S[match.group(2)]


class SimFaultSpec(StrictModel):
    """Faults for the simulated camera (testing a pipeline's handling of a bad camera):
    stall N ms before given frame numbers, skip frame numbers (camera-side drops), stop
    delivering after N frames."""

    stall_ms: dict[int, PositiveFloat] = Field(default_factory=dict)
    skip: list[Annotated[int, Field(ge=0)]] = Field(default_factory=list)
    stop_after: Annotated[int, Field(ge=0)] | None = None


class AcquisitionSpec(WriterOptions):
    """Camera + acquisition length + every writer option (see :class:`WriterOptions`)."""

    camera: str = "sim"
    shape: tuple[PositiveInt, PositiveInt] | None = None
    dtype: str | None = None
    frames: PositiveInt | None = None
    duration: PositiveFloat | None = None
    exposure_ms: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    fps: PositiveFloat | None = None
    roi: tuple[int, int, int, int] | None = None
    binning: PositiveInt | None = None
    seed: int = 0
    sim_faults: SimFaultSpec | None = None
    frame_timeout_s: PositiveFloat = 5.0

    @field_validator("duration", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> Any:
        return None if value is None else parse_duration(value)

    @field_validator("camera")
    @classmethod
    def _camera(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("expected 'sim', 'demo' or the path of a Micro-Manager config file")
        return value.strip()

    @field_validator("dtype")
    @classmethod
    def _dtype(cls, value: str | None) -> str | None:
        if value is not None and value not in ("uint8", "uint16"):
            raise ValueError("expected uint8 or uint16 (the simulated camera's pixel types)")
        return value

    @field_validator("roi")
    @classmethod
    def _roi(cls, value: tuple[int, int, int, int] | None) -> Any:
        if value is not None:
            x, y, w, h = value
            if x < 0 or y < 0 or w <= 0 or h <= 0:
                raise ValueError(
                    "expected (x, y, width, height) with x, y >= 0 and width, height > 0"
                )
        return value

    @model_validator(mode="after")
    def _length_and_camera(self) -> AcquisitionSpec:
        if self.frames is None and self.duration is None:
            raise ValueError("frames: expected a frame count or a duration (or both)")
        if self.camera != "sim":
            for name in ("shape", "dtype", "fps", "sim_faults"):
                if getattr(self, name) is not None:
                    raise ValueError(
                        f"{name}: only the simulated camera ('sim') takes it; camera "
                        f"{self.camera!r} has its own (use roi and binning to change the frame)"
                    )
        return self

    def stream_spec(self, shape: tuple[int, int], dtype: str) -> StreamSpec:
        """The writer spec for a camera that delivers ``shape`` frames of ``dtype``."""
        data = {name: getattr(self, name) for name in WriterOptions.model_fields}
        data.update(shape=shape, dtype=dtype)
        if data.get("expected_frames") is None and self.frames is not None:
            data["expected_frames"] = self.frames
        return StreamSpec.parse(data)

    @classmethod
    def parse(cls, data: Any) -> AcquisitionSpec:
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise format_validation_error(exc) from None
