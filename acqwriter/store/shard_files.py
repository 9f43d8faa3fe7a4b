"""A shard grown as a file on a local filesystem (see :class:`ShardFile`).

Writer threads write its segments at their offsets in any order (``pwrite``, O_DIRECT
when the store has direct I/O); a seal copies the bytes already in the file beside the
tail; the finish cuts the file at its end, makes it durable and renames it over the key.
"""

from __future__ import annotations

import errno
import os
from typing import TYPE_CHECKING, Any

from acqwriter.store.base import ShardSink, StorageError
from acqwriter.store.buffers import DIRECT_ALIGN

if TYPE_CHECKING:
    from acqwriter.store.local import LocalStore

__all__ = ["ShardFile"]


class ShardFile(ShardSink):
    """A shard's temporary file: positional writes from several threads, then cut,
    closed and renamed over its key; a seal copies the file's head beside the tail."""

    def __init__(self, store: LocalStore, key: str, tmp_key: str, fd: int) -> None:
        self._store = store
        self._key = key
        self._tmp_key = tmp_key
        self._fd: int | None = fd

    def write(self, segment: Any, n: int, offset: int) -> int:
        padded = -(-n // DIRECT_ALIGN) * DIRECT_ALIGN if self._store.direct else n
        # the views are released even on error: a traceback kept with the stream's error
        # would otherwise pin an export of the segment and the pool could not unmap it
        with memoryview(segment) as whole, whole[:padded] as view:
            try:
                written = 0
                while written < padded:
                    with view[written:] as rest:
                        written += os.pwrite(self._fd, rest, offset + written)  # type: ignore[arg-type]
            except OSError as exc:
                raise StorageError(
                    exc.errno or errno.EIO, f"cannot write shard data: {exc.strerror or exc}"
                ) from exc
        return padded

    def seal(self, end: int, tail: bytes) -> None:
        # bytes before ``end`` are on disk and never rewritten (later segments land
        # after it), so they are read back through the page cache beside the writers
        head = self._store.read_range(self._tmp_key, 0, end) if end else b""
        self._store.write_atomic(self._key, head + tail)

    def finish(self, end: int) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            os.ftruncate(fd, end)
            if self._store.sync == "always":
                os.fsync(fd)
        except OSError as exc:
            raise StorageError(
                exc.errno or errno.EIO, f"cannot finish shard: {exc.strerror or exc}"
            ) from exc
        finally:
            os.close(fd)
        self._store._publish(self._tmp_key, self._key)

    def abandon(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)
        self._store.remove(self._tmp_key)
