"""Shards being written: many inner chunks packed into one object, published whole.

How a shard is written (:class:`ShardWriter`): compressing threads encode an inner
chunk into their own scratch buffer and hand it to the shard, which packs it into a
page-aligned staging segment (a copy of the *compressed* bytes: small next to the
compression); a full segment is swapped for a spare one under the shard's lock and
written to the store's :class:`~acqwriter.store.base.ShardSink` by the thread that
filled it *outside* the lock, so the other threads keep packing into the same shard
while it is on its way to disk (holding the lock across the write serialised every
thread behind each segment write). When every inner chunk has arrived, the last
segment and the index (:mod:`acqwriter.format.zarr_v3`) are written, the shard is cut
at its end and published at its key in one step, so the key never holds a torn shard.
Only then does the shard count as written: the extent never covers a shard without its
index, so a crash leaves any unfinished shard outside the extent (``acqwriter recover``
removes its temporary object). Memory: one segment per open shard plus one per write in
flight; segments are reused from shard to shard (:class:`SegmentPool`).

Sealing (shards along the first axis, t): a shard of 32 time points fills in
milliseconds at full speed but in half a minute at 1 frame/s, and until it is finished
its frames would be outside the dataset. :meth:`ShardWriter.seal` publishes what the
shard holds so far (the bytes already written, which the sink supplies, the current
segment, and an index in which the chunks not yet received are empty) atomically at the
shard's key, and the stream extends its extent over the leading time points whose
chunks are all in it. The shard goes on growing in its sink; a later seal or the finish
replaces the published copy, again atomically. A seal rewrites at most one shard and
happens at most once per ``shard_seal_s`` and only for a shard that old: a fast stream
never seals.
"""

from __future__ import annotations

import contextlib
import errno
import mmap
import threading
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from acqwriter.format.zarr_v3 import EMPTY, encode_index, index_nbytes
from acqwriter.plan.sharding import SEGMENT_BYTES
from acqwriter.store.base import StorageError
from acqwriter.store.buffers import DIRECT_ALIGN, private_memory

if TYPE_CHECKING:
    from acqwriter.store.base import ShardSink, Store

__all__ = ["SegmentPool", "ShardWriter"]


