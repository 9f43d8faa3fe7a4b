"""The frame ring: slots usable at once, populated in the background without ever
clobbering a frame already copied in, bounded and accounted."""

from __future__ import annotations

import numpy as np
import pytest

from acqwriter.ring import FrameRing


def _resident_fraction(arr: np.ndarray) -> float:
    """Fraction of ``arr``'s pages backed by memory (Linux ``mincore``)."""
    import ctypes
    import mmap

    libc = ctypes.CDLL(None, use_errno=True)
    page = mmap.PAGESIZE
    start = arr.ctypes.data - arr.ctypes.data % page
    length = arr.ctypes.data + arr.nbytes - start
    vec = (ctypes.c_ubyte * (-(-length // page)))()
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
    assert libc.mincore(ctypes.c_void_p(start), length, vec) == 0, ctypes.get_errno()
    return sum(v & 1 for v in vec) / len(vec)


def test_frames_written_while_the_ring_populates_survive() -> None:
    ring = FrameRing(48, (512, 512), np.dtype("uint16"))  # 24 MiB
    rng = np.random.default_rng(3)
    written = {}
    for _ in range(ring.capacity):  # every slot, including those not populated yet
        slot = ring.acquire(0)
        assert slot is not None
        written[slot] = rng.integers(0, 65535, (512, 512), dtype=np.uint16)
        ring.slots[slot][...] = written[slot]
    assert ring.acquire(0) is None  # bounded: full is full
    assert ring.wait_populated(timeout=30)
    for slot, frame in written.items():
        np.testing.assert_array_equal(ring.slots[slot], frame)


def test_every_slot_is_backed_by_memory_once_populated() -> None:
    ring = FrameRing(40, (1024, 1024), np.dtype("uint16"))  # 80 MiB, never written
    assert ring.wait_populated(timeout=30)
    assert _resident_fraction(ring.slots) == pytest.approx(1.0)


def test_ring_occupancy_and_high_water_are_counted() -> None:
    ring = FrameRing(3, (8, 8), np.dtype("uint8"))
    a, b = ring.acquire(0), ring.acquire(0)
    assert ring.occupancy == 2 and ring.high_water == 2
    ring.release([a])
    assert ring.occupancy == 1 and ring.high_water == 2
    ring.release([b])
    assert ring.occupancy == 0
