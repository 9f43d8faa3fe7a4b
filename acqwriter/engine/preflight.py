"""What is checked and allocated before the first frame: memory, disk, frame slots.

A stream is refused before anything is written when its frame slots cannot be backed
by the memory available, or (with ``disk_check``) when its estimated size does not
fit on the disk. The frame slots are backed with memory only as far as a backlog
reaches (:mod:`acqwriter.engine.slots`), so without the memory check a shortage would
show only when a disk stall first fills them, half-way through an acquisition.
"""

from __future__ import annotations

import psutil

from acqwriter.engine.slots import FrameSlots
from acqwriter.plan.resources import Plan
from acqwriter.spec.model import StreamSpec
from acqwriter.store.base import Store
from acqwriter.store.local import LocalStore
from acqwriter.validation import SpecError

__all__ = ["FINAL_RESERVE_BYTES", "RESERVE_BYTES", "check_resources", "ring_for"]

# Disk set aside for when the disk fills up: one reserve for the final extent and
# per-frame metadata (freed on error), one kept for the root's final state alone.
RESERVE_BYTES = 4 * 2**20
FINAL_RESERVE_BYTES = 1 * 2**20


def check_memory(plan: Plan) -> None:
    """Refuse frame slots the machine cannot back. "Available" is the kernel's estimate
    of what can be had without swapping (free memory plus page cache it can drop)."""
    need = plan.ring_frames * plan.layout.frame_bytes
    available = psutil.virtual_memory().available
    if need > available:
        raise SpecError(
            f"ring_bytes: the ring needs {need / 2**20:.0f} MiB ({plan.ring_frames} "
            f"frames of {plan.layout.frame_bytes} bytes) but only {available / 2**20:.0f} "
            "MiB of memory is available; lower ring_bytes or free memory"
        )


def check_disk(spec: StreamSpec, plan: Plan, store: Store | None = None) -> None:
    """Refuse a stream whose estimated size does not fit (see ``WriterOptions``) in
    ``store`` (default: the filesystem ``spec.out`` is to be created on)."""
    frames = spec.expected_frames or plan.layout.max_frames
    need = spec.min_free_bytes + RESERVE_BYTES + FINAL_RESERVE_BYTES
    if frames:
        need += int(frames * plan.layout.frame_bytes * 1.05)
    if store is None:
        where, free = LocalStore.free_bytes_at(spec.out)
    else:
        where, free = store.location, store.free_bytes()
    if need > free:
        raise SpecError(
            f"out: not enough free space on {where}: {free / 2**20:.0f} MiB free, "
            f"{need / 2**20:.0f} MiB needed ({frames or 0} frames uncompressed + 5 % + "
            "min_free_bytes); free space, lower the estimate, or set disk_check: false"
        )


def check_resources(spec: StreamSpec) -> None:
    """Refuse, as :func:`acqwriter.open_stream` would, frame slots beyond the memory
    available and (with ``disk_check``) an acquisition beyond the free disk, without
    opening anything: the daemon's ``configure`` checks what its ``start`` needs."""
    plan = Plan.of(spec)
    check_memory(plan)
    if spec.disk_check:
        check_disk(spec, plan)


def new_slots(plan: Plan) -> FrameSlots:
    """Frame slots for ``plan`` whose first slot is ready; the stream that allocates them
    for itself starts backing the rest once its own threads run."""
    layout = plan.layout
    return FrameSlots(plan.ring_frames, layout.frame_shape, layout.dtype, populate_now=False)


def ring_for(spec: StreamSpec) -> FrameSlots:
    """Frame slots sized for ``spec``, fully backed by memory before they are used.

    Allocate them ahead (e.g. when an acquisition is configured) and pass them to
    :func:`acqwriter.open_stream` as ``ring`` so that backing a large ring does not
    delay the first frame."""
    plan = Plan.of(spec)
    check_memory(plan)
    slots = new_slots(plan)
    slots.wait_populated()
    return slots
