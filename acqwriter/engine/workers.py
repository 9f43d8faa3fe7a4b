"""The threads that turn chunk batches into bytes on disk, shared by every array of a stream.

:class:`CompressorPool`: threads that take one (batch, tile) job at a time and hand it to
the array writer that queued it, which assembles the tile, compresses it (c-blosc,
GIL released) and writes it, packs it into its shard, or hands the encoded chunk to
the I/O threads. At close the closing thread compresses beside them
(:meth:`CompressorPool.drain`) instead of waiting with its core idle.

:class:`IOPool`: for big unsharded chunks, threads that only write encoded chunks, so
a core never waits for a direct write. The encoded chunks wait in buffers from
:class:`EncodedBuffers`, a bounded pool: it bounds the memory between compression and
disk as the frame slots bound it before compression.
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from acqwriter.store.buffers import DIRECT_ALIGN, address_of, private_memory

if TYPE_CHECKING:
    from acqwriter.engine.array import ArrayWriter
    from acqwriter.engine.assembly import ChunkBatch

__all__ = ["CompressorPool", "EncodedBuffer", "EncodedBuffers", "IOPool"]


@dataclass(eq=False)
class EncodedBuffer:
    """A page-aligned buffer an encoded chunk is compressed into, and its address."""

    buf: Any
    address: int


class EncodedBuffers:
    """A bounded pool of :class:`EncodedBuffer` of one size (O_DIRECT-padded)."""

    def __init__(self, count: int, nbytes: int) -> None:
        self._free: queue.SimpleQueue[EncodedBuffer] = queue.SimpleQueue()
        self.count = count
        size = -(-nbytes // DIRECT_ALIGN) * DIRECT_ALIGN
        for _ in range(count):
            buf = private_memory(size)
            self._free.put(EncodedBuffer(buf, address_of(buf)))

    def take(self) -> EncodedBuffer:
        """A buffer, waiting for one to come back if none is free."""
        return self._free.get()

    def take_now(self) -> EncodedBuffer | None:
        """A buffer if one is free at once."""
        try:
            return self._free.get_nowait()
        except queue.Empty:
            return None

    def give(self, buffer: EncodedBuffer) -> None:
        self._free.put(buffer)

    def all_returned(self) -> bool:
        """Every buffer is back in the pool, each once (for checks when idle: the pool
        is emptied and refilled)."""
        taken = []
        while (buffer := self.take_now()) is not None:
            taken.append(buffer)
        for buffer in taken:
            self._free.put(buffer)
        return len({b.address for b in taken}) == len(taken) == self.count


class _Threads:
    """``n`` daemon threads running ``_run`` over one job queue (None ends a thread)."""

    name = "acqwriter-worker"

    def __init__(self, n: int) -> None:
        self._jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._threads = [
            threading.Thread(target=self._run, name=f"{self.name}-{i}", daemon=True)
            for i in range(n)
        ]

    def __len__(self) -> int:
        return len(self._threads)

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def _run(self) -> None:
        raise NotImplementedError

    def _end_threads(self) -> None:
        for _ in self._threads:
            self._jobs.put(None)


class CompressorPool(_Threads):
    """``n`` threads compressing (batch, tile) jobs of any array writer."""

    name = "acqwriter-compress"

    def submit(self, writer: ArrayWriter, batch: ChunkBatch, ty: int, tx: int) -> None:
        self._jobs.put((writer, batch, ty, tx))

    def backlog(self) -> int:
        """Jobs waiting for a thread."""
        return self._jobs.qsize()

    def _run(self) -> None:
        staging: dict[ArrayWriter, np.ndarray | None] = {}
        while True:
            job = self._jobs.get()
            if job is None:
                return
            writer = job[0]
            if writer not in staging:
                staging[writer] = writer.new_staging()
            writer.process_tile(*job[1:], staging[writer])

    def stop(self) -> None:
        """Let every queued job finish (the calling thread helps), then end the threads."""
        self._end_threads()
        self._drain()
        for thread in self._threads:
            thread.join()

    def _drain(self) -> None:
        """The calling thread compresses queued jobs beside the threads until it meets
        an end marker, which it puts back for the thread it was meant for."""
        staging: dict[ArrayWriter, np.ndarray | None] = {}
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                return
            if job is None:
                self._jobs.put(None)
                return
            writer = job[0]
            if writer not in staging:
                staging[writer] = writer.new_staging(optional=True)
            writer.process_tile(*job[1:], staging[writer])


class IOPool(_Threads):
    """``n`` threads writing encoded chunks handed over by the compressors."""

    name = "acqwriter-io"

    def submit(
        self, writer: ArrayWriter, batch: ChunkBatch, key: str, encoded: EncodedBuffer, n: int
    ) -> None:
        self._jobs.put((writer, batch, key, encoded, n))

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            job[0].write_encoded(*job[1:])

    def stop(self) -> None:
        """Write every queued chunk, then end the threads."""
        self._end_threads()
        for thread in self._threads:
            thread.join()
