"""A window on a dataset, finished or still growing: ``acqwriter view`` and ``ctl view``.

The window is ndv's ``ArrayViewer`` (the viewer pymmcore-gui uses) on an
:class:`~acqwriter.viewer.follow.ImageOnDisk`, inside a Qt window that adds what a
running acquisition needs: a picker of the images of a plate or collection, and a
status line saying what the writer is doing. Channels are shown in their colours and
display windows and axes at their physical scale. A timer re-reads the array's metadata
every ``interval_s`` (at least 0.05 s: a bounded rate; sooner when ``wake`` is set, e.g.
by the daemon's progress events): when the committed extent grew the viewer is told,
and it moves to the newest time point unless the user moved the slider away from the
last one. Nothing here takes the writer's lock or writes a byte; closing the window
changes nothing for the writer.

ndv and a Qt binding are the ``view`` extra: :func:`missing_extra` says in one line what
to install when they are not there.
"""

from __future__ import annotations

import importlib.util
import threading
from pathlib import Path
from typing import Any

from acqwriter.viewer.follow import ImageOnDisk, open_image

__all__ = ["missing_extra", "show"]

STATES = {
    "acquiring": "acquiring: following the committed extent",
    "gone": "the writer stopped without finishing (killed?): this is what is on disk",
    "complete": "complete",
    "aborted": "aborted: what was acquired",
    "failed": "failed: what reached the disk",
    "recovered": "recovered after a crash",
}


def missing_extra() -> str | None:
    """One line saying what to install when the viewer cannot run, else None."""
    for module in ("ndv", "qtpy", "vispy"):
        if importlib.util.find_spec(module) is None:
            return (
                f'the viewer needs {module}, which is not installed: pip install "acqwriter[view]"'
            )
    return None


def show(
    path: str | Path,
    image: str | None = None,
    *,
    interval_s: float = 0.2,
    wake: threading.Event | None = None,
    title: str | None = None,
) -> int:
    """Open the window and run until it is closed; returns an exit status."""
    from qtpy import QtCore, QtWidgets

    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication([])
    window = _Window(Path(path), image, title)
    window.show()
    timer = QtCore.QTimer()
    wake = wake or threading.Event()
    ticks = [0]

    def tick() -> None:
        ticks[0] += 1
        if wake.is_set() or ticks[0] % max(1, round(interval_s / 0.05)) == 0:
            wake.clear()
            window.follow()

    timer.setInterval(50)
    timer.timeout.connect(tick)
    timer.start()
    app.exec()
    timer.stop()
    return 0


class _Window:
    """The Qt window: picker, status line and the ndv viewer (see the module docstring)."""

    def __init__(self, path: Path, image: str | None, title: str | None) -> None:
        from qtpy import QtWidgets

        self.path = path
        self.title = title or str(path)
        self.image = open_image(path, image)
        self.widget = QtWidgets.QWidget()
        layout = QtWidgets.QVBoxLayout(self.widget)
        self.picker = QtWidgets.QComboBox()
        self.picker.addItems(self.image.images)
        self.picker.setVisible(bool(self.image.images))
        if self.image.images:
            self.picker.setCurrentText(self.image.key)
        self.picker.currentTextChanged.connect(self._pick)
        self.status = QtWidgets.QLabel()
        layout.addWidget(self.picker)
        layout.addWidget(self.status)
        self.viewer = self._viewer(self.image)
        self._canvas = self.viewer.widget()
        layout.addWidget(self._canvas, stretch=1)
        self.widget.resize(900, 800)
        self._last_t = self._newest_t()
        self._say()

    def show(self) -> None:
        self.widget.show()

    def _viewer(self, image: ImageOnDisk) -> Any:
        import ndv

        kwargs: dict[str, Any] = {"scales": dict(zip(image.dims, image.scale, strict=True))}
        if "c" in image.dims and image.channels:
            kwargs["channel_axis"] = "c"
            kwargs["channel_mode"] = "composite"
            kwargs["luts"] = {
                i: _lut(channel.color, _window(channel.window, image.dtype))
                for i, channel in enumerate(image.channels)
            }
        elif image.channels:
            first = image.channels[0]
            kwargs["default_lut"] = _lut(first.color, _window(first.window, image.dtype))
        if "t" in image.dims and image.shape[0]:
            kwargs["current_index"] = {"t": image.shape[0] - 1}
        return ndv.ArrayViewer(image, **kwargs)

    def _pick(self, key: str) -> None:
        """Show another image of the plate or collection."""
        try:
            image = open_image(self.path, key)
        except (ValueError, OSError) as exc:
            self.status.setText(f"cannot open {key}: {exc}")
            return
        self.image = image
        self.viewer.data = image
        self._last_t = self._newest_t()
        self._go_to(self._last_t)
        self._say()

    def _newest_t(self) -> int:
        return max(0, self.image.shape[0] - 1) if "t" in self.image.dims else 0

    def _current_t(self) -> int | None:
        index = self.viewer.display_model.current_index
        value = index.get("t", index.get(0))
        return value if isinstance(value, int) else None

    def _go_to(self, t: int) -> None:
        if "t" in self.image.dims:
            self.viewer.display_model.current_index["t"] = t

    def follow(self) -> None:
        """Read the extent again; when it grew, show it and keep to the newest time
        point unless the user moved away from it."""
        try:
            grew = self.image.refresh()
        except (OSError, ValueError):
            return  # a document being replaced: the next round reads it
        if grew:
            following = self._current_t() in (None, self._last_t)
            wrapper = self.viewer.data_wrapper
            wrapper.dims_changed.emit()
            newest = self._newest_t()
            if following:
                self._go_to(newest)
            wrapper.data_changed.emit()
            self._last_t = newest
        self._say()

    def _say(self) -> None:
        try:
            state = self.image.writer_state()
        except (OSError, ValueError):
            state = "unknown"
        shape = "×".join(str(n) for n in self.image.shape)
        where = f"{self.image.key}, level {self.image.level}" if self.image.images else ""
        text = f"{STATES.get(state, state)} — {shape} {self.image.dtype} {where}".strip()
        self.status.setText(text)
        self.widget.setWindowTitle(f"{self.title} — {state}")


def _window(window: tuple[float, float] | None, dtype: Any) -> tuple[float, float] | None:
    """The display window to keep, or None to let the viewer scale to the data: the
    whole range of the dtype is what a dataset says before anything was measured."""
    import numpy as np

    if window is None or np.dtype(dtype).kind == "f":
        return window
    info = np.iinfo(dtype)
    return None if window == (float(info.min), float(info.max)) else window


def _lut(color: str, window: tuple[float, float] | None) -> dict[str, Any]:
    lut: dict[str, Any] = {"cmap": _colormap(color)}
    if window is not None and window[1] > window[0]:
        lut["clims"] = window
    return lut


def _colormap(color: str) -> Any:
    """A black-to-``color`` colormap (``color``: omero's hex RGB)."""
    from cmap import Colormap

    text = color.lstrip("#")
    if text.upper() == "FFFFFF":
        return Colormap("gray")
    return Colormap(["#000000", f"#{text}"])
