"""The frame ring: slots usable at once, populated in the background without ever
clobbering a frame already copied in, bounded and accounted."""

from __future__ import annotations

import numpy as np
import pytest

from acqwriter.ring import FrameRing
from helpers import resident_fraction


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
    assert resident_fraction(ring.slots) == pytest.approx(1.0)


def test_ring_occupancy_and_high_water_are_counted() -> None:
    ring = FrameRing(3, (8, 8), np.dtype("uint8"))
    a, b = ring.acquire(0), ring.acquire(0)
    assert ring.occupancy == 2 and ring.high_water == 2
    ring.release([a])
    assert ring.occupancy == 1 and ring.high_water == 2
    ring.release([b])
    assert ring.occupancy == 0


def _fresh_pool(nbytes: int) -> np.ndarray:
    import mmap

    return np.frombuffer(
        mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS), np.uint8
    )


@pytest.mark.parametrize("madvise", [True, False], ids=["madvise", "touch-fallback"])
def test_populate_backing_faults_in_the_whole_pool_under_a_view(monkeypatch, madvise) -> None:
    import acqwriter.ring as ring_module

    if not madvise:
        monkeypatch.setattr(ring_module, "_madvise_populate", lambda address, nbytes: False)
    pool = _fresh_pool(32 << 20)
    pool[:5000] = 7  # written before: must survive
    pool[-3:] = 9
    view = pool[(8 << 20) + 6 : (16 << 20) + 6].view(np.uint16).reshape(2048, 2048)
    assert resident_fraction(pool) < 0.1
    ring_module.populate_backing(view)
    assert resident_fraction(pool) == pytest.approx(1.0)
    assert (pool[:5000] == 7).all() and (pool[-3:] == 9).all()
    assert not pool[5000:-3].any()


@pytest.mark.parametrize("madvise", [True, False], ids=["madvise", "touch-fallback"])
def test_populate_backing_can_stop_after_nbytes_from_the_view(monkeypatch, madvise) -> None:
    import acqwriter.ring as ring_module

    if not madvise:
        monkeypatch.setattr(ring_module, "_madvise_populate", lambda address, nbytes: False)
    page = 4096
    pool = _fresh_pool(64 * page)
    pool[10 * page + 5] = 3
    ring_module.populate_backing(pool[10 * page + 100 :], 8 * page)  # pages 10..18
    resident = [resident_fraction(pool[i * page : (i + 1) * page]) for i in range(64)]
    assert resident[10:19] == [1.0] * 9
    assert sum(resident[:10]) + sum(resident[19:]) == 0
    ring_module.populate_backing(pool[page:], 0)  # nothing asked, nothing touched
    assert resident_fraction(pool[page : 2 * page]) == 0
    assert pool[10 * page + 5] == 3 and pool.sum() == 3  # (reading maps the zero page)


def test_populate_backing_leaves_what_it_cannot_name_alone() -> None:
    from acqwriter.ring import populate_backing

    strided = np.zeros((64, 64), np.uint16)[:, ::2]  # not one contiguous allocation
    populate_backing(strided)
    populate_backing(np.empty((0, 4), np.uint8))
    readonly = np.zeros(4096 * 4, np.uint8)
    readonly.flags.writeable = False
    populate_backing(readonly)
    assert not readonly.any()
