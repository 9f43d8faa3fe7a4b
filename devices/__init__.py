"""Hardware abstraction over Micro-Manager (installed as ``acqwriter.devices``).

* :class:`Microscope` — a core (or a config file) with its camera and stages.
* :class:`Camera` — shape, ROI, binning, dtype, exposure, bit depth, ``snap()``,
  ``sequence()`` draining the circular buffer with lost frames reported by number.
* :class:`XYStage`, :class:`ZStage` — read and move (with wait).

The hardware layer: it imports no writer, no simulator and no MDA code. Acquisitions
that join a microscope to the writer run in :mod:`acqwriter.acquisition`.

Importing this package makes pymmcore-plus' Python-camera circular buffer safe to drain
while it overflows (:mod:`acqwriter.devices.sequence_buffer_fix`).
"""

from acqwriter.devices import sequence_buffer_fix
from acqwriter.devices.camera import (
    Camera,
    CameraFrame,
    CameraTimeout,
    DeviceError,
    LostFrames,
    SequenceEnded,
    pixel_dtype,
)
from acqwriter.devices.microscope import Microscope
from acqwriter.devices.stages import XYStage, ZStage

sequence_buffer_fix.install()

__all__ = [
    "Camera",
    "CameraFrame",
    "CameraTimeout",
    "DeviceError",
    "LostFrames",
    "Microscope",
    "SequenceEnded",
    "XYStage",
    "ZStage",
    "pixel_dtype",
]
