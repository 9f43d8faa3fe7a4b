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
        self.task: Any = None  # made at the first snapshot: a refused run shows no bar
        self.acquiring_task: Any = None
        self.flushing_task: Any = None

    def _start(self) -> None:
        assert self.progress is not None
        total = self.total_frames if self.total_frames is not None else self.duration
        self.task = self.acquiring_task = self.progress.add_task(
            "acquiring", total=total, count="0", rate=0.0, detail="ring 0/0 drops 0"
        )
        self.progress.start()

    def start_levels_only(self) -> None:
        """Show pyramid levels only (``acqwriter pyramid`` and ``recover``): no
        acquisition bar."""
        if self.progress is None:
            return
        self.phase = "flushing"
        self.task = self.progress.add_task(
            "flushing", total=None, count="", rate=0.0, detail="", visible=False
        )
        self.progress.start()

    def update(self, snap: dict[str, Any]) -> None:
        if self.progress is None:
            return
        if self.task is None:
            self._start()
        phase = snap.get("phase", "acquiring")
        written = snap["frames_written"]
        frames = f"{written}/{self.total_frames}" if self.total_frames else f"{written} frames"
        if phase != "acquiring" and self.acquiring_task is not None:
            # the backlog is written while flushing: the acquisition's bar ends at what
            # is on disk, not at what was when the camera stopped
            self.progress.update(self.acquiring_task, count=frames)
            if self.flushing_task is not None:
                self.progress.update(self.flushing_task, count=frames)
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
                f"drops {snap['frames_dropped']}{_levels(snap)}",
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
            self.task = self.flushing_task = self.progress.add_task(
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
                    snap.get("pyramid_label") or f"pyramid {self.level}/{levels}",
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
            total = task.total or 1
            fields = {"count": f"{int(total)}/{int(total)} chunks"} if self.level else {}
            self.progress.update(self.task, completed=total, total=total, **fields)

    def stop(self) -> None:
        if self.progress is not None and self.task is not None:
            self.progress.stop()


def _levels(snap: dict[str, Any]) -> str:
    """The frames each live pyramid level holds, when levels are written live."""
    counts = snap.get("pyramid_level_frames") or []
    if len(counts) < 2:
        return ""
    return " levels " + "/".join(str(n) for n in counts)
