"""The frame ring: a preallocated, memory-bounded pool of frame slots.

``append`` copies each frame into a free slot exactly once, so the caller may reuse
its buffer as soon as ``append`` returns (the camera's circular buffer or the
caller's own ring). Writer threads read the slot in place (compressing straight from
it when one frame is one chunk) and release it once its chunk is on disk.

Slots are released out of order (chunks finish out of order on several threads), so
this is a pool with a free list rather than a head/tail ring; it is still bounded in
bytes: ``capacity = ring_bytes // frame_bytes`` slots (at most ``RING_MAX_FRAMES``,
see :func:`acqwriter.stream.ring_capacity`), all backed by memory before the
hot path needs them (an untouched 2 GiB ``np.empty`` ran an MDA at a third of the warm
speed here). On Linux the first slot is populated before ``FrameRing`` returns and the
rest by a background thread (``madvise(MADV_POPULATE_WRITE)``, GIL released), in the
order slots are handed out: populating 512 MiB up front took 0.14 s before the first
frame could be taken, an eighth of a 300-frame acquisition. A stream starts that thread
only after its own threads (:meth:`FrameRing.start_populating`): a thread start maps a
stack, which waits for the memory-map lock each populating step holds. Populating never
touches bytes already written, so a producer that overtakes the thread only page-faults.

Occupancy and its high-water mark are reported for progress bars and the summary.

Giving the memory back is the mirror image: unmapping 512 MiB took 36–42 ms here, which
a stream's close used to spend at its very end, on one thread, with the data already
safe. :meth:`FrameRing.release_memory` gives it back on a background thread instead,
started as soon as the last chunk is written, so it overlaps the close's own fsyncs and
metadata writes, and in 8 MiB ``MADV_DONTNEED`` steps, so it never holds the memory-map
lock for long (one ``munmap`` held it ~40 ms and stalled every thread that exited
meanwhile). The bound on memory still holds: a new ring waits for every release in flight
before it allocates (:func:`wait_for_releases`), so two rings' memory never coexists.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import mmap
import threading
import time
from collections import deque
from typing import Any

import numpy as np

__all__ = ["FrameRing", "populate_backing", "wait_for_releases"]


_MADV_POPULATE_WRITE = 23  # Linux >= 5.14; Python's mmap module does not name it
_MADV_DONTNEED = 4
# bytes per madvise call, populating or giving back: each call holds the memory-map lock
# (for reading), so other threads' maps and unmaps never wait long (see FrameRing)
_MADVISE_STEP = 8 << 20
_EAGER_SLOTS = 1  # populated before FrameRing returns (the first frame needs it at once)


def _populated(shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """An array whose every page is already backed by memory, so the hot path never
    page-faults. On Linux an anonymous ``mmap`` with ``MAP_POPULATE`` lets the kernel fault
    everything in at once (0.12 s for 512 MiB here, against 0.08–0.65 s for writing zeros
    from numpy, depending on how recently the host gave the memory back); elsewhere the
    pages are touched by writing zeros.

    Transparent huge pages were tried (``MADV_HUGEPAGE`` + ``MADV_POPULATE_WRITE``): 0.06 s
    on a fresh host, but 0.4–1.2 s once the page cache holds earlier acquisitions,
    because the kernel compacts memory synchronously for madvised regions
    (``defrag=madvise``, the common default). Not worth the stall."""
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


def _madvise_dontneed(address: int, nbytes: int) -> None:
    """``madvise(MADV_DONTNEED)``: drop the pages of a private anonymous range (GIL
    released). It holds the process's memory-map lock for reading only, where ``munmap``
    holds it for writing: see :meth:`FrameRing.release_memory`."""
    _libc_madvise()(address, nbytes, _MADV_DONTNEED)


def _madvise_populate(address: int, nbytes: int) -> bool:
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
    page-fault at the host's pace (0.5 s for 256 MiB here, enough to throw a
    free-running camera off its schedule).
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
        if hasattr(mmap, "MAP_ANONYMOUS") and _madvise_populate(aligned, end - aligned):
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


# Rings whose memory is being unmapped in the background (FrameRing.release_memory)
_releases: list[threading.Thread] = []
_releases_lock = threading.Lock()


def wait_for_releases(timeout: float | None = None) -> bool:
    """Wait until every ring memory release in flight has finished; True when none is
    left. A new ring calls this before allocating, so rings never overlap in memory."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        with _releases_lock:
            _releases[:] = [t for t in _releases if t.is_alive()]
            pending = list(_releases)
        if not pending:
            return True
        remaining = None if deadline is None else deadline - time.monotonic()
        if remaining is not None and remaining <= 0:
            return False
        pending[0].join(remaining)


