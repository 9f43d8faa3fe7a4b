"""Validation shared by every model of a spec: strict models, one-line errors.

A spec is validated by pydantic; :func:`format_validation_error` turns its errors into
lines of the form ``field: expected …, got …`` (one line in the usual case of one bad
field, at most :data:`MAX_ERROR_LINES`), raised as :class:`SpecError`. Models derive from
:class:`StrictModel`: an unknown field is an error (with a "did you mean"), and a spec
cannot change once validated.
"""

from __future__ import annotations

import difflib
import re
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, ValidationError

__all__ = ["SpecError", "StrictModel", "did_you_mean", "format_validation_error"]


class SpecError(ValueError):
    """An invalid spec: the message names each offending field and what was expected."""

    def __init__(self, message: str, errors: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.errors = errors or []


MAX_ERROR_LINES = 20
_BARE = re.compile(r"^[A-Za-z_][\w/-]*$")  # a key shown as is (an image key: "B/3/0")
_NAMED = re.compile(r"^([A-Za-z_][\w.\[\]'/-]*): ")


def format_validation_error(exc: ValidationError, prefix: str = "") -> SpecError:
    """Turn a pydantic error into one readable line per field: ``field: expected …, got …``."""
    lines = []
    errors = []
    for err in exc.errors(include_url=False):
        loc = ""
        for part in err["loc"]:
            text = str(part)
            if isinstance(part, int) or _BARE.match(text):
                loc += f".{text}" if loc else text
            else:  # an odd key (e.g. from a hand-edited file): quote it
                loc += f"[{text!r}]"
        field = f"{prefix}{loc}" if loc else (prefix.rstrip(".") or "spec")
        given = err.get("input")
        shown = repr(given)
        if len(shown) > 80:
            shown = shown[:77] + "..."
        msg = err["msg"].removeprefix("Value error, ")
        named = _NAMED.match(msg)
        if not loc and named:  # a check across fields names its own field
            field, msg = f"{prefix}{named.group(1)}", msg[named.end() :]
            lines.append(f"{field}: {msg}")
        elif err["type"] == "missing":
            lines.append(f"{field}: required field is missing")
        elif (
            isinstance(given, dict) and err["type"] not in ("dict_type", "model_type")
        ) or "got " in msg:  # the message already shows what was given
            lines.append(f"{field}: {msg}")
        else:
            lines.append(f"{field}: {msg} (got {shown})")
        errors.append({"field": field, "message": msg})
    if len(lines) > MAX_ERROR_LINES:  # a hostile file can hold thousands of bad fields
        lines = [*lines[:MAX_ERROR_LINES], f"... and {len(lines) - MAX_ERROR_LINES} more"]
    if len(lines) == 1:  # the usual case: one line that says it all
        return SpecError(f"invalid spec: {lines[0]}", errors)
    return SpecError("invalid spec:\n  " + "\n  ".join(lines), errors)


def did_you_mean(given: str, choices: Any) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``choices``, or an empty string."""
    close = difflib.get_close_matches(str(given), [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


class StrictModel(BaseModel):
    """Base of every spec model: unknown fields are errors, instances are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    @classmethod
    def parse(cls, data: Any) -> Self:
        """Validate ``data`` (a mapping, or an instance as it is) or raise
        :class:`SpecError` naming each bad field."""
        if isinstance(data, cls):
            return data
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise format_validation_error(exc) from None
