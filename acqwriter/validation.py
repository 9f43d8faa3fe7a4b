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

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

__all__ = [
    "SpecError",
    "StrictModel",
    "did_you_mean",
    "format_validation_error",
    "lone_surrogate",
]


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


def lone_surrogate(value: Any, path: str = "") -> str | None:
    """The path of the first string (value or key, at any depth) holding a lone UTF-16
    surrogate (``"\\ud800"``), or None. Such a string has no UTF-8 form: written into
    a document, it makes JSON that strict readers refuse."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return path or "value"
        return None
    if isinstance(value, dict):
        for key, sub in value.items():
            where = f"{path}.{key}" if path else str(key)
            if isinstance(key, str) and lone_surrogate(key) is not None:
                return f"{path}[{key.encode('utf-8', 'backslashreplace').decode()!r}]"
            found = lone_surrogate(sub, where)
            if found is not None:
                return found
    elif isinstance(value, list | tuple):
        for i, sub in enumerate(value):
            found = lone_surrogate(sub, f"{path}[{i}]")
            if found is not None:
                return found
    return None


class StrictModel(BaseModel):
    """Base of every spec model: unknown fields are errors, instances are immutable,
    and no string holds a lone surrogate (see :func:`lone_surrogate`)."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    @model_validator(mode="before")
    @classmethod
    def _no_lone_surrogates(cls, data: Any) -> Any:
        where = lone_surrogate(data)
        if where is not None:
            raise ValueError(
                f"{where}: expected text, got a string holding a lone surrogate (not valid Unicode)"
            )
        return data

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
