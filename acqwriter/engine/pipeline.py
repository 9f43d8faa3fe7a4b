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

from acqwriter.codec.blosc import max_compressed_size
from acqwriter.engine.commit import CommitLoop
from acqwriter.engine.guard import DiskGuard, Health
from acqwriter.engine.slots import FrameSlots
from acqwriter.engine.workers import CompressorPool, EncodedBuffers, IOPool
from acqwriter.plan.resources import INLINE_BACKLOG_PER_WRITER, Plan
from acqwriter.store.base import Store

__all__ = ["Pipeline"]


class Pipeline:
    """Shared parts of a stream (see the module docstring)."""

    def __init__(
        self,
        *,
        plans: list[Plan],
        slots: FrameSlots,
        store: Store,
        min_free_bytes: int,
        commit_interval_s: float,
    ) -> None:
        self.slots = slots
        self.store = store
        self.health = Health()
        self.health.on_fail(slots.close)
        self.health.on_fail(store.free_reserve)  # room for the final metadata
        self.compressors = CompressorPool(max(p.compressors for p in plans))
        self.io: IOPool | None = None
        self.encoded: EncodedBuffers | None = None
        pipelined = [p for p in plans if p.io_threads]
        if pipelined:
            size = max(max_compressed_size(p.layout.chunk_bytes) for p in pipelined)
            self.io = IOPool(max(p.io_threads for p in pipelined))
            self.encoded = EncodedBuffers(max(p.encoded_buffers(size) for p in pipelined), size)
        # the producer compresses a frame itself once this many wait for a compressor
        self.inline_backlog = INLINE_BACKLOG_PER_WRITER * len(self.compressors)
        self._slot_bytes = slots.slot_bytes
        self.pending: list[object] = []  # writers whose unwritten bytes count (see below)
        self.guard = DiskGuard(store, min_free_bytes, self.health, self.pending_bytes)
        self.commits = CommitLoop(commit_interval_s, self.health, self.guard)

    def pending_bytes(self) -> int:
        """Bytes still to be written: frames waiting in slots (raw) and bytes packed into
        open shards with their indexes."""
        waiting = self.slots.occupancy * self._slot_bytes
        return waiting + sum(w.unwritten_bytes() for w in self.pending)  # type: ignore[attr-defined]

    def slots_all_waiting(self) -> bool:
        """Every frame slot holds a frame whose chunk waits for frames not yet given: no
        slot can come free until more frames come (a producer that waited would wait
        for ever)."""
        waiting = sum(w.waiting_slots() for w in self.pending)  # type: ignore[attr-defined]
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
