"""Fault injection through the store interface.

:class:`StoreWrapper` implements :class:`acqwriter.store.base.Store` by forwarding every
call to a real store; a test subclasses it and changes one method (a slow disk, a full
disk, a failing write) and hands it to ``open_stream(spec, store=...)``. No module
global is patched: the engine runs exactly as it does on a real store.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from acqwriter.store.base import RESERVE_NAME, ShardSink, Store
from acqwriter.store.create import create_local
from acqwriter.store.local import LocalStore


def local_store(out: str | Path, *, io: str = "auto", sync: str = "close") -> LocalStore:
    """A new dataset directory as ``open_stream`` makes it (locked, direct I/O as asked)."""
    store = create_local(out, overwrite=True, sync=sync)
    store.enable_direct_io(io)
    return store


class StoreWrapper(Store):
    """Every call goes to ``inner`` (see the module docstring)."""

    def __init__(self, inner: Store) -> None:
        super().__init__(sync=inner.sync)
        self.inner = inner
        self.created_folders = inner.created_folders

    @property
    def supports_cheap_ranges(self) -> bool:  # type: ignore[override]
        return self.inner.supports_cheap_ranges

    @property
    def direct(self) -> bool:  # type: ignore[override]
        return getattr(self, "inner", None) is not None and self.inner.direct

    @direct.setter
    def direct(self, value: bool) -> None:
        pass  # the inner store decides

    @property
    def location(self) -> str:
        return self.inner.location

    @property
    def write_alignment(self) -> int:
        return self.inner.write_alignment

    def scratch(self, size: int) -> tuple[Any, int]:
        return self.inner.scratch(size)

    def write_chunk_from(self, key: str, n: int, buf: Any = None) -> int:
        return self.inner.write_chunk_from(key, n, buf)

    def open_shard(self, key: str) -> ShardSink:
        return self.inner.open_shard(key)

    def write_atomic(self, key: str, data: bytes) -> None:
        self.inner.write_atomic(key, data)

    def append_lines(self, key: str, data: bytes) -> None:
        self.inner.append_lines(key, data)

    def remove(self, key: str) -> None:
        self.inner.remove(key)

    def remove_tree(self, key: str) -> None:
        self.inner.remove_tree(key)

    def read_bytes(self, key: str) -> bytes:
        return self.inner.read_bytes(key)

    def read_lines(self, key: str) -> bytes:
        return self.inner.read_lines(key)

    def tree_bytes(self, key: str) -> int:
        return self.inner.tree_bytes(key)

    def walk(self, key: str = "") -> list[str]:
        return self.inner.walk(key)

    def truncate_lines(self, key: str, nbytes: int) -> None:
        self.inner.truncate_lines(key, nbytes)

    def abort_uploads(self) -> int:
        return self.inner.abort_uploads()

    def read_range(self, key: str, offset: int, n: int) -> bytes:
        return self.inner.read_range(key, offset, n)

    def read_into(self, key: str, buf: Any = None) -> memoryview:
        return self.inner.read_into(key, buf)

    def size(self, key: str) -> int:
        return self.inner.size(key)

    def list_dir(self, key: str = "") -> list[str]:
        return self.inner.list_dir(key)

    def free_bytes(self) -> int:
        return self.inner.free_bytes()

    def reserve(self, nbytes: int, name: str = RESERVE_NAME) -> None:
        self.inner.reserve(nbytes, name)

    def free_reserve(self, name: str = RESERVE_NAME) -> None:
        self.inner.free_reserve(name)

    def take_lock(self) -> None:
        self.inner.take_lock()

    def release_lock(self) -> None:
        self.inner.release_lock()

    def flush(self) -> None:
        self.inner.flush()


class SinkWrapper(ShardSink):
    """Every call goes to ``inner`` (a shard sink); a test subclasses it as it does
    :class:`StoreWrapper`."""

    def __init__(self, inner: ShardSink) -> None:
        self.inner = inner

    def write(self, segment: Any, n: int, offset: int) -> int:
        return self.inner.write(segment, n, offset)

    def seal(self, end: int, tail: bytes) -> None:
        self.inner.seal(end, tail)

    def finish(self, end: int) -> None:
        self.inner.finish(end)

    def abandon(self) -> None:
        self.inner.abandon()
