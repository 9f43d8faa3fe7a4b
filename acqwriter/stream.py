"""The streaming engine: frames in, a growing OME-Zarr dataset out.

Data flow::

    append(frame) ──copy once──▶ FrameRing slot ──▶ chunk group (frames sharing
    t/c/z chunk coordinates) ──complete──▶ job queue ──▶ writer threads: assemble the
    (y, x) tile, compress (c-blosc, GIL released), write the chunk file — or, for big
    unsharded chunks, hand the encoded chunk (pooled buffer) to the I/O threads that
    write it; or pack it into its shard (:mod:`acqwriter.shards`)
    ──▶ committer: when every chunk of a block of the first axis is on disk, append the
    block's per-frame metadata and atomically rewrite ``0/zarr.json`` with the larger
    extent (a block's leading rows too, once its unfinished t-shard is sealed) ──▶ close:
    pad and write partial chunks, final extent, fsync, pyramid, summary.

When the ring is full under the ``block`` policy the producer would only wait; a frame
that is one whole chunk (unsharded) is then compressed on the producer's own thread,
straight from its buffer, and handed on like a writer thread's chunk (no ring copy: the writer gets
faster exactly when it cannot keep up; ``frames_inline`` in the summary counts them).
For big chunks (pipelined to the I/O threads) the producer does so as soon as the writer
threads have a backlog (``INLINE_BACKLOG_PER_WRITER`` frames each) and an encoded-chunk
buffer is free at once, without waiting for a full ring: a source faster than the
compressors then keeps the ring's backlog short, and the ring's memory, backed only as
far as the backlog reaches (:mod:`acqwriter.ring`), mostly untouched; while the disk
lags, no buffer is free and frames go to the ring, which absorbs the stall as before.
For such streams one writer thread fewer than cores is started, leaving that core to
the producer (:meth:`StreamSpec.writer_threads`), and at close the closing thread
compresses the ring's backlog beside the writer threads instead of waiting for them.

Invariants (what a reader, or a crash, can rely on):

* the root group and the level-0 array metadata exist from the moment
  :func:`open_stream` returns;
* the extent written in ``0/zarr.json`` only ever covers chunks already written (and,
  with ``sync="always"``, already fsynced), so every frame inside it is real data or a
  frame flagged as dropped in ``frame_metadata.jsonl``;
* a frame's per-frame metadata line is written before the extent covers it.

The engine knows nothing about cameras: device code, the CLI and the daemon all feed
it through :meth:`FrameStream.append` / :meth:`FrameStream.skip`.
"""

from __future__ import annotations

import bisect
import math
import queue
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import psutil

from acqwriter import jsonio
from acqwriter.compress_into import IntoEncoder, max_compressed_size
from acqwriter.display import MEASURED_KEY, WindowSampler, time_increment
from acqwriter.layout import FrameLayout, GroupKey
from acqwriter.ome import (
    FRAME_METADATA_KEY,
    array_metadata,
    encode_array_metadata,
    group_metadata,
    level0,
)
from acqwriter.pyramid import BuildProgress, build_pyramid
from acqwriter.ring import FrameRing
from acqwriter.shards import SegmentPool, ShardWriter
from acqwriter.spec import THREAD_BUFFER_BYTES, SpecError, StreamSpec
from acqwriter.storage import (
    DIRECT_ALIGN,
    FINAL_RESERVE_NAME,
    LocalStore,
    PartialAppend,
    StorageError,
    address_of,
    private_memory,
)
from acqwriter.summary import Summary

__all__ = ["FrameError", "FrameStream", "StreamError", "open_stream"]


class StreamError(RuntimeError):
    """The stream cannot take more frames (closed, full, or its writer failed)."""


class FrameError(ValueError):
    """A frame does not match the stream (shape or dtype); nothing was written."""


# The slot of a frame compressed on the producer's thread straight from its own buffer
# (see FrameStream._write_inline): it holds no ring slot to release.
_INLINE = -1
# Most slots a ring has, whatever ring_bytes allows: each slot costs a Python int in the
# free list (~36 bytes), so tiny frames in a 512 MiB ring (a 1×1 float32 frame: 134 M
# slots) took 13 s and gigabytes to set up; 2^18 slots absorb a burst of over a second
# at any frame rate a camera delivers.
RING_MAX_FRAMES = 1 << 18
# Frames queued per writer thread beyond which the producer compresses its frame itself
# when an encoded buffer is free (FrameStream._spare_encoded_buffer): enough that no
# writer thread ever waits for work, few enough that the ring's backlog stays short.
INLINE_BACKLOG_PER_WRITER = 2
# Room kept free when shards are salvaged after a failure: for the final extent, the
# per-frame metadata lines and the root group's summary (a few hundred KiB at most).
_SALVAGE_MARGIN = 1 << 20


class _Ticker:
    """Calls ``on_progress(stream.progress())`` every ``interval_s`` on its own thread
    while a stream closes (the closing thread is busy flushing and building levels)."""

    def __init__(
        self, stream: FrameStream, on_progress: Callable[[dict[str, Any]], None], interval_s: float
    ) -> None:
        self._stream = stream
        self._on_progress = on_progress
        self._interval_s = interval_s
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="acqwriter-close-progress")
        self._thread.daemon = True
        self._thread.start()

    def _run(self) -> None:
        while not self._done.wait(self._interval_s):
            self._on_progress(self._stream.progress())

    def stop(self) -> None:
        self._done.set()
        self._thread.join()
        self._on_progress(self._stream.progress())


@dataclass
class _Group:
    key: GroupKey
    expected: int
    entries: list[tuple[int, int | None]] = field(default_factory=list)  # (index, slot)
    tiles_left: int = 0
    ok: bool = True
    released: bool = False  # its ring slot went back as soon as it was encoded


def _json_line(record: dict[str, Any]) -> str:
    """One per-frame record as strict JSON: NaN and infinities (a camera's missing
    timestamp is NaN) become ``null`` (:func:`acqwriter.jsonio.dumps`)."""
    return jsonio.dumps(_jsonable(record), separators=(",", ":"))


def _jsonable(value: Any) -> Any:
    """``value`` as JSON values: numpy scalars and small arrays as plain values,
    anything else not JSON as its ``str``."""
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if isinstance(value, np.generic):
        return _jsonable(value.item())
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray) and value.size <= 64:
        return _jsonable(value.tolist())
    return str(value)


