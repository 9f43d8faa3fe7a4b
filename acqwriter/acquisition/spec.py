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

from pydantic import Field, StrictInt, field_validator, model_validator

from acqwriter.spec.model import (
    FiniteFloat,
    PositiveFloat,
    PositiveInt,
    StreamSpec,
    StrictModel,
    WriterOptions,
)
from acqwriter.validation import SpecError

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


_SIM_ONLY_HINTS = {
    "shape": "use roi and binning to change the frame",
    "dtype": "its pixel type follows its own bit depth",
    "fps": "its frame rate follows from its exposure: use exposure_ms (--exposure)",
    "sim_faults": "faults are simulated by the 'sim' camera only",
}


class StagePosition(StrictModel):
    """A place the XY stage visits (µm); its ``name`` is its image's key."""

    x: FiniteFloat
    y: FiniteFloat
    name: str | None = Field(default=None, min_length=1)


class AcquisitionSpec(WriterOptions):
    """Camera + acquisition length + every writer option (see :class:`WriterOptions`).

    A camera stream records what the camera delivers, back to back, without moving
    anything: its ``t`` scale is the camera's measured frame interval
    (:mod:`acqwriter.format.display`). Options that ask the hardware to do something
    (``c`` or ``z`` sizes over 1, several channels, a ``time_increment``) make it a
    multi-dimensional acquisition instead: the useq ``sequence`` they describe is run by
    pymmcore-plus's MDA engine, which switches channels (the core's ``Channel`` group),
    moves the focus (``z_step`` apart) and waits between time points; so does a
    ``sequence`` given as such (``--sequence``).

    Positions: ``positions`` (N places one field of view apart along x, from where the
    stage is) or ``stage_positions`` (names and coordinates): the XY stage visits each in
    turn for every time point, and each position is its own image of a collection; the
    length then counts the frames of each position.

    Length: ``frames``, ``timepoints`` (or ``sizes.t``, which also bounds the array),
    or ``duration``. Frames per time point are the product of the other axes' sizes; a
    frame count that is not a whole number of time points is refused unless
    ``allow_partial``, and a ``duration`` ends at a time point's end."""

    camera: str = "sim"
    shape: tuple[PositiveInt, PositiveInt] | None = None
    dtype: str | None = None
    frames: PositiveInt | None = None
    timepoints: PositiveInt | None = None
    allow_partial: bool = False
    duration: PositiveFloat | None = None
    exposure_ms: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    fps: PositiveFloat | None = None
    roi: tuple[StrictInt, StrictInt, StrictInt, StrictInt] | None = None
    binning: PositiveInt | None = None
    seed: StrictInt = 0
    sim_faults: SimFaultSpec | None = None
    frame_timeout_s: PositiveFloat = 5.0
    positions: PositiveInt | None = None
    stage_positions: list[StagePosition] | None = None
    sequence: dict[str, Any] | None = None  # a useq MDASequence's fields

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

    @model_validator(mode="before")
    @classmethod
    def _channel_axis(cls, data: Any) -> Any:
        """A channel named without ``dims`` adds a ``c`` axis (``tcyx``) to carry it."""
        if isinstance(data, dict) and data.get("channels") and "dims" not in data:
            data = {**data, "dims": "tcyx"}
        return data

    @field_validator("sequence")
    @classmethod
    def _sequence(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is None:
            return value
        from acqwriter.mda.sequence import parse_sequence

        try:
            parse_sequence(value)
        except SpecError as exc:
            raise ValueError(
                str(exc).removeprefix("sequence.").removeprefix("sequence: ")
            ) from None
        return value

    @model_validator(mode="after")
    def _length_and_camera(self) -> AcquisitionSpec:
        if self.sequence is not None:
            return self._sequence_says_it()
        if self.camera != "sim":
            for name, hint in _SIM_ONLY_HINTS.items():
                if getattr(self, name) is not None:
                    raise ValueError(
                        f"{name}: only the simulated camera ('sim') takes it; camera "
                        f"{self.camera!r} has its own ({hint})"
                    )
        implied = self._implied_sequence()
        if implied is not None:  # channels, z planes or an interval: an MDA does them
            object.__setattr__(self, "sequence", implied)
            return self
        self._nothing_moves()
        given = self.stage_positions
        if self.positions is not None and given is not None and self.positions != len(given):
            raise ValueError(
                f"positions: {self.positions} disagrees with the {len(given)} "
                "stage_positions given; give one of them"
            )
        names = [p.name for p in self.stage_positions or [] if p.name]
        if len(set(names)) != len(names):
            raise ValueError("stage_positions: expected distinct names")
        per_tp = self.frames_per_timepoint
        sized = self.sizes.get("t") if self.dims[0] == "t" else None
        if self.timepoints is not None and sized is not None and self.timepoints != sized:
            raise ValueError(
                f"timepoints: {self.timepoints} disagrees with sizes.t = {sized}; give one"
            )
        timepoints = self.timepoints or sized
        if timepoints is not None:
            wanted = timepoints * per_tp
            if self.frames is not None and self.frames != wanted:
                raise ValueError(
                    f"frames: {self.frames} disagrees with {timepoints} time point(s) of "
                    f"{per_tp} frame(s) = {wanted}; give one of them"
                )
            object.__setattr__(self, "frames", wanted)
        if self.frames is None and self.duration is None:
            raise ValueError(
                "frames: expected a frame count, a number of time points or a duration"
            )
        if self.frames is not None and self.duration is not None:
            raise ValueError(
                "duration: give a length in frames (or time points) or a duration, not "
                "both (stop it early with ctl stop or Ctrl-C)"
            )
        if self.frames is not None and self.frames % per_tp and not self.allow_partial:
            raise ValueError(
                f"frames: {self.frames} is not a whole number of time points of {per_tp} "
                f"frames ({self._per_tp_text()}); give timepoints, a multiple of {per_tp}, "
                "or allow_partial (--allow-partial) to record an incomplete last time point"
            )
        return self

    def _implied_sequence(self) -> dict[str, Any] | None:
        """The useq sequence the plain options describe when they ask the hardware to do
        something (switch channels, move the focus, wait between time points), or None
        for a camera stream. Channels are the core's ``Channel`` config group's; z planes
        are ``z_step`` apart around the current focus."""
        sizes = {a: self.sizes.get(a) or 1 for a in self.dims[1:-2]}
        n_c = max(sizes.get("c", 1), len(self.channels))
        if n_c <= 1 and sizes.get("z", 1) <= 1 and self.time_increment is None:
            return None
        if self.dims[0] != "t":
            raise ValueError(
                "dims: expected 't' first (time points of channels and z planes), "
                f"got {self.dims!r}"
            )
        if n_c > 1 and len(self.channels) != n_c:
            raise ValueError(
                f"channels: name the {n_c} channels to switch between (--channel NAME, a "
                "configuration of the core's Channel group)"
            )
        if self.duration is not None:
            raise ValueError(
                "duration: channels, z planes or an interval run as a multi-dimensional "
                "acquisition; give its length in time points (--timepoints)"
            )
        for name in ("positions", "stage_positions"):
            if getattr(self, name) is not None:
                raise ValueError(
                    f"{name}: with channels, z planes or an interval, give the positions "
                    "in a sequence file (--sequence)"
                )
        per_tp = n_c * sizes.get("z", 1)
        timepoints = self.timepoints or (self.sizes.get("t") if self.dims[0] == "t" else None)
        if timepoints is None and self.frames is not None:
            if self.frames % per_tp:
                raise ValueError(
                    f"frames: {self.frames} is not a whole number of time points of {per_tp} "
                    "frames; give timepoints"
                )
            timepoints = self.frames // per_tp
        if timepoints is None:
            raise ValueError("timepoints: expected the number of time points (--timepoints)")
        sequence: dict[str, Any] = {
            "axis_order": "t" + "".join(a for a in self.dims[1:-2] if a in "cz"),
            "time_plan": {"interval": self.time_increment or 0, "loops": timepoints},
        }
        if self.channels:
            sequence["channels"] = [channel.name for channel in self.channels]
        if sizes.get("z", 1) > 1:
            sequence["z_plan"] = {"range": (sizes["z"] - 1) * self.z_step, "step": self.z_step}
        return sequence

    def _sequence_says_it(self) -> AcquisitionSpec:
        """With a sequence, what it describes is not given twice (the sequence wins
        nowhere silently: a second description is refused, naming it)."""
        given = self.model_fields_set
        for name in ("frames", "timepoints", "duration", "positions", "stage_positions"):
            if name in given and getattr(self, name) is not None:
                raise ValueError(
                    f"{name}: the sequence says it (its time plan, positions and "
                    "channels); give it in the sequence"
                )
        for name in ("sizes", "channels", "time_increment", "dims"):
            if name in given and getattr(self, name):
                raise ValueError(
                    f"{name}: the sequence says it (its time plan, positions and "
                    "channels); give it in the sequence"
                )
        return self

    def _nothing_moves(self) -> None:
        """A camera stream is a time series of frames taken back to back: its first
        axis is ``t`` (channels, z planes and intervals run as an MDA instead)."""
        if "t" not in self.dims:
            raise ValueError(
                f"dims: a camera stream is a time series; expected a 't' axis first, got "
                f"{self.dims!r} (z stacks, channels and intervals are recorded with "
                "--sizes/--channel/--z-step/--time-increment or --sequence, which run a "
                "multi-dimensional acquisition)"
            )

    @property
    def position_count(self) -> int:
        """Positions the stage visits (1: it does not move)."""
        if self.stage_positions is not None:
            return len(self.stage_positions)
        return self.positions or 1

    @property
    def frames_per_timepoint(self) -> int:
        """Frames in one step of the first axis (product of the other axes' sizes)."""
        n = 1
        for axis in self.dims[1:-2]:
            n *= self.sizes.get(axis) or (len(self.channels) if axis == "c" else 1) or 1
        return n

    def _per_tp_text(self) -> str:
        return " x ".join(f"{a}={self.sizes.get(a) or 1}" for a in self.dims[1:-2]) or "t only"

    def stream_spec(self, shape: tuple[int, int], dtype: str) -> StreamSpec:
        """The writer spec for a camera that delivers ``shape`` frames of ``dtype``."""
        data = {name: getattr(self, name) for name in WriterOptions.model_fields}
        data.update(shape=shape, dtype=dtype)
        if data.get("expected_frames") is None and self.frames is not None:
            data["expected_frames"] = self.frames
        return StreamSpec.parse(data)
