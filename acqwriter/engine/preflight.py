"""What is checked and allocated before the first frame: memory, disk, frame slots.

The plan (:class:`~acqwriter.plan.dataset.DatasetPlan`) says how many slots the images
share and how much disk the dataset needs; this module checks those numbers against the
machine and allocates the slots. A dataset is refused before anything is written when
its frame slots cannot be backed by the memory available, or (with ``disk_check``) when
its estimated size does not fit on the disk. The frame slots are backed with memory
only as far as a backlog reaches (:mod:`acqwriter.engine.slots`), so without the memory
check a shortage would show only when a disk stall first fills them, half-way through
an acquisition.
"""

from __future__ import annotations

import psutil

from acqwriter.engine.slots import FrameSlots
from acqwriter.plan.dataset import DatasetPlan, SlotPlan
from acqwriter.spec.location import ObjectURL
from acqwriter.spec.model import StreamSpec
from acqwriter.store.base import Store
from acqwriter.store.local import LocalStore
from acqwriter.validation import SpecError

__all__ = [
    "check_disk",
    "check_memory",
    "check_resources",
    "preallocate_slots",
    "ring_for",
    "slots_for",
]


def check_memory(plan: DatasetPlan) -> None:
    """Refuse frame slots the machine cannot back. "Available" is the kernel's estimate
    of what can be had without swapping (free memory plus page cache it can drop)."""
    slots = plan.slots
    ring = slots.frames * slots.slot_bytes
    live = plan.memory()["live_levels"]  # what pyramid levels written live hold
    available = psutil.virtual_memory().available
    if ring + live > available:
        levels = f" and the live pyramid levels {live / 2**20:.0f} MiB" if live else ""
        fix = ", write the pyramid at close (pyramid.when: close)" if live else ""
        raise SpecError(
            f"ring_bytes: the ring needs {ring / 2**20:.0f} MiB ({slots.frames} "
            f"frames of {slots.slot_bytes} bytes){levels} but only "
            f"{available / 2**20:.0f} MiB of memory is available; lower ring_bytes{fix} "
            "or free memory"
        )


def check_disk(plan: DatasetPlan, store: Store | None = None) -> None:
    """Refuse a dataset whose estimated size does not fit (see ``WriterOptions``) in
    ``store`` (default: the filesystem ``plan.out`` is to be created on)."""
    need = plan.disk_need_bytes()
    if store is None and isinstance(plan.out, ObjectURL):
        return  # a bucket's quota is not told: a full one fails a write, stopping cleanly
    if store is None:
        where, free = LocalStore.free_bytes_at(plan.out)
    else:
        where, free = store.location, store.free_bytes()
    if need > free:
        raise SpecError(
            f"out: not enough free space on {where}: {free / 2**20:.0f} MiB free, "
            f"{need / 2**20:.0f} MiB needed ({plan.disk_frames()} frames uncompressed + 5 % "
            "+ min_free_bytes); free space, lower the estimate, or set disk_check: false"
        )


def check_resources(spec: StreamSpec) -> None:
    """Refuse, as :func:`acqwriter.open_stream` would, frame slots beyond the memory
    available and (with ``disk_check``) an acquisition beyond the free disk, without
    opening anything: the daemon's ``configure`` checks what its ``start`` needs."""
    plan = DatasetPlan.of_stream(spec)
    check_memory(plan)
    if spec.disk_check:
        check_disk(plan)


def slots_for(slots: SlotPlan) -> FrameSlots:
    """The planned frame slots, whose first slot is ready; the stream that allocates
    them starts backing the rest once its own threads run."""
    return FrameSlots(slots.frames, slots.shape, slots.dtype, populate_now=False)


def preallocate_slots(spec: StreamSpec) -> FrameSlots:
    """Frame slots sized for ``spec``, fully backed by memory before they are used.

    Allocate them ahead (e.g. when an acquisition is configured) and pass them to
    :func:`acqwriter.open_stream` as ``slots`` so that backing many slots does not delay
    the first frame."""
    plan = DatasetPlan.of_stream(spec)
    check_memory(plan)
    slots = slots_for(plan.slots)
    slots.wait_populated()
    return slots


ring_for = preallocate_slots  # the public API's earlier word for the frame slots
