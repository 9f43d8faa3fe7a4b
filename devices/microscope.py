"""Open a Micro-Manager core and expose its camera and stages.

:meth:`Microscope.open` takes ``"sim"`` (our Python simulators on ``UniMMCore``),
``"demo"`` (the DemoCamera configuration that ``mm-test-adapters`` ships) or the path of
any Micro-Manager configuration file (real adapters, wherever Micro-Manager's device
adapters are installed and discoverable by pymmcore-plus).

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

__all__ = ["Microscope", "sim_camera_options"]


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
    def open(cls, source: str | Path, **sim_options: Any) -> Microscope:
        """``"sim"``, ``"demo"`` or a config file path; ``sim_options`` go to :class:`SimCamera`."""
        from acqwriter.simulators import SimCamera, demo_core, sim_core

        text = str(source)
        if text == "sim":
            pixel = sim_options.pop("pixel_size_um", 0.65)
            camera = SimCamera(**sim_options)
            _ = camera.bank  # build the frame bank now, not in the first frame's time budget
            core = sim_core(camera=camera, pixel_size_um=pixel)
            return cls(core, source="sim", py_devices={"Camera": camera})
        if sim_options:
            raise DeviceError(
                f"options {sorted(sim_options)} only apply to the simulated camera 'sim'"
            )
        if text == "demo":
            return cls(demo_core(), source="demo")
        path = Path(text)
        if not path.is_file():
            raise DeviceError(
                f"camera: {text!r} is neither 'sim', 'demo' nor an existing "
                "Micro-Manager config file"
            )
        from pymmcore_plus import CMMCorePlus

        core = CMMCorePlus()
        try:
            core.loadSystemConfiguration(str(path))
        except Exception as exc:
            raise DeviceError(f"camera: cannot load Micro-Manager config {text!r}: {exc}") from exc
        return cls(core, source=str(path))

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


def sim_camera_options(spec: Any) -> dict[str, Any]:
    """SimCamera keyword arguments for an AcquisitionSpec with ``camera: sim``."""
    options: dict[str, Any] = {
        "shape": tuple(spec.shape or (2048, 2048)),
        "dtype": spec.dtype or "uint16",
        "fps": spec.fps,
        "seed": spec.seed,
    }
    if spec.sim_faults is not None:
        from acqwriter.simulators import SimFaults

        faults = spec.sim_faults
        options["faults"] = SimFaults(dict(faults.stall_ms), set(faults.skip), faults.stop_after)
    return options
