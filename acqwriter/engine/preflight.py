"""What is checked and allocated before the first frame: memory, disk, frame slots.

A stream is refused before anything is written when its frame slots cannot be backed
by the memory available, or (with ``disk_check``) when its estimated size does not
fit on the disk. The frame slots are backed with memory only as far as a backlog
reaches (:mod:`acqwriter.engine.slots`), so without the memory check a shortage would
show only when a disk stall first fills them, half-way through an acquisition.

The images of a dataset share one set of slots, sized for the largest frame: what
``ring_bytes`` leaves after the staging of open shards and the compressors' own
buffers (the most any image's plan needs), in frames, capped at the frames every
image holds when they are all bounded, never below what one image's row of chunks
keeps open.
"""

from __future__ import annotations

import numpy as np
import psutil

from acqwriter.engine.slots import FrameSlots
from acqwriter.plan.resources import RING_MAX_FRAMES, Plan
from acqwriter.spec.model import StreamSpec
from acqwriter.store.base import Store
from acqwriter.store.local import LocalStore
from acqwriter.validation import SpecError

__all__ = [
    "FINAL_RESERVE_BYTES",
    "RESERVE_BYTES",
    "check_disk",
    "check_memory",
    "check_resources",
    "ring_for",
    "slots_for",
]

# Disk set aside for when the disk fills up: one reserve for the final extent and
# per-frame metadata (freed on error), one kept for the root's final state alone.
RESERVE_BYTES = 4 * 2**20
FINAL_RESERVE_BYTES = 1 * 2**20


def slot_frames(plans: list[Plan], ring_bytes: int) -> int:
    """How many frame slots the images of ``plans`` share (see the module docstring)."""
    if len(plans) == 1:
        return plans[0].ring_frames
    slot_bytes = max(p.layout.frame_bytes for p in plans)
    staging = sum(p.layout.extra_staging_bytes for p in plans)
    usable = ring_bytes - staging - max(p.thread_buffer_bytes for p in plans)
    limits = [usable // slot_bytes, RING_MAX_FRAMES]
    if all(p.layout.max_frames is not None for p in plans):
        limits.append(sum(p.layout.max_frames for p in plans))  # type: ignore[misc]
    return max(min(limits), max(p.layout.min_ring_frames for p in plans))


def check_memory(plans: list[Plan], ring_bytes: int) -> None:
    """Refuse frame slots the machine cannot back. "Available" is the kernel's estimate
    of what can be had without swapping (free memory plus page cache it can drop)."""
    frames = slot_frames(plans, ring_bytes)
    frame_bytes = max(p.layout.frame_bytes for p in plans)
    need = frames * frame_bytes
    available = psutil.virtual_memory().available
    if need > available:
        raise SpecError(
            f"ring_bytes: the ring needs {need / 2**20:.0f} MiB ({frames} "
            f"frames of {frame_bytes} bytes) but only {available / 2**20:.0f} "
            "MiB of memory is available; lower ring_bytes or free memory"
        )


def check_disk(spec: StreamSpec, plans: list[Plan], store: Store | None = None) -> None:
    """Refuse a dataset whose estimated size does not fit (see ``WriterOptions``) in
    ``store`` (default: the filesystem ``spec.out`` is to be created on)."""
    need = spec.min_free_bytes + RESERVE_BYTES + FINAL_RESERVE_BYTES
    if spec.expected_frames:
        frames = spec.expected_frames
        need += int(frames * max(p.layout.frame_bytes for p in plans) * 1.05)
    else:
        frames = 0
        for plan in plans:
            if plan.layout.max_frames:
                frames += plan.layout.max_frames
                need += int(plan.layout.max_frames * plan.layout.frame_bytes * 1.05)
    if store is None:
        where, free = LocalStore.free_bytes_at(spec.out)
    else:
        where, free = store.location, store.free_bytes()
    if need > free:
        raise SpecError(
            f"out: not enough free space on {where}: {free / 2**20:.0f} MiB free, "
            f"{need / 2**20:.0f} MiB needed ({frames} frames uncompressed + 5 % + "
            "min_free_bytes); free space, lower the estimate, or set disk_check: false"
        )


def check_resources(spec: StreamSpec) -> None:
    """Refuse, as :func:`acqwriter.open_stream` would, frame slots beyond the memory
    available and (with ``disk_check``) an acquisition beyond the free disk, without
    opening anything: the daemon's ``configure`` checks what its ``start`` needs."""
    plans = [Plan.of(spec)]
    check_memory(plans, spec.ring_bytes)
    if spec.disk_check:
        check_disk(spec, plans)


def slots_for(plans: list[Plan], ring_bytes: int) -> FrameSlots:
    """Frame slots for the images of ``plans`` whose first slot is ready; the stream that
    allocates them starts backing the rest once its own threads run. Images of one
    frame shape and dtype get slots of that frame; others share slots of the largest
    frame's bytes."""
    frames = slot_frames(plans, ring_bytes)
    first = plans[0].layout
    if all(
        p.layout.frame_shape == first.frame_shape and p.layout.dtype == first.dtype for p in plans
    ):
        return FrameSlots(frames, first.frame_shape, first.dtype, populate_now=False)
    slot_bytes = max(p.layout.frame_bytes for p in plans)
    return FrameSlots(frames, (1, slot_bytes), np.dtype(np.uint8), populate_now=False)


def ring_for(spec: StreamSpec) -> FrameSlots:
    """Frame slots sized for ``spec``, fully backed by memory before they are used.

    Allocate them ahead (e.g. when an acquisition is configured) and pass them to
    :func:`acqwriter.open_stream` as ``ring`` so that backing a large ring does not
    delay the first frame."""
    plans = [Plan.of(spec)]
    check_memory(plans, spec.ring_bytes)
    slots = slots_for(plans, spec.ring_bytes)
    slots.wait_populated()
    return slots
