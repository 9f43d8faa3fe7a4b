"""A live view of an MDA's image, made before or during the run.

``MDAWriter.view(image=)`` may be called before ``run_mda`` (a viewer is set up first)
and its images are made only when their first frame comes, so the view is a stand-in:
until its image exists it is empty (shape 0 along every axis, ``tyx``, uint16); from
then on it is that image's :class:`~acqwriter.engine.view.ImageView`, and its
``coords_changed`` says so. A later run of the same writer rebinds it to that run's
image of the same key.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

import numpy as np
from psygnal import Signal

if TYPE_CHECKING:
    from acqwriter.engine.view import ImageView
    from acqwriter.mda.writer import MDAWriter

__all__ = ["MDAView", "ViewSink"]


class MDAView:
    """An image of the writer's current run, once it exists (see the module docstring)."""

    coords_changed = Signal()

    def __init__(self, writer: MDAWriter, image: str | None) -> None:
        self._writer = writer
        self._key = image
        self._target: ImageView | None = None
        self._dataset: Any = None
        self._lock = threading.Lock()
        self.bind()

    def bind(self) -> None:
        """Follow the current run's image when it exists (the writer calls this when it
        opens a dataset or adds an image)."""
        dataset = self._writer.dataset
        if dataset is None:
            return
        key = self._key if self._key is not None else next(iter(dataset.images), None)
        with self._lock:
            if key is None or key not in dataset.images:
                return
            if self._dataset is dataset and self._target is not None:
                return
            target = dataset.view(key)  # its first signal comes from the views' thread
            # a plain method: psygnal emits once at once when given another signal's emit
            target.coords_changed.connect(self._forward)
            self._target, self._dataset = target, dataset

    def _forward(self) -> None:
        self.coords_changed.emit()

    @property
    def image(self) -> ImageView | None:
        """The image view this stands for, or None before its image exists."""
        return self._target

    @property
    def dims(self) -> tuple[str, ...]:
        return self._target.dims if self._target is not None else ("t", "y", "x")

    @property
    def dtype(self) -> np.dtype:
        return self._target.dtype if self._target is not None else np.dtype("uint16")

    @property
    def shape(self) -> tuple[int, ...]:
        return self._target.shape if self._target is not None else (0, 0, 0)

    @property
    def ndim(self) -> int:
        return len(self.dims)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: Any) -> np.ndarray:
        if self._target is None:
            return np.empty((0, 0, 0), np.uint16)[key]
        return self._target[key]

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        out = self[...]
        return out.astype(dtype) if dtype is not None else out

    def __repr__(self) -> str:
        return f"MDAView(image={self._key!r}, shape={self.shape})"


class ViewSink:
    """What ``mmc.mda.get_view()`` returns a view from (pymmcore-gui shows the view it
    gets there): a stand-in for pymmcore-plus's own data sink when a run has none. It
    writes nothing (frames reach :class:`~acqwriter.mda.writer.MDAWriter` as a
    handler); it only answers ``get_view``."""

    def __init__(self, view: MDAView) -> None:
        self.view = view

    def setup(self, sequence: Any, meta: Any) -> None:
        pass

    def append(self, img: Any, event: Any, meta: Any) -> None:
        pass

    def skip(self, *, frames: int = 1) -> None:
        pass

    def close(self) -> None:
        pass

    def get_view(self) -> MDAView:
        return self.view
