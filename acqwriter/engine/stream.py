"""The stream: frames in, a growing OME-Zarr dataset out.

Data flow::

    append(frame) ──copy once──▶ frame slot (engine.slots) ──▶ chunk batch
    (engine.assembly) ──complete──▶ compressor threads (engine.workers): assemble the
    tile, compress, write the chunk or pack it into its shard (engine.shards), or hand
    big encoded chunks to the I/O threads ──▶ store (acqwriter.store) ──▶ extent
    committer (engine.commit): per-frame metadata lines, then the array's larger extent
    ──▶ close: pad partial chunks, final extent, flush, pyramid (post.pyramid), summary.

:class:`FrameStream` is the facade of a one-image dataset with the public API of
:func:`open_stream`: a :class:`~acqwriter.engine.dataset.DatasetWriter` whose one image
(engine.image) sits at the root and takes frames in index order. Each part owns its
state and its lock; they talk by method calls.

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

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from acqwriter.codec.blosc import EncoderFactory
from acqwriter.engine.dataset import DatasetWriter
from acqwriter.engine.errors import FrameError, StreamError
from acqwriter.engine.slots import FrameSlots
from acqwriter.engine.view import ImageView
from acqwriter.engine.workers import EncodedBuffers
from acqwriter.format.summary import Summary
from acqwriter.plan.dataset import DatasetPlan
from acqwriter.spec.model import StreamSpec
from acqwriter.store.base import Store

__all__ = ["FrameError", "FrameStream", "StreamError", "open_stream"]


class FrameStream:
    """One acquisition being written. Create with :func:`open_stream`."""

    def __init__(
        self,
        spec: StreamSpec,
        slots: FrameSlots | None = None,
        store: Store | None = None,
        encoder: EncoderFactory | None = None,
    ) -> None:
        self.spec = spec
        self._t_open = time.perf_counter()
        plan = DatasetPlan.of_stream(spec)
        self._dataset = DatasetWriter(plan, slots=slots, store=store, encoder=encoder)
        self._image = self._dataset.images["image"]
        self.plan = self._dataset.plan  # what was decided: printable (describe())
        self.layout = self._image.layout
        self.store = self._dataset.store
        self.slots = self.ring = self._dataset.slots  # ``ring``: the public API's word

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
        return self._dataset.summary

    @property
    def frames_appended(self) -> int:
        return self._image.ledger.next_index

    @property
    def closed(self) -> bool:
        return self._dataset.closed

    @property
    def error(self) -> BaseException | None:
        return self._dataset.pipeline.health.error

    @property
    def encoded_buffers(self) -> EncodedBuffers | None:
        """The pool between compressors and I/O threads (None: chunks are written by
        the compressors themselves)."""
        return self._dataset.pipeline.encoded

    def view(self) -> ImageView:
        """A live, read-only array view of the image that grows as frames arrive
        (:mod:`acqwriter.engine.view`)."""
        return self._dataset.view()

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
        return self._dataset.append(frame, metadata=metadata, taken_s=taken_s)

    def skip(
        self, count: int = 1, reason: str = "camera", metadata: dict[str, Any] | None = None
    ) -> list[int]:
        """Record ``count`` frames the source lost (e.g. a camera gap); returns their indices.

        They take their place in the array (fill value) and are flagged as dropped.
        """
        return self._dataset.skip(count, reason, metadata)

    def progress(self) -> dict[str, Any]:
        """A cheap live snapshot for progress bars and status replies."""
        return self._dataset.progress()

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
        return self._dataset.close(
            pyramid=pyramid,
            aborted=aborted,
            on_progress=on_progress,
            progress_interval_s=progress_interval_s,
        )


def open_stream(
    spec: StreamSpec | dict[str, Any],
    *,
    slots: FrameSlots | None = None,
    ring: FrameSlots | None = None,
    store: Store | None = None,
    encoder: EncoderFactory | None = None,
) -> FrameStream:
    """Validate ``spec`` and open a stream: the dataset exists (valid, empty) on return.

    ``slots`` (or ``ring``, the same): preallocated frame slots (see
    :func:`acqwriter.engine.preflight.preallocate_slots`) to use instead of allocating
    them; they must be idle (no stream using them) and are not freed at close.
    ``store``: where to write instead of a new directory at ``spec.out`` (any
    :class:`acqwriter.store.base.Store`, e.g. a :class:`~acqwriter.store.memory.MemoryStore`);
    ``spec.out`` then only names the dataset, and the stream takes ownership of the
    store's lock. ``encoder``: what compresses each chunk, given the codec and dtype
    (default :class:`~acqwriter.codec.blosc.IntoEncoder`; a subclass instruments it).

    Use as a context manager::

        with acqwriter.open_stream(spec) as stream:
            for frame in frames:
                stream.append(frame, metadata={"exposure_ms": 10})
        print(stream.summary)
    """
    given = slots if slots is not None else ring
    return FrameStream(StreamSpec.parse(spec), given, store, encoder)
