"""A camera as acqwriter sees it: a thin, checked layer over a pymmcore-plus core.

:class:`Camera` wraps one camera device of a :class:`CMMCorePlus` (C++ adapters) or
:class:`UniMMCore` (also Python devices): label, sensor shape, ROI, binning, pixel type
mapped to a numpy dtype (mono 8/16/32-bit only), exposure, bit depth, ``snap()`` and
:meth:`Camera.sequence`.

``sequence`` starts a sequence acquisition and drains the core's circular buffer with
``popNextImageAndMD``, yielding :class:`CameraFrame` (image, metadata, frame number) in
order. Lost frames are never silent: when the camera's frame counter jumps (a
hardware counter such as ``SimCamera-FrameNumber`` when the adapter provides one,
otherwise the core's ``ImageNumber``) a :class:`LostFrames` event names the missing
frame numbers and why (``buffer_overflow`` when the core's own numbering also
jumped — frames that reached the circular buffer and were overwritten — or ``camera``
when only the camera's counter did). A camera that stops delivering raises
:class:`CameraTimeout`; a sequence that ends early yields :class:`SequenceEnded`.

The image yielded may be a view into the core's buffer: consume it (``stream.append``
copies it) before asking for the next one.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from acqwriter.devices.sequence_buffer_fix import give_back_memory

__all__ = [
    "Camera",
    "CameraFrame",
    "CameraTimeout",
    "DeviceError",
    "LostFrames",
    "SequenceEnded",
    "pixel_dtype",
]

# Counters that camera adapters put in their metadata, most trustworthy first.
HARDWARE_COUNTER_KEYS = ("SimCamera-FrameNumber",)


class DeviceError(RuntimeError):
    """A device cannot do what was asked; the message names the device and the reason."""


class CameraTimeout(DeviceError):
    """The camera delivered no frame within the timeout."""


@dataclass
class CameraFrame:
    image: np.ndarray
    number: int  # 0-based frame number within the sequence
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class LostFrames:
    numbers: list[int]
    reason: str  # "buffer_overflow" | "camera"


@dataclass
class SequenceEnded:
    delivered: int
    requested: int | None


def pixel_dtype(bytes_per_pixel: int, components: int, label: str = "camera") -> np.dtype:
    """Map Micro-Manager's pixel format to a numpy dtype (mono 8/16/32-bit only)."""
    if components != 1:
        raise DeviceError(
            f"{label}: pixel type with {components} components (colour) is not supported; "
            "expected 8, 16 or 32-bit monochrome"
        )
    dtypes = {1: np.uint8, 2: np.uint16, 4: np.uint32}
    if bytes_per_pixel not in dtypes:
        raise DeviceError(
            f"{label}: {8 * bytes_per_pixel}-bit pixels are not supported; "
            "expected 8, 16 or 32-bit monochrome"
        )
    return np.dtype(dtypes[bytes_per_pixel])


