"""One image's view of a dataset's store: every key under the image's path.

An image of a collection or a plate is written exactly as a one-image dataset is, at
its own path (``"2"``, ``"B/3/0"``): :class:`PrefixedStore` puts that path in front
of every key, so the array writer, the committer and the pyramid need not know where
the image lives. Space, durability, the lock and the reserves are the dataset's: they
go to the store underneath unchanged.
"""

from __future__ import annotations

from typing import Any

from acqwriter.store.base import RESERVE_NAME, ShardSink, Store

__all__ = ["PrefixedStore"]


class PrefixedStore(Store):
    """``store`` seen from ``prefix`` (see the module docstring)."""

    def __init__(self, store: Store, prefix: str) -> None:
        super().__init__(sync=store.sync)
        self.base = store
        self.prefix = prefix.strip("/")
        self.created_folders = store.created_folders

    def _key(self, key: str) -> str:
        if not self.prefix:
            return key
        return f"{self.prefix}/{key}" if key else self.prefix

    @property
    def supports_cheap_ranges(self) -> bool:  # type: ignore[override]
        return self.base.supports_cheap_ranges

    @property
    def direct(self) -> bool:  # type: ignore[override]
        base = self.__dict__.get("base")
        return base is not None and base.direct

    @direct.setter
    def direct(self, value: bool) -> None:
        pass  # the store underneath decides

    @property
    def location(self) -> str:
        return f"{self.base.location}/{self.prefix}" if self.prefix else self.base.location

    @property
    def write_alignment(self) -> int:
        return self.base.write_alignment

    def enable_direct_io(self, mode: str) -> bool:
        return self.base.enable_direct_io(mode)

    def scratch(self, size: int) -> tuple[Any, int]:
        return self.base.scratch(size)

    def write_chunk_from(self, key: str, n: int, buf: Any = None) -> int:
        return self.base.write_chunk_from(self._key(key), n, buf)

    def open_shard(self, key: str) -> ShardSink:
        return self.base.open_shard(self._key(key))

    def write_atomic(self, key: str, data: bytes) -> None:
        self.base.write_atomic(self._key(key), data)

    def append_lines(self, key: str, data: bytes) -> None:
        self.base.append_lines(self._key(key), data)

    def remove(self, key: str) -> None:
        self.base.remove(self._key(key))

    def remove_tree(self, key: str) -> None:
        self.base.remove_tree(self._key(key))

    def tree_bytes(self, key: str) -> int:
        return self.base.tree_bytes(self._key(key))

    def walk(self, key: str = "") -> list[str]:
        cut = len(self.prefix) + 1 if self.prefix else 0
        return [k[cut:] for k in self.base.walk(self._key(key))]

    def remove_lines(self, key: str) -> None:
        self.base.remove_lines(self._key(key))

    def truncate_lines(self, key: str, nbytes: int) -> None:
        self.base.truncate_lines(self._key(key), nbytes)

    def read_lines(self, key: str) -> bytes:
        return self.base.read_lines(self._key(key))

    def read_bytes(self, key: str) -> bytes:
        return self.base.read_bytes(self._key(key))

    def read_range(self, key: str, offset: int, n: int) -> bytes:
        return self.base.read_range(self._key(key), offset, n)

    def read_into(self, key: str, buf: Any = None) -> memoryview:
        return self.base.read_into(self._key(key), buf)

    def size(self, key: str) -> int:
        return self.base.size(self._key(key))

    def list_dir(self, key: str = "") -> list[str]:
        return self.base.list_dir(self._key(key))

    def free_bytes(self) -> int:
        return self.base.free_bytes()

    def reserve(self, nbytes: int, name: str = RESERVE_NAME) -> None:
        self.base.reserve(nbytes, name)

    def free_reserve(self, name: str = RESERVE_NAME) -> None:
        self.base.free_reserve(name)

    def flush(self) -> None:
        self.base.flush()
