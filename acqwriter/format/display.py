"""What a viewer should show first: display windows and the time scale, measured from
the frames written, not assumed.

Two facts about an acquisition are only known once its frames exist:

* **display windows** (``omero.channels[].window.start/end``): the dtype's full range
  (0–65 535 for uint16) opens a 12-bit camera's image nearly black. :class:`WindowSampler`
  keeps a small, bounded sample of each channel's pixels (every frame of a channel
  until :data:`SAMPLES_FIRST` frames, then at most one frame per
  :data:`SAMPLE_INTERVAL_S` per channel, each strided to about :data:`PIXELS_PER_SAMPLE`
  pixels) and gives robust percentiles (:data:`LOW_PERCENTILE`, :data:`HIGH_PERCENTILE`) at
  close. The cost on the producer's thread is a strided copy of ~4 000 pixels a few times
  a second, never a pass over a whole frame.
* **the time scale**: a camera stream takes frames back to back, so the interval between
  time points is whatever the camera delivered. :func:`time_increment` takes the mean
  interval between time points over the run (first to last time point's first frame).

Data flow: :class:`acqwriter.engine.stream.FrameStream` feeds :meth:`WindowSampler.offer` from
``append`` and records time-point arrivals; at close both go into the root group's
``attributes.acqwriter.measured`` (:data:`MEASURED_KEY`), from which
:mod:`acqwriter.format.ngff_v05` writes ``omero`` windows and the ``t`` scale, and which every later
rewrite (pyramid, recover) carries over. A window the user set in the spec wins.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

__all__ = [
    "MEASURED_KEY",
    "WindowSampler",
    "sample_windows",
    "time_increment",
]

MEASURED_KEY = "measured"
SAMPLES_FIRST = 4  # the first frames of every channel are always sampled
SAMPLE_INTERVAL_S = 0.25  # then at most one frame per channel this often
PIXELS_PER_SAMPLE = 4096  # strided subsample of one frame
MAX_PIXELS_PER_CHANNEL = 1 << 20  # bound on what is kept per channel
LOW_PERCENTILE, HIGH_PERCENTILE = 0.1, 99.9


def _stride(shape: tuple[int, ...]) -> int:
    return max(1, math.isqrt(math.prod(shape) // PIXELS_PER_SAMPLE))


def _window(samples: np.ndarray) -> list[float] | None:
    """Robust (low, high) percentiles of ``samples``; widened by one where flat."""
    if samples.size == 0:
        return None
    values = samples[np.isfinite(samples)] if samples.dtype.kind == "f" else samples
    if values.size == 0:
        return None
    low, high = np.percentile(values, [LOW_PERCENTILE, HIGH_PERCENTILE])
    low, high = float(low), float(high)
    if high <= low:  # a constant image: a window of width 0 shows nothing
        high = low + 1.0
    return [low, high]


class WindowSampler:
    """Bounded per-channel pixel samples of the frames appended (see module docstring)."""

    def __init__(self, n_channels: int, frame_shape: tuple[int, int]) -> None:
        self._stride = _stride(frame_shape)
        self._samples: list[list[np.ndarray]] = [[] for _ in range(n_channels)]
        self._kept = [0] * n_channels
        self._seen = [0] * n_channels
        self._next_s = [0.0] * n_channels

    def offer(self, channel: int, frame: np.ndarray) -> None:
        """Sample ``frame`` of ``channel`` if it is due (cheap when it is not)."""
        seen = self._seen[channel]
        self._seen[channel] = seen + 1
        now = time.monotonic()
        if seen >= SAMPLES_FIRST and now < self._next_s[channel]:
            return
        self._next_s[channel] = now + SAMPLE_INTERVAL_S
        sample = frame[:: self._stride, :: self._stride].ravel().copy()
        kept = self._samples[channel]
        kept.append(sample)
        self._kept[channel] += sample.size
        if self._kept[channel] > MAX_PIXELS_PER_CHANNEL:  # thin out: every other sample
            del kept[::2]
            self._kept[channel] = sum(s.size for s in kept)

    def windows(self) -> list[list[float] | None]:
        """Per channel ``[start, end]`` from the samples, or None where nothing was seen."""
        return [_window(np.concatenate(samples)) if samples else None for samples in self._samples]


def sample_windows(frames_by_channel: list[list[np.ndarray]]) -> list[list[float] | None]:
    """Windows from frames read back (``acqwriter recover``), subsampled as when live."""
    out = []
    for frames in frames_by_channel:
        parts = [f[:: _stride(f.shape), :: _stride(f.shape)].ravel() for f in frames]
        out.append(_window(np.concatenate(parts)) if parts else None)
    return out


def time_increment(starts: list[float]) -> float | None:
    """The mean interval between time points over the run (seconds): the time from the
    first time point's first frame to the last one's, over the intervals between them;
    None with fewer than two time points or no time passing.

    Not a median of the frame-to-frame differences: an engine that falls behind and
    catches up runs late time points back to back, and the median of those short gaps
    is less than the interval it waited; the span over the run never is.
    """
    if len(starts) < 2:
        return None
    ordered = np.asarray(starts, dtype=np.float64)
    value = float((ordered[-1] - ordered[0]) / (len(ordered) - 1))
    return value if value > 0 else None


def measured_from(acq_attrs: dict[str, Any] | None) -> dict[str, Any]:
    """The measured facts stored in a root group's ``attributes.acqwriter``."""
    if not acq_attrs:
        return {}
    value = acq_attrs.get(MEASURED_KEY)
    return value if isinstance(value, dict) else {}
