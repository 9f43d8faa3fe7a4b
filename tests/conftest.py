"""Shared fixtures. Helpers that tests import live in helpers.py (tests/ is on pythonpath)."""

from __future__ import annotations

import gc
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
