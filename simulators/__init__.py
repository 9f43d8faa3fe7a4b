"""Simulated hardware for tests, demos and benchmarks (installed as ``acqwriter.simulators``).

* :func:`demo_core` — Micro-Manager's own DemoCamera and demo stages (``mm-test-adapters``).
* :func:`sim_core` / :class:`SimCamera` / :class:`SimXYStage` / :class:`SimZStage` — our
  pure-Python devices on pymmcore-plus ``UniMMCore``: any shape up to 16384², uint8 or
  uint16, paced or as fast as possible, realistic stamped frames and fault hooks.
* :class:`FrameBank`, :func:`read_stamp` — regenerate exactly what the camera produced
  and decode the frame index stamped into a frame.
"""

from acqwriter.simulators.camera import FRAME_NUMBER_KEY, SimCamera, SimFaults
from acqwriter.simulators.cores import demo_config_path, demo_core, sim_core
from acqwriter.simulators.frames import STAMP_PIXELS, FrameBank, read_stamp, write_stamp
from acqwriter.simulators.stages import SimXYStage, SimZStage

__all__ = [
    "FRAME_NUMBER_KEY",
    "STAMP_PIXELS",
    "FrameBank",
    "SimCamera",
    "SimFaults",
    "SimXYStage",
    "SimZStage",
    "demo_config_path",
    "demo_core",
    "read_stamp",
    "sim_core",
    "write_stamp",
]
