"""A store in memory: the engine, the pyramid and the readers on something that is not a
filesystem.

:class:`MemoryStore` keeps every object as bytes in a dict, behind one lock. It has no
direct I/O and no cross-process lock (its capability flags say so); its reserves count
against its capacity until given back, as a reserved file's blocks do; its
writes and renames are atomic because they happen under the lock. ``capacity`` bounds
the bytes it holds: a write beyond it fails with ``ENOSPC`` as a full disk does (part
of an append is kept, cut back to whole lines), which makes it a full disk for tests
too. :meth:`MemoryStore.to_directory` copies the dataset to disk for readers that
need files.
"""

from __future__ import annotations

import errno
import threading
from pathlib import Path
from typing import Any

from acqwriter.store.base import (
    RESERVE_NAME,
    PartialAppend,
    ShardSink,
    StorageError,
    Store,
    in_progress_key,
)

__all__ = ["MemoryStore"]


class MemoryStore(Store):
    """Objects in a dict (see the module docstring)."""

    supports_reserve = True  # reserves count against the capacity until given back

    def __init__(self, *, capacity: int | None = None, sync: str = "close") -> None:
        super().__init__(sync=sync)
        self.capacity = capacity
        self.objects: dict[str, bytes] = {}
        self._reserved: dict[str, int] = {}
        self._lock = threading.Lock()

    @property
    def location(self) -> str:
        return f"memory:{id(self):x}"

    # -- writes -------------------------------------------------------------------------
    def _put_locked(self, key: str, data: bytes) -> None:
        grow = len(data) - len(self.objects.get(key, b""))
        if self.capacity is not None and self._used_locked() + grow > self.capacity:
            raise StorageError(errno.ENOSPC, f"cannot write {key!r}: no space left (memory)")
        self.objects[key] = data

    def _used_locked(self) -> int:
        return sum(len(v) for v in self.objects.values()) + sum(self._reserved.values())

    def write_chunk_from(self, key: str, n: int, buf: Any = None) -> int:
        if buf is None:
            buf, _ = self.scratch(n)
        data = bytes(memoryview(buf)[:n])
        with self._lock:
            self._put_locked(key, data)
        return n

    def open_shard(self, key: str) -> ShardSink:
        with self._lock:
            self._put_locked(in_progress_key(key), b"")
        return _MemoryShard(self, key)

    def write_atomic(self, key: str, data: bytes) -> None:
        with self._lock:
            self._put_locked(key, bytes(data))

    def append_lines(self, key: str, data: bytes) -> None:
        with self._lock:
            old = self.objects.get(key, b"")
            room = len(data) if self.capacity is None else self.capacity - self._used_locked()
            if room >= len(data):
                self.objects[key] = old + bytes(data)
                return
            whole = bytes(data[: max(room, 0)]).rfind(b"\n") + 1  # whole lines only
            self.objects[key] = old + bytes(data[:whole])
        cause = OSError(errno.ENOSPC, "no space left (memory)")
        raise PartialAppend(cause, key, bytes(data[:whole]).count(b"\n"))

    def remove(self, key: str) -> None:
        with self._lock:
            self.objects.pop(key, None)

    def remove_tree(self, key: str) -> None:
        prefix = key.rstrip("/") + "/"
        with self._lock:
            for name in [k for k in self.objects if k == key or k.startswith(prefix)]:
                del self.objects[name]

    # -- reads --------------------------------------------------------------------------
    def read_bytes(self, key: str) -> bytes:
        with self._lock:
            try:
                return bytes(self.objects[key])
            except KeyError:
                raise FileNotFoundError(errno.ENOENT, f"no object {key!r}") from None

    def read_range(self, key: str, offset: int, n: int) -> bytes:
        if n == 0:
            return b""  # as on a filesystem: the object may not exist yet
        data = self.read_bytes(key)
        if offset + n > len(data):
            raise StorageError(errno.EIO, f"{key!r}: shorter than {offset + n} bytes")
        return data[offset : offset + n]

    def size(self, key: str) -> int:
        return len(self.read_bytes(key))

    def list_dir(self, key: str = "") -> list[str]:
        prefix = key.rstrip("/") + "/" if key else ""
        with self._lock:
            names = {
                k[len(prefix) :].split("/", 1)[0] for k in self.objects if k.startswith(prefix)
            }
        return sorted(names)

    def reserve(self, nbytes: int, name: str = RESERVE_NAME) -> None:
        with self._lock:
            self._reserved[name] = nbytes

    def free_reserve(self, name: str = RESERVE_NAME) -> None:
        with self._lock:
            self._reserved.pop(name, None)

    def free_bytes(self) -> int:
        if self.capacity is None:
            return 1 << 62
        with self._lock:
            return max(0, self.capacity - self._used_locked())

    # -- export ---------------------------------------------------------------------------
    def to_directory(self, root: str | Path) -> Path:
        """Write every object to files under ``root`` (a dataset any reader opens)."""
        root = Path(root)
        with self._lock:
            items = list(self.objects.items())
        for key, data in items:
            path = root / key
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        return root


class _MemoryShard(ShardSink):
    """A shard's bytes growing in the store under a temporary key (readable while it
    grows, as a file is) until it is finished and moved to its key."""

    def __init__(self, store: MemoryStore, key: str) -> None:
        self._store = store
        self._key = key
        self._tmp_key = in_progress_key(key)
        self._data = bytearray()
        with store._lock:
            store.objects[self._tmp_key] = self._data  # type: ignore[assignment]

    def write(self, segment: Any, n: int, offset: int) -> int:
        store = self._store
        with memoryview(segment) as view, store._lock:
            grow = max(0, offset + n - len(self._data))
            if store.capacity is not None and store._used_locked() + grow > store.capacity:
                raise StorageError(errno.ENOSPC, f"cannot write {self._key!r}: no space left")
            if grow:
                self._data.extend(bytes(grow))
            self._data[offset : offset + n] = view[:n]
        return n

    def seal(self, end: int, tail: bytes) -> None:
        with self._store._lock:
            head = bytes(self._data[:end])
        self._store.write_atomic(self._key, head + tail)

    def finish(self, end: int) -> None:
        with self._store._lock:
            del self._data[end:]
            self._store.objects.pop(self._tmp_key, None)
            self._store.objects[self._key] = bytes(self._data)

    def abandon(self) -> None:
        self._store.remove(self._tmp_key)
