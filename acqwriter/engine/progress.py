"""Progress while a dataset closes, and the summary's timing figures.

Closing flushes, commits and builds levels on the closing thread; a caller that shows
progress (the CLI's bar, the daemon's status) gets a snapshot every ``interval_s`` from
:class:`CloseTicker`'s own thread, and one last when closing ends.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from acqwriter.format.summary import Summary

__all__ = ["CloseTicker", "finish_summary"]


class CloseTicker:
    """Calls ``on_progress(progress())`` every ``interval_s`` on its own thread while a
    dataset closes (the closing thread is busy flushing and building levels)."""

    def __init__(
        self,
        progress: Callable[[], dict[str, Any]],
        on_progress: Callable[[dict[str, Any]], None],
        interval_s: float,
    ) -> None:
        self._progress = progress
        self._on_progress = on_progress
        self._interval_s = interval_s
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="acqwriter-close-progress")
        self._thread.daemon = True
        self._thread.start()

    def _run(self) -> None:
        while not self._done.wait(self._interval_s):
            self._on_progress(self._progress())

    def stop(self) -> None:
        self._done.set()
        self._thread.join()
        self._on_progress(self._progress())


def finish_summary(
    summary: Summary, write_duration: float, pyramid_duration: float, aborted: str | None
) -> None:
    """Fill in what only the end knows: the abort reason, durations and rates (over the
    time frames were written, the pyramid apart)."""
    if summary.state == "aborted":
        summary.error = aborted
    summary.write_duration_s = write_duration
    summary.pyramid_duration_s = pyramid_duration
    if write_duration > 0:
        summary.throughput_mb_s = summary.raw_bytes / 1e6 / write_duration
        summary.frames_per_s = summary.frames_written / write_duration
