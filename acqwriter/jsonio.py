"""Strict JSON in and out: every file and message acqwriter writes parses with a strict
JSON parser, and what it reads is refused when a strict parser would refuse it.

Python's ``json`` writes ``NaN`` and ``Infinity`` (not JSON) and reads them back,
takes the last of duplicate keys silently, and turns a 5 000-digit number into an
exception that is not a ``ValueError`` of the decoder's kind. Here:

* :func:`dumps` writes non-finite floats as ``null`` (a camera's missing timestamp is
  NaN; ``null`` is what every JSON reader understands as "no value") and never emits
  ``NaN``/``Infinity``;
* :func:`loads` refuses ``NaN``/``Infinity``, duplicate keys and integers longer than
  :data:`MAX_INT_DIGITS` digits with :class:`StrictJSONError` (a ``ValueError``) whose
  message says which.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

__all__ = [
    "MAX_INT_DIGITS",
    "OversizedNumber",
    "StrictJSONError",
    "dumps",
    "finite",
    "jsonable",
    "loads",
]

MAX_INT_DIGITS = 64  # far beyond any id or count; Python refuses str→int over 4 300


class StrictJSONError(ValueError):
    """Text that is not strict JSON (or that no sane request holds)."""


def finite(value: Any) -> Any:
    """``value`` with every non-finite float (at any depth) replaced by ``None``, and
    every lone surrogate in a string (a camera's or another program's malformed text;
    no UTF-8 form, refused by strict JSON readers) by U+FFFD."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        return _text(value)
    if isinstance(value, dict):
        return {(_text(k) if isinstance(k, str) else k): finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value


def jsonable(value: Any) -> Any:
    """``value`` as JSON values, whatever a camera or a caller put in it: numpy scalars
    and arrays of at most 64 values as plain values, tuples as lists, keys as text,
    non-finite floats as ``None``, anything else as its ``str``. The one rule for
    per-frame metadata and an MDA's summary metadata alike."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str | int | bool) or value is None:
        return value
    if isinstance(value, np.generic):
        return jsonable(value.item())
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray) and value.size <= 64:
        return jsonable(value.tolist())
    return str(value)


def _text(value: str) -> str:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # pairs are joined, lone halves become U+FFFD
        return value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return value


def dumps(value: Any, **kwargs: Any) -> str:
    """``json.dumps`` that writes strict JSON (non-finite floats as ``null``)."""
    return json.dumps(finite(value), allow_nan=False, **kwargs)


def _constant(name: str) -> Any:
    raise StrictJSONError(f"{name} is not JSON (use null or a string)")


class OversizedNumber:
    """Stands for an integer over :data:`MAX_INT_DIGITS` digits that :func:`loads` was
    asked to keep (``oversized="mark"``), so a validator can name the field it is in;
    no JSON type accepts it."""

    def __init__(self, digits: int) -> None:
        self.digits = digits

    def __repr__(self) -> str:
        return f"<an integer of {self.digits} digits>"

    __str__ = __repr__


def _int(text: str) -> int:
    digits = len(text.lstrip("-"))
    if digits > MAX_INT_DIGITS:
        raise StrictJSONError(f"a number of {digits} digits (at most {MAX_INT_DIGITS})")
    return int(text)


def _int_or_mark(text: str) -> int | OversizedNumber:
    digits = len(text.lstrip("-"))
    return OversizedNumber(digits) if digits > MAX_INT_DIGITS else int(text)


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise StrictJSONError(f"duplicate key {key!r}")
        out[key] = value
    return out


def loads(text: str | bytes, *, oversized: str = "error") -> Any:
    """Parse strict JSON (see module docstring); :class:`StrictJSONError` or
    :class:`json.JSONDecodeError` (both ``ValueError``) otherwise. ``oversized="mark"``
    keeps an over-long integer as an :class:`OversizedNumber` (it is valid JSON; the
    caller's validation then names the field that holds it)."""
    parse_int = _int_or_mark if oversized == "mark" else _int
    return json.loads(
        text, parse_constant=_constant, parse_int=parse_int, object_pairs_hook=_object
    )
