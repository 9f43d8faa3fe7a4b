"""Pure-Python XY and Z stages (and a filter wheel) for ``UniMMCore``, with optional
travel time.

A move sets a target; with ``speed_um_s`` set the stage reports busy until the travel
time has elapsed (so ``waitForDevice`` is exercised), and the position reads as the
target once arrived.
"""

from __future__ import annotations

import time

from pymmcore_plus.experimental.unicore import StageDevice, StateDevice, XYStageDevice

__all__ = ["SimFilterWheel", "SimXYStage", "SimZStage"]


class _Travel:
    def __init__(self, speed_um_s: float | None) -> None:
        self.speed = speed_um_s
        self.arrive = 0.0

    def start(self, distance_um: float) -> None:
        if self.speed:
            self.arrive = time.monotonic() + abs(distance_um) / self.speed

    def busy(self) -> bool:
        return time.monotonic() < self.arrive


class SimXYStage(XYStageDevice):
    def __init__(self, speed_um_s: float | None = None) -> None:
        super().__init__()
        self._pos = (0.0, 0.0)
        self._travel = _Travel(speed_um_s)

    def set_position_um(self, x: float, y: float) -> None:
        dx, dy = x - self._pos[0], y - self._pos[1]
        self._travel.start(max(abs(dx), abs(dy)))
        self._pos = (float(x), float(y))

    def get_position_um(self) -> tuple[float, float]:
        return self._pos

    def busy(self) -> bool:
        return self._travel.busy()

    def home(self) -> None:
        self.set_position_um(0.0, 0.0)

    def stop(self) -> None:
        self._travel.arrive = 0.0

    def set_origin(self) -> None:
        self._pos = (0.0, 0.0)

    def set_origin_x(self) -> None:
        self._pos = (0.0, self._pos[1])

    def set_origin_y(self) -> None:
        self._pos = (self._pos[0], 0.0)


class SimZStage(StageDevice):
    def __init__(self, speed_um_s: float | None = None) -> None:
        super().__init__()
        self._pos = 0.0
        self._travel = _Travel(speed_um_s)

    def set_position_um(self, val: float) -> None:
        self._travel.start(val - self._pos)
        self._pos = float(val)

    def get_position_um(self) -> float:
        return self._pos

    def busy(self) -> bool:
        return self._travel.busy()

    def home(self) -> None:
        self.set_position_um(0.0)

    def stop(self) -> None:
        self._travel.arrive = 0.0

    def set_origin(self) -> None:
        self._pos = 0.0


class SimFilterWheel(StateDevice):
    """A filter wheel whose positions are the channels of the simulated core's
    ``Channel`` config group (DAPI, FITC, TRITC, Cy5), so MDA sequences switch channels
    on the simulated core as they do on a real one."""

    CHANNELS = ("DAPI", "FITC", "TRITC", "Cy5")

    def __init__(self) -> None:
        super().__init__(dict(enumerate(self.CHANNELS)))
        self._state = 0

    def get_state(self) -> int:
        return self._state

    def set_state(self, position: int) -> None:
        self._state = int(position)