def _reserved(
    shape: tuple[int, ...], dtype: np.dtype, stop: threading.Event
) -> tuple[np.ndarray, threading.Thread | None]:
    """The slots array, its first :data:`_EAGER_SLOTS` slots populated, and the thread
    that will populate the rest, not started yet (None when everything is populated
    already; it gives up when ``stop`` is set, before the memory is released)."""
    slot_bytes = int(np.prod(shape[1:])) * dtype.itemsize
    nbytes = shape[0] * slot_bytes
    if nbytes == 0 or not hasattr(mmap, "MAP_ANONYMOUS"):
        return _populated(shape, dtype), None
    try:
        buf = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        slots = np.frombuffer(buf, dtype=dtype).reshape(shape)
        address = slots.ctypes.data
        eager = min(shape[0], _EAGER_SLOTS) * slot_bytes
        if not _madvise_populate(address, eager):
            return _populated(shape, dtype), None
    except OSError:
        return _populated(shape, dtype), None
    if eager == nbytes:
        return slots, None

    def populate_rest() -> None:
        step = max(slot_bytes, _MADVISE_STEP)
        for start in range(eager, nbytes, step):
            if stop.is_set():
                return
            try:
                _madvise_populate(address + start, min(step, nbytes - start))
            except OSError:
                return  # the producer's own page faults back the rest

    # returned unstarted: FrameRing starts it (see FrameRing.start_populating)
    return slots, threading.Thread(
        target=populate_rest, name="acqwriter-ring-populate", daemon=True
    )


def _is_anonymous_mapping(slots: np.ndarray) -> bool:
    """Whether ``slots`` spans the whole of an ``mmap`` (the private anonymous mapping
    :func:`_reserved` and :func:`_populated` make; a ring never wraps anyone else's), the
    only memory ``MADV_DONTNEED`` may drop safely. False for the numpy fallback."""
    base = slots.base
    while isinstance(base, np.ndarray):
        base = base.base
    if isinstance(base, memoryview):  # np.frombuffer(mmap) keeps a memoryview of it
        base = base.obj
    return isinstance(base, mmap.mmap) and len(base) == slots.nbytes > 0


