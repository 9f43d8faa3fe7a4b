"""Chunk compression: one spec, two faces.

:func:`chunk_encoder` returns the numcodecs object the writer threads call on the hot
path (blosc and zstd release the GIL while they compress, so one thread per core
scales). :func:`zarr_codecs` returns the equivalent zarr-python codec objects, used only
to produce the array's ``zarr.json`` codec chain — so the bytes our threads write are
exactly what any Zarr v3 reader expects under that metadata.
"""

from __future__ import annotations

from typing import Any, Protocol

import numcodecs
import numpy as np
from numcodecs.blosc import Blosc
from numcodecs.zstd import Zstd

from acqwriter.spec import Compression

__all__ = ["ChunkEncoder", "chunk_encoder", "zarr_codecs"]

# numcodecs' blosc may spawn its own thread pool when called from the main thread;
# our writer pool already runs one thread per core, so keep blosc single-threaded and
# in its contextual (GIL-free) mode everywhere.
numcodecs.blosc.use_threads = False

_SHUFFLE = {"noshuffle": Blosc.NOSHUFFLE, "shuffle": Blosc.SHUFFLE, "bitshuffle": Blosc.BITSHUFFLE}


class ChunkEncoder(Protocol):
    def encode(self, buf: Any) -> Any: ...
    def decode(self, buf: Any, out: Any = None) -> Any: ...


class _Raw:
    """The ``none`` codec: the chunk's bytes as they are (little-endian, C order)."""

    def encode(self, buf: Any) -> Any:
        return np.ascontiguousarray(buf).view(np.uint8).reshape(-1)

    def decode(self, buf: Any, out: Any = None) -> Any:
        return bytes(buf)


def chunk_encoder(compression: Compression) -> ChunkEncoder:
    if compression.name == "blosc":
        return Blosc(
            cname=compression.cname,
            clevel=compression.level,
            shuffle=_SHUFFLE[compression.shuffle],
            blocksize=0,
        )
    if compression.name == "zstd":
        return Zstd(level=compression.level)
    return _Raw()


def zarr_codecs(compression: Compression, dtype: np.dtype) -> list[Any]:
    """zarr-python compressor objects equivalent to :func:`chunk_encoder`."""
    from zarr.codecs import BloscCodec, ZstdCodec

    if compression.name == "blosc":
        return [
            BloscCodec(
                cname=compression.cname,
                clevel=compression.level,
                shuffle=compression.shuffle,
                typesize=dtype.itemsize,
                blocksize=0,
            )
        ]
    if compression.name == "zstd":
        return [ZstdCodec(level=compression.level, checksum=False)]
    return []
