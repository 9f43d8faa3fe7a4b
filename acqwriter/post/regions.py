"""One pyramid level as output chunks, each computed from the chunks of the level above
it and written whole: the unit of work of every pyramid builder.

:class:`LevelRegions` reads only the source chunks under an output chunk (straight from
their files, :mod:`acqwriter.post.reader`), downsamples them
(:func:`acqwriter.post.downsample.downsample`) into the output chunk and compresses it
straight into the store's aligned write buffer. The single-machine builder
(:mod:`acqwriter.post.pyramid`) runs it on a thread pool; the cluster builder
(:mod:`acqwriter.post.cluster`) runs batches of it in Dask workers. Both make the same
bytes because they run the same code.
"""

from __future__ import annotations

import itertools
import json
import math
import threading

import numpy as np

from acqwriter.codec.blosc import IntoEncoder, max_compressed_size
from acqwriter.codec.chain import chunk_encoder
from acqwriter.format.keys import level
from acqwriter.format.versions import ZARR_FORMAT, array_document
from acqwriter.format.zarr_v3 import encode_array_metadata
from acqwriter.plan.pyramid import level_factors
from acqwriter.post.downsample import downsample
from acqwriter.post.reader import LevelReader, ShardCache
from acqwriter.spec.model import StreamSpec
from acqwriter.store.base import Store

__all__ = [
    "LevelRegions",
    "level0_shape",
    "source_chunks",
    "use_settings",
    "write_level_metadata",
]


def _chunk_aligned(
    source: LevelReader, chunks: tuple[int, ...], step: tuple[int, ...], grid: list[int]
) -> bool:
    """Whether every source chunk lies inside one output chunk's source region and every
    downsampled pair inside one source chunk: then each source chunk is downsampled on
    its own, straight into its place in the output chunk (no assembled region)."""
    for sc, n, c, f, g in zip(source.chunks, source.shape, chunks, step, grid, strict=True):
        if f == 2 and sc % 2 and n > sc:
            return False
        if g > 1 and (c * f) % sc:
            return False
    return True


