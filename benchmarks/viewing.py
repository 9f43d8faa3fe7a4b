"""A stand-in for a viewer on a live view, for the benchmarks: what ndv does when the
view says it changed (``coords_changed``): read the newest frame, at most 30 times a
second, on a thread of its own (a GUI thread)."""

from __future__ import annotations

import threading
from typing import Any


class Refresher:
    """Reads ``view``'s newest frame whenever it changed, at most ``hz`` times a second."""

    def __init__(self, view: Any, hz: float = 30.0) -> None:
        self.view = view
        self.reads = 0
        self._changed = threading.Event()
        self._stop = threading.Event()
        view.coords_changed.connect(self._changed.set)
        self._thread = threading.Thread(target=self._run, args=(1.0 / hz,), daemon=True)
        self._thread.start()

    def _run(self, interval: float) -> None:
        while not self._stop.wait(interval):
            if not self._changed.is_set():
                continue
            self._changed.clear()
            shape = self.view.shape
            if shape and shape[0]:
                self.view[(shape[0] - 1,) + (0,) * (len(shape) - 3)]
                self.reads += 1

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
