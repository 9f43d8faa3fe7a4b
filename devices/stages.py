"""XY and Z (focus) stages: read and move, optionally waiting for the move to finish."""

from __future__ import annotations

from typing import Any

from acqwriter.devices.camera import DeviceError

__all__ = ["XYStage", "ZStage"]


class XYStage:
    def __init__(self, core: Any, label: str) -> None:
        self.core = core
        self.label = label

    @property
    def position(self) -> tuple[float, float]:
        """``(x, y)`` in µm."""
        x, y = self.core.getXYPosition(self.label)
        return (float(x), float(y))

    def move(self, x: float, y: float, *, wait: bool = True) -> None:
        try:
            self.core.setXYPosition(self.label, float(x), float(y))
            if wait:
                self.core.waitForDevice(self.label)
        except Exception as exc:
            raise DeviceError(f"XY stage {self.label!r}: cannot move to ({x}, {y}): {exc}") from exc


class ZStage:
    def __init__(self, core: Any, label: str) -> None:
        self.core = core
        self.label = label

    @property
    def position(self) -> float:
        """Position in µm."""
        return float(self.core.getPosition(self.label))

    def move(self, z: float, *, wait: bool = True) -> None:
        try:
            self.core.setPosition(self.label, float(z))
            if wait:
                self.core.waitForDevice(self.label)
        except Exception as exc:
            raise DeviceError(f"Z stage {self.label!r}: cannot move to {z}: {exc}") from exc
