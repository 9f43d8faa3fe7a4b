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