class Camera:
    """One camera device of a core."""

    def __init__(self, core: Any, label: str, py_device: Any = None) -> None:
        if not label:
            raise DeviceError("no camera device is loaded (the core's Camera is empty)")
        self.core = core
        self.label = label
        self.py_device = py_device  # the Python device object, for simulated cameras

    # -- description ------------------------------------------------------------------
    def _current(self) -> None:
        if self.core.getCameraDevice() != self.label:
            self.core.setCameraDevice(self.label)

    @property
    def dtype(self) -> np.dtype:
        self._current()
        return pixel_dtype(
            self.core.getBytesPerPixel(),
            self.core.getNumberOfComponents(),
            f"camera {self.label!r}",
        )

    @property
    def shape(self) -> tuple[int, int]:
        """Current frame shape ``(height, width)`` (ROI and binning applied)."""
        self._current()
        return (self.core.getImageHeight(), self.core.getImageWidth())

    @property
    def sensor_shape(self) -> tuple[int, int]:
        """Full-sensor shape at the current binning (ROI cleared, then restored)."""
        roi = self.roi
        self.core.clearROI()
        shape = self.shape
        x, y, w, h = roi
        if (h, w) != shape:
            self.core.setROI(self.label, x, y, w, h)
        return shape

    @property
    def bit_depth(self) -> int:
        self._current()
        return int(self.core.getImageBitDepth())

    @property
    def exposure_ms(self) -> float:
        return float(self.core.getExposure(self.label))

    @exposure_ms.setter
    def exposure_ms(self, value: float) -> None:
        if value < 0:
            raise DeviceError(f"camera {self.label!r}: exposure must be >= 0 ms, got {value}")
        self.core.setExposure(self.label, float(value))

    @property
    def roi(self) -> tuple[int, int, int, int]:
        """``(x, y, width, height)``."""
        self._current()
        return tuple(int(v) for v in self.core.getROI(self.label))  # type: ignore[return-value]

    @roi.setter
    def roi(self, value: tuple[int, int, int, int] | None) -> None:
        self._current()
        if value is None:
            self.core.clearROI()
            return
        x, y, w, h = (int(v) for v in value)
        try:
            self.core.setROI(self.label, x, y, w, h)
        except Exception as exc:
            raise DeviceError(f"camera {self.label!r}: cannot set roi {value}: {exc}") from exc
        if self.roi[2:] != (w, h):
            raise DeviceError(
                f"camera {self.label!r}: roi {value} was not applied (camera reports {self.roi})"
            )

    @property
    def binning(self) -> int:
        value = self.core.getProperty(self.label, "Binning")
        return int(str(value).split("x")[0]) if value not in (None, "") else 1

    @binning.setter
    def binning(self, value: int) -> None:
        allowed = self.core.getAllowedPropertyValues(self.label, "Binning")
        if allowed and str(value) not in allowed:
            raise DeviceError(
                f"camera {self.label!r}: binning {value} not supported; "
                f"expected one of {list(allowed)}"
            )
        try:
            self.core.setProperty(self.label, "Binning", value)
        except Exception as exc:
            raise DeviceError(f"camera {self.label!r}: cannot set binning {value}: {exc}") from exc

    def describe(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "shape": list(self.shape),
            "dtype": self.dtype.name,
            "bit_depth": self.bit_depth,
            "exposure_ms": self.exposure_ms,
            "roi": list(self.roi),
            "binning": self.binning,
        }

    # -- acquisition -------------------------------------------------------------------
    def snap(self) -> np.ndarray:
        """One frame (a copy)."""
        self._current()
        self.core.snapImage()
        return np.array(self.core.getImage(), copy=True)

    def sequence(
        self,
        n: int | None,
        *,
        interval_ms: float = 0.0,
        frame_timeout_s: float = 5.0,
        first_frame_timeout_s: float = 30.0,
        should_stop: Any = None,
    ) -> Iterator[CameraFrame | LostFrames | SequenceEnded]:
        """Run a sequence of ``n`` frames (None: until ``should_stop()`` is true).

        Yields frames in order, :class:`LostFrames` for every gap, and a final
        :class:`SequenceEnded`. Stops the sequence however the generator is left.
        """
        core = self.core
        self._current()
        core.clearCircularBuffer()
        if n is None:
            core.startContinuousSequenceAcquisition(interval_ms)
        else:
            core.startSequenceAcquisition(self.label, int(n), float(interval_ms), False)
        expected = 0  # next frame number
        core_expected = 0  # next ImageNumber from the core's buffer
        counter_key: str | None = None
        last_frame_t = time.monotonic()
        timeout = first_frame_timeout_s
        try:
            while n is None or expected < n:
                if should_stop is not None and should_stop():
                    break
                if core.getRemainingImageCount() > 0:
                    image, md = core.popNextImageAndMD()
                    meta = dict(md)
                    if counter_key is None:
                        counter_key = next(
                            (k for k in HARDWARE_COUNTER_KEYS if k in meta), "ImageNumber"
                        )
                    number = int(meta.get(counter_key, expected))
                    core_number = int(meta.get("ImageNumber", core_expected))
                    if number > expected:
                        overflow = core_number > core_expected
                        yield LostFrames(
                            list(range(expected, number)),
                            "buffer_overflow" if overflow else "camera",
                        )
                    elif number < expected:
                        raise DeviceError(
                            f"camera {self.label!r}: frame number went backwards "
                            f"({number} after {expected - 1})"
                        )
                    expected = number + 1
                    core_expected = core_number + 1
                    yield CameraFrame(image, number, meta)
                    last_frame_t = time.monotonic()
                    timeout = frame_timeout_s
                    continue
                if not core.isSequenceRunning() and core.getRemainingImageCount() == 0:
                    break
                if time.monotonic() - last_frame_t > timeout:
                    raise CameraTimeout(
                        f"camera {self.label!r} delivered no frame for {timeout:.1f} s "
                        f"after {expected} frame(s)" + (f" of {n}" if n is not None else "")
                    )
                time.sleep(0.0005)
        finally:
            self.stop()
            give_back_memory(self.core)  # drained: an idle process holds no buffer
        yield SequenceEnded(expected, n)

    def stop(self) -> None:
        """Stop a running sequence (and release a silent simulated camera)."""
        if hasattr(self.py_device, "interrupt"):
            self.py_device.interrupt()
        if self.core.isSequenceRunning(self.label):
            self.core.stopSequenceAcquisition(self.label)
