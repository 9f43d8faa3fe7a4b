"""The frame slots: a preallocated, memory-bounded pool that frames wait in.

``append`` copies each frame into a free slot exactly once, so the caller may reuse its
buffer as soon as ``append`` returns. Writer threads read the slot in place and release
it once its chunk is encoded (the encoded-chunk pool then bounds what waits for the
disk) or, for chunks assembled from several frames, on disk. Slots are released out of
order, so this is a pool with a free list rather than a head/tail ring, still bounded in
bytes (the plan decides how many: :class:`acqwriter.plan.dataset.SlotPlan`). The free
list is a stack: the slot released last is handed out first, so the slots ever used are
exactly the first ``high_water`` ones.

Memory is backed on demand: the slots are one private anonymous mapping; the first slot
is populated before :class:`FrameSlots` returns and a background thread keeps
``_POPULATE_AHEAD_BYTES`` backed beyond the high-water mark (:mod:`acqwriter.pages`), so
the hot path rarely page-faults and a writer keeping up with its source never pays for
memory it does not use. That a shortage of memory shows at the start is kept by a check
(:func:`acqwriter.engine.preflight.check_memory`); :meth:`FrameSlots.wait_populated`
backs every slot, for slots allocated ahead
(:func:`acqwriter.engine.preflight.preallocate_slots`).
A stream starts the thread only after its own threads (:meth:`FrameSlots.start_populating`):
a thread start maps a stack, which waits for the memory-map lock each populating step
holds.

Giving the memory back is the mirror image: :meth:`FrameSlots.release_memory` drops the
pages on a background thread in small steps, as soon as the last chunk is written, so
it overlaps the close's fsyncs and never holds the memory-map lock for long. The bound
still holds: a new set of slots waits for every release in flight before it allocates
(:func:`wait_for_releases`). The measurements behind each choice are in
``docs/decisions.md``.
"""

from __future__ import annotations

import math
import mmap
import threading
import time
import weakref
from typing import Any

import numpy as np

from acqwriter.pages import (
    MADVISE_STEP,
    madvise_dontneed,
    madvise_populate,
    populated,
)

__all__ = ["FrameSlots", "wait_for_releases"]


_EAGER_SLOTS = 1  # populated before FrameSlots returns (the first frame needs it at once)
# beyond the high-water mark, the populating thread keeps this much backed (at least this
# many slots), so that a producer filling the ring rarely page-faults (see FrameSlots)
_POPULATE_AHEAD_BYTES = 64 << 20
_POPULATE_AHEAD_MIN_SLOTS = 2


# Rings whose memory is being unmapped in the background (FrameSlots.release_memory)
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


def _reserved(shape: tuple[int, ...], dtype: np.dtype) -> tuple[np.ndarray, int]:
    """The slots array and how many of its slots are backed by memory already: the
    first :data:`_EAGER_SLOTS` of a fresh private anonymous mapping (the rest are backed
    on demand by :func:`_populate_ahead`), or all of them where that mapping or
    ``MADV_POPULATE_WRITE`` is not available (:func:`acqwriter.pages.populated`)."""
    slot_bytes = int(np.prod(shape[1:])) * dtype.itemsize
    nbytes = shape[0] * slot_bytes
    if nbytes == 0 or not hasattr(mmap, "MAP_ANONYMOUS"):
        return populated(shape, dtype), shape[0]
    try:
        buf = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        slots = np.frombuffer(buf, dtype=dtype).reshape(shape)
        eager = min(shape[0], _EAGER_SLOTS)
        if not madvise_populate(slots.ctypes.data, eager * slot_bytes):
            return populated(shape, dtype), shape[0]
    except OSError:
        return populated(shape, dtype), shape[0]
    return slots, eager