class FrameStream:
    """One acquisition being written. Create with :func:`open_stream`."""

    def __init__(self, spec: StreamSpec, ring: FrameRing | None = None) -> None:
        self.spec = spec
        self.layout = layout = FrameLayout(spec)
        self._t_open = time.perf_counter()
        self._owns_ring = ring is None
        if ring is not None:
            if not ring.fits(layout):
                raise SpecError(
                    f"ring: the given ring ({ring.capacity} frames of {ring.slots.shape[1:]} "
                    f"{ring.slots.dtype}, idle: {ring.occupancy == 0}) does not fit "
                    f"{layout.min_ring_frames}+ frames of {layout.frame_shape} {layout.dtype}"
                )
            ring.reopen()
            self.ring = ring
        if ring is None:
            _preflight_memory(spec, layout)
        if spec.disk_check:
            _preflight_disk_space(spec, layout)
        try:
            self.store = LocalStore.create(spec.out, overwrite=spec.overwrite, sync=spec.sync)
        except OSError as exc:
            raise SpecError(
                f"out: {exc.strerror if isinstance(exc, StorageError) else exc}"
            ) from None
        try:
            self.store.enable_direct_io(spec.io)
        except OSError as exc:  # io: direct on a filesystem that refuses it
            self.store.release_lock()
            shutil.rmtree(spec.out, ignore_errors=True)
            raise SpecError(f"io: {exc.strerror}") from None
        self._array_meta = array_metadata(
            spec, layout.array_shape(0), layout.chunk_shape, layout.shard_shape
        )
        self._levels = [level0(spec)]
        # The array first, then the group that points at it: a reader never finds a
        # multiscale whose dataset is missing.
        self.store.write_atomic(
            "0/zarr.json", encode_array_metadata(self._array_meta, layout.array_shape(0))
        )
        self.store.write_atomic(FRAME_METADATA_KEY, b"")
        self.store.write_atomic("zarr.json", group_metadata(spec, self._levels, state="acquiring"))
        # Disk set aside if the disk fills up: one reserve for the final extent and
        # per-frame metadata (freed on error), one kept for the root's final state and
        # summary alone (freed just before it is written), so the first cannot eat it.
        self.store.reserve(RESERVE_BYTES)
        self.store.reserve(FINAL_RESERVE_BYTES, FINAL_RESERVE_NAME)
        if ring is None:
            self.ring = _new_ring(spec)

        self._encoder = IntoEncoder(spec.codec, layout.dtype)
        self._inline_ok = spec.producer_compresses()  # may _write_inline run
        self._max_encoded = max_compressed_size(layout.chunk_bytes)

        self._lock = threading.Lock()  # counters, block accounting, metadata records
        self._append_lock = threading.Lock()  # appends from several threads stay ordered
        self._abort = threading.Event()
        self._next_index = 0
        self._groups: dict[GroupKey, _Group] = {}
        self._shards: dict[tuple[int, ...], ShardWriter] = {}
        self._segments = SegmentPool()  # staging memory reused from shard to shard
        self._block_groups_done: dict[int, int] = {}
        self._block_groups_expected: dict[int, int] = {}
        self._committed_blocks = 0
        self._committed_rows = 0
        self._sealed_rows: dict[int, int] = {}  # block -> leading rows in sealed shards
        self._finished_groups: dict[int, list[tuple[_Group, int]]] = {}  # ... for sealing
        self._final_rows: int | None = None
        self._records: dict[int, dict[str, Any]] = {}
        self._metadata_end = 0  # frames below this index have their line on disk
        self._dropped: list[tuple[int, str]] = []
        self._missing: list[int] = []
        self._frames_received = 0
        self._frames_inline = 0  # compressed on the producer's thread (writer behind)
        self._frames_written = 0  # on disk (progress); the summary counts the extent only
        self._stored_bytes = 0
        self._error: BaseException | None = None
        self._stop_reason: str | None = None  # a clean stop (low disk): no new frames
        self._bytes_since_space_check = 0
        self._space_check_every = max(1 << 20, min(spec.min_free_bytes // 8, 64 << 20))
        self._append_t: dict[int, float] = {}
        self._latencies: list[float] = []
        self._closed = False
        self._summary: Summary | None = None
        self._t0_wall = time.time()
        # Measured for the metadata written at close (acqwriter.display).
        sizes = dict(zip(layout.outer_dims, layout.outer_sizes, strict=True))
        self._c_axis: tuple[int, int] | None = None
        if sizes.get("c"):
            after_c = layout.outer_dims[layout.outer_dims.index("c") + 1 :]
            self._c_axis = (math.prod(sizes[a] or 1 for a in after_c), sizes["c"])
        self._windows = WindowSampler(self._c_axis[1] if self._c_axis else 1, layout.frame_shape)
        self._time_is_first = layout.outer_dims[0] == "t"
        self._time_starts: list[float] = []  # arrival of each time point's first frame
        self._taken_starts: list[float] = []  # ... when taken, where the source said so
        self._phase = "acquiring"  # → flushing → pyramid → done (progress())
        self._on_progress: Callable[[dict[str, Any]], None] | None = None  # while closing
        self._build = BuildProgress(on_level=self._report_progress)

        self._jobs: queue.SimpleQueue[tuple[_Group, int, int] | None] = queue.SimpleQueue()
        self._n_threads = spec.writer_threads()
        self._workers = [
            threading.Thread(target=self._worker, name=f"acqwriter-writer-{i}", daemon=True)
            for i in range(self._n_threads)
        ]
        # Big unsharded chunks are pipelined: the writer threads only compress, each
        # into a buffer taken from a bounded pool, and hand it to the I/O threads, which
        # write it and give the buffer back (see StreamSpec.io_threads for why). The pool
        # holds (buffer, address) pairs: the address is taken once, not per chunk.
        self._io_jobs: queue.SimpleQueue[tuple[_Group, str, Any, int] | None] = queue.SimpleQueue()
        self._encoded_pool: queue.SimpleQueue[tuple[Any, int]] = queue.SimpleQueue()
        n_io = spec.io_threads()
        buffer_bytes = -(-self._max_encoded // DIRECT_ALIGN) * DIRECT_ALIGN  # O_DIRECT pads
        # the producer compresses into the pool too when the ring is full (_write_inline)
        compressors = self._n_threads + self._inline_ok
        for _ in range(_encoded_buffers(compressors, n_io, buffer_bytes) if n_io else 0):
            buf = private_memory(buffer_bytes)
            self._encoded_pool.put((buf, address_of(buf)))
        self._io_workers = [
            threading.Thread(target=self._io_worker, name=f"acqwriter-io-{i}", daemon=True)
            for i in range(n_io)
        ]
        # the producer compresses a frame itself once this many wait for the writer
        # threads and an encoded buffer is free (see _spare_encoded_buffer)
        self._inline_early = self._inline_ok and bool(self._io_workers)
        self._inline_backlog = INLINE_BACKLOG_PER_WRITER * self._n_threads
        for worker in self._workers + self._io_workers:
            worker.start()
        self._commit_wake = threading.Event()
        self._stop_committer = threading.Event()
        self._committer = threading.Thread(
            target=self._commit_loop, name="acqwriter-commit", daemon=True
        )
        self._committer.start()
        # last: populating holds the memory-map lock that the thread starts above need
        self.ring.start_populating()

    # -- public API ---------------------------------------------------------------------
    def __enter__(self) -> FrameStream:
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        """A block that ends by an exception leaves the dataset ``aborted`` (valid, every
        frame received written, no pyramid, the exception's message in the summary) and
        the exception propagates unchanged."""
        if exc_type is None:
            self.close()
        else:
            self.close(pyramid=False, aborted=f"{exc_type.__name__}: {exc}")

    @property
    def summary(self) -> Summary:
        """The summary after close; a live snapshot before."""
        return self._summary or self._make_summary(state="acquiring", duration=self._elapsed())

    @property
    def frames_appended(self) -> int:
        return self._next_index

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def error(self) -> BaseException | None:
        return self._error

    def append(
        self,
        frame: np.ndarray,
        metadata: dict[str, Any] | None = None,
        *,
        taken_s: float | None = None,
    ) -> int:
        """Copy ``frame`` into the ring and queue it; returns its frame index.

        ``taken_s``: when the camera took it (seconds, any fixed origin, e.g. the
        core's elapsed time), for the measured time scale; default: when it arrived
        here (frames drained from a camera's buffer in bursts arrive closer together
        than they were taken).

        The caller may reuse ``frame``'s buffer as soon as this returns. When the ring is
        full, under the ``block`` overflow policy, a frame that is one whole chunk of an
        unsharded array is compressed and written on the caller's thread straight from
        ``frame`` (see :meth:`_write_inline`), any other frame waits for a free slot;
        under ``drop`` a frame that finds the ring full is recorded as dropped (fill
        value on disk, flagged in the per-frame metadata) and its index is still returned.
        """
        arr = frame if isinstance(frame, np.ndarray) else np.asarray(frame)
        if arr.shape != self.layout.frame_shape:
            raise FrameError(
                f"frame.shape: expected {self.layout.frame_shape} (the stream's shape), "
                f"got {tuple(arr.shape)}; nothing was written"
            )
        if arr.dtype != self.layout.dtype:
            if arr.dtype.newbyteorder("=") == self.layout.dtype:  # the other byte order
                arr = arr.astype(self.layout.dtype)  # stored as the metadata says
            else:
                want, got = self.layout.dtype.name, arr.dtype.name
                if want == got:  # same name, other layout: show what differs
                    want, got = self.layout.dtype.str, arr.dtype.str
                raise FrameError(f"frame.dtype: expected {want}, got {got}; nothing was written")
        with self._append_lock:
            index = self._claim_index()
            self._windows.offer(self._channel_of(index), arr)
            pooled = self._spare_encoded_buffer(arr)
            if pooled is not None:
                return self._write_inline(index, arr, metadata, pooled, taken_s=taken_s)
            slot = self.ring.acquire(0)
            if slot is None and self.spec.overflow == "block":
                if self._inline_ok and arr.flags.c_contiguous:
                    return self._write_inline(index, arr, metadata, taken_s=taken_s)
                slot = self.ring.acquire(None, abort=self._abort)
                if slot is None:
                    self._next_index -= 1
                    raise StreamError(f"writer failed, frame {index} not accepted: {self._error}")
            if slot is not None:
                self.ring.slots[slot][...] = arr
            self._frames_received += 1
            dropped = None if slot is not None else "ring_full"
            self._record(index, metadata, dropped=dropped, taken_s=taken_s)
            self._add_to_group(index, slot)
            return index

    def _spare_encoded_buffer(self, frame: np.ndarray) -> tuple[Any, int] | None:
        """An encoded-chunk buffer for compressing ``frame`` on the producer's thread
        now, or None: copy it into the ring instead.

        Only when the writer threads already have ``_inline_backlog`` frames queued
        (they are the bottleneck: compressing here adds a core's worth of compression
        and saves the ring copy) and a buffer is free at once (the I/O threads keep up,
        so the producer cannot end up waiting for the disk; while the disk stalls, frames
        go to the ring, which absorbs the stall as before). An unpaced source then keeps
        the ring's backlog short instead of filling it, and a short backlog touches only
        the ring's first slots (:class:`acqwriter.ring.FrameRing`): 2048² lz4 bursts
        filled all 64 slots of a 512 MiB ring, and backing them took ~15 % of the CPU
        samples and copying into them 8 % (perf; docs/decisions.md)."""
        if not self._inline_early or self._jobs.qsize() < self._inline_backlog:
            return None
        if not frame.flags.c_contiguous:
            return None
        try:
            return self._encoded_pool.get_nowait()
        except queue.Empty:
            return None

    def _write_inline(
        self,
        index: int,
        frame: np.ndarray,
        metadata: dict[str, Any] | None,
        pooled: tuple[Any, int] | None = None,
        *,
        taken_s: float | None = None,
    ) -> int:
        """The ring is full and the producer would wait for a slot, or (``pooled``, see
        :meth:`_spare_encoded_buffer`) the writer threads have a backlog: compress its
        frame (one whole chunk) on its own thread, straight from its buffer, instead.

        Waiting would leave this thread idle while the writer threads work through the
        ring; compressing here costs the same CPU minus the copy into the ring (15 % of
        the CPU of a 2048² lz4 stream, perf), so a writer that cannot keep up gets
        faster exactly when it must. The frame's buffer is no longer read once this
        returns (its encoded bytes are in a pooled buffer or written). Caller holds
        ``_append_lock``."""
        self._frames_received += 1
        self._frames_inline += 1
        self._record(index, metadata, dropped=None, taken_s=taken_s)
        group = _Group(self.layout.group_of(index), 1, [(index, _INLINE)], tiles_left=1)
        if not self._process_tile(group, 0, 0, None, frame, pooled):
            raise StreamError(f"writer failed on frame {index}: {self._error}")
        return index

    def skip(
        self, count: int = 1, reason: str = "camera", metadata: dict[str, Any] | None = None
    ) -> list[int]:
        """Record ``count`` frames the source lost (e.g. a camera gap); returns their indices.

        They take their place in the array (fill value) and are flagged as dropped.
        """
        indices = []
        with self._append_lock:
            for _ in range(count):
                index = self._claim_index()
                self._record(index, metadata, dropped=reason)
                self._add_to_group(index, None)
                indices.append(index)
        return indices

    def progress(self) -> dict[str, Any]:
        """A cheap live snapshot for progress bars and status replies."""
        elapsed = self._elapsed()
        with self._lock:  # finished groups, or frames readers already see in sealed shards
            written = max(self._frames_written, self._frames_in_extent())
        return {
            "phase": self._phase,
            **self._build.snapshot(),
            "frames_appended": self._next_index,
            "frames_received": self._frames_received,
            "frames_written": written,
            "frames_dropped": len(self._dropped),
            "rows_committed": self._committed_rows,
            "ring_occupancy": self.ring.occupancy,
            "ring_capacity": self.ring.capacity,
            "ring_high_water": self.ring.high_water,
            "frames_inline": self._frames_inline,
            "mb_per_s": written * self.layout.frame_bytes / 1e6 / elapsed if elapsed > 0 else 0.0,
            "elapsed_s": elapsed,
            "error": None if self._error is None else str(self._error),
        }

    def close(
        self,
        *,
        pyramid: bool = True,
        aborted: str | None = None,
        on_progress: Callable[[dict[str, Any]], None] | None = None,
        progress_interval_s: float = 0.2,
    ) -> Summary:
        """Finish the dataset: flush partial chunks, final extent, fsync, pyramid, summary.

        ``pyramid=False`` skips the pyramid (it can be built later with ``acqwriter
        pyramid``). ``aborted``: the acquisition was cut short for this reason (an
        exception, a user's abort): the dataset is finished the same way, every frame
        received written, and marked ``state: aborted`` with the reason in its summary.
        ``on_progress`` is called with :meth:`progress` every ``progress_interval_s``
        while closing, whose ``phase`` goes ``flushing`` → ``pyramid`` (with the level
        being built and its chunks) → ``done``: closing can take longer than the
        acquisition, and must never look hung. Idempotent; the dataset on disk is valid
        whatever happened before.
        """
        if self._summary is not None:
            return self._summary
        self._on_progress = on_progress  # each phase and level is reported as it starts
        self._set_phase("flushing")
        ticker = _Ticker(self, on_progress, progress_interval_s) if on_progress else None
        try:
            return self._close(pyramid=pyramid, aborted=aborted)
        finally:
            if ticker is not None:
                ticker.stop()

    def _close(self, *, pyramid: bool, aborted: str | None) -> Summary:
        with self._append_lock:
            self._closed = True
        total_rows = self.layout.rows_for_frames(self._next_index)
        with self._lock:
            self._final_rows = total_rows
            self._submit_remaining(total_rows)
        for _ in self._workers:
            self._jobs.put(None)
        self._help_drain()
        for worker in self._workers:
            worker.join()
        for _ in self._io_workers:
            self._io_jobs.put(None)
        for worker in self._io_workers:
            worker.join()
        if self._owns_ring:  # every frame has left the ring: unmap it beside the fsyncs
            self.ring.release_memory()
        if self.layout.shards is not None:
            self._finish_open_shards()
            self._segments.close()
        self._stop_committer.set()
        self._commit_wake.set()
        self._committer.join()
        try:
            self._commit()  # final extent (covers everything written)
            self.store.flush()
        except OSError as exc:
            self._fail(exc)
        write_duration = self._elapsed()
        pyramid_duration = 0.0
        if (
            pyramid
            and self._error is None
            and self._committed_rows > 0
            and self.spec.pyramid.enabled
        ):
            self._set_phase("pyramid")
            t0 = time.perf_counter()
            try:
                self._levels = build_pyramid(self.spec.out, self.spec, progress=self._build)
            except Exception as exc:  # a failed pyramid must not lose level 0
                self._fail(exc)
            pyramid_duration = time.perf_counter() - t0
        self.ring.close()
        self.store.free_reserve()
        self.store.free_reserve(FINAL_RESERVE_NAME)
        if self._error is not None:
            state = "failed"
        elif aborted is not None:
            state = "aborted"
        else:
            state = "complete"
        summary = self._make_summary(state=state, duration=self._elapsed())
        summary.created_folders = list(self.store.created_folders)
        if state == "aborted":
            summary.error = aborted
        summary.write_duration_s = write_duration
        summary.pyramid_duration_s = pyramid_duration
        if write_duration > 0:
            summary.throughput_mb_s = summary.raw_bytes / 1e6 / write_duration
            summary.frames_per_s = summary.frames_written / write_duration
        measured = self._measured()
        summary.time_increment_s = measured.get("time_increment_s")
        extra = {"summary": summary.model_dump(), MEASURED_KEY: measured}
        try:
            self.store.write_atomic(
                "zarr.json", group_metadata(self.spec, self._levels, state=state, extra=extra)
            )
            self.store.flush()
        except OSError as exc:
            self._fail(exc)
            summary.state, summary.error = "failed", str(self._error)
        self._summary = summary
        self.store.release_lock()
        self._set_phase("done")
        return summary

    def _set_phase(self, phase: str) -> None:
        self._phase = phase
        self._report_progress()

    def _report_progress(self) -> None:
        if self._on_progress is not None:
            self._on_progress(self.progress())

    def _measured(self) -> dict[str, Any]:
        """What the frames showed (acqwriter.display): the interval between time points
        and each channel's display window."""
        # capture times only when every time point has one (two clocks never mix)
        taken = len(self._taken_starts) == len(self._time_starts)
        return {
            "time_increment_s": time_increment(self._taken_starts if taken else self._time_starts),
            "channel_windows": self._windows.windows(),
        }

    # -- append-side internals ------------------------------------------------------------
    def _claim_index(self) -> int:
        if self._closed:
            raise StreamError("stream is closed; append after close is not allowed")
        if self._error is not None:
            raise StreamError(f"writer failed; no more frames accepted: {self._error}")
        if self._stop_reason is not None:
            raise StreamError(f"stream stopped; no more frames accepted: {self._stop_reason}")
        index = self._next_index
        if self.layout.max_frames is not None and index >= self.layout.max_frames:
            first = self.layout.outer_dims[0]
            raise StreamError(
                f"stream is full: sizes.{first} = {self.layout.outer_sizes[0]} "
                f"({self.layout.max_frames} frames) already appended"
            )
        self._next_index = index + 1
        return index

    def _channel_of(self, index: int) -> int:
        if self._c_axis is None:
            return 0
        stride, size = self._c_axis
        return (index // stride) % size

    def _record(
        self,
        index: int,
        metadata: dict[str, Any] | None,
        *,
        dropped: str | None,
        taken_s: float | None = None,
    ) -> None:
        now = time.time()
        if self._time_is_first and index % self.layout.frames_per_row == 0:
            # a time point's first frame: when it arrived, and when it was taken if known
            self._time_starts.append(now)
            if taken_s is not None:
                self._taken_starts.append(taken_s)
        record = {"index": index, "received_s": now, "dropped": dropped is not None}
        self._append_t[index] = time.perf_counter()
        if dropped is not None:
            record["drop_reason"] = dropped
        if metadata:
            record["metadata"] = dict(metadata)  # serialised later, off the hot path
        with self._lock:
            self._records[index] = record
            if dropped is not None:
                self._dropped.append((index, dropped))

    def _add_to_group(self, index: int, slot: int | None) -> None:
        key = self.layout.group_of(index)
        group = self._groups.get(key)
        if group is None:
            group = _Group(key, self.layout.group_frame_count(key))
            self._groups[key] = group
        group.entries.append((index, slot))
        if len(group.entries) == group.expected:
            with self._lock:
                self._submit(group)

    def _submit(self, group: _Group) -> None:
        """Queue one job per (y, x) tile of a group (caller holds ``_lock``)."""
        self._groups.pop(group.key, None)
        group.tiles_left = self.layout.tiles_y * self.layout.tiles_x
        for ty in range(self.layout.tiles_y):
            for tx in range(self.layout.tiles_x):
                self._jobs.put((group, ty, tx))

    def _submit_remaining(self, total_rows: int) -> None:
        """At close: pad and queue incomplete groups; settle the last block's group count.

        Frames arrive in index order, so every block before the last is already fully
        queued. Positions of the last step of the first axis that no frame reached are
        ``missing``: inside the extent, fill value on disk, flagged in the metadata.
        """
        if total_rows == 0:
            return
        layout = self.layout
        self._missing = list(range(self._next_index, total_rows * layout.frames_per_row))
        for group in list(self._groups.values()):
            self._submit(group)
        last_block = (total_rows - 1) // layout.rows_per_block
        first = last_block * layout.frames_per_block
        # groups of the last block that never received a frame hold only fill values and
        # are not written; the block is complete when the groups that exist are
        seen = {layout.group_of(i) for i in range(first, self._next_index)}
        self._block_groups_expected[last_block] = len(seen)

    # -- writer threads -------------------------------------------------------------------
    def _worker(self) -> None:
        staging = np.empty(self.layout.chunk_shape, dtype=self.layout.dtype)
        while True:
            job = self._jobs.get()
            if job is None:
                return
            self._process_tile(*job, staging)

    def _help_drain(self) -> None:
        """At close, the closing thread compresses queued chunks beside the writer
        threads instead of waiting for them: the ring's backlog (64 frames of 2048² lz4
        at the end of a fast stream) otherwise leaves the caller's core idle for its last
        tenth of a second. Stops at the first end marker, which it puts back for the
        writer thread it was meant for."""
        staging: np.ndarray | None = None
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                return
            if job is None:
                self._jobs.put(None)
                return
            if staging is None and not self.layout.frame_is_chunk:
                staging = np.empty(self.layout.chunk_shape, dtype=self.layout.dtype)
            self._process_tile(*job, staging)

    def _process_tile(
        self,
        group: _Group,
        ty: int,
        tx: int,
        staging: np.ndarray | None,
        frame: np.ndarray | None = None,
        pooled: tuple[Any, int] | None = None,
    ) -> bool:
        """Write one tile (see :meth:`_write_tile`) and account for it; a failure fails
        the stream. False when the tile was not written (failed, or the stream had)."""
        nbytes, ok = 0, False
        if self._error is None:
            # _write_tile owns ``pooled`` from here: it hands it to an I/O thread, or
            # puts it back into the pool if compressing fails
            owned, pooled = pooled, None
            try:
                nbytes, ok = self._write_tile(group, ty, tx, staging, frame, owned), True
            except BaseException as exc:
                self._fail(exc)
        if pooled is not None:  # not used: the stream had failed already
            self._encoded_pool.put(pooled)
        if nbytes >= 0:  # < 0: handed to an I/O thread, which finishes the tile
            self._tile_done(group, nbytes, ok)
        return ok

    def _io_worker(self) -> None:
        """Write encoded chunks handed over by the compressing threads."""
        while True:
            item = self._io_jobs.get()
            if item is None:
                return
            group, key, pooled, n = item
            nbytes, ok = 0, False
            try:
                if self._error is None:
                    nbytes, ok = self.store.write_chunk_from(key, n, pooled[0]), True
            except BaseException as exc:
                self._fail(exc)
            finally:
                self._encoded_pool.put(pooled)
            self._tile_done(group, nbytes, ok)

    def _write_tile(
        self,
        group: _Group,
        ty: int,
        tx: int,
        staging: np.ndarray | None,
        frame: np.ndarray | None = None,
        pooled: tuple[Any, int] | None = None,
    ) -> int:
        """Compress one (y, x) tile of ``group`` and write it (or pack it, or hand it to
        an I/O thread: then -1). ``frame``: the group's one frame, for a frame compressed
        on the producer's thread (no ring slot, no staging)."""
        layout = self.layout
        if frame is not None:
            data = frame
        elif not (live := [(index, slot) for index, slot in group.entries if slot is not None]):
            return 0  # only dropped frames: the chunk stays absent and reads as fill
        elif layout.frame_is_chunk and len(live) == 1:
            data = self.ring.slots[live[0][1]]  # zero-copy: compress from the ring slot
        else:
            assert staging is not None
            ys, xs, h, w = layout.tile_slices(ty, tx)
            full = len(live) == layout.frames_per_chunk and (h, w) == layout.tile_shape
            if not full:
                staging.fill(0)
            for index, slot in live:
                pos = layout.position_in_group(index)
                staging[(*pos, slice(0, h), slice(0, w))] = self.ring.slots[slot][ys, xs]
            data = staging
        if self._io_workers:
            # compress into a pooled aligned buffer (waits for one: memory stays bounded)
            # and let an I/O thread write it; -1: the tile is not finished here
            if pooled is None:
                pooled = self._encoded_pool.get()
            try:
                n = self._encoder.encode_into(data, *pooled)
            except BaseException:
                self._encoded_pool.put(pooled)
                raise
            if frame is None and layout.frame_is_chunk:
                # the frame is in the encoded buffer now: its slot can take the next one
                # (the encoded-buffer pool bounds what waits for the disk)
                group.released = True
                self.ring.release([slot for _, slot in live])
            self._io_jobs.put((group, "0/" + layout.chunk_key(group.key, ty, tx), pooled, n))
            return -1
        # compress straight into this thread's aligned scratch buffer, write it from there
        buf, address = self.store.scratch(self._max_encoded)
        n = self._encoder.encode_into(data, buf, address)
        if layout.shards is not None:
            shard = self._shard_for(group.key)
            shard.put(layout.shards.position(group.key, ty, tx), memoryview(buf)[:n])
            return n
        return self.store.write_chunk_from("0/" + layout.chunk_key(group.key, ty, tx), n)

    # -- shards -----------------------------------------------------------------------------
    def _shard_for(self, key: GroupKey) -> ShardWriter:
        plan = self.layout.shards
        assert plan is not None
        coords = plan.shard_of(key)
        with self._lock:
            shard = self._shards.get(coords)
            if shard is None:
                expected = sum(1 for _ in plan.groups(coords)) * self.layout.tiles_per_group
                shard = ShardWriter(
                    self.store, plan.key(coords), plan.n_inner, expected, self._segments
                )
                self._shards[coords] = shard
            return shard

    def _shard_job_done(self, group: _Group, live: int, group_complete: bool) -> None:
        """Count a finished tile of ``group`` in its shard; finish the shard when it is
        complete (last segment + index written), and only then let its groups count for
        the extent."""
        shard = self._shard_for(group.key)
        if group_complete:
            with shard.lock:
                shard.groups.append((group, live))
        if shard.job_done():
            self._finish_shard(shard)

    def _finish_shard(self, shard: ShardWriter, *, salvage: bool = False) -> bool:
        """Finish ``shard`` and let its groups count for the extent; True when it is on
        disk. Once the stream has failed, a shard is left as it is for the salvage at
        close (:meth:`_salvage_shards`, which passes ``salvage``); so is a shard whose
        own finish failed in a way it can retry (a full disk: the salvage frees later
        shards first). Otherwise a shard that failed is abandoned and forgotten (its
        temporary file freed: room for the final metadata)."""
        plan = self.layout.shards
        assert plan is not None
        if self._error is not None and not salvage:
            return False
        try:
            shard.finish()
        except BaseException as exc:
            self._fail(exc)
            if shard.finished:  # else kept: the salvage at close (re)tries it
                shard.abandon()
                with self._lock:
                    self._forget_shard_locked(shard)
            return False
        with self._lock:
            self._forget_shard_locked(shard)
            self._stored_bytes += shard.stored_bytes - shard.counted_bytes
            shard.counted_bytes = shard.stored_bytes
            for group, live in shard.groups:
                if group.ok:
                    self._account_group(self.layout.block_of(group.key), live)
            if plan.factors[0] > 1 and shard.groups:  # a partly finished block may be sealed
                block = self.layout.block_of(shard.groups[0][0].key)
                if block >= self._committed_blocks:
                    self._finished_groups.setdefault(block, []).extend(shard.groups)
        self._commit_wake.set()
        return True

    def _finish_open_shards(self) -> None:
        """At close: shards that will get no more chunks are finished as they are (their
        missing inner chunks stay empty and read as fill); after a failure, what can
        still extend the extent is salvaged."""
        with self._lock:
            remaining = sorted(self._shards.items())
        if self._error is not None:
            self._salvage_shards(remaining)
            return
        for _, shard in remaining:
            self._finish_shard(shard)

    def _salvage_shards(self, shards: list[tuple[tuple[int, ...], ShardWriter]]) -> None:
        """After a failure (most often a full disk): finish the open shards that can still
        extend the extent, oldest block first, and abandon the rest.

        Why: writer threads pack several shards at once, and the one whose segment hit
        ENOSPC is often a later one, while the front shard holds every chunk of its
        frames but its last segment and index (seen: 538 frames received, 0 written on a
        24 MiB disk, 1 run in 4 under load). The extent only grows from the front, so a
        later shard is worth nothing while an earlier one is unfinished: each failed
        attempt to finish the front shard abandons the newest other one (freeing its
        temporary file) and tries again, and a margin for the final metadata is then
        freed the same way; the front block's leading whole rows enter the extent as a
        seal's would. The first shard that cannot be finished ends the salvage.
        ``shards``: (coordinates, shard) in coordinate order, so block first."""
        layout = self.layout
        pending = list(shards)
        # a shard behind a block that can no longer be whole stays outside the extent
        while pending and pending[0][0][0] <= self._front_block():
            (block, *_), shard = pending.pop(0)
            while not (done := self._finish_shard(shard, salvage=True)):
                if shard.finished or not pending:
                    break
                pending.pop()[1].abandon()
            while pending and self._free_bytes() < _SALVAGE_MARGIN:
                pending.pop()[1].abandon()
            if not done:
                shard.abandon()
                break
            if pending and pending[0][0][0] == block:
                continue  # the block's other shards first
            if self._front_block() > block:
                continue  # the block is whole: the next one may be too
            if layout.shard_factors[0] > 1 and block == self._committed_blocks:
                with self._lock:
                    groups = list(self._finished_groups.get(block, []))
                rows = self._leading_whole_rows(block, groups)
                with self._lock:
                    self._sealed_rows[block] = max(self._sealed_rows.get(block, 0), rows)
            break
        for _, rest in pending:
            rest.abandon()

    def _front_block(self) -> int:
        with self._lock:
            return self._front_block_locked()

    def _front_block_locked(self) -> int:
        """The first block not wholly written: the extent cannot grow past it (the last
        block's expected group count is settled at close, and no block after it has any
        groups done)."""
        block = self._committed_blocks
        while self._block_groups_done.get(block, 0) >= self._block_groups_expected.get(
            block, self.layout.groups_per_block()
        ):
            block += 1
        return block

    def _forget_shard_locked(self, shard: ShardWriter) -> None:
        for coords, open_shard in list(self._shards.items()):
            if open_shard is shard:
                del self._shards[coords]

    def _free_bytes(self) -> int:
        try:
            return self.store.free_bytes()
        except OSError:
            return 0

    def _account_group(self, block: int, live: int) -> None:
        """A written group's frames count for the extent (caller holds ``_lock``)."""
        self._frames_written += live
        self._block_groups_done[block] = self._block_groups_done.get(block, 0) + 1

    def _tile_done(self, group: _Group, nbytes: int, ok: bool) -> None:
        check_space = False
        sharded = self.layout.shards is not None
        with self._lock:
            if not sharded:  # a shard's bytes count once the shard is on disk
                self._stored_bytes += nbytes
            self._bytes_since_space_check += nbytes
            if self._bytes_since_space_check >= self._space_check_every:
                self._bytes_since_space_check = 0
                check_space = True
        if check_space:
            try:
                self._check_free_space()
            except OSError as exc:
                self._fail(exc)
        with self._lock:
            group.ok = group.ok and ok
            group.tiles_left -= 1
            complete = group.tiles_left == 0
            slots = [slot for _, slot in group.entries if slot is not None] if complete else []
            # a group with a failed or skipped tile never enters the extent; a sharded
            # group enters it when its shard is finished (see _finish_shard)
            if complete and group.ok and not sharded:
                self._account_group(self.layout.block_of(group.key), len(slots))
        if complete and not group.released:  # its chunks are encoded and on their way to disk
            self.ring.release([slot for slot in slots if slot != _INLINE])
        if sharded and ok:
            self._shard_job_done(group, len(slots), complete)
        if complete:
            self._commit_wake.set()

    def _fail(self, exc: BaseException) -> None:
        with self._lock:
            if self._error is None:
                self._error = exc
        self._abort.set()
        self.ring.close()
        self.store.free_reserve()  # room for the final extent and metadata writes

    # -- committer ------------------------------------------------------------------------
    def _commit_loop(self) -> None:
        interval = self.spec.commit_interval_s
        while not self._stop_committer.is_set():
            self._commit_wake.wait(interval)
            self._commit_wake.clear()
            if self._stop_committer.is_set():
                return
            try:
                self._seal_front_block()
                self._commit()
                self._check_free_space()
            except BaseException as exc:
                self._fail(exc)
                return
            self._stop_committer.wait(interval)  # rate-limit metadata rewrites

    def _check_free_space(self, extra: int = 0) -> bool:
        """Stop taking frames once what is still to be written would leave less than
        ``min_free_bytes`` free (statvfs: microseconds, called every few chunks): the
        ring's frames (raw), the bytes packed into open shards but not yet on disk with
        their indexes, and ``extra`` (a seal's copy of its shards). False when the
        stream has stopped for low space (a seal then does not write)."""
        if self.spec.min_free_bytes == 0:
            return True
        if self._stop_reason is not None:
            return False
        free = self.store.free_bytes()
        with self._lock:
            shards = list(self._shards.values())
        pending = self.ring.occupancy * self.layout.frame_bytes  # not yet written, raw
        pending += sum(shard.unwritten_bytes() for shard in shards) + extra
        if free - pending < self.spec.min_free_bytes:
            self._stop_reason = (
                f"disk space low: {free / 2**20:.0f} MiB free on {self.spec.out.parent} "
                f"({pending / 2**20:.0f} MiB still to write), below min_free_bytes "
                f"{self.spec.min_free_bytes / 2**20:.0f} MiB; stopped cleanly"
            )
            return False
        return True

    def _seal_front_block(self) -> None:
        """Shards along the first axis: publish the unfinished shards of the first block
        not yet in the extent when they have held chunks for ``shard_seal_s`` without a
        seal, and remember how many of the block's leading rows they now hold whole
        (see :mod:`acqwriter.shards`, "Sealing")."""
        plan = self.layout.shards
        if plan is None or plan.factors[0] == 1:
            return
        now = time.monotonic()
        with self._lock:
            block = self._committed_blocks
            shards = [sh for coords, sh in self._shards.items() if coords[0] == block]
        due = [
            sh
            for sh in shards
            if len(sh.groups) > sh.sealed_groups
            and now - (sh.sealed_at or sh.opened_at) >= self.spec.shard_seal_s
        ]
        if not due:
            return
        if not self._check_free_space(extra=sum(shard.seal_bytes() for shard in shards)):
            return  # no room for the copies: the shards appear when finished
        with self._lock:  # groups of the block's shards that are finished already
            groups = list(self._finished_groups.get(block, []))
        for shard in shards:  # every open shard of the block: a row needs all of them
            if len(shard.groups) > shard.sealed_groups or shard.sealed_at is None:
                sealed = shard.seal()
                if sealed is None:
                    return  # finished meanwhile: the block commits the usual way
            else:
                sealed = shard.groups[: shard.sealed_groups]
            groups += sealed
        rows = self._leading_whole_rows(block, groups)
        with self._lock:
            if rows > self._sealed_rows.get(block, 0):
                self._sealed_rows[block] = rows
        self._commit_wake.set()

    def _leading_whole_rows(self, block: int, groups: list[tuple[_Group, int]]) -> int:
        """Rows from the start of ``block`` whose every chunk group is in ``groups``."""
        layout = self.layout
        per_chunk_row = layout.groups_per_block() // layout.shard_factors[0]
        done: dict[int, int] = {}
        for group, _live in groups:
            if group.ok:
                done[group.key[0]] = done.get(group.key[0], 0) + 1
        first = block * layout.shard_factors[0]
        whole = 0
        while whole < layout.shard_factors[0] and done.get(first + whole, 0) >= per_chunk_row:
            whole += 1
        return whole * layout.outer_chunks[0]

    def _commit(self) -> None:
        """Advance the extent over blocks whose chunks are all written (and the sealed
        leading rows of the next one)."""
        layout = self.layout
        with self._lock:
            blocks = self._front_block_locked()
            for block in range(self._committed_blocks, blocks):
                self._sealed_rows.pop(block, None)
                self._finished_groups.pop(block, None)
            rows = blocks * layout.rows_per_block + self._sealed_rows.get(blocks, 0)
            if self._final_rows is not None:
                rows = min(rows, self._final_rows)
            if rows <= self._committed_rows:
                # a sealed block that finished adds blocks but no rows: count it
                self._committed_blocks = max(self._committed_blocks, blocks)
                return
            first, end = self._committed_rows * layout.frames_per_row, rows * layout.frames_per_row
            appended = self._next_index
            # lines already on disk from a commit whose extent rewrite failed stay once
            start = max(first, self._metadata_end)
            records = [self._records[i] for i in range(start, min(end, appended))]
        lines = [_json_line(r) for r in records]
        lines += [
            _json_line({"index": i, "dropped": True, "drop_reason": "missing"})
            for i in range(max(start, appended), end)
        ]
        failure: PartialAppend | None = None
        written = len(lines)
        if lines:  # whole lines or none (LocalStore.append); the records stay until then
            try:
                self.store.append(FRAME_METADATA_KEY, ("\n".join(lines) + "\n").encode())
            except PartialAppend as exc:
                failure, written = exc, exc.lines
        with self._lock:  # lines are in index order: start, start + 1, ...
            for i in range(start, min(start + written, appended)):
                del self._records[i]
            self._metadata_end = max(self._metadata_end, start + written)
            # the extent covers frames whose chunks and metadata line are both on disk
            rows = min(rows, self._metadata_end // layout.frames_per_row)
        if rows > self._committed_rows:
            self.store.write_atomic(
                "0/zarr.json", encode_array_metadata(self._array_meta, layout.array_shape(rows))
            )
            self._note_committed(rows, blocks, first, appended)
        if failure is not None:
            raise failure

    def _note_committed(self, rows: int, blocks: int, first: int, appended: int) -> None:
        """The extent now covers ``rows``: count it, and the latencies of its frames."""
        now = time.perf_counter()
        end = rows * self.layout.frames_per_row
        with self._lock:
            self._committed_blocks = blocks
            self._committed_rows = rows
            for i in range(first, min(end, appended)):
                t = self._append_t.pop(i, None)
                if t is not None:
                    self._latencies.append(now - t)

    # -- summary ----------------------------------------------------------------------------
    def _elapsed(self) -> float:
        return time.perf_counter() - self._t_open

    def _frames_in_extent(self) -> int:
        """Frames inside the committed extent that are not dropped: exactly what readers
        get (whole blocks and sealed rows alike; a failure can leave later groups written
        but outside it). Drops are recorded in index order. Caller holds ``_lock``."""
        end = min(self._committed_rows * self.layout.frames_per_row, self._next_index)
        return end - bisect.bisect_left(self._dropped, (end,))

    def _make_summary(self, *, state: str, duration: float) -> Summary:
        with self._lock:
            dropped = list(self._dropped)  # in index order (see _record)
            by_reason: dict[str, int] = {}
            for _, reason in dropped:
                by_reason[reason] = by_reason.get(reason, 0) + 1
            written = self._frames_in_extent()
            stored = self._stored_bytes
            rows = self._committed_rows
        raw = written * self.layout.frame_bytes
        return Summary(
            path=str(self.spec.out),
            state=state,
            frames_received=self._frames_received,
            frames_written=written,
            frames_dropped=len(dropped),
            dropped_indices=[i for i, _ in dropped],
            dropped_by_reason=by_reason,
            frames_missing=len(self._missing),
            missing_indices=sorted(self._missing),
            shape=list(self.layout.array_shape(rows)),
            raw_bytes=raw,
            stored_bytes=stored,
            compression_ratio=(raw / stored) if stored else None,
            duration_s=duration,
            write_duration_s=duration,
            throughput_mb_s=raw / 1e6 / duration if duration > 0 else 0.0,
            frames_per_s=written / duration if duration > 0 else 0.0,
            ring_capacity_frames=self.ring.capacity,
            ring_high_water_frames=self.ring.high_water,
            ring_bytes=self.ring.capacity * self.layout.frame_bytes,
            frames_inline=self._frames_inline,
            pyramid_levels=len(self._levels),
            error=(
                f"{type(self._error).__name__}: {self._error}"
                if self._error is not None
                else self._stop_reason
            ),
            **_latency_stats(self._latencies),
        )


RESERVE_BYTES = 4 * 2**20
FINAL_RESERVE_BYTES = 1 * 2**20


def _encoded_buffers(compressors: int, writers: int, buffer_bytes: int) -> int:
    """Size of the pool of encoded-chunk buffers: one per compressing thread and two per
    I/O thread (one being written, one queued), fewer for huge chunks (the pool stays
    under THREAD_BUFFER_BYTES) but never fewer than compressors + 1: the pool bounds
    the memory between compression and disk as the ring bounds it before."""
    wanted = compressors + 2 * writers
    return max(compressors + 1, min(wanted, THREAD_BUFFER_BYTES // buffer_bytes))


def _latency_stats(latencies: list[float]) -> dict[str, float | None]:
    if not latencies:
        return {"latency_p50_ms": None, "latency_p99_ms": None, "latency_max_ms": None}
    arr = np.sort(np.asarray(latencies, dtype=np.float64)) * 1000
    return {
        "latency_p50_ms": percentile_of_sorted(arr, 50),
        "latency_p99_ms": percentile_of_sorted(arr, 99),
        "latency_max_ms": float(arr[-1]),
    }


def percentile_of_sorted(values: np.ndarray, q: float) -> float:
    """``np.percentile(values, q)`` (its default, linear interpolation) for an already
    sorted, non-empty array. Written out because numpy's first ``percentile`` call in a
    process costs ~7 ms of lazy setup, paid inside every stream's close (300 frames of
    2048² take ~1.1 s; this was 0.6 % of it, on the closing thread, serial)."""
    position = (len(values) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(values) - 1)
    return float(values[low] + (values[high] - values[low]) * (position - low))


def _preflight_disk_space(spec: StreamSpec, layout: FrameLayout) -> None:
    """Refuse a stream whose estimated size does not fit (see WriterOptions)."""
    frames = spec.expected_frames or layout.max_frames
    need = spec.min_free_bytes + RESERVE_BYTES + FINAL_RESERVE_BYTES
    if frames:
        need += int(frames * layout.frame_bytes * 1.05)
    probe = spec.out.resolve()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if need > free:
        raise SpecError(
            f"out: not enough free space on {probe}: {free / 2**20:.0f} MiB free, "
            f"{need / 2**20:.0f} MiB needed ({frames or 0} frames uncompressed + 5 % + "
            "min_free_bytes); free space, lower the estimate, or set disk_check: false"
        )


def _preflight_memory(spec: StreamSpec, layout: FrameLayout) -> None:
    """Refuse a ring the machine cannot back, before anything is written.

    The ring is backed with memory only as far as a backlog reaches
    (:class:`acqwriter.ring.FrameRing`), so a shortage would otherwise show only when a
    disk stall first fills it, half-way through an acquisition. "Available" is the
    kernel's estimate of what can be had without swapping (free memory plus page cache
    it can drop)."""
    frames = ring_capacity(spec)
    need = frames * layout.frame_bytes
    available = psutil.virtual_memory().available
    if need > available:
        raise SpecError(
            f"ring_bytes: the ring needs {need / 2**20:.0f} MiB ({frames} "
            f"frames of {layout.frame_bytes} bytes) but only {available / 2**20:.0f} MiB "
            "of memory is available; lower ring_bytes or free memory"
        )


def check_resources(spec: StreamSpec) -> None:
    """Refuse, as :func:`open_stream` would, a ring beyond the memory available and
    (with ``disk_check``) an acquisition beyond the free disk, without opening anything:
    the daemon's ``configure`` checks what its ``start`` needs."""
    layout = FrameLayout(spec)
    _preflight_memory(spec, layout)
    if spec.disk_check:
        _preflight_disk_space(spec, layout)


def ring_for(spec: StreamSpec) -> FrameRing:
    """A touched ring sized for ``spec`` (``ring_bytes``, capped at the stream's size).

    Allocate it ahead (e.g. when an acquisition is configured) and pass it to
    :func:`open_stream` so that touching a large ring (seen: 1.1 s for 512 MiB of memory
    fresh from the host) does not delay the first frame.
    """
    _preflight_memory(spec, FrameLayout(spec))
    ring = _new_ring(spec)
    ring.wait_populated()  # allocated ahead: fully backed by memory before it is used
    return ring


def _new_ring(spec: StreamSpec) -> FrameRing:
    """A ring for ``spec`` whose first slot is ready; the stream that allocates it for
    itself starts populating the rest once its own threads run (see :mod:`acqwriter.ring`)."""
    layout = FrameLayout(spec)
    return FrameRing(ring_capacity(spec), layout.frame_shape, layout.dtype, populate_now=False)


def ring_capacity(spec: StreamSpec) -> int:
    """Frames the ring holds: what ``ring_bytes`` leaves after the staging of shards
    open at the same time (``FrameLayout.extra_staging_bytes``) and the writer threads'
    own buffers for big chunks (``StreamSpec.thread_buffer_bytes``), in frames, capped at a
    bounded stream's size and at :data:`RING_MAX_FRAMES` (never below what one block of
    chunks needs).

    ``ring_bytes`` bounds everything in flight: frames waiting for a writer, chunks
    being compressed, and compressed chunks waiting in open shards for their last
    chunk. t-shards of a t × c × z stack keep every shard of a time point open; before
    their staging was counted, they took 1 085 MB of RSS with a 512 MiB ring
    (docs/decisions.md). A ring too small for all of it keeps the frames
    one block needs (as before: a spec is never refused for this), and the rest comes
    on top."""
    layout = FrameLayout(spec)
    usable = spec.ring_bytes - layout.extra_staging_bytes - spec.thread_buffer_bytes()
    limits = [usable // layout.frame_bytes, RING_MAX_FRAMES]
    if layout.max_frames is not None:
        limits.append(layout.max_frames)
    return max(min(limits), layout.min_ring_frames)


def open_stream(spec: StreamSpec | dict[str, Any], *, ring: FrameRing | None = None) -> FrameStream:
    """Validate ``spec`` and open a stream: the dataset exists (valid, empty) on return.

    ``ring``: a preallocated :class:`FrameRing` (see :func:`ring_for`) to use instead of
    allocating one; it must be idle (no stream using it) and is not freed at close.

    Use as a context manager::

        with acqwriter.open_stream(spec) as stream:
            for frame in frames:
                stream.append(frame, metadata={"exposure_ms": 10})
        print(stream.summary)
    """
    return FrameStream(StreamSpec.parse(spec), ring)