class FrameRing:
    """``capacity`` slots of one frame each, with blocking or non-blocking acquire."""

    def __init__(
        self,
        capacity: int,
        frame_shape: tuple[int, int],
        dtype: np.dtype,
        *,
        populate_now: bool = True,
    ) -> None:
        """``populate_now=False``: the background population waits for
        :meth:`start_populating` (or :meth:`wait_populated`). A stream starts it once its
        own threads are running: each new thread maps its stack, which waits for the
        memory-map lock that every populating step holds, and seven thread starts took
        25–65 ms of the open instead of 0.5 ms."""
        if capacity < 1:
            raise ValueError("ring capacity must be at least one frame")
        self.capacity = capacity
        self._stop_populating = threading.Event()
        wait_for_releases()  # a previous ring's memory is gone before this one's is taken
        self.slots, self._populator = _reserved(
            (capacity, *frame_shape), np.dtype(dtype), self._stop_populating
        )
        self._free: deque[int] = deque(range(capacity))
        self._cond = threading.Condition()
        self._high_water = 0
        self._closed = False
        if populate_now:
            self.start_populating()

    def fits(self, layout: Any) -> bool:
        """Idle, and right for ``layout`` (frame shape, dtype, enough slots)."""
        return (
            self.slots.shape[1:] == tuple(layout.frame_shape)
            and self.slots.dtype == layout.dtype
            and self.capacity >= layout.min_ring_frames
            and len(self._free) == self.capacity
        )

    def reopen(self) -> None:
        """Make a closed, idle ring usable by a new stream."""
        with self._cond:
            self._closed = False
            self._high_water = 0

    def start_populating(self) -> None:
        """Start backing the slots beyond the first with memory in the background
        (idempotent)."""
        with self._cond:
            thread = self._populator
            if thread is None or thread.ident is not None:  # none, or started already
                return
            thread.start()

    def wait_populated(self, timeout: float | None = None) -> bool:
        """Wait until every slot is backed by memory (starting the population if it has
        not started); True when it is."""
        if self._populator is not None:
            self.start_populating()
            self._populator.join(timeout)
            return not self._populator.is_alive()
        return True

    @property
    def nbytes(self) -> int:
        return self.slots.nbytes

    @property
    def occupancy(self) -> int:
        """Slots currently holding a frame not yet on disk."""
        return self.capacity - len(self._free)

    @property
    def high_water(self) -> int:
        return self._high_water

    def acquire(self, timeout: float | None, *, abort: threading.Event | None = None) -> int | None:
        """A free slot index; waits up to ``timeout`` s (None: forever, 0: not at all).

        Returns None when no slot became free in time, the ring was closed, or ``abort``
        is set (a writer failure must not leave a producer blocked forever).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            if self._closed:
                return None
            while not self._free:
                if self._closed or (abort is not None and abort.is_set()):
                    return None
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                # wake periodically to notice abort/close even without a notify
                self._cond.wait(0.1 if remaining is None else min(remaining, 0.1))
            slot = self._free.popleft()
            used = self.capacity - len(self._free)
            if used > self._high_water:
                self._high_water = used
            return slot

    def release(self, slots: list[int]) -> None:
        if not slots:
            return
        with self._cond:
            self._free.extend(slots)
            self._cond.notify_all()

    def release_memory(self) -> None:
        """Give the slots' memory back to the system on a background thread (the module
        docstring says why). The ring is closed and keeps its counters (capacity, high
        water) for summaries, but no frame: call it only once nothing reads or writes a
        slot any more. The pages are dropped, not just unreferenced, so a view of a slot
        kept past this call reads zeros."""
        self.close()
        self._stop_populating.set()
        if self._populator is not None and self._populator.ident is not None:
            self._populator.join()  # never madvise a range that is being unmapped
        old = [self.slots]
        self.slots = np.empty((0, *self.slots.shape[1:]), self.slots.dtype)
        anonymous = _is_anonymous_mapping(old[0])

        def unmap() -> None:
            # munmap of 512 MiB holds the memory-map lock for writing for ~40 ms, and
            # every other thread that maps or unmaps anything (a thread exiting frees its
            # stack) waits that long: the close's own committer did. The pages are
            # dropped in 8 MiB steps first, under the lock for reading; the final munmap
            # (the last reference going) then finds nothing left to free.
            if anonymous:
                address, nbytes = old[0].ctypes.data, old[0].nbytes
                for start in range(0, nbytes, _MADVISE_STEP):
                    _madvise_dontneed(address + start, min(_MADVISE_STEP, nbytes - start))
            old.clear()

        thread = threading.Thread(target=unmap, name="acqwriter-ring-release", daemon=True)
        with _releases_lock:
            _releases.append(thread)
        thread.start()

    def close(self) -> None:
        """Wake every waiter; later acquires fail."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
