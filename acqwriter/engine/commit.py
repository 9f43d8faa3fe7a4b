"""The extent committer: the array grows on disk only over frames that are there.

The extent of the first axis grows by *blocks* (a chunk, or a shard, along the first
axis). The committer counts the chunk batches of each block as they are written (a
sharded batch when its shard is published); when every batch of the front block is
written, it appends the block's per-frame metadata lines (whole lines, records kept
until they are on disk) and then atomically rewrites the array's ``zarr.json`` with the
larger extent. So the extent only ever covers frames whose pixels and metadata line
are both on disk, and a reader, or a crash, never finds a frame inside the extent
that is not real data or flagged.

Shards along the first axis grow slowly at low frame rates; their unfinished shards
are *sealed* (:meth:`acqwriter.engine.open_shards.OpenShards.seal_due`) once they have held
chunks for ``shard_seal_s``, and the extent then covers the block's leading rows whose
every batch is in the sealed copies.

One :class:`CommitLoop` thread serves every committer of a stream or dataset: it wakes
when batches complete (at most once per ``commit_interval_s``), seals, commits and
checks the free space; at close the caller stops it and commits a last time.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from acqwriter.format.zarr_v3 import encode_array_metadata
from acqwriter.store.base import PartialAppend

if TYPE_CHECKING:
    from acqwriter.engine.assembly import ChunkBatch
    from acqwriter.engine.guard import DiskGuard, Health
    from acqwriter.engine.ledger import FrameLedger
    from acqwriter.engine.open_shards import OpenShards
    from acqwriter.format.keys import ArrayKeys
    from acqwriter.plan.layout import FrameLayout
    from acqwriter.store.base import Store

__all__ = ["CommitLoop", "ExtentCommitter", "LevelsCommitter"]


class ExtentCommitter:
    """Grows one array's extent (see the module docstring)."""

    def __init__(
        self,
        *,
        layout: FrameLayout,
        keys: ArrayKeys,
        array_meta: dict,
        store: Store,
        ledger: FrameLedger,
        health: Health,
        guard: DiskGuard,
        seal_after_s: float,
        wake: Callable[[], None],
    ) -> None:
        self.layout = layout
        self._keys = keys
        self._array_meta = array_meta
        self._store = store
        self._ledger = ledger
        self._health = health
        self._guard = guard
        self._seal_after = seal_after_s
        self.wake = wake  # the commit loop's: batches completed
        self.shards: OpenShards | None = None  # set when the array is sharded
        self._lock = threading.Lock()
        self._done: dict[int, int] = {}  # block -> batches written
        self._expected: dict[int, int] = {}  # block -> batches (the last, settled at close)
        self.committed_blocks = 0
        self.committed_rows = 0
        self.frames_written = 0  # batches written, for progress (the extent may lag)
        self._sealed_rows: dict[int, int] = {}  # block -> leading rows in sealed shards
        self._finished: dict[int, list[tuple[ChunkBatch, int]]] = {}  # ... for sealing
        self._final_rows: int | None = None

    # -- what is written --------------------------------------------------------------------
    def batch_written(self, batch: ChunkBatch, live: int) -> None:
        """Every chunk of ``batch`` (``live`` frames with pixels) is on disk."""
        with self._lock:
            self.frames_written += live
            block = self.layout.block_of(batch.key)
            self._done[block] = self._done.get(block, 0) + 1

    def shard_published(self, batches: list[tuple[ChunkBatch, int]]) -> None:
        """A shard holding ``batches`` is on disk: they count (and, while the block is
        not yet in the extent, they count for sealing its leading rows)."""
        with self._lock:
            for batch, live in batches:
                if batch.ok:
                    self.frames_written += live
                    block = self.layout.block_of(batch.key)
                    self._done[block] = self._done.get(block, 0) + 1
            if self.layout.shard_factors[0] > 1 and batches:
                block = self.layout.block_of(batches[0][0].key)
                if block >= self.committed_blocks:
                    self._finished.setdefault(block, []).extend(batches)
        self.wake()

    def settle(self, total_rows: int, batches_by_block: dict[int, int]) -> None:
        """At close: the array ends at ``total_rows``; a block not yet whole is complete
        when the batches that received a frame are (``batches_by_block``: a batch no
        frame reached holds only fill values and is not written)."""
        with self._lock:
            self._final_rows = total_rows
            if total_rows == 0:
                return
            last = (total_rows - 1) // self.layout.rows_per_block
            for block in range(self.committed_blocks, last + 1):
                self._expected[block] = batches_by_block.get(block, 0)

    def front_block(self) -> int:
        """The first block not wholly written: the extent cannot grow past it."""
        with self._lock:
            return self._front_block_locked()

    def _front_block_locked(self) -> int:
        block = self.committed_blocks
        while self._done.get(block, 0) >= self._expected.get(
            block, self.layout.batches_per_block()
        ):
            block += 1
        return block

    def seal_rows(self, block: int, rows: int) -> None:
        """``rows`` leading rows of ``block`` are readable in sealed shards."""
        with self._lock:
            if rows > self._sealed_rows.get(block, 0):
                self._sealed_rows[block] = rows
        self.wake()

    def finished_batches(self, block: int) -> list[tuple[ChunkBatch, int]]:
        with self._lock:
            return list(self._finished.get(block, []))

    def leading_whole_rows(self, block: int, batches: list[tuple[ChunkBatch, int]]) -> int:
        """Rows from the start of ``block`` whose every chunk batch is in ``batches``."""
        layout = self.layout
        per_chunk_row = layout.batches_per_block() // layout.shard_factors[0]
        done: dict[int, int] = {}
        for batch, _live in batches:
            if batch.ok:
                done[batch.key[0]] = done.get(batch.key[0], 0) + 1
        first = block * layout.shard_factors[0]
        whole = 0
        while whole < layout.shard_factors[0] and done.get(first + whole, 0) >= per_chunk_row:
            whole += 1
        return whole * layout.outer_chunks[0]

    # -- committing ---------------------------------------------------------------------------
    def step(self) -> None:
        """What the commit loop does for this array: seal if due, then commit."""
        self.seal_due()
        self.commit()

    def seal_due(self) -> None:
        """Seal the open shards that have held chunks for ``shard_seal_s``."""
        if self.shards is not None:
            self.shards.seal_due(self._seal_after)

    def ready_rows(self) -> int:
        """Rows the extent could cover now: blocks whose chunks are all written, and the
        sealed leading rows of the next one."""
        with self._lock:
            blocks = self._front_block_locked()
            rows = blocks * self.layout.rows_per_block + self._sealed_rows.get(blocks, 0)
            if self._final_rows is not None:
                rows = min(rows, self._final_rows)
            return rows

    def commit(self, limit: int | None = None) -> None:
        """Advance the extent over blocks whose chunks are all written (and the sealed
        leading rows of the next one), to at most ``limit`` rows when given."""
        layout = self.layout
        with self._lock:
            blocks = self._front_block_locked()
            for block in range(self.committed_blocks, blocks):
                self._sealed_rows.pop(block, None)
                self._finished.pop(block, None)
            rows = blocks * layout.rows_per_block + self._sealed_rows.get(blocks, 0)
            if self._final_rows is not None:
                rows = min(rows, self._final_rows)
            if limit is not None:
                rows = min(rows, limit)
            if rows <= self.committed_rows:
                # a sealed block that finished adds blocks but no rows: count it
                self.committed_blocks = max(self.committed_blocks, blocks)
                return
            first = self.committed_rows * layout.frames_per_row
        end = rows * layout.frames_per_row
        start, lines = self._ledger.lines(first, end)
        failure: PartialAppend | None = None
        written = len(lines)
        if lines:  # whole lines or none; the records stay until they are on disk
            try:
                self._store.append_lines(
                    self._keys.frame_metadata, ("\n".join(lines) + "\n").encode()
                )
            except PartialAppend as exc:
                failure, written = exc, exc.lines
        metadata_end = self._ledger.lines_written(start, written)
        # the extent covers frames whose chunks and metadata line are both on disk
        rows = min(rows, metadata_end // layout.frames_per_row)
        if rows > self.committed_rows:
            self._store.write_atomic(
                self._keys.metadata,
                encode_array_metadata(self._array_meta, layout.array_shape(rows)),
            )
            with self._lock:
                self.committed_blocks = blocks
                self.committed_rows = rows
            self._ledger.committed(first, rows * layout.frames_per_row)
        if failure is not None:
            raise failure


class LevelsCommitter:
    """Commits an image's levels together (live pyramid levels): each step, every
    level's extent grows to the rows all of them have on disk, the lowest level's
    first and level 0's last, so a reader that sizes the image by level 0 never asks a
    lower level for a row it lacks, and the levels agree once the step is done.
    ``halves``: the first axis is z, downsampled: level k has ``ceil(rows / 2**k)``
    rows of level 0's ``rows``."""

    def __init__(self, levels: list[ExtentCommitter], *, halves: bool) -> None:
        self.levels = levels  # level 0 first
        self._halves = halves

    def rows_of(self, k: int, rows: int) -> int:
        """Level ``k``'s rows for level 0's ``rows``."""
        return -(-rows // 2**k) if self._halves else rows

    def step(self) -> None:
        for committer in self.levels:
            committer.seal_due()
        rows = self.levels[0].ready_rows()
        for k, committer in enumerate(self.levels[1:], start=1):
            ready = committer.ready_rows()
            rows = min(rows, ready * 2**k if self._halves else ready)
        self._commit(rows)

    def final(self) -> None:
        """At close: every level to level 0's last rows (a level that has fewer stays
        short: :meth:`acqwriter.engine.image.ImageWriter.list_whole_levels`)."""
        self._commit(self.levels[0].ready_rows())

    def _commit(self, rows: int) -> None:
        for k in range(len(self.levels) - 1, 0, -1):
            self.levels[k].commit(limit=self.rows_of(k, rows))
        self.levels[0].commit(limit=rows)


class CommitLoop:
    """The thread that commits every array of a stream (see the module docstring)."""

    def __init__(self, interval_s: float, health: Health, guard: DiskGuard) -> None:
        self._interval = interval_s
        self._health = health
        self._guard = guard
        self.committers: list[ExtentCommitter | LevelsCommitter] = []
        self._committers_lock = threading.Lock()  # images are added while it runs
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="acqwriter-commit", daemon=True)

    def wake(self) -> None:
        self._wake.set()

    def add(self, committer: ExtentCommitter | LevelsCommitter) -> None:
        with self._committers_lock:
            self.committers.append(committer)

    def group(self, together: LevelsCommitter) -> None:
        """``together``'s levels are committed by it from now on, not each alone."""
        with self._committers_lock:
            self.committers = [c for c in self.committers if c not in together.levels]
            self.committers.append(together)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._wake.wait(self._interval)
            self._wake.clear()
            if self._stopping.is_set():
                return
            try:
                with self._committers_lock:
                    committers = list(self.committers)
                for committer in committers:
                    committer.step()
                self._guard.check()
            except BaseException as exc:
                self._health.fail(exc)
                return
            self._stopping.wait(self._interval)  # rate-limit metadata rewrites

    def stop(self) -> None:
        """End the thread; the caller commits each array a last time."""
        self._stopping.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join()
