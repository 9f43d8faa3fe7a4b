"""Dataset folders on a filesystem: which existing folder may be replaced, the writer
lock, and the folders a new dataset needs.

One home for each rule that the store, the daemon's path checks and the tools share:
whether an existing path holds a dataset that ``overwrite`` may replace
(:func:`replace_refusal`), whether a live writer holds a dataset (:func:`writer_alive`),
and the walk up to the nearest existing folder (:func:`nearest_existing`,
:func:`missing_parents`).
"""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
from pathlib import Path

from acqwriter.format.keys import GROUP_METADATA, ZGROUP
from acqwriter.store.base import StorageError

__all__ = [
    "LOCK_NAME",
    "create_locked",
    "missing_parents",
    "nearest_existing",
    "never_written",
    "replace_refusal",
    "try_lock",
    "writer_alive",
]

LOCK_NAME = ".acqwriter.lock"


def try_lock(path: Path) -> int | None:
    """An exclusive flock on ``path`` (created if needed), or None if another holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def missing_parents(path: str | os.PathLike[str]) -> list[Path]:
    """The folders above ``path`` that do not exist yet, outermost first: a dataset's
    missing parent folders are created (and reported), by the CLI and the daemon alike."""
    missing = []
    parent = Path(path).absolute().parent
    while not parent.exists() and parent != parent.parent:
        missing.append(parent)
        parent = parent.parent
    return missing[::-1]


def nearest_existing(path: Path) -> Path:
    """``path`` or the nearest folder above it that exists (where a dataset that does
    not exist yet will be created: its free space, whether it is writable)."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def replace_refusal(out: Path) -> str | None:
    """Why the existing ``out`` must not be replaced even with ``overwrite`` (None: it
    may be): not a directory, a symlink, or a non-empty directory that is not a Zarr
    dataset (``zarr.json`` of Zarr v3, ``.zgroup`` of v2) nor a folder acqwriter
    created whose writer died before its first document. The one rule ``acquire``,
    the daemon's ``configure`` and the store share."""
    if not out.is_dir() or out.is_symlink():
        return "exists and is not a directory; refusing to delete it"
    zarr = (out / GROUP_METADATA).exists() or (out / ZGROUP).exists()
    if any(out.iterdir()) and not zarr and not never_written(out):
        return (
            "is a non-empty directory that is not a Zarr dataset; "
            "refusing to delete it even with overwrite"
        )
    return None


def writer_alive(root: Path) -> bool:
    """Whether a live process holds the dataset's writer lock (read-only: the lock file
    is neither created nor taken for longer than the probe)."""
    try:
        fd = os.open(Path(root) / LOCK_NAME, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing drops the probe's own lock
    return False


def never_written(out: Path) -> bool:
    """``out`` is a folder acqwriter created whose writer died before its first document
    (a SIGKILL in the few milliseconds between the two): it holds nothing but
    acqwriter's own files (lock, reserves, probe), so it may be replaced."""
    try:
        names = [p.name for p in out.iterdir()]
    except OSError:
        return False
    return bool(names) and all(name.startswith(".acqwriter.") for name in names)


def create_locked(out: Path, overwrite: bool) -> int:
    """The body of :func:`acqwriter.store.create.create_local`, under its guard: the new directory's
    lock fd."""
    if (out / LOCK_NAME).exists():
        probe = try_lock(out / LOCK_NAME)
        if probe is None:
            raise FileExistsError(f"{str(out)!r} is being written by another writer (locked)")
        os.close(probe)
    if out.exists() or out.is_symlink():
        if not overwrite:
            raise FileExistsError(f"{str(out)!r} already exists (set overwrite to replace it)")
        refusal = replace_refusal(out)
        if refusal is not None:
            raise FileExistsError(f"{str(out)!r} {refusal}")
        shutil.rmtree(out)
    try:
        out.mkdir()
        lock_fd = try_lock(out / LOCK_NAME)
        if lock_fd is None:
            raise FileExistsError(f"{str(out)!r} is being written by another writer (locked)")
    except FileExistsError:
        raise
    except OSError as exc:
        raise StorageError(
            exc.errno or errno.EIO, f"cannot create {str(out)!r}: {exc.strerror or exc}"
        ) from exc
    return lock_fd
