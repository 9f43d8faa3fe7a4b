"""The shards of one array being filled, and the one owner of sealing them.

:class:`OpenShards` opens a :class:`~acqwriter.engine.shards.ShardWriter` on a shard's
first chunk, finishes it when its last chunk is in (only then do its batches count for
the extent), seals the front block's shards when they have waited ``shard_seal_s``
(:meth:`OpenShards.seal_due`, called by the commit loop), and after a failure salvages
at close what can still extend the extent (:meth:`OpenShards.salvage`). Both ways a
block's leading whole rows enter the extent go through here and end in the committer's
``seal_rows``.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

from acqwriter.engine.shards import SegmentPool, ShardWriter

if TYPE_CHECKING:
    from acqwriter.engine.assembly import ChunkBatch
    from acqwriter.engine.commit import ExtentCommitter
    from acqwriter.engine.guard import DiskGuard, Health
    from acqwriter.format.keys import ArrayKeys
    from acqwriter.plan.layout import BatchKey, FrameLayout
    from acqwriter.store.base import Store

__all__ = ["SALVAGE_MARGIN", "OpenShards"]

SALVAGE_MARGIN = 1 << 20


class OpenShards:
    """The shards of one array being filled: opened on their first chunk, finished when
    their last chunk is in, and, after a failure, salvaged at close."""

    def __init__(
        self,
        *,
        store: Store,
        keys: ArrayKeys,
        layout: FrameLayout,
        health: Health,
        committer: ExtentCommitter,
        guard: DiskGuard,
    ) -> None:
        assert layout.shards is not None
        self._store = store
        self._keys = keys
        self._layout = layout
        self._plan = layout.shards
        self._health = health
        self._committer = committer
        self._guard = guard
        self._segments = SegmentPool()  # staging memory reused from shard to shard
        self._lock = threading.Lock()
        self._open: dict[tuple[int, ...], ShardWriter] = {}
        self.stored_bytes = 0  # of shards on disk

    def shard_for(self, key: BatchKey) -> ShardWriter:
        plan = self._plan
        coords = plan.shard_of(key)
        with self._lock:
            shard = self._open.get(coords)
            if shard is None:
                expected = sum(1 for _ in plan.batches(coords)) * self._layout.tiles_per_batch
                grid = plan.grid_coords(coords)
                shard = ShardWriter(
                    self._store,
                    self._keys.chunk(grid),
                    plan.n_inner,
                    expected,
                    self._segments,
                )
                self._open[coords] = shard
            return shard

    def of_block(self, block: int) -> list[ShardWriter]:
        """The open shards of ``block`` (the first axis' shard coordinate)."""
        with self._lock:
            return [sh for coords, sh in self._open.items() if coords[0] == block]

    def unwritten_bytes(self) -> int:
        """Bytes packed into open shards but not yet on disk, with their indexes."""
        with self._lock:
            shards = list(self._open.values())
        return sum(shard.unwritten_bytes() for shard in shards)

    def tile_done(self, batch: ChunkBatch, live: int, batch_complete: bool) -> None:
        """Count a finished tile of ``batch`` in its shard; finish the shard when it is
        complete, and only then let its batches count for the extent."""
        shard = self.shard_for(batch.key)
        if batch_complete:
            with shard.lock:
                shard.batches.append((batch, live))
        if shard.job_done():
            self.finish(shard)

    def finish(self, shard: ShardWriter, *, salvage: bool = False) -> bool:
        """Finish ``shard`` and let its batches count; True when it is on disk. Once
        the stream has failed, a shard is left as it is for the salvage at close
        (:meth:`salvage`, which passes ``salvage``); so is a shard whose own finish
        failed in a way it can retry (a full disk: the salvage frees later shards
        first). Otherwise a shard that failed is abandoned and forgotten (its temporary
        object freed: room for the final metadata)."""
        if self._health.failed and not salvage:
            return False
        try:
            shard.finish()
        except BaseException as exc:
            self._health.fail(exc)
            if shard.finished:  # else kept: the salvage at close (re)tries it
                shard.abandon()
                self._forget(shard)
            return False
        self._forget(shard)
        with self._lock:
            self.stored_bytes += shard.stored_bytes
        self._committer.shard_published(list(shard.batches))
        return True

    def seal_due(self, seal_after_s: float) -> None:
        """Publish the unfinished shards of the first block not yet in the extent when
        they have held chunks for ``seal_after_s`` without a seal, and tell the
        committer how many of the block's leading rows they now hold whole (the commit
        loop calls this before each commit; the salvage at close seals the same way)."""
        committer = self._committer
        if self._layout.shard_factors[0] == 1:
            return
        now = time.monotonic()
        block = committer.committed_blocks
        open_shards = self.of_block(block)
        due = [
            sh
            for sh in open_shards
            if len(sh.batches) > sh.sealed_batches
            and now - (sh.sealed_at or sh.opened_at) >= seal_after_s
        ]
        if not due:
            return
        if not self._guard.check(extra=sum(shard.seal_bytes() for shard in open_shards)):
            return  # no room for the copies: the shards appear when finished
        batches = committer.finished_batches(block)
        for shard in open_shards:  # every open shard of the block: a row needs all of them
            if len(shard.batches) > shard.sealed_batches or shard.sealed_at is None:
                sealed = shard.seal()
                if sealed is None:
                    return  # finished meanwhile: the block commits the usual way
            else:
                sealed = shard.batches[: shard.sealed_batches]
            batches += sealed
        committer.seal_rows(block, committer.leading_whole_rows(block, batches))

    def _forget(self, shard: ShardWriter) -> None:
        with self._lock:
            for coords, open_shard in list(self._open.items()):
                if open_shard is shard:
                    del self._open[coords]

    def close(self) -> None:
        """At close: shards that will get no more chunks are finished as they are
        (their missing inner chunks stay empty and read as fill); after a failure, what
        can still extend the extent is salvaged."""
        with self._lock:
            remaining = sorted(self._open.items())
        if self._health.failed:
            self.salvage(remaining)
        else:
            for _, shard in remaining:
                self.finish(shard)
        self._segments.close()

    def salvage(self, shards: list[tuple[tuple[int, ...], ShardWriter]]) -> None:
        """After a failure (most often a full disk): finish the open shards that can
        still extend the extent, oldest block first, and abandon the rest.

        Why: compressors pack several shards at once, and the one whose segment hit
        ENOSPC is often a later one, while the front shard holds every chunk of its
        frames but its last segment and index. The extent only grows from the front, so
        a later shard is worth nothing while an earlier one is unfinished: each failed
        attempt to finish the front shard abandons the newest other one (freeing its
        temporary object) and tries again, and a margin for the final metadata is then
        freed the same way; the front block's leading whole rows enter the extent as a
        seal's would. The first shard that cannot be finished ends the salvage.
        ``shards``: (coordinates, shard) in coordinate order, so block first."""
        committer = self._committer
        pending = list(shards)
        # a shard behind a block that can no longer be whole stays outside the extent
        while pending and pending[0][0][0] <= committer.front_block():
            (block, *_), shard = pending.pop(0)
            while not (done := self.finish(shard, salvage=True)):
                if shard.finished or not pending:
                    break
                pending.pop()[1].abandon()
            while pending and self._guard.free_bytes() < SALVAGE_MARGIN:
                pending.pop()[1].abandon()
            if not done:
                shard.abandon()
                break
            if pending and pending[0][0][0] == block:
                continue  # the block's other shards first
            if committer.front_block() > block:
                continue  # the block is whole: the next one may be too
            if self._layout.shard_factors[0] > 1 and block == committer.committed_blocks:
                batches = committer.finished_batches(block)
                committer.seal_rows(block, committer.leading_whole_rows(block, batches))
            break
        for _, rest in pending:
            rest.abandon()
