"""The account a stream gives of itself at close (and, partially, while it runs).

Every frame index the stream handed out is either written (on disk inside the final
extent) or dropped (with its index and reason: ``ring_full`` under the ``drop`` overflow
policy, ``camera`` for frames the camera or its circular buffer lost and the caller
reported with :meth:`FrameStream.skip`). ``frames_missing`` are positions inside the
last, partially acquired step of the first axis that no frame reached (an acquisition
stopped mid-stack); they read back as the fill value and are flagged in the per-frame
metadata.

``frames_received`` counts frames handed to ``append`` (including those the ring had no
room for under ``drop``); ``frames_written`` those on disk inside the extent;
``throughput_mb_s`` / ``frames_per_s`` are over ``write_duration_s`` (open → data flushed,
pyramid excluded).
"""

from __future__ import annotations

from pydantic import BaseModel, Field

__all__ = ["MAX_LISTED", "DatasetSummary", "Summary", "index_ranges"]


# indices listed one by one in a summary; beyond, ranges say the rest (a document holding
# a million indices is tens of megabytes, and every reader parses it)
MAX_LISTED = 10_000


def index_ranges(indices: list[int]) -> list[tuple[int, int]]:
    """Sorted ``indices`` as merged [start, end) ranges."""
    ranges: list[tuple[int, int]] = []
    for i in indices:
        if ranges and ranges[-1][1] == i:
            ranges[-1] = (ranges[-1][0], i + 1)
        else:
            ranges.append((i, i + 1))
    return ranges


class Summary(BaseModel):
    path: str
    state: str = Field(
        description="complete | aborted (cut short: an exception or an abort; the reason is "
        "in error) | failed (a write error; the reason is in error)"
    )
    frames_received: int = 0
    frames_written: int = 0
    frames_dropped: int = 0
    dropped_indices: list[int] = Field(default_factory=list)
    dropped_by_reason: dict[str, int] = Field(default_factory=dict)
    frames_missing: int = 0
    missing_indices: list[int] = Field(
        default_factory=list,
        description=f"the first {MAX_LISTED} missing frame indices (all: missing_ranges)",
    )
    missing_ranges: list[tuple[int, int]] = Field(
        default_factory=list,
        description="every missing frame as [start, end) index ranges: bounded in size "
        "however many frames are missing",
    )
    shape: list[int] = Field(default_factory=list)
    raw_bytes: int = 0
    stored_bytes: int = 0
    compression_ratio: float | None = None
    duration_s: float = 0.0
    write_duration_s: float = 0.0
    pyramid_duration_s: float = 0.0
    throughput_mb_s: float = 0.0
    frames_per_s: float = 0.0
    ring_capacity_frames: int = 0
    ring_high_water_frames: int = 0
    ring_bytes: int = 0
    frames_inline: int = Field(
        0,
        description="frames the producer compressed on its own thread because the writer "
        "threads were behind (ring full, or for big chunks a backlog; block policy): the "
        "writer, not the source, set the pace",
    )
    pyramid_levels: int = 1
    pyramid_note: str | None = Field(
        None, description="why the image has no level below level 0 (None when it has some)"
    )
    latency_p50_ms: float | None = Field(None, description="append → in the committed extent")
    latency_p99_ms: float | None = None
    latency_max_ms: float | None = None
    time_increment_s: float | None = Field(
        None, description="mean interval between time points over the run, measured"
    )
    created_folders: list[str] = Field(
        default_factory=list, description="parent folders of the dataset that were created"
    )
    error: str | None = None

    @property
    def ok(self) -> bool:
        """True when every frame handed to the stream is on disk and nothing failed."""
        return self.error is None and self.frames_dropped == 0 and self.state == "complete"

    def describe(self) -> str:
        """A short human-readable report (the CLI prints this)."""
        ratio = f"{self.compression_ratio:.2f}x" if self.compression_ratio else "n/a"
        lines = [
            f"dataset      {self.path}",
            f"state        {self.state}" + (f" — {self.error}" if self.error else ""),
            f"shape        {tuple(self.shape)}  ({self.pyramid_levels} level(s)"
            + (f": {self.pyramid_note}" if self.pyramid_note else "")
            + ")",
            f"frames       received {self.frames_received}, written {self.frames_written}, "
            f"dropped {self.frames_dropped}, missing {self.frames_missing}",
            f"bytes        raw {self.raw_bytes / 1e6:.1f} MB, "
            f"stored {self.stored_bytes / 1e6:.1f} MB, ratio {ratio}",
            f"time         {self.duration_s:.2f} s (write {self.write_duration_s:.2f} s, "
            f"pyramid {self.pyramid_duration_s:.2f} s)",
            f"throughput   {self.throughput_mb_s:.1f} MB/s raw, {self.frames_per_s:.1f} frames/s",
            f"ring         high water {self.ring_high_water_frames}/{self.ring_capacity_frames} "
            f"frames ({self.ring_bytes / 2**20:.0f} MiB)"
            + (
                f", {self.frames_inline} frames compressed by the producer (writer behind)"
                if self.frames_inline
                else ""
            ),
        ]
        if self.dropped_indices:
            shown = ", ".join(map(str, self.dropped_indices[:20]))
            more = " …" if len(self.dropped_indices) > 20 else ""
            lines.append(f"dropped at   {shown}{more}  {self.dropped_by_reason}")
        return "\n".join(lines)


