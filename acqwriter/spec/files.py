"""Spec files: load and save JSON, YAML and TOML, chosen by file extension.

A file holds a mapping with the same field names as the model (and as the CLI
options); loading validates it, so a bad file fails with the field named.
TOML cannot represent ``null``: an unbounded size is written by leaving the key out
(the first axis is unbounded by default).
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, TypeVar

import tomli_w
import yaml
from pydantic import BaseModel, ValidationError

from acqwriter import jsonio
from acqwriter.validation import SpecError, format_validation_error

__all__ = ["dump_spec", "load_mapping", "load_spec"]

M = TypeVar("M", bound=BaseModel)
_FORMATS = {".json": "json", ".yaml": "yaml", ".yml": "yaml", ".toml": "toml"}


def _format(path: Path) -> str:
    fmt = _FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise SpecError(f"spec file {str(path)!r}: expected a .json, .yaml, .yml or .toml file")
    return fmt


MAX_SPEC_BYTES = 1 << 20  # a spec is a few hundred bytes; anything this big is not one
MAX_SPEC_VALUES = 100_000  # values after YAML aliases are expanded (a bomb has billions)


class _YamlLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing duplicate keys (YAML forbids them; PyYAML keeps
    the last) instead of taking one silently."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, list | dict) and key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            if not isinstance(key, list | dict):
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _expanded_size(node: yaml.Node, budget: int) -> int:
    """Values in ``node`` with every alias expanded, counted without expanding (each
    node's size is computed once), stopping as soon as ``budget`` is passed."""
    sizes: dict[int, int] = {}
    stack: list[tuple[yaml.Node, bool]] = [(node, False)]
    while stack:
        current, children_done = stack.pop()
        if id(current) in sizes:
            continue
        if isinstance(current, yaml.ScalarNode):
            sizes[id(current)] = 1
            continue
        children = (
            [n for pair in current.value for n in pair]
            if isinstance(current, yaml.MappingNode)
            else list(current.value)
        )
        if not children_done:
            stack.append((current, True))
            stack.extend((c, False) for c in children if id(c) not in sizes)
            continue
        total = 1 + sum(sizes.get(id(c), 1) for c in children)
        sizes[id(current)] = min(total, budget + 1)
    return sizes[id(node)]


def _load_yaml(text: str, name: str) -> Any:
    loader = _YamlLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        if _expanded_size(node, MAX_SPEC_VALUES) > MAX_SPEC_VALUES:
            raise SpecError(
                f"spec file {name}: more than {MAX_SPEC_VALUES} values once its YAML "
                "aliases are expanded; refusing it (a spec holds a few dozen)"
            )
        return loader.construct_document(node)
    finally:
        loader.dispose()


def load_mapping(path: str | Path) -> dict[str, Any]:
    """Parse a spec file into a plain mapping (no validation).

    Refused with a :class:`SpecError` naming the file: over :data:`MAX_SPEC_BYTES`, not
    UTF-8 (with the byte offset), not valid JSON/YAML/TOML, duplicate keys, JSON's
    non-standard ``NaN``/``Infinity``, YAML aliases expanding past
    :data:`MAX_SPEC_VALUES` values (an alias bomb is refused in milliseconds)."""
    path = Path(path)
    fmt = _format(path)
    name = repr(str(path))
    try:
        with open(path, "rb") as fh:
            raw = fh.read(MAX_SPEC_BYTES + 1)
    except OSError as exc:
        raise SpecError(f"spec file {name}: cannot read ({exc.strerror or exc})") from None
    if len(raw) > MAX_SPEC_BYTES:
        raise SpecError(f"spec file {name}: larger than {MAX_SPEC_BYTES} bytes; not a spec")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError(
            f"spec file {name}: not UTF-8 text: byte 0x{raw[exc.start]:02x} at offset "
            f"{exc.start} is invalid"
        ) from None
    try:
        if fmt == "json":
            data = jsonio.loads(text)
        elif fmt == "yaml":
            data = _load_yaml(text, name)
        else:
            data = tomllib.loads(text)
    except SpecError:
        raise
    except (ValueError, yaml.YAMLError, tomllib.TOMLDecodeError, RecursionError) as exc:
        detail = " ".join(str(exc).split())[:300]
        raise SpecError(f"spec file {name}: not valid {fmt.upper()}: {detail}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise SpecError(f"spec file {name}: expected a mapping of fields at the top level")
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
        text = jsonio.dumps(data, indent=2)
    elif fmt == "yaml":
        text = yaml.safe_dump(data, sort_keys=False)
    else:
        text = tomli_w.dumps(_drop_none(data))
    path.write_text(text)
