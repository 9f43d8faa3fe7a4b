"""Shared fixtures. Helpers that tests import live in helpers.py (tests/ is on pythonpath)."""

from __future__ import annotations

import gc
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Modules holding a ``slow`` test run first, each kept whole (its module fixtures are
    made once): with ``--dist worksteal`` the minutes-long tests then start at once and
    the short ones fill the other core, instead of one long test running alone at the end."""
    slow = {item.module.__name__ for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.module.__name__ not in slow)


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


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """A real S3-compatible server on the loopback (moto's server mode, on a free port,
    as zarr-python's own tests use it) with a bucket ``lab``; its endpoint URL. The
    test credentials are ``test``/``test`` in region ``us-east-1``."""
    pytest.importorskip("obstore")
    pytest.importorskip("moto.server")
    import s3

    server, endpoint = s3.start_server("lab")
    yield endpoint
    server.stop()


@pytest.fixture
def aws_env(s3_endpoint, monkeypatch) -> str:
    """The standard AWS environment pointing at :func:`s3_endpoint` (what a user exports);
    its endpoint URL."""
    for name, value in {
        "AWS_ENDPOINT_URL": s3_endpoint,
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    return s3_endpoint
