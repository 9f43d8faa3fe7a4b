"""The stream: frames in, a growing OME-Zarr dataset out.

Data flow::

    append(frame) ──copy once──▶ frame slot (engine.slots) ──▶ chunk batch
    (engine.assembly) ──complete──▶ compressor threads (engine.workers): assemble the
    tile, compress, write the chunk or pack it into its shard (engine.shards), or hand
    big encoded chunks to the I/O threads ──▶ store (acqwriter.store) ──▶ extent
    committer (engine.commit): per-frame metadata lines, then the array's larger extent
    ──▶ close: pad partial chunks, final extent, flush, pyramid (post.pyramid), summary.

:class:`FrameStream` is the facade that wires these parts for one image and keeps the
public API: it opens the store and writes the first metadata, starts the threads,
claims each frame's index (engine.ledger), decides where a frame goes (a slot, or
compressed on the producer's own thread when the writers are behind) and finishes the
dataset. Each part owns its state and its lock; they talk by method calls.

When the slots are full under the ``block`` policy the producer would only wait; a
frame that is one whole unsharded chunk is then compressed on the producer's thread,
straight from its buffer (no slot copy: the writer gets faster exactly when it cannot
keep up; ``frames_inline`` counts them). For big chunks the producer does so as soon as
the compressors have a backlog and an encoded-chunk buffer is free at once: a source
faster than the compressors then keeps the backlog short, and the slots' memory,
backed only as far as the backlog reaches, mostly untouched; while the disk lags, no
buffer is free and frames go to the slots, which absorb the stall.

Invariants (what a reader, or a crash, can rely on):

* the root group and the level-0 array metadata exist from the moment
  :func:`open_stream` returns;
* the extent written in ``0/zarr.json`` only ever covers chunks already written (and,
  with ``sync="always"``, already durable), so every frame inside it is real data or a
  frame flagged as dropped in its per-frame metadata;
* a frame's per-frame metadata line is written before the extent covers it.

The engine knows nothing about cameras: device code, the CLI and the daemon all feed
it through :meth:`FrameStream.append` / :meth:`FrameStream.skip`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from acqwriter.codec.blosc import max_compressed_size
from acqwriter.engine.array import ArrayWriter
from acqwriter.engine.guard import DiskGuard, Health
from acqwriter.engine.ledger import FrameLedger
from acqwriter.engine.preflight import (
    FINAL_RESERVE_BYTES,
    RESERVE_BYTES,
    check_disk,
    check_memory,
    new_slots,
)
from acqwriter.engine.slots import FrameSlots
from acqwriter.engine.workers import CompressorPool, EncodedBuffer, EncodedBuffers, IOPool
from acqwriter.format.display import MEASURED_KEY
from acqwriter.format.keys import GROUP_METADATA, LEVEL0
from acqwriter.format.ngff_v05 import group_metadata, level0
from acqwriter.format.summary import Summary
from acqwriter.format.zarr_v3 import array_metadata, encode_array_metadata
from acqwriter.plan.layout import FrameLayout
from acqwriter.plan.resources import INLINE_BACKLOG_PER_WRITER, Plan
from acqwriter.post.pyramid import BuildProgress, build_pyramid
from acqwriter.spec.model import StreamSpec
from acqwriter.store.base import FINAL_RESERVE_NAME, StorageError, Store
from acqwriter.store.local import LocalStore
from acqwriter.validation import SpecError

__all__ = ["FrameError", "FrameStream", "StreamError", "open_stream"]


class StreamError(RuntimeError):
    """The stream cannot take more frames (closed, full, or its writer failed)."""


class FrameError(ValueError):
    """A frame does not match the stream (shape or dtype); nothing was written."""


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


def _open_store(spec: StreamSpec) -> Store:
    """A new, locked dataset directory at ``spec.out`` with direct I/O as ``io`` asks."""
    try:
        return LocalStore.create_dataset(
            spec.out, overwrite=spec.overwrite, sync=spec.sync, io=spec.io
        )
    except StorageError as exc:
        field = "io" if str(exc.strerror).startswith("io:") else "out"
        raise SpecError(f"{field}: {exc.strerror.removeprefix('io: ')}") from None
    except OSError as exc:
        raise SpecError(f"out: {exc}") from None


class FrameStream:
    """One acquisition being written. Create with :func:`open_stream`."""

    def __init__(
        self, spec: StreamSpec, ring: FrameSlots | None = None, store: Store | None = None
    ) -> None:
        self.spec = spec
        self.plan = plan = Plan.of(spec)
        self.layout = layout = plan.layout
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
        else:
            check_memory(plan)
        if spec.disk_check:
            check_disk(spec, plan, store)
        self.store = store if store is not None else _open_store(spec)
        keys = LEVEL0
        array_meta = array_metadata(
            spec, layout.array_shape(0), layout.chunk_shape, layout.shard_shape
        )
        self._levels = [level0(spec)]
        # The array first, then the group that points at it: a reader never finds a
        # multiscale whose dataset is missing.
        self.store.write_atomic(
            keys.metadata, encode_array_metadata(array_meta, layout.array_shape(0))
        )
        self.store.write_atomic(keys.frame_metadata, b"")
        self.store.write_atomic(
            GROUP_METADATA, group_metadata(spec, self._levels, state="acquiring")
        )
        # one reserve for the final extent and per-frame metadata (freed on error), one
        # kept for the root's final state alone, so the first cannot eat it
        self.store.reserve(RESERVE_BYTES)
        self.store.reserve(FINAL_RESERVE_BYTES, FINAL_RESERVE_NAME)
        self.ring = ring if ring is not None else new_slots(plan)

        self._health = Health()
        self._health.on_fail(self.ring.close)
        self._health.on_fail(self.store.free_reserve)  # room for the final metadata
        self._ledger = FrameLedger(layout)
        self._append_lock = threading.Lock()  # appends from several threads stay ordered
        self._closed = False
        self._summary: Summary | None = None
        self._phase = "acquiring"  # → flushing → pyramid → done (progress())
        self._on_progress: Callable[[dict[str, Any]], None] | None = None  # while closing
        self._build = BuildProgress(on_level=self._report_progress)

        self._compressors = CompressorPool(plan.compressors)
        self._io: IOPool | None = None
        self._encoded: EncodedBuffers | None = None
        max_encoded = max_compressed_size(layout.chunk_bytes)
        if plan.io_threads:
            self._io = IOPool(plan.io_threads)
            self._encoded = EncodedBuffers(plan.encoded_buffers(max_encoded), max_encoded)
        self._guard = DiskGuard(self.store, spec.min_free_bytes, self._health, self._pending_bytes)
        self._writer = ArrayWriter(
            layout=layout,
            keys=keys,
            array_meta=array_meta,
            codec=spec.codec,
            store=self.store,
            slots=self.ring,
            compressors=self._compressors,
            io=self._io,
            encoded=self._encoded,
            ledger=self._ledger,
            health=self._health,
            guard=self._guard,
            commit_interval_s=spec.commit_interval_s,
            shard_seal_s=spec.shard_seal_s,
        )
        # the producer compresses a frame itself once this many wait for the compressors
        # and an encoded buffer is free (see _spare_encoded_buffer)
        self._early_inline = plan.producer_compresses and self._io is not None
        self._inline_backlog = INLINE_BACKLOG_PER_WRITER * plan.compressors
        self._compressors.start()
        if self._io is not None:
            self._io.start()
        self._writer.committer.start()
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
        return self._summary or _summary(self, state="acquiring", duration=self._elapsed())

    @property
    def frames_appended(self) -> int:
        return self._ledger.next_index

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def error(self) -> BaseException | None:
        return self._health.error

    @property
    def encoded_buffers(self) -> EncodedBuffers | None:
        """The pool between compressors and I/O threads (None: chunks are written by
        the compressors themselves)."""
        return self._encoded

    def append(
        self,
        frame: np.ndarray,
        metadata: dict[str, Any] | None = None,
        *,
        taken_s: float | None = None,
    ) -> int:
        """Copy ``frame`` into a frame slot and queue it; returns its frame index.

        ``taken_s``: when the camera took it (seconds, any fixed origin, e.g. the
        core's elapsed time), for the measured time scale; default: when it arrived
        here (frames drained from a camera's buffer in bursts arrive closer together
        than they were taken).

        The caller may reuse ``frame``'s buffer as soon as this returns. When the slots
        are full, under the ``block`` overflow policy, a frame that is one whole chunk of
        an unsharded array is compressed and written on the caller's thread straight
        from ``frame``, any other frame waits for a free slot; under ``drop`` a frame
        that finds the slots full is recorded as dropped (fill value on disk, flagged in
        the per-frame metadata) and its index is still returned.
        """
        arr = checked_frame(frame, self.layout)
        with self._append_lock:
            index = self._claim_index()
            self._ledger.sample(index, arr)
            encoded = self._spare_encoded_buffer(arr)
            if encoded is not None:
                return self._write_inline(index, arr, metadata, encoded, taken_s)
            slot = self.ring.acquire(0)
            if slot is None and self.spec.overflow == "block":
                if self.plan.producer_compresses and arr.flags.c_contiguous:
                    return self._write_inline(index, arr, metadata, None, taken_s)
                slot = self.ring.acquire(None, abort=self._health.abort)
                if slot is None:
                    self._ledger.unclaim(index)
                    raise StreamError(
                        f"writer failed, frame {index} not accepted: {self._health.error}"
                    )
            if slot is not None:
                self.ring.slots[slot][...] = arr
            dropped = None if slot is not None else "ring_full"
            self._ledger.record(index, metadata, dropped=dropped, taken_s=taken_s)
            self._writer.add(index, slot)
            return index

    def _spare_encoded_buffer(self, frame: np.ndarray) -> EncodedBuffer | None:
        """An encoded-chunk buffer for compressing ``frame`` on the producer's thread
        now, or None: copy it into a slot instead.

        Only when the compressors already have a backlog (they are the bottleneck:
        compressing here adds a core's worth of compression and saves the slot copy)
        and a buffer is free at once (the I/O threads keep up, so the producer never
        waits for the disk; while the disk stalls, frames go to the slots, which absorb
        the stall). An unpaced source then keeps the backlog short, and a short backlog
        touches only the first slots (:class:`acqwriter.engine.slots.FrameSlots`)."""
        if not self._early_inline or self._compressors.backlog() < self._inline_backlog:
            return None
        if not frame.flags.c_contiguous:
            return None
        assert self._encoded is not None
        return self._encoded.take_now()

    def _write_inline(
        self,
        index: int,
        frame: np.ndarray,
        metadata: dict[str, Any] | None,
        encoded: EncodedBuffer | None,
        taken_s: float | None,
    ) -> int:
        """Compress ``frame`` (one whole chunk) on the producer's thread instead of
        waiting for a slot: waiting would leave this thread idle while the compressors
        work through the backlog; compressing here costs the same CPU minus the copy
        into the slot. Caller holds ``_append_lock``."""
        self._ledger.record(index, metadata, dropped=None, taken_s=taken_s, inline=True)
        if not self._writer.write_from_producer(index, frame, encoded):
            raise StreamError(f"writer failed on frame {index}: {self._health.error}")
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
                self._ledger.record(index, metadata, dropped=reason, received=False)
                self._writer.add(index, None)
                indices.append(index)
        return indices

    def _claim_index(self) -> int:
        if self._closed:
            raise StreamError("stream is closed; append after close is not allowed")
        if self._health.error is not None:
            raise StreamError(f"writer failed; no more frames accepted: {self._health.error}")
        if self._health.stop_reason is not None:
            raise StreamError(
                f"stream stopped; no more frames accepted: {self._health.stop_reason}"
            )
        try:
            return self._ledger.claim()
        except OverflowError as exc:
            raise StreamError(str(exc)) from None

    def progress(self) -> dict[str, Any]:
        """A cheap live snapshot for progress bars and status replies."""
        elapsed = self._elapsed()
        committer = self._writer.committer
        # finished batches, or frames readers already see in sealed shards
        written = max(committer.frames_written, self._frames_in_extent())
        return {
            "phase": self._phase,
            **self._build.snapshot(),
            "frames_appended": self._ledger.next_index,
            "frames_received": self._ledger.frames_received,
            "frames_written": written,
            "frames_dropped": self._ledger.dropped_count,
            "rows_committed": committer.committed_rows,
            "ring_occupancy": self.ring.occupancy,
            "ring_capacity": self.ring.capacity,
            "ring_high_water": self.ring.high_water,
            "frames_inline": self._ledger.frames_inline,
            "mb_per_s": written * self.layout.frame_bytes / 1e6 / elapsed if elapsed > 0 else 0.0,
            "elapsed_s": elapsed,
            "error": None if self._health.error is None else str(self._health.error),
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
        self._ledger.set_missing(
            self.layout.rows_for_frames(self._ledger.next_index) * self.layout.frames_per_row
        )
        self._writer.flush(self._ledger.next_index)
        self._compressors.stop()
        if self._io is not None:
            self._io.stop()
        if self._owns_ring:  # every frame has left its slot: unmap beside the fsyncs
            self.ring.release_memory()
        try:
            self._writer.finish()  # shards, then the final extent (covers everything written)
            self.store.flush()
        except OSError as exc:
            self._health.fail(exc)
        write_duration = self._elapsed()
        pyramid_duration = 0.0
        if (
            pyramid
            and self._health.error is None
            and self._writer.committer.committed_rows > 0
            and self.spec.pyramid.enabled
        ):
            self._set_phase("pyramid")
            t0 = time.perf_counter()
            try:
                self._levels = build_pyramid(self.store, self.spec, progress=self._build)
            except Exception as exc:  # a failed pyramid must not lose level 0
                self._health.fail(exc)
            pyramid_duration = time.perf_counter() - t0
        self.ring.close()
        self.store.free_reserve()
        self.store.free_reserve(FINAL_RESERVE_NAME)
        if self._health.error is not None:
            state = "failed"
        elif aborted is not None:
            state = "aborted"
        else:
            state = "complete"
        summary = _summary(self, state=state, duration=self._elapsed())
        summary.created_folders = list(self.store.created_folders)
        if state == "aborted":
            summary.error = aborted
        summary.write_duration_s = write_duration
        summary.pyramid_duration_s = pyramid_duration
        if write_duration > 0:
            summary.throughput_mb_s = summary.raw_bytes / 1e6 / write_duration
            summary.frames_per_s = summary.frames_written / write_duration
        measured = self._ledger.measured()
        summary.time_increment_s = measured.get("time_increment_s")
        extra = {"summary": summary.model_dump(), MEASURED_KEY: measured}
        try:
            self.store.write_atomic(
                GROUP_METADATA,
                group_metadata(self.spec, self._levels, state=state, extra=extra),
            )
            self.store.flush()
        except OSError as exc:
            self._health.fail(exc)
            summary.state, summary.error = "failed", str(self._health.error)
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

    def _pending_bytes(self) -> int:
        """Bytes still to be written: frames waiting in slots (raw) and bytes packed into
        open shards with their indexes."""
        return self.ring.occupancy * self.layout.frame_bytes + self._writer.unwritten_bytes()

    # -- summary ----------------------------------------------------------------------------
    def _elapsed(self) -> float:
        return time.perf_counter() - self._t_open

    def _frames_in_extent(self) -> int:
        """Frames inside the committed extent that are not dropped: exactly what readers
        get (whole blocks and sealed rows alike; a failure can leave later batches
        written but outside it)."""
        rows = self._writer.committer.committed_rows
        return self._ledger.frames_in(rows * self.layout.frames_per_row)


def checked_frame(frame: Any, layout: FrameLayout) -> np.ndarray:
    """``frame`` as an array of the stream's shape and dtype (the other byte order is
    converted), or :class:`FrameError`."""
    arr = frame if isinstance(frame, np.ndarray) else np.asarray(frame)
    if arr.shape != layout.frame_shape:
        raise FrameError(
            f"frame.shape: expected {layout.frame_shape} (the stream's shape), "
            f"got {tuple(arr.shape)}; nothing was written"
        )
    if arr.dtype != layout.dtype:
        if arr.dtype.newbyteorder("=") == layout.dtype:  # the other byte order
            return arr.astype(layout.dtype)  # stored as the metadata says
        want, got = layout.dtype.name, arr.dtype.name
        if want == got:  # same name, other layout: show what differs
            want, got = layout.dtype.str, arr.dtype.str
        raise FrameError(f"frame.dtype: expected {want}, got {got}; nothing was written")
    return arr


def _summary(stream: FrameStream, *, state: str, duration: float) -> Summary:
    """What the stream did so far (``state``), as the summary model."""
    dropped, by_reason = stream._ledger.drops()
    written = stream._frames_in_extent()
    stored = stream._writer.stored_bytes
    rows = stream._writer.committer.committed_rows
    raw = written * stream.layout.frame_bytes
    return Summary(
        path=str(stream.spec.out),
        state=state,
        frames_received=stream._ledger.frames_received,
        frames_written=written,
        frames_dropped=len(dropped),
        dropped_indices=dropped,
        dropped_by_reason=by_reason,
        frames_missing=len(stream._ledger.missing),
        missing_indices=sorted(stream._ledger.missing),
        shape=list(stream.layout.array_shape(rows)),
        raw_bytes=raw,
        stored_bytes=stored,
        compression_ratio=(raw / stored) if stored else None,
        duration_s=duration,
        write_duration_s=duration,
        throughput_mb_s=raw / 1e6 / duration if duration > 0 else 0.0,
        frames_per_s=written / duration if duration > 0 else 0.0,
        ring_capacity_frames=stream.ring.capacity,
        ring_high_water_frames=stream.ring.high_water,
        ring_bytes=stream.ring.capacity * stream.layout.frame_bytes,
        frames_inline=stream._ledger.frames_inline,
        pyramid_levels=len(stream._levels),
        error=stream._health.describe(),
        **stream._ledger.latencies(),
    )


def open_stream(
    spec: StreamSpec | dict[str, Any],
    *,
    ring: FrameSlots | None = None,
    store: Store | None = None,
) -> FrameStream:
    """Validate ``spec`` and open a stream: the dataset exists (valid, empty) on return.

    ``ring``: preallocated frame slots (see :func:`acqwriter.engine.preflight.ring_for`)
    to use instead of allocating them; they must be idle (no stream using them) and are
    not freed at close. ``store``: where to write instead of a new directory at
    ``spec.out`` (any :class:`acqwriter.store.base.Store`, e.g. a
    :class:`~acqwriter.store.memory.MemoryStore`); ``spec.out`` then only names the
    dataset, and the stream takes ownership of the store's lock.

    Use as a context manager::

        with acqwriter.open_stream(spec) as stream:
            for frame in frames:
                stream.append(frame, metadata={"exposure_ms": 10})
        print(stream.summary)
    """
    return FrameStream(StreamSpec.parse(spec), ring, store)
