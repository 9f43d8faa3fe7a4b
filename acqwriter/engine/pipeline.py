"""What every image of a stream or a dataset shares: one set of frame slots, one pool of
compressor and I/O threads, one pool of encoded-chunk buffers, one health, one disk
guard and one commit loop.

A 96-well × 4-field plate must not open 384 rings or 384 thread pools: the images'
:class:`~acqwriter.engine.image.ImageWriter` s all feed this one pipeline, and the memory
bound (``ring_bytes``) holds for the dataset as a whole. The thread counts are the
largest any image's plan asks for; slots are sized for the largest frame.

Call order: construct, add the images (each registers its array writer), :meth:`start`,
then at close :meth:`drain` (every queued chunk compressed and written), each image's
shards finished, :meth:`stop_commits`, each image's final commit.
"""

from __future__ import annotations

from acqwriter.codec.blosc import EncoderFactory, IntoEncoder
from acqwriter.engine.array import ArrayWriter
from acqwriter.engine.commit import CommitLoop
from acqwriter.engine.guard import DiskGuard, Health
from acqwriter.engine.slots import FrameSlots
from acqwriter.engine.workers import CompressorPool, EncodedBuffers, IOPool
from acqwriter.plan.dataset import DatasetPlan
from acqwriter.plan.resources import INLINE_BACKLOG_PER_WRITER
from acqwriter.store.base import Store

__all__ = ["Pipeline"]


class Pipeline:
    """Shared parts of a stream (see the module docstring)."""

    def __init__(
        self,
        plan: DatasetPlan,
        *,
        slots: FrameSlots,
        store: Store,
        encoder: EncoderFactory | None = None,
    ) -> None:
        self.slots = slots
        # what compresses each image's chunks, given its codec and dtype
        self.encoder: EncoderFactory = encoder or IntoEncoder
        self.store = store
        self.health = Health()
        self.health.on_fail(slots.close)
        self.health.on_fail(store.free_reserve)  # room for the final metadata
        self.compressors = CompressorPool(plan.compressors)
        self.io: IOPool | None = None
        self.encoded: EncodedBuffers | None = None
        count, size = plan.encoded_buffers()
        if count:
            self.io = IOPool(plan.io_threads)
            self.encoded = EncodedBuffers(count, size)
        # the producer compresses a frame itself once this many wait for a compressor
        self.inline_backlog = INLINE_BACKLOG_PER_WRITER * len(self.compressors)
        self._slot_bytes = slots.slot_bytes
        self.arrays: list[ArrayWriter] = []  # arrays whose unwritten bytes count (see below)
        writer = plan.writer
        self.guard = DiskGuard(store, writer.min_free_bytes, self.health, self.pending_bytes)
        self.commits = CommitLoop(writer.commit_interval_s, self.health, self.guard)

    def pending_bytes(self) -> int:
        """Bytes still to be written: frames waiting in slots (raw) and bytes packed into
        open shards with their indexes."""
        waiting = self.slots.occupancy * self._slot_bytes
        return waiting + sum(array.unwritten_bytes() for array in self.arrays)

    def slots_all_waiting(self) -> bool:
        """Every frame slot holds a frame whose chunk waits for frames not yet given: no
        slot can come free until more frames come (a producer that waited would wait
        for ever)."""
        waiting = sum(
            array.waiting_slots() for array in self.arrays if array.takes_from(self.slots)
        )
        return waiting >= self.slots.capacity

    def start(self) -> None:
        self.compressors.start()
        if self.io is not None:
            self.io.start()
        self.commits.start()
        # last: backing the slots holds the memory-map lock that thread starts need
        self.slots.start_populating()

    def drain(self) -> None:
        """Compress and write every queued chunk (the calling thread helps), then end
        the threads."""
        self.compressors.stop()
        if self.io is not None:
            self.io.stop()

    def stop_commits(self) -> None:
        self.commits.stop()
