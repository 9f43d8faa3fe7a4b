"""Dependencies point one way: the writer core never imports the outer layers (devices,
simulators, the daemon, the CLI), at module level or inside a function, and no module of
the core imports, at module level, a module that imports it back."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OUTER = (
    "acqwriter.acquisition",
    "acqwriter.devices",
    "acqwriter.simulators",
    "acqwriter.control",
    "acqwriter.cli.main",
)
# entry points of the outer layers that live in the acqwriter folder
NOT_CORE = {"acqwriter.__main__"}


def _modules() -> dict[str, Path]:
    found = {}
    for path in (ROOT / "acqwriter").rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def _imports(path: Path, *, top_level_only: bool) -> set[str]:
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    names: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif top_level_only and isinstance(node, ast.If):  # TYPE_CHECKING blocks: no cost
            continue
    return {n for n in names if n.startswith("acqwriter")}


def test_the_core_never_imports_an_outer_layer():
    for name, path in _modules().items():
        if name in NOT_CORE or name.startswith(OUTER):
            continue
        bad = {m for m in _imports(path, top_level_only=False) if m.startswith(OUTER)}
        assert not bad, f"{name} imports {sorted(bad)}"


def _runtime_imports(path: Path) -> set[str]:
    """Every import that runs, at module level or in a function (not the type-checking
    ones, which never run)."""
    tree = ast.parse(path.read_text())
    skip = {
        id(sub)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for sub in ast.walk(node)
    }
    names: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {n for n in names if n.startswith("acqwriter")}


@pytest.mark.parametrize("scope", ["module level", "anywhere in the core"])
def test_no_import_circle(scope):
    """No circle among module-level imports anywhere; in the core, none even through an
    import inside a function (a circle hidden by a local import is still a circle)."""
    modules = _modules()
    graph = {}
    for name, path in modules.items():
        if scope == "module level":
            found = _imports(path, top_level_only=True)
        elif name.startswith(OUTER) or name in NOT_CORE:
            continue
        else:
            found = _runtime_imports(path)
        graph[name] = {m for m in found if m in modules and m != name}
    for name in graph:
        graph[name] = {m for m in graph[name] if m in graph}
    for name in graph:  # a package's __init__ re-exports: its own children are not circles
        graph[name] = {m for m in graph[name] if not m.startswith(name + ".")}
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in graph[node]:
            if state.get(nxt) == 1:
                circle = [*trail[trail.index(nxt) :], nxt] if nxt in trail else [node, nxt]
                raise AssertionError(f"import circle: {' -> '.join(circle)}")
            if nxt not in state:
                visit(nxt, [*trail, nxt])
        state[node] = 2

    for name in graph:
        if name not in state:
            visit(name, [name])


def test_the_daemon_cli_does_not_import_the_main_cli():
    """``acqwriter.cli.main`` adds the daemon's commands (``control.cli``); the daemon's CLI
    takes the shared options from ``cli_options`` and ``progress_display``, never from
    ``acqwriter.cli.main`` (that was a circle)."""
    path = ROOT / "acqwriter" / "control" / "cli.py"
    assert "acqwriter.cli.main" not in _imports(path, top_level_only=False)


# The layers of the core, in the order data moves; a layer imports only layers before it
# (the engine may call post.pyramid at close; post never imports the engine).
LAYERS = [
    ("acqwriter.validation", "acqwriter.jsonio", "acqwriter._version"),
    ("acqwriter.codec",),
    ("acqwriter.spec",),
    ("acqwriter.format",),
    ("acqwriter.plan",),
    ("acqwriter.store",),
    ("acqwriter.post",),
    ("acqwriter.engine",),
]


def _layer(module: str) -> int | None:
    for rank, prefixes in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return rank
    return None


def test_core_layers_import_only_the_layers_before_them():
    modules = _modules()
    for name, path in modules.items():
        rank = _layer(name)
        if rank is None:
            continue
        for imported in _imports(path, top_level_only=False):
            target = next((m for m in modules if imported == m), None)
            if target is None:  # "package.name" of a from-import: its module
                target = imported.rpartition(".")[0]
            other = _layer(target)
            assert other is None or other <= rank, (
                f"{name} (layer {LAYERS[rank][0]}) imports {imported} "
                f"(layer {LAYERS[other][0]}, later in the data flow)"
            )


def test_only_the_format_spells_keys():
    """Array paths and chunk keys are built by ``format.keys`` alone: a second image, or
    Zarr v2, changes one module."""
    import re

    key_like = re.compile(r"^(0|c)/|/c/|zarr\.json$")
    for name, path in _modules().items():
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
    for name, path in _modules().items():
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


def test_no_class_of_the_core_is_over_400_lines():
    for name, path in _modules().items():
        if name.startswith(OUTER):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                size = node.end_lineno - node.lineno + 1
                assert size <= 400, f"{name}.{node.name} is {size} lines"


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
