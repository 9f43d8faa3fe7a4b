"""Read regions of an array acqwriter wrote, straight from its chunk files.

Used after acquisition (pyramid building), where zarr-python's per-call overhead made
pyramids slower than the acquisition itself (a 500-frame 2048² demo: ~12 s). It only
handles what acqwriter writes — regular grid, default ``c/…`` keys, one numcodecs codec,
optionally inside ``sharding_indexed`` shards (index at the end, see
:mod:`acqwriter.format.zarr_v3`) — and decodes with numcodecs, which releases the GIL, so pyramid
threads scale. A missing chunk (or an empty inner chunk) reads as the fill value, as in
Zarr.
"""

from __future__ import annotations

import itertools
import json
import math
import threading
from collections import OrderedDict
from typing import Any

import numpy as np

from acqwriter.format.keys import ArrayKeys
from acqwriter.format.zarr_v3 import EMPTY, decode_index, index_nbytes
from acqwriter.store.base import Store

__all__ = ["LevelReader", "ShardCache", "normalize_index", "read_inner_chunk"]


class LevelReader:
    """``reader[slices]`` → ndarray for one level (``"0"``, ``"1"``, …) of a dataset."""

    def __init__(
        self, store: Store, path: str, decoder: Any, *, shards: ShardCache | None = None
    ) -> None:
        self.shards = shards  # for a dataset no writer changes (pyramid, recover)
        self.keys = ArrayKeys(path)
        try:
            meta = json.loads(store.read_bytes(self.keys.metadata))
        except FileNotFoundError:  # Zarr v2 (OME-NGFF 0.4)
            self.keys = ArrayKeys(path, 2)
            meta = json.loads(store.read_bytes(self.keys.metadata))
        self.store = store
        self.path = path
        self.decoder = decoder
        self.shape = tuple(meta["shape"])
        self.shard: tuple[int, ...] | None = None  # inner chunks per shard, per axis
        if meta.get("zarr_format") == 2:
            self.chunks = tuple(meta["chunks"])
            self.dtype = np.dtype(meta["dtype"])
            self.fill_value = meta["fill_value"] or 0
            return
        self.chunks = tuple(meta["chunk_grid"]["configuration"]["chunk_shape"])
        first = meta["codecs"][0]
        if first["name"] == "sharding_indexed":
            inner = tuple(first["configuration"]["chunk_shape"])
            self.shard = tuple(s // c for s, c in zip(self.chunks, inner, strict=True))
            self.chunks = inner
        self.dtype = np.dtype(meta["data_type"])
        self.fill_value = meta["fill_value"]

    def __getitem__(self, slices: tuple[slice, ...]) -> np.ndarray:
        bounds = [
            (s.start or 0, min(s.stop if s.stop is not None else n, n))
            for s, n in zip(slices, self.shape, strict=True)
        ]
        out = np.full([hi - lo for lo, hi in bounds], self.fill_value, self.dtype)
        ranges = [
            range(lo // c, (hi - 1) // c + 1)
            for (lo, hi), c in zip(bounds, self.chunks, strict=True)
        ]
        for index in itertools.product(*ranges):
            data = self.read_chunk(index)
            if data is None:
                continue  # never written: fill value
            chunk = np.frombuffer(self.decoder.decode(data), self.dtype).reshape(self.chunks)
            src, dst = [], []
            for i, (lo, hi), c in zip(index, bounds, self.chunks, strict=True):
                c0 = i * c
                a, b = max(lo, c0), min(hi, c0 + c)
                src.append(slice(a - c0, b - c0))
                dst.append(slice(a - lo, b - lo))
            out[tuple(dst)] = chunk[tuple(src)]
        return out

    def select(self, key: Any) -> np.ndarray:
        """``reader[key]`` with numpy's semantics over :attr:`shape` (integers drop their
        axis, slices keep it, steps included): one read of the region the key spans,
        so each chunk is decoded once."""
        index = normalize_index(key, self.shape)
        picks = [
            range(*k.indices(n)) if isinstance(k, slice) else range(k, k + 1)
            for k, n in zip(index, self.shape, strict=True)
        ]
        bounds = [(min(p), max(p) + 1) if len(p) else (0, 0) for p in picks]
        data = self[tuple(slice(lo, hi) for lo, hi in bounds)]
        rel = [np.asarray(p, int) - lo for p, (lo, _) in zip(picks, bounds, strict=True)]
        return data[np.ix_(*rel)][tuple(0 if isinstance(k, int) else slice(None) for k in index)]

    def read_chunk(
        self, index: tuple[int, ...], buf: bytearray | None = None
    ) -> bytes | memoryview | None:
        """Encoded bytes of (inner) chunk ``index``, or None where nothing was written.
        An unsharded chunk is read into ``buf`` (see
        :meth:`acqwriter.store.base.Store.read_into`), and the result is a view of it."""
        try:
            if self.shard is None:
                return self.store.read_into(self.keys.chunk(index), buf)
            outer = tuple(i // f for i, f in zip(index, self.shard, strict=True))
            position = int(
                np.ravel_multi_index(
                    tuple(i % f for i, f in zip(index, self.shard, strict=True)), self.shard
                )
            )
            key = self.keys.chunk(outer)
            if self.shards is not None:
                return self.shards.inner(key, position, math.prod(self.shard))
            return read_inner_chunk(self.store, key, position, math.prod(self.shard))
        except FileNotFoundError:
            return None


def read_inner_chunk(store: Store, key: str, position: int, n_inner: int) -> bytes | None:
    """Bytes of inner chunk ``position`` of the shard at ``key``; None if the chunk is
    empty. Raises FileNotFoundError (no shard) / ValueError (torn index)."""
    size = store.size(key)
    n = index_nbytes(n_inner)
    if size < n:
        raise ValueError(f"{key}: shard shorter than its index")
    index = decode_index(store.read_range(key, size - n, n), n_inner)
    if index is None:
        raise ValueError(f"{key}: shard index fails its checksum")
    offset, nbytes = (int(v) for v in index[position])
    if offset == EMPTY:
        return None
    if offset + nbytes > size - n:
        raise ValueError(f"{key}: inner chunk {position} lies outside the shard")
    return store.read_range(key, offset, nbytes)


class ShardCache:
    """Shards read once for many inner chunks, for a dataset no writer is changing
    (``pyramid``, ``recover``: they hold its lock). Where a read is a request to a
    server (``store.supports_cheap_ranges`` false: an object store) the whole shard is
    fetched with one GET and kept, up to :attr:`max_bytes` of the most recently used;
    on a filesystem only the shard's size and index are kept (ranged reads through the
    page cache are cheap), so each inner chunk is one read instead of three."""

    max_bytes = 128 << 20
    max_indexes = 4096

    def __init__(self, store: Store) -> None:
        self.store = store
        self.whole = not store.supports_cheap_ranges
        self._lock = threading.Lock()
        self._found: OrderedDict[str, tuple[int, Any, bytes | None]] = OrderedDict()
        self._bytes = 0

    def _shard(self, key: str, n_inner: int) -> tuple[int, Any, bytes | None]:
        with self._lock:
            hit = self._found.get(key)
            if hit is not None:
                self._found.move_to_end(key)
                return hit
        n = index_nbytes(n_inner)
        data = self.store.read_bytes(key) if self.whole else None
        size = len(data) if data is not None else self.store.size(key)
        if size < n:
            raise ValueError(f"{key}: shard shorter than its index")
        tail = data[size - n :] if data is not None else self.store.read_range(key, size - n, n)
        index = decode_index(tail, n_inner)
        if index is None:
            raise ValueError(f"{key}: shard index fails its checksum")
        entry = (size, index, data)
        with self._lock:
            self._found[key] = entry
            self._bytes += len(data) if data is not None else 0
            while len(self._found) > 1 and (
                self._bytes > self.max_bytes or len(self._found) > self.max_indexes
            ):
                _, (_, _, old) = self._found.popitem(last=False)
                self._bytes -= len(old) if old is not None else 0
        return entry

    def inner(self, key: str, position: int, n_inner: int) -> bytes | None:
        """As :func:`read_inner_chunk`."""
        size, index, data = self._shard(key, n_inner)
        offset, nbytes = (int(v) for v in index[position])
        if offset == EMPTY:
            return None
        if offset + nbytes > size - index_nbytes(n_inner):
            raise ValueError(f"{key}: inner chunk {position} lies outside the shard")
        if data is not None:
            return data[offset : offset + nbytes]
        return self.store.read_range(key, offset, nbytes)


def normalize_index(key: Any, shape: tuple[int, ...]) -> tuple[int | slice, ...]:
    """``key`` as one int or slice per axis (numpy's rules: ``...``, negative indices,
    IndexError out of bounds)."""
    keys = key if isinstance(key, tuple) else (key,)
    if any(k is Ellipsis for k in keys):
        at = next(i for i, k in enumerate(keys) if k is Ellipsis)
        fill = len(shape) - (len(keys) - 1)
        keys = (*keys[:at], *(slice(None),) * fill, *keys[at + 1 :])
    if len(keys) > len(shape):
        raise IndexError(
            f"too many indices: the view is {len(shape)}-dimensional, {len(keys)} were given"
        )
    keys = (*keys, *(slice(None),) * (len(shape) - len(keys)))
    out: list[int | slice] = []
    for k, n in zip(keys, shape, strict=True):
        if isinstance(k, slice):
            out.append(k)
            continue
        try:
            i = int(k)  # numpy integers too
        except TypeError:
            raise TypeError(f"index: expected integers or slices, got {k!r}") from None
        if not -n <= i < n:
            raise IndexError(f"index {i} is out of bounds for an axis of size {n}")
        out.append(i % n)
    return tuple(out)
