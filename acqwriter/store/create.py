"""A new dataset's store: where the writer opens what it writes into.

:func:`create_store` makes a new, empty, locked dataset at a path (a directory on a
local or mounted filesystem, with direct I/O as ``io`` asks) or under an object-store
URL (:func:`create_object`) and returns its :class:`~acqwriter.store.base.Store`; the
engine opens every dataset through it. :func:`create_local` is the directory alone.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from pathlib import Path

from acqwriter.format.keys import GROUP_METADATA, ZGROUP
from acqwriter.spec.location import ObjectURL
from acqwriter.store.base import StorageError, Store
from acqwriter.store.folders import create_locked, missing_parents, try_lock
from acqwriter.store.local import LocalStore

__all__ = ["create_local", "create_object", "create_store"]

# the objects that make a prefix a Zarr dataset (v3, v2): it may then be replaced
_ZARR_ROOTS = (GROUP_METADATA, ZGROUP)


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
    root: str | os.PathLike[str],
    *,
    overwrite: bool,
    sync: str,
    io: str,
    options: dict[str, str] | None = None,
) -> Store:
    """:func:`create_local`, then direct I/O as ``io`` asks; where the filesystem refuses
    ``io="direct"`` the new directory is removed again and the error raised. An
    :class:`~acqwriter.spec.location.ObjectURL` goes to :func:`create_object` (with the
    store's ``options``)."""
    if isinstance(root, ObjectURL):
        if io == "direct":
            raise StorageError(errno.EINVAL, "io: an object store has no direct I/O")
        return create_object(root, overwrite=overwrite, sync=sync, options=options or {})
    store = create_local(root, overwrite=overwrite, sync=sync)
    try:
        store.enable_direct_io(io)
    except OSError:
        store.release_lock()
        shutil.rmtree(store.root, ignore_errors=True)
        raise
    return store


def create_object(url: ObjectURL, *, overwrite: bool, sync: str, options: dict[str, str]) -> Store:
    """A new, empty, locked dataset under ``url``'s prefix. The bucket and the
    credentials are tried first (a listing), so a missing bucket or a refused key is
    found before the first frame. An existing dataset is replaced only with
    ``overwrite`` and when no writer holds it; a prefix holding objects that are not a
    Zarr dataset is never emptied."""
    try:
        from acqwriter.store.objects import LOCK_NAME, PROBE_RETRY, ObjectStore
    except ImportError as exc:  # the optional dependency
        raise StorageError(
            errno.ENOSYS, f"cannot write {url}: object storage needs obstore "
            "(pip install 'acqwriter[s3]')"
        ) from exc  # fmt: skip
    probe = ObjectStore.from_url(url, sync=sync, options=options, retry=PROBE_RETRY)
    store = ObjectStore.from_url(url, sync=sync, options=options)
    try:
        existing = probe.list_dir()
    except OSError as exc:
        reason = (exc.strerror or str(exc)).replace("cannot list", "cannot reach", 1)
        raise StorageError(exc.errno or errno.EIO, reason) from None
    try:
        store.take_lock()  # a dead writer's lock is taken over (object_lock)
    except FileExistsError as exc:
        raise FileExistsError(
            f"{url!r} is being written by another writer (locked): {exc.strerror or exc}"
        ) from None
    try:
        if [name for name in existing if name != LOCK_NAME]:
            if not any(name in existing for name in _ZARR_ROOTS):
                raise FileExistsError(
                    f"{url!r} holds objects that are not a Zarr dataset; refusing to delete "
                    "them even with overwrite"
                )
            if not overwrite:
                raise FileExistsError(f"{url!r} already exists (set overwrite to replace it)")
            store.abort_uploads()
            for key in store.walk(""):
                if key != LOCK_NAME:
                    store.remove(key)
    except BaseException:
        store.release_lock()
        raise
    return store
