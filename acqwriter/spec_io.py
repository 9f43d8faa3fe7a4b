"""Spec files: load and save JSON, YAML and TOML, chosen by file extension.

A file holds a mapping with the same field names as the model (and as the CLI
options); loading validates it, so a bad file fails with the field named.
TOML cannot represent ``null``: an unbounded size is written by leaving the key out
(the first axis is unbounded by default).
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any, TypeVar

import tomli_w
import yaml
from pydantic import BaseModel, ValidationError

from acqwriter.spec import SpecError, format_validation_error

__all__ = ["dump_spec", "load_mapping", "load_spec"]

M = TypeVar("M", bound=BaseModel)
_FORMATS = {".json": "json", ".yaml": "yaml", ".yml": "yaml", ".toml": "toml"}


def _format(path: Path) -> str:
    fmt = _FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise SpecError(f"spec file {str(path)!r}: expected a .json, .yaml, .yml or .toml file")
    return fmt


def load_mapping(path: str | Path) -> dict[str, Any]:
    """Parse a spec file into a plain mapping (no validation)."""
    path = Path(path)
    fmt = _format(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise SpecError(f"spec file {str(path)!r}: cannot read ({exc.strerror or exc})") from exc
    try:
        if fmt == "json":
            data = json.loads(text)
        elif fmt == "yaml":
            data = yaml.safe_load(text)
        else:
            data = tomllib.loads(text)
    except (json.JSONDecodeError, yaml.YAMLError, tomllib.TOMLDecodeError) as exc:
        raise SpecError(f"spec file {str(path)!r}: not valid {fmt.upper()}: {exc}") from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise SpecError(f"spec file {str(path)!r}: expected a mapping of fields at the top level")
    return data


def load_spec(path: str | Path, model: type[M]) -> M:
    """Load and validate a spec file as ``model``."""
    data = load_mapping(path)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise format_validation_error(exc) from None


def _drop_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_none(v) for v in value]
    return value


def dump_spec(spec: BaseModel, path: str | Path) -> None:
    """Save ``spec`` to ``path`` in the format its extension names."""
    path = Path(path)
    fmt = _format(path)
    data = spec.model_dump(mode="json")
    if fmt == "json":
        text = json.dumps(data, indent=2)
    elif fmt == "yaml":
        text = yaml.safe_dump(data, sort_keys=False)
    else:
        text = tomli_w.dumps(_drop_none(data))
    path.write_text(text)