def source_chunks(
    index: tuple[int, ...],
    chunks: tuple[int, ...],
    step: tuple[int, ...],
    source_chunk_shape: tuple[int, ...],
    source_shape: tuple[int, ...],
) -> list[tuple[int, ...]]:
    """The chunks of the level above (chunks of ``source_chunk_shape`` in an array of
    ``source_shape``) that output chunk ``index`` (of ``chunks``, ``step`` smaller) is
    made from."""
    ranges = []
    for i, c, f, sc, n in zip(index, chunks, step, source_chunk_shape, source_shape, strict=True):
        lo, hi = i * c * f, min((i + 1) * c * f, n)
        ranges.append(range(lo // sc, (hi - 1) // sc + 1))
    return list(itertools.product(*ranges))


class LevelRegions:
    """Level ``k`` (``shape`` in ``chunks``) of the image in ``store``, made chunk by
    chunk from level ``k - 1``, which must be complete. Thread-safe: each thread keeps
    its own buffers, reused for every chunk it makes."""

    def __init__(
        self,
        store: Store,
        spec: StreamSpec,
        k: int,
        shape: tuple[int, ...],
        chunks: tuple[int, ...],
    ) -> None:
        self.store = store
        self.keys = level(k, ZARR_FORMAT[spec.ngff_version])
        self.shape, self.chunks = shape, chunks
        self.step = level_factors(spec, 1)
        self.method = spec.pyramid.method
        self.source = LevelReader(
            store, level(k - 1).path, chunk_encoder(spec.codec), shards=ShardCache(store)
        )
        self.grid = tuple(math.ceil(s / c) for s, c in zip(shape, chunks, strict=True))
        self.aligned = _chunk_aligned(self.source, chunks, self.step, list(self.grid))
        self.dtype = self.source.dtype
        self.encoder = IntoEncoder(spec.codec, self.dtype)
        self.chunk_bytes = math.prod(chunks) * self.dtype.itemsize
        self._local = threading.local()

    def source_chunks(self, index: tuple[int, ...]) -> list[tuple[int, ...]]:
        """The chunks of level ``k - 1`` that output chunk ``index`` is made from."""
        return source_chunks(index, self.chunks, self.step, self.source.chunks, self.source.shape)

    def make(self, index: tuple[int, ...]) -> int:
        """Compute output chunk ``index`` and write it; returns its raw size in bytes."""
        block = self._by_source_chunks(index) if self.aligned else self._by_region(index)
        dest, address = self.store.scratch(max_compressed_size(self.chunk_bytes))
        n = self.encoder.encode_into(block, dest, address)
        self.store.write_chunk_from(self.keys.chunk(index), n)
        return self.chunk_bytes

    def _by_source_chunks(self, index: tuple[int, ...]) -> np.ndarray:
        source, local, chunks = self.source, self._local, self.chunks
        buf = getattr(local, "buf", None)
        if buf is None:  # this thread's buffers, reused for every chunk it makes
            buf = local.buf = np.empty(source.chunks, self.dtype)
            local.raw = None
            local.block = np.empty(chunks, self.dtype)
            local.scratch = {}
        block = local.block
        block.fill(source.fill_value)
        for src in self.source_chunks(index):
            data = source.read_chunk(src, local.raw)
            if data is None:
                continue  # never written: the fill value, already in the block
            if isinstance(data, memoryview):
                local.raw = data.obj  # reused for the next read
            decoded = source.decoder.decode(data, out=buf)
            if decoded is not buf:
                buf[...] = np.frombuffer(decoded, self.dtype).reshape(source.chunks)
            valid = tuple(
                slice(0, min(sc, n - j * sc))
                for j, sc, n in zip(src, source.chunks, source.shape, strict=True)
            )
            part = downsample(buf[valid], self.step, self.method, scratch=local.scratch)
            dst = []
            for j, sc, f, i, c, m in zip(
                src, source.chunks, self.step, index, chunks, part.shape, strict=True
            ):
                start = j * sc // f - i * c
                dst.append(slice(start, min(start + m, c)))
            block[tuple(dst)] = part[tuple(slice(0, d.stop - d.start) for d in dst)]
        return block

    def _by_region(self, index: tuple[int, ...]) -> np.ndarray:
        chunks, shape, source = self.chunks, self.shape, self.source
        out_sl = [
            slice(i * c, min((i + 1) * c, s)) for i, c, s in zip(index, chunks, shape, strict=True)
        ]
        src_sl = tuple(
            slice(o.start * f, min(o.stop * f, n))
            for o, f, n in zip(out_sl, self.step, source.shape, strict=True)
        )
        part = downsample(np.asarray(source[src_sl]), self.step, self.method)
        part = part[tuple(slice(0, o.stop - o.start) for o in out_sl)]
        if part.shape == chunks:
            return np.ascontiguousarray(part)
        block = np.full(chunks, source.fill_value, self.dtype)  # edge chunk: pad
        block[tuple(slice(0, n) for n in part.shape)] = part
        return block


def level0_shape(store: Store, spec: StreamSpec) -> tuple[int, ...]:
    """The shape level 0 has on disk."""
    keys = level(0, ZARR_FORMAT[spec.ngff_version])
    return tuple(json.loads(store.read_bytes(keys.metadata))["shape"])


def write_level_metadata(
    store: Store, spec: StreamSpec, k: int, shape: tuple[int, ...], chunks: tuple[int, ...]
) -> None:
    """Level ``k``'s array document (its chunks come after; it is listed when whole)."""
    keys = level(k, ZARR_FORMAT[spec.ngff_version])
    meta = array_document(spec, shape, chunks)
    store.write_atomic(keys.metadata, encode_array_metadata(meta, shape))


def use_settings(store: Store, spec: StreamSpec) -> None:
    """Write with the durability and I/O mode the dataset was written with."""
    store.sync = spec.sync
    store.enable_direct_io("auto" if spec.io == "direct" else spec.io)
