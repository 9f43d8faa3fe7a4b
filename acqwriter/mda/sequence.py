"""A useq sequence checked before anything moves: fields, bounds and the core's names.

Three checks, each raising :class:`~acqwriter.validation.SpecError` with one line that
names the field:

* :func:`parse_sequence` validates a mapping (a sequence file, a daemon's ``configure``)
  as a useq ``MDASequence``. useq ignores keys it does not know, so a misspelt
  ``time_plans:`` would silently run one frame: every key is checked against the model
  it lands in (with a "did you mean"). Non-finite numbers (a position at ``.inf``, a z
  range of NaN) are refused by their path.
* :func:`check_bounds` refuses what cannot be planned or written sensibly before
  anything is expanded: useq's ``sizes`` and pymmcore-plus's engine expand the time
  plan into a list, so ``loops: 1e9`` would eat memory at ~650 MB/s. The time points of
  every time plan, the events of one time point and the images are bounded
  (:data:`MAX_TIMEPOINTS`, :data:`MAX_EVENTS_PER_TIMEPOINT`, :data:`MAX_IMAGES`), each
  counted without expanding the time plan.
* :func:`check_core` refuses channels (top level and every position's sub-sequence)
  that are not configurations of the core's channel group: pymmcore-plus would fail to
  set one, snap through the filter left in place and the data would carry a label that
  did not happen.
"""

from __future__ import annotations

import math
from typing import Any

from pydantic import BaseModel

from acqwriter.validation import SpecError, did_you_mean

__all__ = [
    "MAX_EVENTS_PER_TIMEPOINT",
    "MAX_IMAGES",
    "MAX_TIMEPOINTS",
    "check_bounds",
    "check_core",
    "parse_sequence",
    "sequence_channels",
    "timepoints",
]

# Time points of one time plan. useq and pymmcore-plus expand a time plan into a list
# (~0.2 s and ~100 MB per million): beyond this, a sequence is refused at once.
MAX_TIMEPOINTS = 1_000_000
# Events of one time point (positions × grid fields × channels × planes), read once to
# plan the images (~27 µs each: 200 000 is about 5 s).
MAX_EVENTS_PER_TIMEPOINT = 200_000
# Images (positions and grid fields) of one dataset: each is a group and arrays on disk.
MAX_IMAGES = 10_000


def parse_sequence(value: Any, prefix: str = "sequence") -> Any:
    """A useq ``MDASequence`` from ``value`` (a mapping or a sequence), checked as the
    module docstring says. Raises SpecError naming the field."""
    import useq
    from pydantic import ValidationError

    if isinstance(value, useq.MDASequence):
        sequence = value
    else:
        if not isinstance(value, dict):
            raise SpecError(f"{prefix}: expected a mapping of useq MDASequence fields")
        try:
            sequence = useq.MDASequence.model_validate(value)
        except ValidationError as exc:
            err = exc.errors(include_url=False)[0]
            loc = ".".join(str(p) for p in err["loc"] if not str(p).startswith("function-"))
            msg = str(err["msg"]).removeprefix("Value error, ")
            raise SpecError(f"{prefix}.{loc}: {msg}" if loc else f"{prefix}: {msg}") from None
        except (ValueError, TypeError) as exc:
            raise SpecError(f"{prefix}: {str(exc).strip().splitlines()[0]}") from None
        _unknown_keys(value, sequence, prefix)
    _finite(sequence.model_dump(mode="python"), prefix)
    check_bounds(sequence, prefix)
    return sequence


def _unknown_keys(given: Any, model: Any, path: str) -> None:
    """Every key of ``given`` is a field (or alias) of the model it became."""
    if isinstance(given, dict) and isinstance(model, BaseModel):
        fields = type(model).model_fields
        names = {name: name for name in fields}
        for name, info in fields.items():
            if info.alias:
                names[info.alias] = name
        for key, sub in given.items():
            if key not in names:
                raise SpecError(
                    f"{path}.{key}: not a field of {type(model).__name__}"
                    f"{did_you_mean(key, list(fields))}; expected one of {', '.join(fields)}"
                )
            _unknown_keys(sub, getattr(model, names[key], None), f"{path}.{key}")
    elif isinstance(given, list | tuple) and isinstance(model, list | tuple):
        for i, (sub, item) in enumerate(zip(given, model, strict=False)):
            _unknown_keys(sub, item, f"{path}[{i}]")


def _finite(value: Any, path: str) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise SpecError(f"{path}: expected a finite number, got {value}")
    if isinstance(value, dict):
        for key, sub in value.items():
            _finite(sub, f"{path}.{key}")
    elif isinstance(value, list | tuple):
        for i, sub in enumerate(value):
            _finite(sub, f"{path}[{i}]")


def timepoints(sequence: Any) -> int:
    """Time points of ``sequence``'s own time plan (1 without one), never expanded."""
    plan = getattr(sequence, "time_plan", None)
    return 1 if plan is None else int(plan.num_timepoints())


def check_bounds(sequence: Any, prefix: str = "sequence") -> None:
    """Refuse a sequence beyond the module's bounds (see the module docstring)."""
    for where, seq in _sequences(sequence, prefix):
        n = timepoints(seq)
        if n > MAX_TIMEPOINTS:
            raise SpecError(
                f"{where}.time_plan: {n} time points; at most {MAX_TIMEPOINTS} can be "
                "planned (split the acquisition, or use a longer interval)"
            )
    count = len(sequence.stage_positions)
    if count > MAX_IMAGES:
        raise SpecError(
            f"{prefix}.stage_positions: {count} positions; at most {MAX_IMAGES} images per dataset"
        )


def _sequences(sequence: Any, prefix: str) -> list[tuple[str, Any]]:
    """The sequence and every position's sub-sequence, with the path that names it."""
    found = [(prefix, sequence)]
    if type(sequence.stage_positions).__name__ == "WellPlatePlan":
        return found
    for i, position in enumerate(sequence.stage_positions):
        sub = getattr(position, "sequence", None)
        if sub is not None:
            where = f"{prefix or 'sequence'}.stage_positions[{i}].sequence"
            found.extend(_sequences(sub, where))
    return found


def sequence_channels(sequence: Any, prefix: str = "sequence") -> list[tuple[str, Any]]:
    """Every channel the sequence names, sub-sequences included, with its field path."""
    out = []
    for where, seq in _sequences(sequence, prefix):
        for i, channel in enumerate(seq.channels):
            # no prefix: the sequence was made from the options (``--channel``)
            out.append((f"{where}.channels[{i}]" if where else "channels", channel))
    return out


def check_core(core: Any, sequence: Any, prefix: str = "sequence") -> None:
    """Every channel is a configuration of its group on ``core`` (one line naming the
    first that is not, with a "did you mean")."""
    for where, channel in sequence_channels(sequence, prefix):
        group = channel.group or core.getChannelGroup()
        available = list(core.getAvailableConfigs(group)) if group else []
        if channel.config not in available:
            raise SpecError(
                f"{where}: channel {channel.config!r} is not a configuration of the core's "
                f"{group or 'Channel'!r} group{did_you_mean(channel.config, available)} "
                f"(available: {', '.join(available) or 'none'})"
            )
