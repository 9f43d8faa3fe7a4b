"""The frame ring: slots usable at once, backed with memory in the background only as
far as the backlog reaches (plus a margin), without ever clobbering a frame already
copied in, bounded and accounted."""

from __future__ import annotations

import time

import numpy as np
import pytest

from acqwriter.engine.slots import FrameSlots
from helpers import resident_fraction, resident_pages


def test_frames_written_while_the_ring_populates_survive() -> None:
    ring = FrameSlots(48, (512, 512), np.dtype("uint16"))  # 24 MiB
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
    ring = FrameSlots(40, (1024, 1024), np.dtype("uint16"))  # 80 MiB, never written
    assert ring.wait_populated(timeout=30)
    assert resident_fraction(ring.slots) == pytest.approx(1.0)


def test_ring_occupancy_and_high_water_are_counted() -> None:
    ring = FrameSlots(3, (8, 8), np.dtype("uint8"))
    a, b = ring.acquire(0), ring.acquire(0)
    assert ring.occupancy == 2 and ring.high_water == 2
    ring.release([a])
    assert ring.occupancy == 1 and ring.high_water == 2
    ring.release([b])
    assert ring.occupancy == 0


def test_the_slot_released_last_is_handed_out_first() -> None:
    """A stack, not a queue: the slots ever used are exactly the first ``high_water``."""
    ring = FrameSlots(64, (8, 8), np.dtype("uint8"))
    rng = np.random.default_rng(5)
    held: list[int] = []
    handed_out: set[int] = set()
    for _ in range(2000):
        if held and (len(held) >= 10 or rng.random() < 0.5):
            ring.release([held.pop(int(rng.integers(len(held))))])  # out of order
        else:
            slot = ring.acquire(0)
            assert slot is not None
            held.append(slot)
            handed_out.add(slot)
    assert ring.high_water == 10
    assert handed_out == set(range(10))
    ring.release(held)
    last = ring.acquire(0)
    ring.release([last])
    assert ring.acquire(0) == last


def _wait_for(condition, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_memory_is_backed_only_ahead_of_the_high_water() -> None:
    from acqwriter.engine.slots import _POPULATE_AHEAD_BYTES

    slot_bytes = 1024 * 1024 * 2
    ahead = _POPULATE_AHEAD_BYTES // slot_bytes
    capacity = 3 * ahead
    ring = FrameSlots(capacity, (1024, 1024), np.dtype("uint16"))
    _wait_for(lambda: ring.backed_slots == ahead)
    time.sleep(0.2)  # a populating thread that went on would have backed more by now
    assert ring.backed_slots == ahead
    assert resident_fraction(ring.slots[:ahead]) == pytest.approx(1.0)
    assert resident_fraction(ring.slots[ahead:]) == 0.0
    slots = [ring.acquire(0) for _ in range(ahead + 3)]
    assert sorted(slots) == list(range(ahead + 3)) and ring.high_water == ahead + 3
    _wait_for(lambda: ring.backed_slots == 2 * ahead + 3)
    time.sleep(0.2)
    assert resident_fraction(ring.slots[: 2 * ahead + 3]) == pytest.approx(1.0)
    assert resident_fraction(ring.slots[2 * ahead + 3 :]) == 0.0
    assert ring.wait_populated(timeout=30)  # everything, on request
    assert ring.backed_slots == capacity
    assert resident_fraction(ring.slots) == pytest.approx(1.0)


def test_closing_the_ring_stops_a_populating_thread_waiting_for_demand() -> None:
    ring = FrameSlots(100, (1024, 1024), np.dtype("uint16"))  # 200 MiB, 32 backed ahead
    _wait_for(lambda: ring.backed_slots > 1)
    thread = ring._populator
    assert thread is not None and thread.is_alive()  # waiting for demand
    ring.close()
    thread.join(timeout=5)
    assert not thread.is_alive()
    assert ring.backed_slots < ring.capacity


def test_a_ring_nobody_closed_is_still_freed() -> None:
    """The populating thread waits for demand holding the ring only weakly: a dropped
    ring (a stream abandoned without close) does not keep its memory alive."""
    import gc
    import weakref

    ring = FrameSlots(100, (1024, 1024), np.dtype("uint16"))
    _wait_for(lambda r=ring: r.backed_slots == r._ahead)  # now waiting for demand
    time.sleep(0.05)
    thread, ref = ring._populator, weakref.ref(ring)
    del ring
    gc.collect()
    assert ref() is None
    assert thread is not None
    thread.join(timeout=5)
    assert not thread.is_alive()


def _fresh_pool(nbytes: int) -> np.ndarray:
    import mmap

    return np.frombuffer(
        mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS), np.uint8
    )


@pytest.mark.parametrize("madvise", [True, False], ids=["madvise", "touch-fallback"])
def test_populate_backing_faults_in_the_whole_pool_under_a_view(monkeypatch, madvise) -> None:
    import acqwriter.pages as pages_module

    if not madvise:
        monkeypatch.setattr(pages_module, "madvise_populate", lambda address, nbytes: False)
    pool = _fresh_pool(32 << 20)
    pool[:5000] = 7  # written before: must survive
    pool[-3:] = 9
    view = pool[(8 << 20) + 6 : (16 << 20) + 6].view(np.uint16).reshape(2048, 2048)
    assert resident_fraction(pool) < 0.1
    pages_module.populate_backing(view)
    assert resident_fraction(pool) == pytest.approx(1.0)
    assert (pool[:5000] == 7).all() and (pool[-3:] == 9).all()
    assert not pool[5000:-3].any()