class DatasetSummary(Summary):
    """The account of a dataset of several images: the totals over its images (in the
    fields of :class:`Summary`; ``shape`` is empty) and one summary per image, by key."""

    layout: str = "collection"
    images: dict[str, Summary] = Field(default_factory=dict)

    @classmethod
    def of(cls, path: str, state: str, layout: str, images: dict[str, Summary]) -> DatasetSummary:
        parts = list(images.values())
        raw = sum(s.raw_bytes for s in parts)
        stored = sum(s.stored_bytes for s in parts)
        duration = max((s.duration_s for s in parts), default=0.0)
        written = sum(s.frames_written for s in parts)
        first = parts[0] if parts else Summary(path=path, state=state)
        by_reason: dict[str, int] = {}
        for s in parts:
            for reason, n in s.dropped_by_reason.items():
                by_reason[reason] = by_reason.get(reason, 0) + n
        return cls(
            path=path,
            state=state,
            layout=layout,
            images=images,
            frames_received=sum(s.frames_received for s in parts),
            frames_written=written,
            frames_dropped=sum(s.frames_dropped for s in parts),
            dropped_by_reason=by_reason,
            frames_missing=sum(s.frames_missing for s in parts),
            raw_bytes=raw,
            stored_bytes=stored,
            compression_ratio=(raw / stored) if stored else None,
            duration_s=duration,
            write_duration_s=max((s.write_duration_s for s in parts), default=0.0),
            pyramid_duration_s=sum(s.pyramid_duration_s for s in parts),
            throughput_mb_s=raw / 1e6 / duration if duration > 0 else 0.0,
            frames_per_s=written / duration if duration > 0 else 0.0,
            ring_capacity_frames=first.ring_capacity_frames,
            ring_high_water_frames=first.ring_high_water_frames,
            ring_bytes=first.ring_bytes,
            frames_inline=sum(s.frames_inline for s in parts),
            pyramid_levels=min((s.pyramid_levels for s in parts), default=1),
            pyramid_note=next((s.pyramid_note for s in parts if s.pyramid_note), None),
            error=next((s.error for s in parts if s.error), None),
        )

    def describe(self) -> str:
        lines = [
            f"dataset      {self.path}  ({self.layout}, {len(self.images)} images)",
            f"state        {self.state}" + (f" — {self.error}" if self.error else ""),
            f"frames       received {self.frames_received}, written {self.frames_written}, "
            f"dropped {self.frames_dropped}, missing {self.frames_missing}",
            f"bytes        raw {self.raw_bytes / 1e6:.1f} MB, "
            f"stored {self.stored_bytes / 1e6:.1f} MB",
            f"throughput   {self.throughput_mb_s:.1f} MB/s raw, {self.frames_per_s:.1f} frames/s",
        ]
        for key, s in self.images.items():
            lines.append(
                f"  {key:<12} shape {tuple(s.shape)}, {s.pyramid_levels} level(s), "
                f"written {s.frames_written}, dropped {s.frames_dropped}, "
                f"missing {s.frames_missing}"
            )
        if self.pyramid_note:
            lines.append(f"pyramid      {self.pyramid_note}")
        return "\n".join(lines)
