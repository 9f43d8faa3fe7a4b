"""Page-aligned memory: the buffers that chunks are compressed into and written from.

Direct I/O needs page-aligned buffers, and a C compressor needs a buffer's address;
the frame slots, the shard segments and the stores' scratch buffers all come from here.
"""

from __future__ import annotations

import ctypes
import mmap

__all__ = ["DIRECT_ALIGN", "address_of", "private_memory"]

DIRECT_ALIGN = 4096  # O_DIRECT alignment that satisfies 512-byte and 4K-sector devices


def private_memory(nbytes: int) -> mmap.mmap:
    """Page-aligned private anonymous memory, as O_DIRECT buffers need. (``mmap(-1, n)``
    alone is *shared* anonymous memory, i.e. shmem, whose page faults cost ~2× more.)"""
    return mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)


def address_of(buf: mmap.mmap) -> int:
    """The address of ``buf``'s first byte (for C calls that write into it)."""
    return ctypes.addressof(ctypes.c_char.from_buffer(buf))
