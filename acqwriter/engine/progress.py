"""Progress while a dataset closes, and the summary's timing figures.

Closing flushes, commits and builds levels on the closing thread; a caller that shows
progress (the CLI's bar, the daemon's status) gets a snapshot every ``interval_s`` from
:class:`CloseTicker`'s own thread, and one last when closing ends.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any

from acqwriter.engine.image import ImageWriter
from acqwriter.engine.slots import FrameSlots
from acqwriter.format.summary import Summary

__all__ = ["CloseTicker", "finish_summary", "progress_snapshot"]


def progress_snapshot(
    images: Mapping[str, ImageWriter],
    slots: FrameSlots,
    *,
    phase: str,
    elapsed: float,
    error: BaseException | None,
    per_image: bool,
    building: dict[str, Any],
) -> dict[str, Any]:
    """A cheap live snapshot of a dataset for progress bars and status replies
    (``per_image``: the frames each image holds, for displays per position)."""
    written_by = {
        key: max(i.writer.committer.frames_written, i.frames_in_extent())
        for key, i in images.items()
    }
    values = list(images.values())
    # frames each level holds on disk, summed over images (live levels grow with level 0)
    by_level: list[int] = []
    for key, image in images.items():
        for k, array in enumerate(image.arrays()):
            if k == len(by_level):
                by_level.append(0)
            by_level[k] += written_by[key] if k == 0 else array.committer.frames_written
    raw = sum(written_by[key] * i.layout.frame_bytes for key, i in images.items())
    return {
        "phase": phase,
        **building,
        "frames_appended": sum(i.ledger.next_index for i in values),
        "frames_received": sum(i.ledger.frames_received for i in values),
        "frames_written": sum(written_by.values()),
        "frames_dropped": sum(i.ledger.dropped_count for i in values),
        "rows_committed": min(i.writer.committer.committed_rows for i in values),
        "ring_occupancy": slots.occupancy,
        "ring_capacity": slots.capacity,
        "ring_high_water": slots.high_water,
        "frames_inline": sum(i.ledger.frames_inline for i in values),
        "pyramid_level_frames": by_level,
        "mb_per_s": raw / 1e6 / elapsed if elapsed > 0 else 0.0,
        "elapsed_s": elapsed,
        "error": None if error is None else str(error),
        **({"images": written_by} if per_image else {}),
    }


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
