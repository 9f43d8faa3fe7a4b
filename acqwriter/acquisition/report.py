"""The account of one acquisition run: what was asked, delivered and written, and
whether that is everything (:attr:`AcquisitionReport.ok`) or why not."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from acqwriter.format.summary import Summary

__all__ = ["AcquisitionReport"]


@dataclass
class AcquisitionReport:
    summary: Summary
    frames_requested: int | None
    frames_delivered: int
    lost_camera_frames: list[int] = field(default_factory=list)
    error: str | None = None
    stopped: bool = False  # ended early on request (stop or duration), not by a fault
    allow_partial: bool = False  # an incomplete last time point was asked for

    @property
    def ok(self) -> bool:
        """Every requested frame was delivered and written; nothing failed; no time
        point is left incomplete unless that was asked for (a stop, ``allow_partial``)."""
        complete = (
            self.stopped
            or self.frames_requested is None
            or self.summary.frames_written == self.frames_requested
        )
        return self.error is None and self.summary.ok and complete and not self._missing_unasked

    @property
    def _missing_unasked(self) -> bool:
        return bool(self.summary.frames_missing) and not (self.stopped or self.allow_partial)

    def reason(self) -> str | None:
        """Why the acquisition is not ok (None when it is)."""
        if self.error:
            return self.error
        if self.summary.error:
            return self.summary.error
        if self.summary.frames_dropped:
            return (
                f"{self.summary.frames_dropped} frame(s) dropped: {self.summary.dropped_by_reason}"
            )
        if self._missing_unasked:
            return (
                f"the last time point is incomplete: {self.summary.frames_missing} frame(s) "
                "missing (flagged in the per-frame metadata)"
            )
        if (
            not self.stopped
            and self.frames_requested is not None
            and self.summary.frames_written != self.frames_requested
        ):
            return f"{self.summary.frames_written} of {self.frames_requested} frames written"
        if (
            self.stopped
            and self.frames_requested is not None
            and self.summary.frames_written < self.frames_requested
        ):  # ok (it was asked for), but say why the dataset is shorter
            return (
                f"stopped on request after {self.summary.frames_written} of "
                f"{self.frames_requested} frames"
            )
        return None

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "reason": self.reason(),
            "frames_requested": self.frames_requested,
            "frames_delivered": self.frames_delivered,
            "lost_camera_frames": self.lost_camera_frames,
            "stopped": self.stopped,
            "summary": self.summary.model_dump(),
        }
