"""What an MDAWriter accepts as options, checked when it is made.

Raised when the sequence starts, pymmcore-plus would log the error and acquire on with
nothing written: so every option is checked against the writer's own rules (a probe
stream spec with every axis) before any acquisition.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError

from acqwriter.mda.images import IMAGE_OPTIONS
from acqwriter.spec.dataset import WRITER_FIELDS
from acqwriter.spec.location import ObjectURL
from acqwriter.spec.model import Channel, StreamSpec
from acqwriter.validation import SpecError, did_you_mean, format_validation_error

__all__ = ["check_options"]


def check_options(
    options: dict[str, Any], out: str | Path, overwrite: bool, new_folder: bool
) -> None:
    """Refuse a bad option here, before any acquisition: raised when the sequence
    starts, pymmcore-plus would log the error and acquire on with nothing written.
    Raises :class:`SpecError` naming the option."""
    allowed = (*(f for f in WRITER_FIELDS if f != "overwrite"), *IMAGE_OPTIONS)
    for name in options:
        if name not in allowed:
            longer = [a for a in allowed if a.startswith(name)]  # "ring": ring_bytes
            hint = f" (did you mean {longer[0]!r}?)" if longer else did_you_mean(name, allowed)
            raise SpecError(
                f"invalid option: {name}: not an MDAWriter option{hint}; "
                f"expected one of {', '.join(allowed)}"
            )
    given = {k: v for k, v in options.items() if k != "channels"}
    # checked as a stream of one-pixel frames with every axis (chunks are clipped
    # to the frame): the same rules and messages as any stream's spec
    probe = {"shape": [1, 1], "dtype": "uint16", "dims": "tczyx", "sizes": {"c": 1, "z": 1}}
    StreamSpec.parse({**probe, **given, "out": out, "overwrite": overwrite})
    local = not isinstance(out, ObjectURL)  # a bucket is checked when the dataset opens
    if new_folder and not overwrite and local and Path(out).exists():
        raise SpecError(f"out: {str(out)!r} already exists (set overwrite to replace it)")
    try:  # by name, for any number of channels: not part of the probe
        TypeAdapter(list[Channel]).validate_python(options.get("channels") or [])
    except ValidationError as exc:
        raise format_validation_error(exc, "channels.") from None
