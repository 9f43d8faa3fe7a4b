"""A pure-Python camera for pymmcore-plus ``UniMMCore``: realistic, stamped, faultable.

It behaves like a sequence-capable Micro-Manager camera: ``start_sequence`` fills the
core's circular-buffer slots in place (``get_buffer`` returns a view into the core's
buffer; no extra copy) from a precomputed :class:`~acqwriter.simulators.frames.FrameBank`
and yields per-frame metadata, paced to ``fps`` (or the exposure time, whichever is
slower; neither set: as fast as possible). Before its clock starts it faults in the part
of the core's buffer its first second of frames will write, so that a first pass over
fresh memory does not slow it below its rate (and then burst to catch up).

Each frame carries its camera frame number twice: as the frame stamp in its first
pixels and as the ``SimCamera-FrameNumber`` metadata tag (a hardware frame counter,
like those of real sCMOS adapters). The core numbers frames itself (``ImageNumber``),
so only this counter reveals frames the *camera* skipped.

Pacing. With ``fps`` (or an exposure) set the camera is *free-running*, like real
hardware: if the consumer falls behind, the core's circular buffer overflows and the
loss shows as a gap in the frame numbers. With neither set it runs "as fast as
possible" but *flow-controlled*: before each frame it asks ``flow_control()`` (wired by
:func:`~acqwriter.simulators.sim_core` to "the core's buffer has a free slot") and waits
for room, so it measures how fast the whole pipeline can go without overrunning it.

Fault hooks (:class:`SimFaults`): stall N ms before given frames, skip given frame
numbers (camera-side drops: the number is consumed, no frame is delivered), and stop
delivering after N frames (the camera goes silent without ending the sequence, like a
hung camera, until the sequence is stopped or :meth:`SimCamera.interrupt` is called).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pymmcore_plus.experimental.unicore import CameraDevice

from acqwriter.pages import populate_backing
from acqwriter.simulators.frames import FrameBank, write_stamp

__all__ = ["FRAME_NUMBER_KEY", "SimCamera", "SimFaults"]

FRAME_NUMBER_KEY = "SimCamera-FrameNumber"
MAX_SIDE = 16384


@dataclass
class SimFaults:
    """Faults to inject, keyed by camera frame number (0-based within a sequence)."""

    stall_ms: dict[int, float] = field(default_factory=dict)
    skip: set[int] = field(default_factory=set)
    stop_after: int | None = None


class SimCamera(CameraDevice):
    """Simulated sCMOS-like camera (mono uint8/uint16, ROI, binning, frame stamps)."""

    def __init__(
        self,
        shape: tuple[int, int] = (512, 512),
        dtype: str = "uint16",
        *,
        fps: float | None = None,
        exposure_ms: float = 0.0,
        bank_frames: int | None = None,
        seed: int = 0,
        faults: SimFaults | None = None,
    ) -> None:
        super().__init__()
        h, w = int(shape[0]), int(shape[1])
        if not (1 <= h <= MAX_SIDE and 1 <= w <= MAX_SIDE) or h * w < 8:
            raise ValueError(
                f"shape: expected (height, width) between 1 and {MAX_SIDE} with at least 8 "
                f"pixels, got {tuple(shape)}"
            )
        if np.dtype(dtype).name not in ("uint8", "uint16"):
            raise ValueError(f"dtype: expected uint8 or uint16, got {dtype!r}")
        if fps is not None and fps <= 0:
            raise ValueError(f"fps: expected a positive rate or None, got {fps}")
        self._sensor = (h, w)
        self._dtype = np.dtype(dtype)
        self.fps = fps
        self._exposure = float(exposure_ms)
        self._binning = 1
        self._roi: tuple[int, int, int, int] | None = None  # x, y, w, h in binned pixels
        self._bank_frames = bank_frames
        self._seed = seed
        self._bank: FrameBank | None = None
        self.faults = faults or SimFaults()
        self._interrupt = threading.Event()
        self.frames_generated = 0
        # "may I produce a frame now?"; only consulted when free-running is off (no fps)
        self.flow_control: Callable[[], bool] | None = None

    # -- mandatory camera API ---------------------------------------------------------
    def get_exposure(self) -> float:
        return self._exposure

    def set_exposure(self, exposure: float) -> None:
        if exposure < 0:
            raise ValueError(f"exposure: expected >= 0 ms, got {exposure}")
        self._exposure = float(exposure)

    def binned_sensor_shape(self) -> tuple[int, int]:
        return (self._sensor[0] // self._binning, self._sensor[1] // self._binning)

    def shape(self) -> tuple[int, int]:
        if self._roi is not None:
            return (self._roi[3], self._roi[2])
        return self.binned_sensor_shape()

    def dtype(self) -> np.dtype:
        return self._dtype

    # -- binning and ROI ----------------------------------------------------------------
    def get_binning(self) -> int:
        return self._binning

    def set_binning(self, value: int) -> None:
        value = int(value)
        if value not in (1, 2, 4):
            raise ValueError(f"binning: expected 1, 2 or 4, got {value}")
        self._binning = value
        self._roi = None

    def get_roi(self) -> tuple[int, int, int, int]:
        if self._roi is not None:
            return self._roi
        h, w = self.binned_sensor_shape()
        return (0, 0, w, h)

    def set_roi(self, x: int, y: int, width: int, height: int) -> None:
        h, w = self.binned_sensor_shape()
        if x < 0 or y < 0 or width <= 0 or height <= 0 or x + width > w or y + height > h:
            raise ValueError(f"roi: ({x}, {y}, {width}, {height}) is outside the {w}x{h} sensor")
        self._roi = (int(x), int(y), int(width), int(height))

    def clear_roi(self) -> None:
        self._roi = None

    # -- frames ---------------------------------------------------------------------------
    @property
    def bank(self) -> FrameBank:
        """The frame bank for the current binning (built on first use)."""
        shape = self.binned_sensor_shape()
        if self._bank is None or self._bank.shape != shape:
            self._bank = FrameBank(shape, self._dtype, size=self._bank_frames, seed=self._seed)
        return self._bank

    def expected_frame(self, number: int) -> np.ndarray:
        """Exactly the frame this camera delivers as frame ``number`` (current settings)."""
        out = np.empty(self.shape(), self._dtype)
        self._fill(out, number)
        return out

    def _fill(self, out: np.ndarray, number: int) -> None:
        bank = self.bank
        if self._roi is None:
            bank.fill(out, number)
        else:
            x, y, w, h = self._roi
            np.copyto(out, bank.frames[number % bank.size][y : y + h, x : x + w])
            write_stamp(out, number)

    def interrupt(self) -> None:
        """Release a camera that went silent (``stop_after`` fault)."""
        self._interrupt.set()

    def start_sequence(
        self, n: int | None, get_buffer: Callable[[Sequence[int], Any], np.ndarray]
    ) -> Iterator[Mapping]:
        shape, dtype = self.shape(), self._dtype
        _ = self.bank  # build before the clock starts
        self._interrupt.clear()
        faults = self.faults
        period = max(1.0 / self.fps if self.fps else 0.0, self._exposure / 1000.0)
        # The first slot is taken before the clock starts, and the memory the camera will
        # write in its first second (at most the core's whole circular buffer behind that
        # slot) is faulted in: written for the first time, 256 MiB took 0.5 s here, so a
        # 150 frames/s camera of 2048² ran at 50 frames/s for 40 frames, then burst to
        # catch up and overflowed the core's buffer. Small or slow frames fault in little.
        pending = get_buffer(shape, dtype) if n is None or n > 0 else None
        if pending is not None:
            ahead = None if not period else max(1, math.ceil(1.0 / period))
            if n is not None:
                ahead = n if ahead is None else min(ahead, n)
            populate_backing(pending, None if ahead is None else ahead * pending.nbytes)
        t_next = time.perf_counter()
        number = 0
        delivered = 0
        while n is None or number < n:
            if faults.stop_after is not None and delivered >= faults.stop_after:
                while not self._interrupt.wait(0.05):
                    pass  # silent, like a hung camera, until interrupted
                return
            if number in faults.skip:
                number += 1
                t_next += period
                continue
            if number in faults.stall_ms:
                time.sleep(faults.stall_ms[number] / 1000.0)
            if period:
                t_next += period
                delay = t_next - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
            elif self.flow_control is not None:
                while not self.flow_control():
                    if self._interrupt.wait(0.0005):
                        return
            buf = pending if pending is not None else get_buffer(shape, dtype)
            pending = None
            self._fill(buf, number)
            self.frames_generated += 1
            yield {FRAME_NUMBER_KEY: str(number), "Exposure-ms": f"{self._exposure:.3f}"}
            number += 1
            delivered += 1