def _populate_ahead(
    ring_ref: weakref.ref[FrameSlots], wanted: threading.Event, stop: threading.Event
) -> None:
    """The populating thread of a :class:`FrameSlots`: back slots with memory, in the
    order they are handed out, until ``_ahead`` slots beyond the high-water mark are
    backed (all of them after :meth:`FrameSlots.wait_populated`); then sleep until the
    high water rises. Exits when every slot is backed, or the ring is closed, released
    or dropped: it holds the ring only weakly while it sleeps, so a ring nobody closed
    is still freed."""
    while not stop.is_set():
        ring = ring_ref()
        if ring is None:
            return
        target = ring.capacity
        if not ring._populate_all:
            target = min(ring.capacity, ring._high_water + ring._ahead)
        if ring._backed >= target:
            if ring._backed >= ring.capacity or ring._closed:
                return
            del ring
            wanted.wait(1.0)  # woken when the high water rises; 1 s to notice a drop
            wanted.clear()
            continue
        slot_bytes = ring._slot_bytes
        n = min(max(1, MADVISE_STEP // max(slot_bytes, 1)), target - ring._backed)
        try:
            madvise_populate(ring.slots.ctypes.data + ring._backed * slot_bytes, n * slot_bytes)
        except OSError:
            return  # the producer's own page faults back the rest
        ring._backed += n


def _is_anonymous_mapping(slots: np.ndarray) -> bool:
    """Whether ``slots`` spans the whole of an ``mmap`` (the private anonymous mapping
    :func:`_reserved` and :func:`acqwriter.pages.populated` make; a ring never wraps
    anyone else's), the only memory ``MADV_DONTNEED`` may drop safely. False for the numpy
    fallback."""
    base = slots.base
    while isinstance(base, np.ndarray):
        base = base.base
    if isinstance(base, memoryview):  # np.frombuffer(mmap) keeps a memoryview of it
        base = base.obj
    return isinstance(base, mmap.mmap) and len(base) == slots.nbytes > 0


class FrameSlots:
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
        memory-map lock that every populating step holds."""
        if capacity < 1:
            raise ValueError("ring capacity must be at least one frame")
        self.capacity = capacity
        wait_for_releases()  # a previous ring's memory is gone before this one's is taken
        self.slots, self._backed = _reserved((capacity, *frame_shape), np.dtype(dtype))
        self._slot_bytes = self.slots.nbytes // capacity
        self._ahead = max(
            _POPULATE_AHEAD_MIN_SLOTS, _POPULATE_AHEAD_BYTES // max(self._slot_bytes, 1)
        )
        # free slots as a stack: the slot released last is handed out first, so the slots
        # ever used are exactly the first ``high_water`` ones (see the module docstring)
        self._free: list[int] = list(range(capacity - 1, -1, -1))
        self._cond = threading.Condition()
        self._high_water = 0
        self._closed = False
        self._stop_populating = threading.Event()
        self._wanted = threading.Event()  # set when the high water rises (or to stop)
        self._populate_all = False
        self._populator: threading.Thread | None = None
        if self._backed < capacity:
            # created unstarted: see start_populating
            self._populator = threading.Thread(
                target=_populate_ahead,
                args=(weakref.ref(self), self._wanted, self._stop_populating),
                name="acqwriter-ring-populate",
                daemon=True,
            )
        if populate_now:
            self.start_populating()

    @property
    def slot_bytes(self) -> int:
        """Bytes of one slot."""
        return self._slot_bytes

    def view(self, slot: int, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        """Slot ``slot`` as a frame of ``shape`` and ``dtype``: slots sized for the
        largest frame of a dataset hold a smaller frame at their start."""
        frame = self.slots[slot]
        if frame.shape == shape and frame.dtype == dtype:
            return frame
        n = math.prod(shape) * dtype.itemsize
        return frame.reshape(-1).view(np.uint8)[:n].view(dtype).reshape(shape)

    def holds(self, layout: Any) -> bool:
        """Right for ``layout``'s frames: frame shape, dtype, enough slots."""
        return (
            self.slots.shape[1:] == tuple(layout.frame_shape)
            and self.slots.dtype == layout.dtype
            and self.capacity >= layout.min_ring_frames
        )

    def fits(self, layout: Any) -> bool:
        """Idle, and right for ``layout`` (:meth:`holds`): a new stream may take it."""
        return self.holds(layout) and len(self._free) == self.capacity

    def reopen(self) -> None:
        """Make a closed, idle ring usable by a new stream."""
        with self._cond:
            self._closed = False
            self._high_water = 0

    def start_populating(self) -> None:
        """Start backing slots with memory ahead of use in the background (idempotent)."""
        with self._cond:
            thread = self._populator
            if thread is None or thread.ident is not None:  # none, or started already
                return
            thread.start()

    def wait_populated(self, timeout: float | None = None) -> bool:
        """Back every slot with memory now, not only those ahead of use (starting the
        population if it has not started), and wait for it; True when it is done."""
        if self._populator is not None:
            self._populate_all = True
            self._wanted.set()
            self.start_populating()
            self._populator.join(timeout)
            return not self._populator.is_alive()
        return True

    @property
    def backed_slots(self) -> int:
        """Slots backed by memory so far (the rest are address space only)."""
        return self._backed

    @property
    def nbytes(self) -> int:
        return self.slots.nbytes

    @property
    def occupancy(self) -> int:
        """Slots currently holding a frame (not yet encoded, or not yet on disk)."""
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
            slot = self._free.pop()
            used = self.capacity - len(self._free)
            if used > self._high_water:
                self._high_water = used
                self._wanted.set()  # the populating thread keeps ahead of it
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
        self._wanted.set()
        if self._populator is not None and self._populator.ident is not None:
            self._populator.join()  # never madvise a range that is being unmapped
        old = [self.slots]
        self.slots = np.empty((0, *self.slots.shape[1:]), self.slots.dtype)
        anonymous = _is_anonymous_mapping(old[0])

        def unmap() -> None:
            # munmap of a large mapping holds the memory-map lock for writing, and
            # every other thread that maps or unmaps anything (a thread exiting frees its
            # stack) waits that long: the close's own committer did. The pages are
            # dropped in 8 MiB steps first, under the lock for reading; the final munmap
            # (the last reference going) then finds nothing left to free.
            if anonymous:
                address, nbytes = old[0].ctypes.data, old[0].nbytes
                for start in range(0, nbytes, MADVISE_STEP):
                    madvise_dontneed(address + start, min(MADVISE_STEP, nbytes - start))
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
        self._wanted.set()  # a populating thread waiting for demand exits
