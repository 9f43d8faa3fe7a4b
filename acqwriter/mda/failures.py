"""What an MDA run's failures leave behind: frames delivered and not taken, counted by
image and index in the summary, and the engine's own error, found for the summary.

pymmcore-plus neither raises a handler's error nor offers the runner's exception to a
handler: :func:`runner_error` reads it from the runner's frame and
:class:`ErrorRecords` keeps the last error pymmcore-plus logs.
"""

from __future__ import annotations

import logging
import sys

from acqwriter.format.summary import Summary

__all__ = ["ErrorRecords", "count_not_taken", "one_line", "runner_error"]


def count_not_taken(summary: Summary, frames: list[tuple[str, int | None]]) -> None:
    """Add the frames delivered after the dataset stopped to ``summary``'s drops, by
    image and index (reason ``writer stopped``)."""
    reason = "writer stopped"
    parts = getattr(summary, "images", None) or {}
    for key, flat in frames:
        part = parts.get(key)
        for target in (summary, part) if part is not None else (summary,):
            target.frames_received += 1
            target.frames_dropped += 1
            target.dropped_by_reason[reason] = target.dropped_by_reason.get(reason, 0) + 1
        if flat is not None:
            (part or summary).dropped_indices.append(flat)


def runner_error() -> str | None:
    """The exception pymmcore-plus's runner is about to raise, when ``sequenceFinished``
    is emitted from inside its ``run`` (a handler connected to the core): the runner
    keeps it in a local until the signals are sent and offers no other way to read it.
    None when it cannot be found (a relayed call: the runner's log then says it)."""
    frame = sys._getframe(1)
    while frame is not None:
        error = frame.f_locals.get("error") if frame.f_code.co_name == "run" else None
        if isinstance(error, BaseException) and "mda" in frame.f_code.co_filename:
            return one_line(error)
        frame = frame.f_back  # type: ignore[assignment]
    return None


class ErrorRecords(logging.Handler):
    """The last error pymmcore-plus logs during a run (an engine's failure)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.last: str | None = None

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            text = one_line(record.exc_info[1])
        self.last = text.strip().splitlines()[-1][:300] if text.strip() else self.last

    def clear(self) -> None:
        self.last = None


def one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[-1] if text else ''}"[:300]