class SegmentPool:
    """Staging segments reused from shard to shard for the life of a stream.

    A fresh segment per shard page-faulted all its memory in again, a measurable share
    of the CPU with small shards (``docs/decisions.md``). The pool
    keeps at most ``keep`` segments; more than that are unmapped when given back.
    """

    def __init__(self, keep: int = 8) -> None:
        self._keep = keep
        self._free: list[mmap.mmap] = []
        self._lock = threading.Lock()

    def take(self, room: int = SEGMENT_BYTES) -> mmap.mmap:
        size = -(-max(room, SEGMENT_BYTES) // DIRECT_ALIGN) * DIRECT_ALIGN
        with self._lock:
            for i, buf in enumerate(self._free):
                if len(buf) >= size:
                    return self._free.pop(i)
        return private_memory(size)

    def give(self, buf: mmap.mmap) -> None:
        with self._lock:
            if len(self._free) < self._keep:
                self._free.append(buf)
                return
        buf.close()

    def close(self) -> None:
        with self._lock:
            for buf in self._free:
                with contextlib.suppress(BufferError):  # still viewed: unmapped when freed
                    buf.close()
            self._free.clear()


class ShardWriter:
    """One shard file being filled by the writer threads (see the module docstring)."""

    def __init__(
        self,
        store: Store,
        key: str,
        n_inner: int,
        expected: int,
        pool: SegmentPool | None = None,
    ) -> None:
        self.store = store
        self.pool = pool if pool is not None else SegmentPool(keep=0)
        self.key = key  # where the shard is published (the sink grows it until then)
        self.n_inner = n_inner
        self.expected = expected  # inner-chunk jobs (written or empty) before it is complete
        self.received = 0
        self.batches: list[Any] = []  # chunk batches completed in this shard (for the extent)
        self.index = np.full((n_inner, 2), EMPTY, dtype="<u8")
        self.lock = threading.Lock()
        self._writes_done = threading.Condition(self.lock)
        self._open_lock = threading.Lock()  # the file is opened by the first write
        self._segment = self.pool.take()  # page-aligned
        self._released = False  # the segment went back to the pool (finished/abandoned)
        self._in_flight = 0  # segments being written outside the lock
        self._used = 0
        self._file_offset = 0  # where the current segment will go (aligned)
        self._sink: ShardSink | None = None  # opened by the first write
        self.stored_bytes = 0
        self._lost_segment = False  # a segment's write failed: not publishable
        # seal() and finish() publish in turn: a stale seal never lands after the finish
        self._publish_lock = threading.Lock()
        self._finished = False
        self.opened_at = time.monotonic()
        self.sealed_at: float | None = None
        self.sealed_batches = 0  # len(batches) when last sealed

    def put(self, position: int, data: memoryview) -> None:
        """Pack an inner chunk's encoded bytes; a segment that fills is written out by
        this thread after the lock is released."""
        n = len(data)
        full = None
        with self.lock:
            if self._used + n > len(self._segment):
                full = self._swap_locked(max(n, SEGMENT_BYTES))
                self._in_flight += 1
            self._segment[self._used : self._used + n] = data
            self.index[position] = (self._file_offset + self._used, n)
            self._used += n
            self.stored_bytes += n
        if full is not None:
            try:
                self._write(*full)  # positional: segments may land in any order
            except BaseException:
                # the index already points into that segment: the file would hold holes
                # where chunks of batches counted as written should be, so this shard is
                # never published (finish and seal refuse; the extent stays short of it)
                with self.lock:
                    self._lost_segment = True
                raise
            finally:
                self.pool.give(full[0])
                with self.lock:
                    self._in_flight -= 1
                    self._writes_done.notify_all()

    def unwritten_bytes(self) -> int:
        """Bytes this shard still has to put on disk: packed but unwritten chunks (the
        current segment and those being written) and its index. An estimate from above,
        for free-space checks."""
        with self.lock:
            if self._finished:
                return 0
            in_flight = self._in_flight * max(len(self._segment), SEGMENT_BYTES)
            return self._used + in_flight + index_nbytes(self.n_inner)

    def seal_bytes(self) -> int:
        """Bytes a seal would write now (a whole copy of the shard so far, beside the
        temporary file until the finish renames that over it)."""
        with self.lock:
            if self._finished:
                return 0
            return self._file_offset + self._used + index_nbytes(self.n_inner)

    def job_done(self) -> bool:
        """Count one finished inner-chunk job; True when the shard is complete."""
        with self.lock:
            self.received += 1
            return self.received >= self.expected

    @property
    def finished(self) -> bool:
        """Finished, abandoned, or past the point where a failed finish can be retried."""
        return self._finished

    def finish(self) -> int:
        """Write the last segment and the index, then rename the file into place: the
        shard is then readable. Returns the bytes stored. An all-empty shard is not
        written at all (reads as fill).

        A write that fails (a full disk) leaves the shard as it was: the caller may free
        space and call ``finish`` again (:attr:`finished` is still False; the stream
        does so at close: :meth:`acqwriter.engine.open_shards.OpenShards.salvage`). Once
        the file is being cut and closed there is no retry, and a finished or abandoned
        shard (its buffers went back to the pool) raises ``RuntimeError``."""
        with self._publish_lock:  # before self.lock, as in seal()
            if self._finished:
                raise RuntimeError(f"shard {self.key!r} was already finished or abandoned")
            with self.lock:
                while self._in_flight:
                    self._writes_done.wait()
                if self._lost_segment:
                    self._finished = True  # no retry can bring the lost bytes back
                    raise StorageError(
                        errno.EIO,
                        f"shard {self.key!r}: a segment could not be written; not published",
                    )
                if self._sink is None and self._used == 0:
                    self._finished = True
                    self._release_buffers_locked()
                    return 0
                index = encode_index(self.index)
                if self._used + len(index) > len(self._segment):
                    # the index does not fit behind the chunks: write them first, from
                    # this segment (reused only once they are on disk: a failed write
                    # changes nothing)
                    self._write(self._segment, self._used, self._file_offset)
                    self._file_offset += self._padded(self._used)
                    self._used = 0
                    if len(index) > len(self._segment):
                        self.pool.give(self._segment)
                        self._segment = self.pool.take(len(index))
                end = self._file_offset + self._used + len(index)
                self._segment[self._used : self._used + len(index)] = index
                self._write(self._segment, self._used + len(index), self._file_offset)
                self._finished = True  # the sink is cut and published next: no retry
                sink, self._sink = self._sink, None
                self._release_buffers_locked()  # every segment is in the sink
            # outside the lock (still under _publish_lock): the free-space checks that
            # ask this shard what it still holds do not wait for a cut, a rename or an
            # upload to complete
            sink.finish(end)  # type: ignore[union-attr]
            return self.stored_bytes

    def seal(self) -> list[Any] | None:
        """Publish the chunks received so far as a valid shard at the key (see the
        module docstring); returns the batches it holds, or None if the shard was
        finished meanwhile (its batches count through the finish)."""
        with self._publish_lock:
            if self._finished:
                return None
            with self.lock:
                while self._in_flight:
                    self._writes_done.wait()
                if self._lost_segment:
                    return None  # never published (see put); its batches stay outside
                batches = list(self.batches)
                written_end = self._file_offset
                tail = bytes(self._segment[: self._used]) + encode_index(self.index)
                has_data = bool(self._used or written_end)
                sink = self._sink
                self.sealed_at = time.monotonic()
                self.sealed_batches = len(batches)
            if has_data:  # else only empty chunks so far: absent reads as fill
                # the sink supplies the bytes before written_end (finish and abandon wait
                # for _publish_lock), without holding up the writers packing into the
                # shard; no segment written yet: the tail alone is the shard
                if sink is None:
                    self.store.write_atomic(self.key, tail)
                else:
                    sink.seal(written_end, tail)
            return batches

    def abandon(self) -> None:
        """Stop without finishing: the temporary file goes; a sealed copy stays (the
        extent may cover it)."""
        with self._publish_lock, self.lock:
            self._finished = True
            while self._in_flight:
                self._writes_done.wait()
            if self._sink is not None:
                sink, self._sink = self._sink, None
                with contextlib.suppress(OSError):
                    sink.abandon()
            self._release_buffers_locked()

    def _swap_locked(self, room: int) -> tuple[mmap.mmap, int, int]:
        """Take the current segment out for writing (its bytes, their file offset) and
        put a pooled one of at least ``room`` bytes in its place."""
        full = (self._segment, self._used, self._file_offset)
        self._file_offset += self._padded(self._used)
        self._segment, self._used = self.pool.take(room), 0
        return full

    def _padded(self, n: int) -> int:
        """Where the next segment starts after ``n`` bytes (O_DIRECT writes whole blocks)."""
        align = self.store.write_alignment
        return -(-n // align) * align

    def _write(self, segment: mmap.mmap, n: int, offset: int) -> None:
        """Write ``segment[:n]`` at ``offset`` of the shard file (opened on first use)."""
        if not n:
            return
        if self._sink is None:
            with self._open_lock:
                if self._sink is None:
                    self._sink = self.store.open_shard(self.key)
        self._sink.write(segment, n, offset)

    def _release_buffers_locked(self) -> None:
        """Give the segment back to the pool, once (finish and abandon may both run
        after a failure; a segment given twice would be handed to two shards)."""
        if not self._released:
            self._released = True
            self.pool.give(self._segment)


# Room kept free when shards are salvaged after a failure: for the final extent, the
# per-frame metadata lines and the root group's summary (a few hundred KiB at most).
