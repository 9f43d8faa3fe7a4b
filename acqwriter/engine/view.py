"""A live, read-only array view of one image while it is written.

:class:`ImageView` is what ``FrameStream.view()``, ``DatasetWriter.view(image=)`` and
``MDAWriter.view()`` return: an array-like with ``shape``, ``dtype``, ``ndim``, ``dims``
and numpy indexing (integers and slices, ``step`` included), whose shape grows along
the image's unbounded first axis as frames arrive. It has the shape of pymmcore-plus's
``SinkView`` and ome-writers' ``StreamView``, so ``ndv.ArrayViewer(view)`` and
pymmcore-gui's viewer code take it unchanged, and its ``coords_changed`` signal (psygnal)
says the shape grew or frames arrived.

Where a frame's pixels come from, in order: the view's cache of the newest frames (a
compressor thread copies a frame from its slot before compressing it, at most
:data:`CACHE_RATE_HZ` times a second, into ``VIEW_CACHE_FRAMES`` buffers per viewed image:
the plan's ``view_cache`` budget); else the dataset on disk, inside the committed extent
(what every reader sees); else the fill value (not received yet, dropped, or not yet on
disk). A frame a producer compressed on its own thread is not copied there (the
acquisition thread copies nothing for a view): it shows once committed.

Signals: one thread per dataset (:class:`ViewNotifier`, started with the first view)
compares, at most :data:`CACHE_RATE_HZ` times a second, what each view can show and emits
``coords_changed`` when it changed: never on the acquisition thread, coalesced, and a
slot that raises or sleeps delays only this thread (its error is logged once).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

import numpy as np
from psygnal import Signal

from acqwriter.codec.chain import chunk_encoder
from acqwriter.plan.dataset import VIEW_CACHE_FRAMES
from acqwriter.post.reader import LevelReader, normalize_index

if TYPE_CHECKING:
    from acqwriter.engine.image import ImageWriter

__all__ = [
    "CACHE_RATE_HZ",
    "FrameCache",
    "ImageView",
    "ViewNotifier",
]

CACHE_RATE_HZ = 30.0  # most copies into the cache, and most signals, per second
_log = logging.getLogger("acqwriter")


class FrameCache:
    """The newest frames of one image, copied off the acquisition thread (see the module
    docstring). ``offer`` is called by compressor threads; ``get`` by readers."""

    def __init__(self, frame_shape: tuple[int, int], dtype: np.dtype) -> None:
        self._buffers = [np.empty(frame_shape, dtype) for _ in range(VIEW_CACHE_FRAMES)]
        self._frames: OrderedDict[int, np.ndarray] = OrderedDict()  # index -> buffer
        self._lock = threading.Lock()
        self._interval = 1.0 / CACHE_RATE_HZ
        self._last_copy = 0.0
        self.newest = -1  # the newest frame index held

    def offer(self, index: int, frame: np.ndarray) -> None:
        """Keep a copy of frame ``index`` when it is newer than what is held and the
        last copy is at least an interval old."""
        now = time.monotonic()
        if index <= self.newest or now - self._last_copy < self._interval:
            return
        with self._lock:
            if len(self._frames) < len(self._buffers):
                buf = self._buffers[len(self._frames)]
            else:
                _, buf = self._frames.popitem(last=False)  # the oldest goes
            np.copyto(buf, frame)
            self._frames[index] = buf
            self.newest = index
            self._last_copy = now

    def get(self, index: int, yx: tuple[slice, slice]) -> np.ndarray | None:
        """A copy of region ``yx`` of frame ``index`` when held, else None."""
        with self._lock:
            buf = self._frames.get(index)
            return None if buf is None else buf[yx].copy()


class ImageView:
    """A live view of one image (see the module docstring). Make one with ``view()``."""

    coords_changed = Signal()

    def __init__(self, image: ImageWriter, notifier: ViewNotifier) -> None:
        self._image = image
        layout = image.layout
        self._layout = layout
        self.dims: tuple[str, ...] = tuple(image.spec.dims)
        self.dtype = layout.dtype
        self._fill = 0  # the arrays' fill value
        if image.writer.cache is None:
            image.writer.cache = FrameCache(layout.frame_shape, layout.dtype)
        self._cache = image.writer.cache
        self._reader: LevelReader | None = None
        self._reader_lock = threading.Lock()
        self._seen: tuple[int, ...] = ()
        notifier.add(self)

    # -- the array-like --------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, ...]:
        """The image's shape now: along the first axis, the rows that hold a frame this
        view can show (committed on disk, or cached); the other axes as planned."""
        layout = self._layout
        rows = self._rows()
        return (rows, *(s or 1 for s in layout.outer_sizes[1:]), *layout.frame_shape)

    @property
    def ndim(self) -> int:
        return len(self.dims)

    @property
    def coords(self) -> dict[str, range]:
        return {d: range(n) for d, n in zip(self.dims, self.shape, strict=True)}

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return f"ImageView(dims={''.join(self.dims)}, shape={self.shape}, dtype={self.dtype})"

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        out = self[...]
        return out.astype(dtype) if dtype is not None else out

    def __getitem__(self, key: Any) -> np.ndarray:
        """Numpy semantics over the current shape: integers drop their axis, slices keep
        it (with steps); frames not on disk nor cached read as the fill value."""
        shape = self.shape
        index = normalize_index(key, shape)
        kept = tuple(slice(k, k + 1) if isinstance(k, int) else k for k in index)
        picks = [range(*k.indices(n)) for k, n in zip(kept, shape, strict=True)]
        out = np.full([len(p) for p in picks], self._fill, self.dtype)
        committed = self._image.writer.committer.committed_rows
        rows = picks[0]
        on_disk = [i for i, row in enumerate(rows) if row < committed]
        if on_disk:  # one read of the rows on disk: each chunk decoded once
            lo = min(rows[i] for i in on_disk)
            hi = max(rows[i] for i in on_disk) + 1
            block = self._read(committed, (slice(lo, hi), *kept[1:]))
            out[on_disk] = block[[rows[i] - lo for i in on_disk]]
        yx = kept[-2:]
        outer = picks[1:-2]
        for i, row in enumerate(rows):
            if row < committed:
                continue
            for position in np.ndindex(*(len(p) for p in outer)):
                coords = (row, *(p[j] for p, j in zip(outer, position, strict=True)))
                frame = self._cache.get(_flat(coords, self._layout.outer_sizes), yx)
                if frame is not None:  # else not received, or not on disk yet: fill
                    out[(i, *position)] = frame
        return out[tuple(0 if isinstance(k, int) else slice(None) for k in index)]

    # -- where frames come from -------------------------------------------------------------
    def _rows(self) -> int:
        layout = self._layout
        committed = self._image.writer.committer.committed_rows
        newest = self._cache.newest
        cached = layout.coords(newest)[0] + 1 if newest >= 0 else 0
        return max(committed, cached)

    def _committed_frames(self) -> int:
        return self._image.writer.committer.committed_rows * self._layout.frames_per_row

    def _read(self, rows: int, key: tuple[slice, ...]) -> np.ndarray:
        """``key`` of level 0 on disk, its extent at ``rows`` (what is committed)."""
        with self._reader_lock:
            if self._reader is None:
                decoder = chunk_encoder(self._image.spec.codec)
                self._reader = LevelReader(self._image.store, "0", decoder)
            self._reader.shape = self._image.layout.array_shape(rows)
            return self._reader.select(key)

    # -- signals (the notifier's thread) ------------------------------------------------------
    def _changed(self) -> bool:
        seen = (self._rows(), self._cache.newest, self._committed_frames())
        if seen == self._seen:
            return False
        self._seen = seen
        return True


class ViewNotifier:
    """The thread that emits every view's ``coords_changed`` of one dataset (see the
    module docstring); stopped at close, after a last round."""

    def __init__(self, *, stopped: bool = False) -> None:
        self._views: list[ImageView] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        if stopped:  # for views made after close: their dataset changes no more
            self._stop.set()
        self._thread: threading.Thread | None = None
        self._failed: set[int] = set()

    def add(self, view: ImageView) -> None:
        """Signal ``view``'s changes from now on (a view made after close has nothing
        left to signal: no thread is started for it)."""
        with self._lock:
            self._views.append(view)
            if self._thread is None and not self._stop.is_set():
                self._thread = threading.Thread(
                    target=self._run, name="acqwriter-view", daemon=True
                )
                self._thread.start()

    def _run(self) -> None:
        interval = 1.0 / CACHE_RATE_HZ
        while not self._stop.wait(interval):
            self._round()
        self._round()  # what the close added

    def _round(self) -> None:
        with self._lock:
            views = list(self._views)
        for view in views:
            if not view._changed():
                continue
            try:
                view.coords_changed.emit()
            except Exception as exc:  # a viewer's error must not stop the others
                if id(view) not in self._failed:
                    self._failed.add(id(view))
                    _log.error("acqwriter view: a coords_changed slot failed: %s", exc)

    def stop(self) -> None:
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)


def _flat(coords: tuple[int, ...], sizes: tuple[int | None, ...]) -> int:
    """The frame index of ``coords`` (C order, the first axis unbounded)."""
    index = 0
    for c, n in zip(coords, sizes, strict=True):
        index = index * (n or 1) + c
    return index
