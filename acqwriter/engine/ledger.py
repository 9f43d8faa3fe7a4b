"""The frame ledger: which index each frame got, what it carried, and what became of it.

Every frame the source delivers, or reports lost, gets the next index here, and a
record (arrival time, drop flag and reason, the caller's metadata). The records wait
in memory until the extent committer writes their lines (``frame_metadata.jsonl``, in
index order, whole lines only) and are dropped only once a line is on disk, so a
failed append loses nothing. The ledger also keeps what the summary reports about
frames (received, compressed on the producer's thread, dropped and missing with their
indices, latency from ``append`` until the extent covers the frame) and what the frames
showed (:mod:`acqwriter.format.display`: the interval between time points, each
channel's display window). It owns its lock and knows nothing of chunks or threads.
"""

from __future__ import annotations

import bisect
import itertools
import math
import threading
import time
from typing import Any

import numpy as np

from acqwriter import jsonio
from acqwriter.format.display import WindowSampler, time_increment
from acqwriter.plan.layout import FrameLayout

__all__ = ["MAX_ROWS_AHEAD", "FrameLedger", "json_line", "latency_stats"]

# How far past the frames given so far an index may reach along an unbounded first axis:
# every frame in between is recorded missing (a record each), so a typo such as t=3e6
# or t=2**63 would cost memory and documents out of all proportion; an index that far
# ahead is refused in one line instead.
MAX_ROWS_AHEAD = 100_000


def json_line(record: dict[str, Any]) -> str:
    """One per-frame record as strict JSON: NaN and infinities (a camera's missing
    timestamp is NaN) become ``null`` (:func:`acqwriter.jsonio.dumps`)."""
    return jsonio.dumps(jsonio.jsonable(record), separators=(",", ":"))


