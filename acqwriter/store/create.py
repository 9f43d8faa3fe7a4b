"""A new dataset's store: where the writer opens what it writes into.

:func:`create_store` makes a new, empty, locked dataset at a path (a directory on a
local or mounted filesystem, with direct I/O as ``io`` asks) and returns its
:class:`~acqwriter.store.base.Store`; the engine opens every dataset through it, so a
store of another kind is one more branch here. :func:`create_local` is the directory
alone.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from pathlib import Path

from acqwriter.store.base import StorageError
from acqwriter.store.folders import create_locked, missing_parents, try_lock
from acqwriter.store.local import LocalStore

__all__ = ["create_local", "create_store"]


def create_local(root: str | os.PathLike[str], *, overwrite: bool, sync: str) -> LocalStore:
    """A new, empty, locked dataset directory. Replaces an existing *Zarr* directory
    only when ``overwrite`` and no live writer holds it; never deletes a file or a
    non-empty directory that is not Zarr."""
    out = Path(root)
    created = missing_parents(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        # Two writers creating the same path at once (both with overwrite) take
        # turns: the second finds the first's lock, not a half-deleted directory.
        guard = try_lock(out.parent / f".{out.name}.acqwriter-create")
    except OSError as exc:
        raise StorageError(
            exc.errno or errno.EIO, f"cannot create {str(out)!r}: {exc.strerror or exc}"
        ) from exc
    if guard is None:
        raise FileExistsError(f"{str(out)!r} is being written by another writer (locked)")
    try:
        lock_fd = create_locked(out, overwrite)
    finally:
        with contextlib.suppress(OSError):
            (out.parent / f".{out.name}.acqwriter-create").unlink()
        os.close(guard)
    store = LocalStore(out, sync=sync)
    store._lock_fd = lock_fd
    store.created_folders = [str(p) for p in created]
    return store


def create_store(
    root: str | os.PathLike[str], *, overwrite: bool, sync: str, io: str
) -> LocalStore:
    """:func:`create_local`, then direct I/O as ``io`` asks; where the filesystem refuses
    ``io="direct"`` the new directory is removed again and the error raised."""
    store = create_local(root, overwrite=overwrite, sync=sync)
    try:
        store.enable_direct_io(io)
    except OSError:
        store.release_lock()
        shutil.rmtree(store.root, ignore_errors=True)
        raise
    return store
