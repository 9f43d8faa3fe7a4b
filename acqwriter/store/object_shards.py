"""A shard streamed to an object store while it is written (see :class:`ObjectShard`).

An object cannot be written at an offset or renamed, so the file-system way (a
temporary file grown at any offset, renamed over the key) does not map; a multipart
upload does: parts go up in order as the writer threads fill segments, and the object
appears at the key, whole, only when the upload completes.
"""

from __future__ import annotations

import contextlib
import errno
import threading
from typing import TYPE_CHECKING, Any

from acqwriter.store.base import ShardSink, StorageError

if TYPE_CHECKING:
    from acqwriter.store.objects import ObjectStore

__all__ = ["AHEAD_BYTES", "MULTIPART_PART_BYTES", "SHARD_UPLOADS_IN_FLIGHT", "ObjectShard"]

# S3's smallest part of a multipart upload but the last: a shard streams in parts of this
MULTIPART_PART_BYTES = 5 * 2**20
# parts of one shard uploading at once (their buffers are the upload's memory)
SHARD_UPLOADS_IN_FLIGHT = 4
# segments waiting behind a stalled upload, at most (beyond it the writer threads wait,
# as on a slow disk, and the ring absorbs the frames): a network stall cannot grow memory
AHEAD_BYTES = 32 << 20


class ObjectShard(ShardSink):
    """A shard streamed to its key as a multipart upload while it is written (parts of
    :data:`MULTIPART_PART_BYTES` but the last); the object appears, whole, when the
    upload completes on ``finish``.

    Segments come from several threads and may arrive out of order: one that arrives
    ahead of a gap waits in memory, and whichever thread fills the gap streams what has
    become contiguous (outside the lock, so the others keep depositing). Memory: those
    waiting segments (at most :data:`AHEAD_BYTES`; past it a depositing thread waits
    until the upload takes its segment, so a stalled network holds the writer threads
    back instead of growing memory), the upload's buffer and the parts in flight
    (:data:`SHARD_UPLOADS_IN_FLIGHT`), never the whole shard.

    A seal completes the upload with the seal's tail (the object at the key is then the
    valid shard so far) and starts a new upload that re-sends that object's head,
    read back in part-sized ranges: a seal costs network traffic, not memory, and only
    slow streams seal."""

    parts_in_order = True

    def __init__(self, store: ObjectStore, key: str) -> None:
        self._store = store
        self._key = key
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._ahead: dict[int, bytes] = {}  # segments by offset, waiting for the gap
        self._ahead_bytes = 0
        self._streamed = 0  # the front: bytes handed to the upload
        self._streaming = False  # a thread is handing segments to the upload
        self._failed: OSError | None = None
        self._writer: Any = None  # opened by the first segment

    def _open(self) -> Any:
        import obstore

        return obstore.open_writer(
            self._store._store,
            self._key,
            buffer_size=MULTIPART_PART_BYTES,
            max_concurrency=SHARD_UPLOADS_IN_FLIGHT,
        )

    def write(self, segment: Any, n: int, offset: int) -> int:
        with memoryview(segment) as view:
            data = bytes(view[:n])  # the segment goes back to its pool on return
        with self._lock:
            if self._failed is not None:
                raise self._failed
            self._ahead[offset] = data
            self._ahead_bytes += len(data)
            if self._streaming:  # the thread holding the streaming role picks it up
                while (
                    self._failed is None
                    and offset in self._ahead
                    and self._ahead_bytes > AHEAD_BYTES
                ):
                    self._idle.wait()  # held back until the upload takes it
                if self._failed is not None and offset in self._ahead:
                    raise self._failed
                return n
            self._streaming = True
        self._stream()
        return n

    def _stream(self) -> None:
        """Hand the contiguous front to the upload until a gap. The caller holds the
        streaming role; it is given back on return (at the gap, under the same lock as
        the look, so a segment deposited meanwhile is never stranded)."""
        while True:
            with self._lock:
                data = self._ahead.pop(self._streamed, None)
                if data is None:
                    self._streaming = False
                    self._idle.notify_all()
                    return
                self._ahead_bytes -= len(data)
            try:
                if self._writer is None:
                    self._writer = self._open()
                self._writer.write(data)
            except Exception as exc:
                self._release()
                raise self._fail(exc) from exc
            with self._lock:
                self._streamed += len(data)
                self._idle.notify_all()  # a segment held back may go now

    def _fail(self, exc: Exception) -> OSError:
        # obstore's own errors may be OSErrors too: only ours pass through as they are
        error = (
            exc if isinstance(exc, StorageError) else self._store._error(exc, "write", self._key)
        )
        with self._lock:
            self._failed = error
            self._idle.notify_all()
        return error

    def _release(self) -> None:
        with self._lock:
            self._streaming = False
            self._idle.notify_all()

    def _hold(self, end: int) -> None:
        """Take the streaming role once every byte before ``end`` is in the upload (a
        seal and a finish come after the last write of what they cover returned)."""
        with self._lock:
            while self._streaming:
                self._idle.wait()
            if self._failed is not None:
                raise self._failed
            if self._streamed != end or any(offset < end for offset in self._ahead):
                raise StorageError(
                    errno.EIO, f"{self._key}: bytes before {end} never arrived; not published"
                )
            self._streaming = True

    def seal(self, end: int, tail: bytes) -> None:
        import obstore

        self._hold(end)
        try:
            self._complete(tail)  # the key now holds the valid shard so far
            self._writer = self._open()  # a new upload, from the bytes just published
            for start in range(0, end, MULTIPART_PART_BYTES):
                n = min(MULTIPART_PART_BYTES, end - start)
                self._writer.write(
                    obstore.get_range(self._store._store, self._key, start=start, length=n)
                )
        except Exception as exc:
            self._release()
            raise self._fail(exc) from exc
        self._stream()  # segments that came meanwhile

    def finish(self, end: int) -> None:
        self._hold(end)
        try:
            self._complete(b"")
        except Exception as exc:
            raise self._fail(exc) from exc
        finally:
            self._release()

    def _complete(self, tail: bytes) -> None:
        """Complete the upload (after ``tail``): the object appears whole at the key."""
        writer, self._writer = self._writer, None
        try:
            if writer is None:  # nothing streamed yet
                self._store._put(self._key, tail)
                return
            if tail:
                writer.write(tail)
            writer.close()
        except Exception:
            if writer is not None:
                _abort(writer)
            raise

    def abandon(self) -> None:
        with self._lock:
            while self._streaming:
                self._idle.wait()
            self._ahead.clear()
            self._ahead_bytes = 0
            self._failed = StorageError(errno.ECANCELED, f"{self._key}: abandoned")
            self._idle.notify_all()
        writer, self._writer = self._writer, None
        if writer is not None:
            _abort(writer)


def _abort(writer: Any) -> None:
    """Abort an upload: the parts sent so far are discarded and no object appears
    (obstore aborts the multipart upload when its writer leaves on an exception)."""
    with contextlib.suppress(Exception):
        writer.__exit__(StorageError, StorageError(errno.ECANCELED, "abandoned"), None)