class FrameLedger:
    """Indices, records, drops and latencies of one array's frames."""

    def __init__(self, layout: FrameLayout, *, by_index: bool = False) -> None:
        self.layout = layout
        # frames placed by their coordinates, in any order (else: in index order)
        self._claimed: set[int] | None = set() if by_index else None
        self._times_seen: dict[int, int] = {}  # time point -> position in the starts
        self._lock = threading.Lock()
        self.next_index = 0  # claimed under the stream's append lock
        self.frames_received = 0
        self.frames_inline = 0  # compressed on the producer's thread (writers behind)
        self._records: dict[int, dict[str, Any]] = {}
        self._metadata_end = 0  # frames below this index have their line on disk
        self._dropped: list[tuple[int, str]] = []  # in index order
        self.missing: list[int] = []
        self._append_t: dict[int, float] = {}
        self._latencies: list[float] = []
        sizes = dict(zip(layout.outer_dims, layout.outer_sizes, strict=True))
        self._c_axis: tuple[int, int] | None = None
        if sizes.get("c"):
            after_c = layout.outer_dims[layout.outer_dims.index("c") + 1 :]
            self._c_axis = (math.prod(sizes[a] or 1 for a in after_c), sizes["c"])
        self._windows = WindowSampler(self._c_axis[1] if self._c_axis else 1, layout.frame_shape)
        self._time_is_first = layout.outer_dims[0] == "t"
        self._time_starts: list[float] = []  # arrival of each time point's first frame
        self._taken_starts: list[float] = []  # ... when taken, where the source said so

    @property
    def by_index(self) -> bool:
        """Frames are placed by their coordinates, in any order."""
        return self._claimed is not None

    # -- indices ----------------------------------------------------------------------------
    def claim(self) -> int:
        """The next index (the caller serialises claims and checks the stream is open)."""
        index = self.next_index
        layout = self.layout
        if layout.max_frames is not None and index >= layout.max_frames:
            raise OverflowError(
                f"stream is full: sizes.{layout.outer_dims[0]} = {layout.outer_sizes[0]} "
                f"({layout.max_frames} frames) already appended"
            )
        self.next_index = index + 1
        return index

    def claim_at(self, index: int) -> bool:
        """Claim ``index`` for a frame placed by its coordinates; False when it was
        given before (the caller checks the coordinates against the sizes)."""
        assert self._claimed is not None
        if index in self._claimed:
            return False
        self._claimed.add(index)
        self.next_index = max(self.next_index, index + 1)
        return True

    def next_row_limit(self) -> int:
        """The first-axis position beyond which an index is refused (see
        :data:`acqwriter.engine.image.MAX_ROWS_AHEAD`)."""
        from_rows = -(-self.next_index // self.layout.frames_per_row)
        return from_rows + MAX_ROWS_AHEAD

    def unclaim(self, index: int) -> None:
        """Give back the index just claimed (its frame was not accepted)."""
        if self._claimed is not None:
            self._claimed.discard(index)
            self.next_index = max(self._claimed, default=-1) + 1
        elif index == self.next_index - 1:
            self.next_index = index

    def _opens_time_point(self, index: int) -> bool:
        """The first frame of its time point to arrive."""
        if self._claimed is None:
            return index % self.layout.frames_per_row == 0
        t = index // self.layout.frames_per_row
        if t in self._times_seen:
            return False
        self._times_seen[t] = len(self._time_starts)
        return True

    def sample(self, index: int, frame: np.ndarray) -> None:
        """Offer a frame to the display-window sampler of its channel."""
        channel = 0
        if self._c_axis is not None:
            stride, size = self._c_axis
            channel = (index // stride) % size
        self._windows.offer(channel, frame)

    # -- records ----------------------------------------------------------------------------
    def record(
        self,
        index: int,
        metadata: dict[str, Any] | None,
        *,
        dropped: str | None,
        taken_s: float | None = None,
        received: bool = True,
        inline: bool = False,
    ) -> None:
        """Keep frame ``index``'s record (``dropped``: the reason it has no pixels;
        ``received``: the caller handed over pixels, ``inline``: compressed on its thread)."""
        now = time.time()
        if self._time_is_first and self._opens_time_point(index):
            # a time point's first frame: when it arrived, and when it was taken if known
            self._time_starts.append(now)
            if taken_s is not None:
                self._taken_starts.append(taken_s)
        record: dict[str, Any] = {"index": index, "received_s": now, "dropped": dropped is not None}
        self._append_t[index] = time.perf_counter()
        if dropped is not None:
            record["drop_reason"] = dropped
        if metadata:
            record["metadata"] = dict(metadata)  # serialised later, off the hot path
        with self._lock:
            self._records[index] = record
            if dropped is not None:
                bisect.insort(self._dropped, (index, dropped))
        if received:  # a frame the caller handed over (a skip has none)
            self.frames_received += 1
            self.frames_inline += inline

    def set_missing(self, end: int) -> None:
        """Indices below ``end`` that never came (at close)."""
        if self._claimed is None:
            self.missing = list(range(self.next_index, end))
        else:
            self.missing = [i for i in range(end) if i not in self._claimed]

    def batches_by_block(self, first_block: int) -> dict[int, int]:
        """At close: for each block from ``first_block`` on, how many chunk batches
        received a frame (a batch no frame reached is never written)."""
        layout = self.layout
        first = first_block * layout.frames_per_block
        if self._claimed is None:
            indices: Any = range(first, self.next_index)
        else:
            indices = (i for i in self._claimed if i >= first)
        seen: dict[int, set[tuple[int, ...]]] = {}
        for i in indices:
            key = layout.batch_of(i)
            seen.setdefault(layout.block_of(key), set()).add(key)
        return {block: len(keys) for block, keys in seen.items()}

    def lines(self, first: int, end: int) -> tuple[int, list[str]]:
        """The per-frame lines still to write for frames ``first``..``end`` (lines
        already on disk from a commit whose extent rewrite failed are not repeated):
        (index of the first line, lines). Frames never appended get a ``missing`` line."""
        with self._lock:
            start = max(first, self._metadata_end)
            records = [self._records.get(i) for i in range(start, end)]
        lines = [
            json_line(r or {"index": i, "dropped": True, "drop_reason": "missing"})
            for i, r in enumerate(records, start)
        ]
        return start, lines

    def lines_written(self, start: int, written: int) -> int:
        """``written`` lines from index ``start`` are on disk: forget their records.
        Returns the index below which every frame has its line on disk."""
        with self._lock:
            for i in range(start, start + written):
                self._records.pop(i, None)
            self._metadata_end = max(self._metadata_end, start + written)
            return self._metadata_end

    def committed(self, first: int, end: int) -> None:
        """Frames ``first``..``end`` are inside the extent now: their latencies count."""
        now = time.perf_counter()
        with self._lock:
            for i in range(first, min(end, self.next_index)):
                t = self._append_t.pop(i, None)
                if t is not None:
                    self._latencies.append(now - t)

    def _in_time_order(self, starts: list[float]) -> list[float]:
        """Frames placed by coordinates: the starts of time points 0, 1, 2, … (an interval
        is measured only between consecutive time points that all came in order; else
        nothing is claimed: the scale stays an index)."""
        if not self._times_seen or sorted(self._times_seen) != list(range(len(self._times_seen))):
            return []
        ordered = [starts[self._times_seen[t]] for t in range(len(self._times_seen))]
        if any(b <= a for a, b in itertools.pairwise(ordered)):
            return []
        return ordered

    # -- what the summary says ----------------------------------------------------------------
    @property
    def dropped_count(self) -> int:
        return len(self._dropped)

    def frames_in(self, end_index: int) -> int:
        """Frames below ``end_index`` that came and are not dropped (drops are kept in
        index order)."""
        end = min(end_index, self.next_index)
        with self._lock:
            dropped = bisect.bisect_left(self._dropped, (end,))
            if self._claimed is None:
                return end - dropped
            return sum(1 for i in self._claimed if i < end) - dropped

    def unwritten(self, end_index: int) -> list[int]:
        """Frames received (pixels handed over, not dropped) at or beyond ``end_index``,
        the end of the committed extent: at close, those the writer took and never got
        on disk (it stopped: a full disk, a write error)."""
        with self._lock:
            return sorted(
                i for i, r in self._records.items() if i >= end_index and not r["dropped"]
            )

    def drops(self) -> tuple[list[int], dict[str, int]]:
        """Dropped indices and their count by reason."""
        with self._lock:
            dropped = list(self._dropped)
        by_reason: dict[str, int] = {}
        for _, reason in dropped:
            by_reason[reason] = by_reason.get(reason, 0) + 1
        return [i for i, _ in dropped], by_reason

    def latencies(self) -> dict[str, float | None]:
        with self._lock:
            return latency_stats(self._latencies)

    def measured(self) -> dict[str, Any]:
        """What the frames showed: the interval between time points (capture times only
        when every time point has one: two clocks never mix) and each channel's window."""
        taken = len(self._taken_starts) == len(self._time_starts)
        starts = self._taken_starts if taken else self._time_starts
        if self._claimed is not None:
            # a camera's clock may restart with each sequence (one per position): then
            # the arrival clock alone, never a mix of the two
            starts = self._in_time_order(starts) or self._in_time_order(self._time_starts)
        return {
            "time_increment_s": time_increment(starts),
            "channel_windows": self._windows.windows(),
        }


def latency_stats(latencies: list[float]) -> dict[str, float | None]:
    if not latencies:
        return {"latency_p50_ms": None, "latency_p99_ms": None, "latency_max_ms": None}
    arr = np.sort(np.asarray(latencies, dtype=np.float64)) * 1000
    return {
        "latency_p50_ms": percentile_of_sorted(arr, 50),
        "latency_p99_ms": percentile_of_sorted(arr, 99),
        "latency_max_ms": float(arr[-1]),
    }


def percentile_of_sorted(values: np.ndarray, q: float) -> float:
    """``np.percentile(values, q)`` (linear interpolation) for a sorted, non-empty
    array. Written out because numpy's first ``percentile`` call in a process pays a
    lazy setup of several milliseconds, inside every stream's close."""
    position = (len(values) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(values) - 1)
    return float(values[low] + (values[high] - values[low]) * (position - low))
