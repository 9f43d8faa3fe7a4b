"""Compress a chunk straight into a buffer we own (the hot path's zero-copy step).

Why this exists: ``numcodecs.Blosc.encode`` returns a new ``bytes`` object, and it
makes it by compressing into an oversized buffer and then *slicing* it (a copy). The
direct-I/O writer then has to copy those bytes again into page-aligned memory: two
copies of every chunk on cores that should be compressing (the profile is in
``docs/decisions.md``).

So for blosc we call ``blosc_compress_ctx`` — the very function numcodecs calls, in the
copy of c-blosc that numcodecs ships (its extension module exports the C API) — with
the destination set to the writer thread's page-aligned buffer. Same library, same
arguments (contextual mode, one internal thread, the spec's block size): the bytes are
identical to ``numcodecs.Blosc.encode`` (``tests/unit/test_codec.py`` checks it for every
cname/shuffle we offer). ctypes releases the GIL for the call, like numcodecs.

Which copy of c-blosc: numcodecs' wheels build it for plain x86-64 (``-mno-avx2``: the
byte shuffle runs on SSE2). python-blosc's wheels ship the same c-blosc (1.21) as a
shared library, ``libblosc.so.1``, built with AVX2 kernels picked at run time, faster
for every codec we offer (``docs/decisions.md``). We use that
library when it is installed and, at load, produces bytes identical to numcodecs' on a
probe for each shuffle (so the codec chain in ``zarr.json`` and every reader agree);
otherwise numcodecs' copy. :func:`blosc_compressor` says which was chosen.

Other codecs (zstd, none), or a numcodecs build that does not export the symbol, fall
back to ``encode`` plus one copy. Hand-written only because no library offers
"compress into this buffer" for blosc 1 (python-blosc and numcodecs both return bytes).
"""

from __future__ import annotations

import ctypes
import functools
import importlib.util
import itertools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from acqwriter.codec.chain import chunk_encoder
from acqwriter.codec.settings import SHUFFLE_IDS, Compression

__all__ = [
    "BLOSC_OVERHEAD",
    "EncoderFactory",
    "IntoEncoder",
    "blosc_compressor",
    "max_compressed_size",
]

BLOSC_OVERHEAD = 16  # BLOSC_MAX_OVERHEAD: header of a chunk that did not compress


def _compress_ctx(library: str) -> Any | None:
    """``blosc_compress_ctx`` of the c-blosc in ``library`` (a shared object), or None."""
    try:
        fn = ctypes.CDLL(library).blosc_compress_ctx
    except (OSError, AttributeError):
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
        ctypes.c_size_t,  # blocksize (0: c-blosc chooses; Compression.block_bytes)
        ctypes.c_int,  # numinternalthreads
    ]
    fn.restype = ctypes.c_int
    return fn


def _python_blosc_library() -> str | None:
    """Where python-blosc's wheel put ``libblosc`` (its data files go to the environment's
    ``lib64``/``lib``), without importing the package."""
    if importlib.util.find_spec("blosc") is None:
        return None
    names = ("libblosc.so.1", "libblosc.so", "libblosc.dylib")
    for lib_dir in ("lib64", "lib"):
        for name in names:
            path = Path(sys.prefix, lib_dir, name)
            if path.exists():
                return str(path)
    try:  # an unusual layout: ask the installed distribution (slower)
        from importlib.metadata import files

        for entry in files("blosc") or []:
            if entry.name in names:
                return str(entry.locate())
    except Exception:  # any metadata trouble means "not found"
        pass
    return None


def _same_output(candidate: Any, reference: Any) -> bool:
    """Both compress a probe to identical bytes, for every shuffle, both cnames and both an
    automatic and a forced block size."""
    rng = np.random.default_rng(0)
    n = 1 << 15  # 64 KiB: several blosc blocks, through the SIMD kernels
    probe = (np.arange(n, dtype=np.uint16) // 7 + rng.poisson(30, n)).astype("<u2")
    size = probe.nbytes + BLOSC_OVERHEAD
    out = [np.empty(size, np.uint8), np.empty(size, np.uint8)]
    for cname, shuffle, blocksize in itertools.product((b"lz4", b"zstd"), (0, 1, 2), (0, 16 << 10)):
        args = (1, shuffle, 2, probe.nbytes, probe.ctypes.data)
        sizes = [
            fn(*args, o.ctypes.data, size, cname, blocksize, 1)
            for fn, o in zip((candidate, reference), out, strict=True)
        ]
        if sizes[0] <= 0 or sizes[0] != sizes[1]:
            return False
        if not np.array_equal(out[0][: sizes[0]], out[1][: sizes[1]]):
            return False
    return True


@functools.cache
def blosc_compressor() -> tuple[Any | None, str | None]:
    """``blosc_compress_ctx`` to use and the library it comes from (chosen once, on first
    use: the probe costs a few ms that a process that never compresses should not pay)."""
    try:
        import numcodecs.blosc as nb
    except ImportError:
        return None, None
    reference = _compress_ctx(nb.__file__)
    if reference is None:
        return None, None
    fast_path = _python_blosc_library()
    fast = _compress_ctx(fast_path) if fast_path else None
    if fast is not None and _same_output(fast, reference):
        return fast, fast_path
    return reference, nb.__file__


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
        self._compress = blosc_compressor()[0] if compression.name == "blosc" else None
        self.zero_copy = self._compress is not None
        if self.zero_copy:
            self._clevel = compression.level
            self._shuffle = SHUFFLE_IDS[compression.shuffle]
            self._cname = compression.cname.encode()
            self._blocksize = compression.block_bytes()

    def encode_into(self, array: np.ndarray, dest: Any, dest_address: int) -> int:
        """Encode C-contiguous ``array`` into ``dest`` (a writable buffer whose first byte
        is at ``dest_address``, at least :func:`max_compressed_size` long); bytes used."""
        if self.zero_copy:
            if len(dest) < array.nbytes + BLOSC_OVERHEAD:
                raise ValueError(
                    f"dest: {len(dest)} bytes is too small for a {array.nbytes}-byte chunk"
                )
            n = self._compress(
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
                self._blocksize,
                1,
            )
            if n <= 0:
                raise RuntimeError(f"blosc compression failed (code {n})")
            return n
        encoded = memoryview(self._fallback.encode(array)).cast("B")
        n = len(encoded)
        memoryview(dest)[:n] = encoded
        return n


# What makes the encoder of an array's chunks, from its codec and dtype: IntoEncoder, or
# a subclass that instruments it (tests inject slow or failing compression this way)
EncoderFactory = Callable[[Compression, np.dtype], IntoEncoder]
