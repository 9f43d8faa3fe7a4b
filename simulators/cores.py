"""Ready-to-use cores: the Micro-Manager demo, or our Python simulators.

* :func:`demo_core` loads ``MMConfig_demo.cfg`` shipped by the ``mm-test-adapters``
  wheel (DemoCamera, demo XY/Z stages, shutters…) into a :class:`CMMCorePlus`;
* :func:`sim_core` builds a :class:`UniMMCore` with :class:`SimCamera` as ``Camera``,
  :class:`SimXYStage` as ``XY`` and :class:`SimZStage` as ``Z``, set as the core's
  current devices, with an empty pixel-size config (``definePixelSizeConfig`` cannot
  reference Python devices) calibrated at ``pixel_size_um``, auto-shutter off (there
  is no shutter), and the camera's flow control wired to the core's buffer (an
  unpaced SimCamera waits for a free slot instead of overwriting unread frames).

Both return a core the caller owns; use :func:`acqwriter.devices.Microscope` to get the
high-level API and a clean shutdown (stop sequences and drop the core before the
interpreter exits; UniMMCore otherwise aborts at exit).
"""

from __future__ import annotations

import weakref
from pathlib import Path
from typing import Any

from pymmcore_plus import CMMCorePlus

from acqwriter.simulators.camera import SimCamera
from acqwriter.simulators.stages import SimFilterWheel, SimXYStage, SimZStage

__all__ = ["demo_config_path", "demo_core", "sim_core"]


def demo_config_path() -> Path:
    import mm_test_adapters

    path = Path(mm_test_adapters.device_adapter_path()) / "MMConfig_demo.cfg"
    if not path.exists():
        raise FileNotFoundError(f"mm-test-adapters ships no demo config at {path}")
    return path


def demo_core() -> CMMCorePlus:
    """A core with Micro-Manager's demo devices loaded (DemoCamera 512×512 uint16)."""
    import mm_test_adapters

    core = CMMCorePlus()
    core.setDeviceAdapterSearchPaths([mm_test_adapters.device_adapter_path()])
    core.loadSystemConfiguration(str(demo_config_path()))
    return core


def sim_core(
    shape: tuple[int, int] = (512, 512),
    dtype: str = "uint16",
    *,
    pixel_size_um: float = 0.65,
    buffer_mb: int = 256,
    camera: SimCamera | None = None,
    **camera_kwargs: Any,
) -> Any:
    """A ``UniMMCore`` with the Python simulated camera and stages loaded."""
    from pymmcore_plus.experimental.unicore import UniMMCore

    core = UniMMCore()
    cam = camera or SimCamera(shape, dtype, **camera_kwargs)
    core.loadPyDevice("Camera", cam)
    core.loadPyDevice("XY", SimXYStage())
    core.loadPyDevice("Z", SimZStage())
    core.loadPyDevice("Filter", SimFilterWheel())
    core.initializeAllDevices()
    core.setCameraDevice("Camera")
    # The core's circular buffer is the camera's slack when the consumer hiccups; UniMMCore
    # defaults to 1 GiB, which would dwarf acqwriter's own ring in the process's memory.
    # (set after the Python camera is current, or the C++ buffer is resized instead).
    core.setCircularBufferMemoryFootprint(buffer_mb)
    core.setXYStageDevice("XY")
    core.setFocusDevice("Z")
    core.definePixelSizeConfig("Res")
    core.setPixelSizeUm("Res", pixel_size_um)
    core.setPixelSizeConfig("Res")
    core.setAutoShutter(False)
    for channel in SimFilterWheel.CHANNELS:  # MDA sequences name channels of this group
        core.defineConfig("Channel", channel, "Filter", "Label", channel)
    core.setChannelGroup("Channel")
    core_ref = weakref.ref(core)  # no camera → core reference cycle

    def has_room() -> bool:
        live = core_ref()
        return live is None or live.getRemainingImageCount() < live.getBufferTotalCapacity() - 1

    cam.flow_control = has_room
    return core
