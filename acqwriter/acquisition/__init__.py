"""Acquisitions: what one asks of a microscope and the writer, and the one runner that
carries it out. The outer layer the CLI, the daemon and scripts share; it joins the
hardware layer (``acqwriter.devices``), the simulators, the MDA sink and the writer.

* ``spec`` — :class:`AcquisitionSpec`: camera, length, positions or sequence, writer
  options.
* ``microscopes`` — :func:`open_microscope`: ``"sim"``, ``"demo"`` or a config file.
* ``runner`` — :func:`run_acquisition`: a camera stream, positions or a sequence into a
  dataset, stopped, aborted and followed the same way.
* ``report`` — :class:`AcquisitionReport`: what was asked, delivered and written.
* ``preview`` — what a configured acquisition will do, said before it starts.
"""

from acqwriter.acquisition.microscopes import open_microscope, sim_camera_options
from acqwriter.acquisition.report import AcquisitionReport
from acqwriter.acquisition.runner import RunControls, configure_camera, run_acquisition
from acqwriter.acquisition.spec import AcquisitionSpec

__all__ = [
    "AcquisitionReport",
    "AcquisitionSpec",
    "RunControls",
    "configure_camera",
    "open_microscope",
    "run_acquisition",
    "sim_camera_options",
]
