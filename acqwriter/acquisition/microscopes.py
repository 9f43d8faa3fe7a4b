"""Which microscope an acquisition runs on: a simulator by name or a configuration file.

``"sim"`` is our Python simulated camera and stages on ``UniMMCore``
(:mod:`acqwriter.simulators`), ``"demo"`` the DemoCamera configuration that
``mm-test-adapters`` ships, anything else the path of a Micro-Manager configuration
file (:meth:`acqwriter.devices.Microscope.from_config`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from acqwriter.devices.camera import DeviceError
from acqwriter.devices.microscope import Microscope
from acqwriter.simulators import SimCamera, SimFaults, demo_core, sim_core

__all__ = ["open_microscope", "sim_camera_options"]


def open_microscope(source: str | Path, **sim_options: Any) -> Microscope:
    """``"sim"``, ``"demo"`` or a config file path; ``sim_options`` go to
    :class:`~acqwriter.simulators.SimCamera` (``pixel_size_um`` to the core)."""
    text = str(source)
    if text == "sim":
        pixel = sim_options.pop("pixel_size_um", 0.65)
        camera = SimCamera(**sim_options)
        _ = camera.bank  # build the frame bank now, not in the first frame's time budget
        core = sim_core(camera=camera, pixel_size_um=pixel)
        return Microscope(core, source="sim", py_devices={"Camera": camera})
    if sim_options:
        raise DeviceError(f"options {sorted(sim_options)} only apply to the simulated camera 'sim'")
    if text == "demo":
        return Microscope(demo_core(), source="demo")
    if not Path(text).is_file():
        raise DeviceError(
            f"camera: {text!r} is neither 'sim', 'demo' nor an existing Micro-Manager config file"
        )
    return Microscope.from_config(text)


def sim_camera_options(spec: Any) -> dict[str, Any]:
    """SimCamera keyword arguments for an AcquisitionSpec with ``camera: sim``."""
    options: dict[str, Any] = {
        "shape": tuple(spec.shape or (2048, 2048)),
        "dtype": spec.dtype or "uint16",
        "fps": spec.fps,
        "seed": spec.seed,
    }
    if spec.sim_faults is not None:
        faults = spec.sim_faults
        options["faults"] = SimFaults(dict(faults.stall_ms), set(faults.skip), faults.stop_after)
    return options
