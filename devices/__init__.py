"""Hardware abstraction over Micro-Manager (installed as ``acqwriter.devices``).

* :class:`Microscope` — open ``"sim"``, ``"demo"`` or a config file; camera and stages.
* :class:`Camera` — shape, ROI, binning, dtype, exposure, bit depth, ``snap()``,
  ``sequence()`` draining the circular buffer with lost frames reported by number.
* :class:`XYStage`, :class:`ZStage` — read and move (with wait).
* :func:`run_acquisition` — camera sequence into an :class:`acqwriter.FrameStream`.

Importing this package makes pymmcore-plus' Python-camera circular buffer safe to drain
while it overflows (:mod:`acqwriter.devices.sequence_buffer_fix`).
"""

from acqwriter.devices import sequence_buffer_fix
from acqwriter.devices.acquisition import AcquisitionReport, configure_camera, run_acquisition
from acqwriter.devices.camera import (
    Camera,
    CameraFrame,
    CameraTimeout,
    DeviceError,
    LostFrames,
    SequenceEnded,
    pixel_dtype,
)
from acqwriter.devices.microscope import Microscope, sim_camera_options
from acqwriter.devices.stages import XYStage, ZStage

sequence_buffer_fix.install()

__all__ = [
    "AcquisitionReport",
    "Camera",
    "CameraFrame",
    "CameraTimeout",
    "DeviceError",
    "LostFrames",
    "Microscope",
    "SequenceEnded",
    "XYStage",
    "ZStage",
    "configure_camera",
    "pixel_dtype",
    "run_acquisition",
    "sim_camera_options",
]
