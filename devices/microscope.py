"""A Micro-Manager core with typed access to its camera and stages.

:class:`Microscope` wraps any core (a configured ``CMMCorePlus``, a ``UniMMCore`` with
Python devices); :meth:`Microscope.from_config` loads a Micro-Manager configuration
file. Choosing a simulator by name (``"sim"``, ``"demo"``) is the acquisition layer's
job (:func:`acqwriter.acquisition.open_microscope`): this hardware layer knows no
simulator, no writer and no MDA code.

:meth:`Microscope.close` stops any sequence and drops the core deterministically: a
``UniMMCore`` left to the interpreter's exit aborted the process (``FATAL: exception not
rethrown``) in most runs here, which would turn every CLI exit status into 134.
"""

from __future__ import annotations

import atexit
import gc
import weakref
from pathlib import Path
from typing import Any

from acqwriter.devices.camera import Camera, DeviceError
from acqwriter.devices.stages import XYStage, ZStage

__all__ = ["Microscope"]


class Microscope:
    """A core plus typed access to its current camera, XY stage and focus stage."""

    def __init__(
        self, core: Any, *, source: str = "core", py_devices: dict[str, Any] | None = None
    ) -> None:
        self.core = core
        self.source = source
        self.py_devices = py_devices or {}
        # Safety net: a core still alive at interpreter exit can abort the process.
        atexit.register(_close_at_exit, weakref.ref(self))

    def _device_core(self) -> Any:
        """What device wrappers hold: a weak proxy, so that close() really frees the core
        even while the caller still holds Camera/stage objects (they then raise)."""
        try:
            return weakref.proxy(self.core)
        except AttributeError:
            raise DeviceError("the microscope is closed") from None

    @classmethod
    def open(cls, source: str | Path) -> Microscope:
        """The microscope of a Micro-Manager configuration file (:meth:`from_config`).
        The simulators (``"sim"``, ``"demo"``) are not hardware: the acquisition layer
        opens them (:func:`acqwriter.acquisition.open_microscope`), and this says so."""
        text = str(source)
        if text in ("sim", "demo"):
            raise DeviceError(
                f"camera: {text!r} is a simulator, not a configuration file; open it with "
                f"acqwriter.acquisition.open_microscope({text!r})"
            )
        return cls.from_config(text)

    @classmethod
    def from_config(cls, path: str | Path) -> Microscope:
        """The microscope a Micro-Manager configuration file describes (real adapters,
        wherever pymmcore-plus finds Micro-Manager's device adapters)."""
        text = str(path)
        if not Path(text).is_file():
            raise DeviceError(f"camera: {text!r} is not an existing Micro-Manager config file")
        from pymmcore_plus import CMMCorePlus

        core = CMMCorePlus()
        try:
            core.loadSystemConfiguration(text)
        except Exception as exc:
            raise DeviceError(f"camera: cannot load Micro-Manager config {text!r}: {exc}") from exc
        return cls(core, source=text)

    # -- devices ----------------------------------------------------------------------
    @property
    def camera(self) -> Camera:
        core = self._device_core()
        label = core.getCameraDevice()
        return Camera(core, label, self.py_devices.get(label))

    @property
    def xy_stage(self) -> XYStage | None:
        core = self._device_core()
        label = core.getXYStageDevice()
        return XYStage(core, label) if label else None

    @property
    def z_stage(self) -> ZStage | None:
        core = self._device_core()
        label = core.getFocusDevice()
        return ZStage(core, label) if label else None

    @property
    def pixel_size_um(self) -> float | None:
        """From the active pixel-size configuration; None when not calibrated."""
        try:
            value = float(self.core.getPixelSizeUm())
        except Exception:
            return None
        return value if value > 0 else None

    def positions(self) -> dict[str, float]:
        """Current stage positions (µm) for per-frame metadata."""
        out: dict[str, float] = {}
        if (xy := self.xy_stage) is not None:
            out["x_um"], out["y_um"] = xy.position
        if (z := self.z_stage) is not None:
            out["z_um"] = z.position
        return out

    def describe(self, *, properties: bool = False) -> dict[str, Any]:
        """What this microscope is; ``properties``: with every camera property's value
        (a property that cannot be read is reported as such, never fatal) and the
        current stage positions."""
        description: dict[str, Any] = {
            "source": self.source,
            "camera": self.camera.describe(),
            "xy_stage": None if self.xy_stage is None else self.xy_stage.label,
            "z_stage": None if self.z_stage is None else self.z_stage.label,
            "pixel_size_um": self.pixel_size_um,
        }
        if properties:
            label = self.camera.label
            props = {}
            for name in self.core.getDevicePropertyNames(label):
                try:
                    props[name] = self.core.getProperty(label, name)
                except Exception as exc:
                    props[name] = f"<unreadable: {exc}>"
            description["camera"]["properties"] = props
            description["stage_positions"] = self.positions()
        return description

    # -- lifetime ---------------------------------------------------------------------
    def close(self) -> None:
        core = self.__dict__.pop("core", None)
        if core is None:
            return
        try:
            for dev in self.py_devices.values():
                if hasattr(dev, "interrupt"):
                    dev.interrupt()
            if core.isSequenceRunning():
                core.stopSequenceAcquisition()
            core.unloadAllDevices()
        except Exception:
            pass
        self.py_devices = {}
        del core
        gc.collect()

    def __enter__(self) -> Microscope:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _close_at_exit(ref: weakref.ref[Microscope]) -> None:
    scope = ref()
    if scope is not None:
        scope.close()
