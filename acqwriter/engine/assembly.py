"""Chunk assembly: frames in, chunks ready to compress out.

A *chunk batch* is every frame that shares the same chunk coordinates along the
non-frame axes (t, c, z); once all its frames are in, each of its (y, x) tiles is one
chunk to compress. Frames arrive in index order, so at most the batches of one row of
chunks are open at once (:attr:`acqwriter.plan.layout.FrameLayout.min_ring_frames`
frames). A frame is held by its frame slot, or by nobody when it was dropped (its
chunk reads as the fill value where no frame of the batch arrived), or, for a frame
compressed on the producer's thread, by the producer's own buffer.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from acqwriter.plan.layout import BatchKey, FrameLayout

__all__ = ["ChunkAssembler", "ChunkBatch"]


@dataclass(eq=False)
class ChunkBatch:
    """Frames that share chunk coordinates ``key``; see the module docstring."""

    key: BatchKey
    expected: int  # frames it holds when complete
    entries: list[tuple[int, int | None]] = field(default_factory=list)  # (index, slot)
    from_producer: bool = False  # its one frame is in the producer's buffer, in no slot
    tiles_left: int = 0  # chunks not yet on their way to disk
    ok: bool = True  # every chunk written so far was written
    released: bool = False  # its slots went back as soon as it was encoded

    def live(self) -> list[tuple[int, int]]:
        """(index, slot) of the frames that have pixels in a slot."""
        return [(index, slot) for index, slot in self.entries if slot is not None]

    def frames_with_pixels(self) -> int:
        return 1 if self.from_producer else sum(slot is not None for _, slot in self.entries)

    def slots(self) -> list[int]:
        """The frame slots it holds (none for a frame from the producer's buffer)."""
        return [slot for _, slot in self.entries if slot is not None]


class ChunkAssembler:
    """Collects frames into chunk batches (one caller at a time: the producer)."""

    def __init__(self, layout: FrameLayout) -> None:
        self.layout = layout
        self._open: dict[BatchKey, ChunkBatch] = {}
        self.held = 0  # frame slots held by batches still waiting for frames
        self.opened: dict[int, int] = {}  # block -> batches opened in it

    def add(self, index: int, slot: int | None) -> ChunkBatch | None:
        """Add frame ``index`` (in ``slot``; None: dropped); the batch when complete."""
        key = self.layout.batch_of(index)
        batch = self._open.get(key)
        if batch is None:
            batch = ChunkBatch(key, self.layout.batch_frame_count(key))
            self._open[key] = batch
            block = self.layout.block_of(key)
            self.opened[block] = self.opened.get(block, 0) + 1
        batch.entries.append((index, slot))
        self.held += slot is not None
        if len(batch.entries) == batch.expected:
            self.held -= len(batch.slots())
            return self._open.pop(key)
        return None

    def forget_before(self, block: int) -> None:
        """Forget the batch counts of blocks before ``block`` (in the extent already)."""
        for b in [b for b in self.opened if b < block]:
            del self.opened[b]

    def single(self, index: int) -> ChunkBatch:
        """A complete batch of one frame that stays in the producer's buffer."""
        return ChunkBatch(
            self.layout.batch_of(index), 1, [(index, None)], from_producer=True, tiles_left=1
        )

    def take_incomplete(self) -> list[ChunkBatch]:
        """At close: the batches still waiting for frames that will never come."""
        batches = list(self._open.values())
        self._open.clear()
        self.held = 0
        return batches
