"""Compress a chunk straight into a buffer we own (the hot path's zero-copy step).

Why this exists: ``numcodecs.Blosc.encode`` returns a new ``bytes`` object, and it
makes it by compressing into an oversized buffer and then *slicing* it (a copy). The
direct-I/O writer then has to copy those bytes again into page-aligned memory. On a
2048² uint16 frame that is ~9 MiB of memcpy per chunk, ~20 % of all CPU time in a
profile of scenario (a) (``perf record`` on ``benchmarks/probe_pipeline.py``), on a
machine whose two cores should be compressing.

So for blosc we call ``blosc_compress_ctx`` — the very function numcodecs calls, in the
copy of c-blosc that numcodecs ships (its extension module exports the C API) — with
the destination set to the writer thread's page-aligned buffer. Same library, same
arguments (contextual mode, one internal thread, automatic block size): the bytes are
identical to ``numcodecs.Blosc.encode`` (``tests/test_compress_into.py`` checks it for
every cname/shuffle we offer). ctypes releases the GIL for the call, like numcodecs.

Other codecs (zstd, none), or a numcodecs build that does not export the symbol, fall
back to ``encode`` plus one copy. Hand-written only because no library offers
"compress into this buffer" for blosc 1 (python-blosc and numcodecs both return bytes).
"""

from __future__ import annotations

import ctypes
from typing import Any

import numpy as np

from acqwriter.codecs import chunk_encoder
from acqwriter.spec import Compression

__all__ = ["BLOSC_OVERHEAD", "IntoEncoder", "max_compressed_size"]

BLOSC_OVERHEAD = 16  # BLOSC_MAX_OVERHEAD: header of a chunk that did not compress
_SHUFFLE = {"noshuffle": 0, "shuffle": 1, "bitshuffle": 2}


def _load_blosc_compress() -> Any | None:
    try:
        import numcodecs.blosc as nb

        lib = ctypes.CDLL(nb.__file__)
        fn = lib.blosc_compress_ctx
    except (OSError, AttributeError, ImportError):
        return None
    fn.argtypes = [
        ctypes.c_int,  # clevel
        ctypes.c_int,  # doshuffle
        ctypes.c_size_t,  # typesize
        ctypes.c_size_t,  # nbytes
        ctypes.c_void_p,  # src
        ctypes.c_void_p,  # dest
        ctypes.c_size_t,  # destsize
        ctypes.c_char_p,  # compressor
        ctypes.c_size_t,  # blocksize (0: automatic, as numcodecs' default)
        ctypes.c_int,  # numinternalthreads
    ]
    fn.restype = ctypes.c_int
    return fn


_BLOSC_COMPRESS = _load_blosc_compress()


def max_compressed_size(nbytes: int) -> int:
    """Upper bound of an encoded chunk of ``nbytes`` raw bytes, for every codec we offer."""
    # blosc: nbytes + 16; zstd: its compressBound (~nbytes/255 + 128 more); none: nbytes
    return nbytes + nbytes // 128 + 4096


class IntoEncoder:
    """``encode_into(array, dest, dest_address) -> nbytes`` for one compression spec."""

    def __init__(self, compression: Compression, dtype: np.dtype) -> None:
        self.compression = compression
        self._typesize = np.dtype(dtype).itemsize
        self._fallback = chunk_encoder(compression)
        self.zero_copy = compression.name == "blosc" and _BLOSC_COMPRESS is not None
        if self.zero_copy:
            self._clevel = compression.level
            self._shuffle = _SHUFFLE[compression.shuffle]
            self._cname = compression.cname.encode()

    def encode_into(self, array: np.ndarray, dest: Any, dest_address: int) -> int:
        """Encode C-contiguous ``array`` into ``dest`` (a writable buffer whose first byte
        is at ``dest_address``, at least :func:`max_compressed_size` long); bytes used."""
        if self.zero_copy:
            if len(dest) < array.nbytes + BLOSC_OVERHEAD:
                raise ValueError(
                    f"dest: {len(dest)} bytes is too small for a {array.nbytes}-byte chunk"
                )
            n = _BLOSC_COMPRESS(
                self._clevel,
                self._shuffle,
                self._typesize,
                array.nbytes,
                array.ctypes.data,
                dest_address,
                # exactly numcodecs' destination size: with more room, blosc keeps an
                # incompressible chunk "compressed" instead of storing it memcpy'ed, and
                # the bytes would differ from numcodecs'
                array.nbytes + BLOSC_OVERHEAD,
                self._cname,
                0,
                1,
            )
            if n <= 0:
                raise RuntimeError(f"blosc compression failed (code {n})")
            return n
        encoded = memoryview(self._fallback.encode(array)).cast("B")
        n = len(encoded)
        memoryview(dest)[:n] = encoded
        return n
