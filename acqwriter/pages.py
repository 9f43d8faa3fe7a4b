"""Backing memory pages ahead of a hot path, and giving them back.

Frame slots (:mod:`acqwriter.engine.slots`) and a simulated camera's circular buffer
(:mod:`acqwriter.simulators`) both fill memory at a camera's rate; a page fault on that
path costs the host's pace, not ours. These helpers ask the kernel to fault pages in
(``MADV_POPULATE_WRITE``, ``MAP_POPULATE``) or drop them (``MADV_DONTNEED``) through
ctypes, which releases the GIL where the mmap module's ``madvise`` holds it. Written by
hand: no library of the field offers them, and they are on the hot path.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import mmap
from typing import Any

import numpy as np

__all__ = [
    "MADVISE_STEP",
    "madvise_dontneed",
    "madvise_populate",
    "populate_backing",
    "populated",
]

_MADV_POPULATE_WRITE = 23  # Linux >= 5.14; Python's mmap module does not name it
_MADV_DONTNEED = 4
# bytes per madvise call, populating or giving back: each call holds the memory-map lock
# (for reading), so other threads' maps and unmaps never wait long
MADVISE_STEP = 8 << 20


def populated(shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """An array whose every page is already backed by memory, so the hot path never
    page-faults. On Linux an anonymous ``mmap`` with ``MAP_POPULATE`` lets the kernel fault
    everything in at once; elsewhere the pages are touched by writing zeros. Transparent
    huge pages are not asked for: the kernel compacts memory synchronously for madvised
    regions, a stall once the page cache is full (``docs/decisions.md``)."""
    nbytes = int(np.prod(shape)) * dtype.itemsize
    populate = getattr(mmap, "MAP_POPULATE", None)
    if populate is not None and nbytes > 0:
        try:
            buf = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | populate)
            return np.frombuffer(buf, dtype=dtype).reshape(shape)
        except (OSError, ValueError):
            pass
    arr = np.empty(shape, dtype=dtype)
    arr.view(np.uint8).reshape(-1)[:] = 0
    return arr


@functools.cache
def _libc_madvise() -> Any:
    madvise = ctypes.CDLL(None, use_errno=True).madvise
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    return madvise


def madvise_dontneed(address: int, nbytes: int) -> None:
    """``madvise(MADV_DONTNEED)``: drop the pages of a private anonymous range (GIL
    released). It holds the process's memory-map lock for reading only, where ``munmap``
    holds it for writing: see :meth:`FrameSlots.release_memory`."""
    _libc_madvise()(address, nbytes, _MADV_DONTNEED)


def madvise_populate(address: int, nbytes: int) -> bool:
    """``madvise(MADV_POPULATE_WRITE)`` through ctypes, which releases the GIL (the mmap
    module's ``madvise`` holds it). False where the kernel does not offer it."""
    if _libc_madvise()(address, nbytes, _MADV_POPULATE_WRITE) == 0:
        return True
    if ctypes.get_errno() in (errno.EINVAL, errno.ENOSYS):
        return False
    raise OSError(ctypes.get_errno(), "madvise(MADV_POPULATE_WRITE) failed")


def populate_backing(array: np.ndarray, nbytes: int | None = None) -> None:
    """Back the pages of the allocation under ``array`` with memory, contents unchanged.

    Walks ``array.base`` to the outermost numpy array (a view into a larger pool) and asks
    the kernel to fault in that whole allocation, or with ``nbytes`` only the ``nbytes``
    from ``array``'s first byte on (capped at the allocation's end), via
    ``MADV_POPULATE_WRITE`` (GIL released; pages already present cost a page-table walk).
    Where the kernel does not offer that, each page is rewritten in place with its own
    byte. For a buffer someone else owns and fills on a hot path, e.g. the core's
    circular buffer that a simulated camera writes into: its first pass would otherwise
    page-fault at the host's pace, enough to throw a free-running camera off its
    schedule.
    """
    view_start = array.ctypes.data
    while isinstance(array.base, np.ndarray):
        array = array.base
    if array.nbytes == 0 or not array.flags.c_contiguous:
        return  # nothing to populate, or not one allocation we can name
    base_start = array.ctypes.data
    base_end = base_start + array.nbytes
    start = base_start if nbytes is None else view_start
    end = base_end if nbytes is None else min(base_end, view_start + max(nbytes, 0))
    if end <= start:
        return
    page = mmap.PAGESIZE
    aligned = start - start % page
    try:
        if hasattr(mmap, "MAP_ANONYMOUS") and madvise_populate(aligned, end - aligned):
            return
    except OSError:
        pass  # e.g. a file-backed or read-only mapping: fall through to touching
    if array.flags.writeable:
        flat = array.reshape(-1).view(np.uint8)
        offset = start - base_start
        first = offset + (-start) % page  # the first page boundary at or after start
        pages = flat[first : end - base_start : page]
        np.bitwise_or(pages, 0, out=pages)
        flat[offset : offset + 1] |= 0  # the page holding start, when not on a boundary
