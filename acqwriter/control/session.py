"""One acquisition run by the daemon: its thread, its stop and abort requests, its last
progress and the warnings that progress calls for. The server loop owns it; its thread
runs the acquisition and reports to the loop through a queue, never by touching the
sockets."""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass, field
from typing import Any

from acqwriter.acquisition.spec import AcquisitionSpec

__all__ = ["DISK_LOW_BYTES", "RING_HIGH_WATER", "Session"]

RING_HIGH_WATER = 0.8  # warn when the ring is this full
DISK_LOW_BYTES = 2 * 2**30  # warn below this much free space


@dataclass
class Session:
    """One running acquisition (owned by the server loop, run by its own thread)."""

    spec: AcquisitionSpec
    stop: threading.Event = field(default_factory=threading.Event)
    abort: threading.Event = field(default_factory=threading.Event)
    progress: dict[str, Any] | None = None
    report: Any = None
    error: str | None = None
    thread: threading.Thread | None = None
    warned_ring: bool = False
    warned_disk: bool = False
    drops_reported: int = 0

    def warnings(self, snap: dict[str, Any]) -> list[dict[str, Any]]:
        """The warnings a progress snapshot calls for, each once (ring nearly full, disk
        low) or for each new batch of dropped frames."""
        out = []
        capacity = snap.get("ring_capacity") or 1
        if not self.warned_ring and snap.get("ring_occupancy", 0) >= RING_HIGH_WATER * capacity:
            self.warned_ring = True
            message = f"ring {snap['ring_occupancy']}/{capacity} frames full"
            out.append({"kind": "ring_high_water", "message": message})
        free = snap.get("disk_free_bytes")
        if free is not None and free < DISK_LOW_BYTES and not self.warned_disk:
            self.warned_disk = True
            out.append({"kind": "disk_low", "message": f"{free / 1e9:.2f} GB free"})
        drops = snap.get("frames_dropped", 0)
        if drops > self.drops_reported:
            message = f"{drops - self.drops_reported} frame(s) dropped"
            out.append({"kind": "dropped_frames", "message": message, "total": drops})
            self.drops_reported = drops
        return out

    def run(self, scope: Any, inbox: queue.SimpleQueue[Any]) -> None:
        """The acquisition thread: run it, report phases and the end through ``inbox``."""
        from acqwriter.acquisition.runner import run_acquisition

        def progress(snapshot: dict[str, Any]) -> None:
            previous = self.progress
            self.progress = snapshot
            if previous is None or (
                (previous.get("phase"), previous.get("pyramid_level"))
                != (snapshot.get("phase"), snapshot.get("pyramid_level"))
            ):  # a new phase or level is published at once, not at the next tick
                inbox.put(("progress", self, snapshot))

        try:
            self.report = run_acquisition(
                scope,
                self.spec,
                on_progress=progress,
                progress_interval_s=0.1,
                should_stop=self.stop.is_set,
                should_abort=self.abort.is_set,
                on_finalizing=lambda: inbox.put(("finalizing", self)),
            )
        except Exception as exc:
            self.error = f"{type(exc).__name__}: {exc}"
        inbox.put(("done", self))
