"""Dependencies point one way, in the one order ``acqwriter.layers`` writes: a layer
imports only the layers before it, at module level or inside a function; the hardware
layer imports the base only; no module imports, even through a package's ``__init__``
or a function's import, a module that imports it back; the README and the package
docstring write the same order."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from acqwriter.layers import BASE, CORE, HARDWARE, ORDER, order_text

ROOT = Path(__file__).resolve().parents[2]
# entry points of the outer layers that live in the acqwriter folder
ENTRY = {"acqwriter.__main__"}


def _modules() -> dict[str, Path]:
    """Every module of the installed package, ``devices`` and ``simulators`` under the
    names they install as."""
    found = {}
    for folder, prefix in (
        ("acqwriter", ()),
        ("devices", ("acqwriter",)),
        ("simulators", ("acqwriter",)),
    ):
        for path in (ROOT / folder).rglob("*.py"):
            parts = (*prefix, *path.relative_to(ROOT).with_suffix("").parts)
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


MODULES = _modules()


def _imports(path: Path, *, top_level_only: bool) -> set[str]:
    """The acqwriter modules ``path`` imports: ``from X import name`` counts as
    ``X.name`` when that is a module (a submodule import), else as ``X`` (its
    ``__init__``). Type-checking imports never run and do not count."""
    tree = ast.parse(path.read_text())
    skip = {
        id(sub)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for sub in ast.walk(node)
    }
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    names: set[str] = set()
    for node in nodes:
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                names.add(sub if sub in MODULES else node.module)
    return {n for n in names if n == "acqwriter" or n.startswith("acqwriter.")}


def _layer(module: str) -> str | None:
    """The layer ``module`` belongs to (``base``, a core/hardware/outer name), or None
    for the package itself and entry points."""
    parts = module.split(".")
    if len(parts) < 2 or module in ENTRY:
        return None
    return "base" if parts[1] in BASE else parts[1]


RANK = {"base": -1, **{name: rank for rank, name in enumerate(ORDER)}}


def test_every_module_has_a_layer():
    for name in MODULES:
        layer = _layer(name)
        assert layer is None or layer in RANK, f"{name} is in no layer of acqwriter.layers"


def test_each_layer_imports_only_the_layers_before_it():
    for name, path in MODULES.items():
        layer = _layer(name)
        if layer is None:
            continue
        for imported in _imports(path, top_level_only=False):
            other = _layer(imported)
            if other is None:
                assert imported != "acqwriter", f"{name} imports the package acqwriter itself"
                continue
            if layer in HARDWARE:
                assert other in ("base", layer), f"{name} (hardware) imports {imported}"
            else:
                assert RANK[other] <= RANK[layer], (
                    f"{name} (layer {layer}) imports {imported} (layer {other}, later)"
                )


def _circle(graph: dict[str, set[str]]) -> list[str] | None:
    """A circle in ``graph`` (as the modules on it), or None."""
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*trail[trail.index(nxt) :], nxt] if nxt in trail else [node, nxt]
            if nxt not in state and (found := visit(nxt, [*trail, nxt])):
                return found
        state[node] = 2
        return None

    for name in sorted(graph):
        if name not in state and (found := visit(name, [name])):
            return found
    return None


@pytest.mark.parametrize("scope", ["module level", "anywhere"])
def test_no_import_circle(scope):
    """No circle of imports, counting a package's ``__init__`` (its re-exports) as a
    module like any other and, ``anywhere``, imports inside functions."""
    graph = {
        name: {m for m in _imports(path, top_level_only=scope == "module level") if m in MODULES}
        - {name}
        for name, path in MODULES.items()
    }
    circle = _circle(graph)
    assert circle is None, f"import circle: {' -> '.join(circle or [])}"


def test_the_circle_finder_sees_what_was_missed(tmp_path):
    """The checks above can fail: a package's ``__init__`` that a child imports back (the
    loop ``acqwriter -> ... -> format.ngff_v05 -> acqwriter`` was once missed), and a
    ``from acqwriter import name`` that is the package, not a submodule."""
    graph = {
        "acqwriter": {"acqwriter.engine.dataset"},
        "acqwriter.engine.dataset": {"acqwriter.format.ngff_v05"},
        "acqwriter.format.ngff_v05": {"acqwriter"},
    }
    assert _circle(graph) == [
        "acqwriter",
        "acqwriter.engine.dataset",
        "acqwriter.format.ngff_v05",
        "acqwriter",
    ]
    path = tmp_path / "m.py"
    path.write_text(
        "from acqwriter import __version__\nfrom acqwriter import jsonio\n"
        "def f():\n    from acqwriter.engine import stream\n"
    )
    assert _imports(path, top_level_only=True) == {"acqwriter", "acqwriter.jsonio"}
    assert "acqwriter.engine.stream" in _imports(path, top_level_only=False)


def test_the_layer_order_is_written_once():
    """The README and the package docstring say the order ``acqwriter.layers`` holds."""
    import acqwriter

    assert order_text(CORE) in " ".join(acqwriter.__doc__.split())
    readme = " ".join((ROOT / "README.md").read_text().split())
    assert order_text(CORE, quote="`") in readme


def test_only_the_format_spells_keys():
    """Array paths and chunk keys are built by ``format.keys`` alone: a second image, or
    Zarr v2, changes one module."""
    import re

    key_like = re.compile(r"^(0|c)/|/c/|zarr\.json$")
    for name, path in MODULES.items():
        if name == "acqwriter.format.keys" or not name.startswith(
            ("acqwriter.engine", "acqwriter.post", "acqwriter.store", "acqwriter.plan")
        ):
            continue
        tree = ast.parse(path.read_text())
        docstrings = {
            id(node.body[0].value)
            for node in ast.walk(tree)
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef)
            and node.body
            and isinstance(node.body[0], ast.Expr)
        }
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and id(node) not in docstrings
                and key_like.search(node.value)
            ):
                raise AssertionError(f"{name}:{node.lineno} spells a key: {node.value!r}")


def test_the_engine_never_touches_files():
    """The engine writes through its store only: no file API, so any store runs it."""
    for name, path in MODULES.items():
        if not name.startswith(("acqwriter.engine", "acqwriter.format")):
            continue
        imported = _imports_any(path)
        assert not imported & {"os", "shutil", "fcntl", "pathlib"}, f"{name} imports {imported}"


def _imports_any(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_no_module_over_450_lines_and_no_class_over_350():
    """Small units with one job each: a module that grows past this is split."""
    for name, path in MODULES.items():
        text = path.read_text()
        assert text.count("\n") <= 450, f"{name} is {text.count(chr(10))} lines"
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ClassDef):
                size = node.end_lineno - node.lineno + 1
                assert size <= 350, f"{name}.{node.name} is {size} lines"


def test_every_package_is_installed():
    """A non-editable install (CI, users) ships only the packages pyproject lists."""
    import tomllib

    listed = set(
        tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    found = {
        ".".join(init.relative_to(ROOT).parent.parts)
        for init in (ROOT / "acqwriter").rglob("__init__.py")
    }
    assert found <= listed, f"not installed: {sorted(found - listed)}"
