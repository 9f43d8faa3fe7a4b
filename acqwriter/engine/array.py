"""One array being written: its frames' chunk batches, its open shards, its extent.

An :class:`ArrayWriter` owns everything about one array path of a dataset: the
assembly of its frames into chunk batches (:mod:`acqwriter.engine.assembly`), the
encoding and writing of each (y, x) tile of a batch, its open shards
(:class:`acqwriter.engine.open_shards.OpenShards`) and the committer of its extent
(:mod:`acqwriter.engine.commit`). What costs memory or threads is shared and handed
in: the frame slots, the compressor and I/O pools, the encoded-chunk buffers, the
store, the stream's health and its disk guard, so several array writers (the images of
one dataset) share one set of each.

A tile's way to disk, on a compressor thread (:meth:`ArrayWriter.process_tile`): the
tile is assembled from the batch's frame slots (or compressed straight from the slot,
or from the producer's own buffer, when one frame is one chunk), compressed into the
store's scratch buffer and written as a chunk or packed into its shard; or, for big
unsharded chunks, compressed into a pooled buffer that an I/O thread writes
(:meth:`ArrayWriter.write_encoded`). Either way :meth:`ArrayWriter.tile_done` accounts
for it: the slots go back once every tile of the batch is encoded or written, and the
committer learns that the batch is on disk.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

import numpy as np

from acqwriter.codec.blosc import IntoEncoder, max_compressed_size
from acqwriter.engine.assembly import ChunkAssembler, ChunkBatch
from acqwriter.engine.commit import CommitLoop, ExtentCommitter
from acqwriter.engine.open_shards import OpenShards

if TYPE_CHECKING:
    from acqwriter.engine.guard import DiskGuard, Health
    from acqwriter.engine.ledger import FrameLedger
    from acqwriter.engine.levels import LevelFeed
    from acqwriter.engine.slots import FrameSlots
    from acqwriter.engine.view import FrameCache
    from acqwriter.engine.workers import CompressorPool, EncodedBuffer, EncodedBuffers, IOPool
    from acqwriter.format.keys import ArrayKeys
    from acqwriter.plan.layout import FrameLayout
    from acqwriter.store.base import Store

__all__ = ["ArrayWriter"]

# blocks whose batch count an array remembers before it forgets those in its extent
_OPENED_KEPT = 4096


class ArrayWriter:
    """Writes one array (see the module docstring)."""

    def __init__(
        self,
        *,
        layout: FrameLayout,
        keys: ArrayKeys,
        array_meta: dict,
        encoder: IntoEncoder,
        store: Store,
        slots: FrameSlots,
        compressors: CompressorPool,
        io: IOPool | None,
        encoded: EncodedBuffers | None,
        ledger: FrameLedger,
        health: Health,
        guard: DiskGuard,
        commits: CommitLoop,
        shard_seal_s: float,
    ) -> None:
        self.layout = layout
        self.keys = keys
        self.store = store
        self._slots = slots
        self._compressors = compressors
        self._io = io
        self._encoded = encoded
        self._health = health
        self._guard = guard
        self._encoder = encoder
        # the newest frames kept for live views (engine.view), when one is attached
        self.cache: FrameCache | None = None
        # the next pyramid level, made from this array's frames as they pass (live levels)
        self.below: LevelFeed | None = None
        self._max_encoded = max_compressed_size(layout.chunk_bytes)
        self._assembler = ChunkAssembler(layout)
        self._assembly = threading.Lock()  # a lower level's frames come from many threads
        self._lock = threading.Lock()
        self._stored_bytes = 0  # of unsharded chunks (a shard's count once it is on disk)
        self.committer = ExtentCommitter(
            layout=layout,
            keys=keys,
            array_meta=array_meta,
            store=store,
            ledger=ledger,
            health=health,
            guard=guard,
            seal_after_s=shard_seal_s,
            wake=commits.wake,
        )
        commits.add(self.committer)
        self.shards: OpenShards | None = None
        if layout.shards is not None:
            self.shards = OpenShards(
                store=store,
                keys=keys,
                layout=layout,
                health=health,
                committer=self.committer,
                guard=guard,
            )
            self.committer.shards = self.shards

    @property
    def stored_bytes(self) -> int:
        with self._lock:
            own = self._stored_bytes
        return own + (self.shards.stored_bytes if self.shards is not None else 0)

    def takes_from(self, slots: object) -> bool:
        """Its frames wait in ``slots`` (a live level's wait in its own frames)."""
        return self._slots is slots

    def waiting_slots(self) -> int:
        """Frame slots held by chunk batches still waiting for frames."""
        return self._assembler.held

    def unwritten_bytes(self) -> int:
        """Bytes packed into open shards and not yet written (for the disk guard)."""
        return self.shards.unwritten_bytes() if self.shards is not None else 0

    # -- frames in (the producer's thread) -----------------------------------------------------
    def add(self, index: int, slot: int | None) -> None:
        """Frame ``index`` is in ``slot`` (None: dropped); queue its batch when complete."""
        with self._assembly:
            batch = self._assembler.add(index, slot)
            if len(self._assembler.opened) > _OPENED_KEPT:
                self._assembler.forget_before(self.committer.committed_blocks)
        if batch is not None:
            self._submit(batch)

    def batches_by_block(self) -> dict[int, int]:
        """Batches that received a frame (or a dropped one) in each block not yet in the
        extent: a batch no frame reached is never written."""
        first = self.committer.committed_blocks
        with self._assembly:
            return {b: n for b, n in self._assembler.opened.items() if b >= first}

    def write_from_producer(
        self, index: int, frame: np.ndarray, encoded: EncodedBuffer | None
    ) -> bool:
        """Compress ``frame`` (one whole chunk) on the calling thread, straight from its
        buffer, which is no longer read once this returns. False when it failed."""
        batch = self._assembler.single(index)
        return self.process_tile(batch, 0, 0, None, frame, encoded)

    def _submit(self, batch: ChunkBatch) -> None:
        batch.tiles_left = self.layout.tiles_y * self.layout.tiles_x
        for ty in range(self.layout.tiles_y):
            for tx in range(self.layout.tiles_x):
                self._compressors.submit(self, batch, ty, tx)

    def flush(self, total_rows: int, batches_by_block: dict[int, int]) -> None:
        """At close (no frame follows): queue the incomplete batches, padded with the
        fill value, and settle where the extent ends (``batches_by_block``: see
        :meth:`ExtentCommitter.settle`). Positions no frame reached are inside the
        extent, flagged ``missing``."""
        self.committer.settle(total_rows, batches_by_block)
        if total_rows == 0:
            return
        with self._assembly:
            incomplete = self._assembler.take_incomplete()
        for batch in incomplete:
            self._submit(batch)

    def frame(self, slot: int) -> np.ndarray:
        """Slot ``slot`` as one of this array's frames."""
        return self._slots.view(slot, self.layout.frame_shape, self.layout.dtype)

    # -- tiles (compressor threads) ---------------------------------------------------------------
    def new_staging(self, *, optional: bool = False) -> np.ndarray | None:
        """A compressor's buffer for assembling a tile (``optional``: None when every
        chunk is one frame, compressed straight from its slot)."""
        if optional and self.layout.frame_is_chunk:
            return None
        return np.empty(self.layout.chunk_shape, dtype=self.layout.dtype)

    def process_tile(
        self,
        batch: ChunkBatch,
        ty: int,
        tx: int,
        staging: np.ndarray | None,
        frame: np.ndarray | None = None,
        encoded: EncodedBuffer | None = None,
    ) -> bool:
        """Write one tile and account for it; a failure fails the stream. False when the
        tile was not written (it failed, or the stream had)."""
        nbytes: int | None = 0
        ok = False
        if not self._health.failed:
            # _write_tile owns ``encoded`` from here: it hands it to an I/O thread, or
            # gives it back if compressing fails
            owned, encoded = encoded, None
            try:
                nbytes, ok = self._write_tile(batch, ty, tx, staging, frame, owned), True
            except BaseException as exc:
                self._health.fail(exc)
        if encoded is not None and self._encoded is not None:  # unused: the stream failed
            self._encoded.give(encoded)
        if nbytes is not None:  # None: an I/O thread finishes the tile
            self.tile_done(batch, nbytes, ok)
        return ok

    def _write_tile(
        self,
        batch: ChunkBatch,
        ty: int,
        tx: int,
        staging: np.ndarray | None,
        frame: np.ndarray | None,
        encoded: EncodedBuffer | None,
    ) -> int | None:
        """Compress one tile of ``batch`` and write it or pack it into its shard (bytes
        written), or hand it to an I/O thread (None)."""
        layout = self.layout
        live = batch.live()
        cache = self.cache
        if cache is not None and frame is None and ty == 0 and tx == 0:
            for index, slot in live:  # a view's copy, from the slot, off the producer
                cache.offer(index, self.frame(slot))
        if self.below is not None and ty == 0 and tx == 0:
            # the next level's frames, made before any tile's slots can go back
            for index, slot in batch.entries:
                pixels = frame if batch.from_producer else None
                if slot is not None:
                    pixels = self.frame(slot)
                self.below.offer(index, pixels)
        if frame is not None:
            data = frame
        elif not live:
            return 0  # only dropped frames: the chunk stays absent and reads as fill
        elif layout.frame_is_chunk and len(live) == 1:
            data = self.frame(live[0][1])  # zero-copy: compress from the slot
        else:
            assert staging is not None
            ys, xs, h, w = layout.tile_slices(ty, tx)
            if not (len(live) == layout.frames_per_chunk and (h, w) == layout.tile_shape):
                staging.fill(0)
            for index, slot in live:
                pos = layout.position_in_batch(index)
                staging[(*pos, slice(0, h), slice(0, w))] = self.frame(slot)[ys, xs]
            data = staging
        key = self.keys.chunk(layout.chunk_coords(batch.key, ty, tx))
        if self._io is not None:
            assert self._encoded is not None
            # compress into a pooled aligned buffer (waits for one: memory stays bounded)
            # and let an I/O thread write it
            if encoded is None:
                encoded = self._encoded.take()
            try:
                n = self._encoder.encode_into(data, encoded.buf, encoded.address)
            except BaseException:
                self._encoded.give(encoded)
                raise
            if frame is None and layout.frame_is_chunk:
                # the frame is in the encoded buffer now: its slot can take the next one
                # (the encoded-buffer pool bounds what waits for the disk)
                batch.released = True
                self._slots.release(batch.slots())
            self._io.submit(self, batch, key, encoded, n)
            return None
        # compress straight into this thread's aligned scratch buffer, write it from there
        buf, address = self.store.scratch(self._max_encoded)
        n = self._encoder.encode_into(data, buf, address)
        if self.shards is not None:
            shard = self.shards.shard_for(batch.key)
            shard.put(layout.shards.position(batch.key, ty, tx), memoryview(buf)[:n])  # type: ignore[union-attr]
            return n
        return self.store.write_chunk_from(key, n)

    def write_encoded(self, batch: ChunkBatch, key: str, encoded: EncodedBuffer, n: int) -> None:
        """An I/O thread writes an encoded chunk and gives its buffer back."""
        nbytes, ok = 0, False
        try:
            if not self._health.failed:
                nbytes, ok = self.store.write_chunk_from(key, n, encoded.buf), True
        except BaseException as exc:
            self._health.fail(exc)
        finally:
            assert self._encoded is not None
            self._encoded.give(encoded)
        self.tile_done(batch, nbytes, ok)

    def tile_done(self, batch: ChunkBatch, nbytes: int, ok: bool) -> None:
        """Account for one tile of ``batch`` (written, or not when ``ok`` is False)."""
        sharded = self.shards is not None
        if not sharded:  # a shard's bytes count once the shard is on disk
            with self._lock:
                self._stored_bytes += nbytes
        self._guard.wrote(nbytes)
        with self._lock:
            batch.ok = batch.ok and ok
            batch.tiles_left -= 1
            complete = batch.tiles_left == 0
        live = batch.frames_with_pixels() if complete else 0
        # a batch with a failed tile never enters the extent; a sharded batch enters it
        # when its shard is on disk (OpenShards.finish)
        if complete and batch.ok and not sharded:
            self.committer.batch_written(batch, live)
        if complete and not batch.released:  # encoded and on their way to disk
            self._slots.release(batch.slots())
        if sharded and ok:
            self.shards.tile_done(batch, live, complete)  # type: ignore[union-attr]
        if complete:
            self.committer.wake()

    # -- close ------------------------------------------------------------------------------------
    def finish_shards(self) -> None:
        """After the pools are drained: finish (or salvage) the open shards."""
        if self.shards is not None:
            self.shards.close()
