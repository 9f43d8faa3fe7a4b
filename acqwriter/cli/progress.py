"""Progress bars on stderr, fed by the stream's progress snapshots, one per phase.

Used by ``acqwriter acquire``, ``pyramid``, ``recover`` and ``ctl watch`` (which feeds it
the daemon's progress events, the same snapshots).
"""

from __future__ import annotations

from typing import Any

__all__ = ["ProgressDisplay"]


class ProgressDisplay:
    """Rich progress bars fed by the stream's progress snapshots, one per phase.

    ``acquiring`` (frames written of those requested, or time of the duration), then
    ``flushing`` (the backlog written and the extent committed) and ``pyramid level k/n``
    (that level's chunks, with its own rate), then ``done``: closing a dataset can take as
    long as the acquisition, and a bar frozen at 421/500 looks hung."""

    def __init__(self, total_frames: int | None, duration: float | None, quiet: bool) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        self.console = Console(stderr=True)
        self.total_frames = total_frames
        self.duration = duration
        self.progress = None
        self.phase = "acquiring"
        self.level = 0
        if quiet:
            return
        self.progress = Progress(
            TextColumn("[bold]{task.description:<16}"),
            BarColumn(),
            TextColumn("{task.fields[count]}"),
            TextColumn("{task.fields[rate]:>8.1f} MB/s"),
            TextColumn("{task.fields[detail]}"),
            TimeElapsedColumn(),
            console=self.console,
            transient=False,
        )
        total = total_frames if total_frames is not None else duration
        self.task = self.progress.add_task(
            "acquiring", total=total, count="0", rate=0.0, detail="ring 0/0 drops 0"
        )
        self.progress.start()

    def update(self, snap: dict[str, Any]) -> None:
        if self.progress is None:
            return
        phase = snap.get("phase", "acquiring")
        written = snap["frames_written"]
        frames = f"{written}/{self.total_frames}" if self.total_frames else f"{written} frames"
        if phase == "acquiring":
            done = (
                written
                if self.total_frames is not None
                else min(snap["elapsed_s"], self.duration or 0)
            )
            self.progress.update(
                self.task,
                completed=done,
                count=frames,
                rate=snap["mb_per_s"],
                detail=f"ring {snap['ring_occupancy']}/{snap['ring_capacity']} "
                f"drops {snap['frames_dropped']}",
            )
            return
        if self.phase == "acquiring":  # the acquisition is over: its bar ends as it ended
            self.progress.update(
                self.task,
                count=frames,
                completed=written,
                total=written or 1,
                rate=snap["mb_per_s"],
            )
            self.task = self.progress.add_task(
                "flushing", total=None, count=frames, rate=0.0, detail=""
            )
            self.phase = "flushing"
        if phase == "flushing":
            self.progress.update(self.task, count=frames)
        elif phase == "pyramid" and snap.get("pyramid_level"):
            level, levels = snap["pyramid_level"], snap["pyramid_levels"]
            totals = snap.get("pyramid_level_chunks") or []
            while self.level < level:  # levels finished between two snapshots show too
                self._finish_task()
                self.level += 1
                total = totals[self.level - 1] if self.level <= len(totals) else 1
                self.task = self.progress.add_task(
                    f"pyramid {self.level}/{levels}",
                    total=total or 1,
                    completed=total if self.level < level else 0,
                    count=f"{total}/{total} chunks" if self.level < level else "",
                    rate=snap.get("pyramid_mb_per_s", 0.0),
                    detail="",
                )
            done, total = snap["pyramid_chunks_done"], snap["pyramid_chunks_total"]
            self.progress.update(
                self.task,
                completed=done,
                count=f"{done}/{total} chunks",
                rate=snap.get("pyramid_mb_per_s", 0.0),
            )
        elif phase == "done":
            self._finish_task()
            self.phase = "done"

    def _finish_task(self) -> None:
        task = next((t for t in self.progress.tasks if t.id == self.task), None)
        if task is not None:
            self.progress.update(self.task, completed=task.total or 1, total=task.total or 1)

    def stop(self) -> None:
        if self.progress is not None:
            self.progress.stop()