@pytest.mark.parametrize("madvise", [True, False], ids=["madvise", "touch-fallback"])
def test_populate_backing_can_stop_after_nbytes_from_the_view(monkeypatch, madvise) -> None:
    import acqwriter.pages as pages_module

    if not madvise:
        monkeypatch.setattr(pages_module, "madvise_populate", lambda address, nbytes: False)
    page = 4096
    pool = _fresh_pool(64 * page)
    pool[10 * page + 5] = 3
    pages_module.populate_backing(pool[10 * page + 100 :], 8 * page)  # pages 10..18
    resident = [resident_fraction(pool[i * page : (i + 1) * page]) for i in range(64)]
    assert resident[10:19] == [1.0] * 9
    assert sum(resident[:10]) + sum(resident[19:]) == 0
    pages_module.populate_backing(pool[page:], 0)  # nothing asked, nothing touched
    assert resident_fraction(pool[page : 2 * page]) == 0
    assert pool[10 * page + 5] == 3 and pool.sum() == 3  # (reading maps the zero page)


def test_populate_backing_leaves_what_it_cannot_name_alone() -> None:
    from acqwriter.pages import populate_backing

    strided = np.zeros((64, 64), np.uint16)[:, ::2]  # not one contiguous allocation
    populate_backing(strided)
    populate_backing(np.empty((0, 4), np.uint8))
    readonly = np.zeros(4096 * 4, np.uint8)
    readonly.flags.writeable = False
    populate_backing(readonly)
    assert not readonly.any()


def test_release_memory_unmaps_the_slots_and_keeps_the_counters() -> None:
    from acqwriter.engine.slots import wait_for_releases

    ring = FrameSlots(20, (1024, 1024), np.dtype("uint16"))  # 40 MiB
    a, b = ring.acquire(0), ring.acquire(0)
    ring.release([a, b])
    address, nbytes = ring.slots.ctypes.data, ring.slots.nbytes
    assert resident_pages(address, nbytes) > 0
    ring.release_memory()
    assert ring.slots.shape == (0, 1024, 1024) and ring.slots.dtype == np.uint16
    assert wait_for_releases(timeout=30)
    assert resident_pages(address, nbytes) == 0  # given back
    assert ring.capacity == 20 and ring.high_water == 2  # still reported in summaries
    assert ring.acquire(0) is None  # released means closed


def test_release_memory_while_the_ring_still_populates() -> None:
    from acqwriter.engine.slots import wait_for_releases

    ring = FrameSlots(128, (1024, 1024), np.dtype("uint16"))  # 256 MiB, populating
    address, nbytes = ring.slots.ctypes.data, ring.slots.nbytes
    ring.release_memory()  # stops the populating thread first, then unmaps
    assert ring.wait_populated(timeout=0)  # the populating thread is gone
    assert wait_for_releases(timeout=30)
    assert resident_pages(address, nbytes) == 0  # given back


def test_a_new_ring_waits_for_releases_in_flight(monkeypatch) -> None:
    """Memory stays bounded: a ring is never allocated while another one's memory is
    still being unmapped. The release here is a stand-in thread (a sleep), named as
    such, so that it lasts long enough to be seen."""
    import threading
    import time

    import acqwriter.engine.slots as slots_module

    stand_in = threading.Thread(target=time.sleep, args=(0.3,), name="stand-in release")
    monkeypatch.setattr(slots_module, "_releases", [stand_in])
    stand_in.start()
    t0 = time.monotonic()
    FrameSlots(2, (64, 64), np.dtype("uint16"))
    assert not stand_in.is_alive()
    assert time.monotonic() - t0 >= 0.25
    assert slots_module._releases == []


def test_population_can_wait_for_start_populating() -> None:
    ring = FrameSlots(40, (1024, 1024), np.dtype("uint16"), populate_now=False)  # 80 MiB
    from acqwriter.engine.slots import (
        _EAGER_SLOTS as eager,  # backed before the constructor returns
    )

    assert resident_fraction(ring.slots[:eager]) == pytest.approx(1.0)
    time.sleep(0.2)  # a populator started too early would have backed pages by now
    assert resident_fraction(ring.slots[eager:]) == 0.0  # nothing runs before the start
    ring.start_populating()
    ring.start_populating()  # idempotent
    assert ring.wait_populated(timeout=30)
    assert resident_fraction(ring.slots) == pytest.approx(1.0)


def test_a_stream_populates_its_whole_ring(tmp_path) -> None:
    from acqwriter import open_stream

    stream = open_stream(
        {
            "out": tmp_path / "p.ome.zarr",
            "shape": (1024, 1024),
            "dtype": "uint16",
            "ring_bytes": 64 << 20,
            "pyramid": {"enabled": False},
        }
    )
    try:
        assert stream.slots.wait_populated(timeout=30)
        assert resident_fraction(stream.slots.slots) == pytest.approx(1.0)
    finally:
        stream.close()
