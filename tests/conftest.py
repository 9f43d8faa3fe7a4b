"""Shared fixtures. Helpers that tests import live in helpers.py (tests/ is on pythonpath)."""

from __future__ import annotations

import gc
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture
def collect_cores():
    """Drop pymmcore-plus cores before the interpreter exits (UniMMCore aborts otherwise)."""
    scopes: list[Any] = []
    yield scopes
    for scope in scopes:
        scope.close()
    scopes.clear()
    gc.collect()


@pytest.fixture
def daemon(tmp_path):
    """A real ``acqwriter serve`` process on free loopback ports, confined to tmp_path."""
    from daemon_helpers import Daemon

    d = Daemon(tmp_path, "--root", str(tmp_path))
    d.wait_ready()
    yield d
    assert d.stop() == 0


@pytest.fixture
def mount_tmpfs(tmp_path) -> Iterator[Callable[[str], Path]]:
    """``mount_tmpfs("24m")``: a size-limited tmpfs mounted for the test, for real
    full-disk conditions (the test is skipped where mounting is not allowed)."""
    mounted: list[Path] = []

    def mount(size: str) -> Path:
        mnt = tmp_path / f"tmpfs{len(mounted)}"
        mnt.mkdir()
        run = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mnt)],
            capture_output=True,
            text=True,
        )
        if run.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {run.stderr.strip() or run.returncode}")
        mounted.append(mnt)
        return mnt

    yield mount
    for mnt in mounted:
        subprocess.run(["umount", "-l", str(mnt)], check=False)
