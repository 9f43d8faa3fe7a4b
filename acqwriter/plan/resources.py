"""How a spec is written on this machine: threads, buffers and frame slots, decided once.

A :class:`StreamSpec` says *what* to write and nothing about the machine. A
:class:`Resources` is computed from a spec and the cores this process may run on, once per
stream, and the engine only reads it: the frame layout (:mod:`acqwriter.plan.layout`),
how many threads compress and how many only write, whether the producer compresses
frames itself when the writers fall behind, and how many frame slots ``ring_bytes``
buys once everything else in flight is paid for. Each rule below states its reason;
the measurements behind them are in ``docs/decisions.md``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from acqwriter.plan.layout import FrameLayout
from acqwriter.validation import SpecError

if TYPE_CHECKING:
    from acqwriter.spec.model import StreamSpec

__all__ = [
    "BIG_CHUNK_BYTES",
    "INLINE_BACKLOG_PER_WRITER",
    "IO_THREADS",
    "RING_MAX_FRAMES",
    "THREAD_BUFFER_BYTES",
    "Resources",
    "available_cores",
]

BIG_CHUNK_BYTES = 2 << 20  # chunks this big are pipelined or get more writer threads
THREAD_BUFFER_BYTES = 256 << 20  # cap on the writer threads' own buffers together
IO_THREADS = 4  # threads that only write big encoded chunks
# Most slots a stream has, whatever ring_bytes allows: each slot costs a Python int in
# the free list, and 2^18 slots absorb a burst of over a second at any camera's rate.
RING_MAX_FRAMES = 1 << 18
# Frames queued per compressing thread beyond which the producer compresses its frame
# itself when an encoded buffer is free: enough that no compressor ever waits for work,
# few enough that the backlog in the frame slots stays short.
INLINE_BACKLOG_PER_WRITER = 2


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity, not the machine's count)."""
    return max(1, len(os.sched_getaffinity(0)))


@dataclass(frozen=True)
class Resources:
    """The resources one stream uses; see the module docstring. Build with :meth:`of`."""

    layout: FrameLayout
    compressors: int  # threads that compress chunks (and write them unless pipelined)
    io_threads: int  # threads that only write encoded chunks (0: the compressors write)
    producer_compresses: bool  # a frame that finds the slots full is compressed inline
    thread_buffer_bytes: int  # compressors' own buffers, paid out of ring_bytes
    ring_frames: int  # frame slots

    @classmethod
    def of(cls, spec: StreamSpec, cores: int | None = None) -> Resources:
        """The plan for ``spec`` on ``cores`` cores (default: :func:`available_cores`).
        Raises :class:`SpecError` when ``ring_bytes`` cannot hold the frames one row of
        chunks keeps open at once (the writer would wait for itself)."""
        layout = FrameLayout(spec)
        need = layout.min_ring_frames
        if spec.ring_bytes // layout.frame_bytes < need:
            raise SpecError(
                f"invalid spec: ring_bytes: expected at least {need * layout.frame_bytes} "
                f"bytes ({need} frames of {layout.frame_bytes} bytes, the frames one chunk "
                f"row holds open at once for chunks {layout.chunk_shape}), "
                f"got {spec.ring_bytes}"
            )
        cores = cores or available_cores()
        big = layout.chunk_bytes >= BIG_CHUNK_BYTES
        # Big unsharded chunks are pipelined: compressors hand encoded chunks to threads
        # that only write, so a core never waits for a direct write (milliseconds each,
        # little CPU). Small chunks are dominated by file creation, CPU in the kernel: a
        # separate I/O stage is no faster there.
        io_threads = IO_THREADS if big and layout.shards is None else 0
        # Under ``block``, a frame that is one whole unsharded chunk and finds the slots
        # full is compressed on the producer's thread instead of waiting. Not into
        # shards: the producer's frames are a whole ring ahead and would each open a
        # shard (and its staging segment) of their own.
        producer = spec.overflow == "block" and layout.frame_is_chunk and layout.shards is None
        if spec.threads:
            compressors = spec.threads
        elif not big:
            compressors = cores + 1  # more only adds lock traffic for small chunks
        elif io_threads:
            # one core is left to the producer when it compresses too: a compressor per
            # core made three compressors time-slice two cores and starved the producer
            compressors = max(1, cores - 1) if producer else cores
        else:
            # sharded big chunks: each compressor also writes its shard's segments, so
            # four per core keep the cores busy, within THREAD_BUFFER_BYTES (a staging
            # chunk and a compressed scratch buffer each)
            compressors = max(
                cores + 1, min(4 * cores, THREAD_BUFFER_BYTES // (2 * layout.chunk_bytes))
            )
        # Compressors that write big chunks themselves hold two chunks each beside the
        # slots; it comes out of ring_bytes, as open shards' staging does, so that
        # ring_bytes bounds everything in flight.
        thread_buffers = compressors * 2 * layout.chunk_bytes if big and not io_threads else 0
        usable = spec.ring_bytes - layout.extra_staging_bytes - thread_buffers
        limits = [usable // layout.frame_bytes, RING_MAX_FRAMES]
        if layout.max_frames is not None:
            limits.append(layout.max_frames)
        # never below what one block of chunks needs: a spec is not refused for staging
        ring_frames = max(min(limits), need)
        return cls(layout, compressors, io_threads, producer, thread_buffers, ring_frames)

    def encoded_buffers(self, buffer_bytes: int) -> int:
        """Size of the pool of encoded-chunk buffers between compressors and I/O threads:
        one per compressor (the producer counts when it compresses) and two per I/O
        thread (one being written, one queued), fewer for huge chunks (the pool stays
        under THREAD_BUFFER_BYTES) but never fewer than compressors + 1. The pool bounds
        the memory between compression and disk as the frame slots bound it before."""
        if not self.io_threads:
            return 0
        compressors = self.compressors + self.producer_compresses
        wanted = compressors + 2 * self.io_threads
        return max(compressors + 1, min(wanted, THREAD_BUFFER_BYTES // buffer_bytes))
