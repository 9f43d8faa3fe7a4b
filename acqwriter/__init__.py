"""acqwriter: stream microscope camera frames to OME-Zarr while the acquisition runs.

Embedding API (see README)::

    import acqwriter
    spec = acqwriter.StreamSpec(out="run.ome.zarr", shape=(2048, 2048), dtype="uint16")
    with acqwriter.open_stream(spec) as stream:
        stream.append(frame, metadata={"exposure_ms": 10})
    print(stream.summary.describe())

Sub-packages, in the order a frame moves: ``spec`` (what to write) → ``plan`` (how:
layout, sharding, threads, frame slots) → ``format`` (keys and metadata documents) →
``codec`` → ``store`` (where the bytes go) → ``engine`` (the streaming pipeline and
:class:`FrameStream`) → ``post`` (reader, pyramid, recover, info). Outer layers:
``acquisition``, ``control`` (daemon), ``cli``; cameras live in ``acqwriter.devices``,
simulators in ``acqwriter.simulators``.
"""

from acqwriter._version import __version__
from acqwriter.engine.dataset import DatasetWriter, open_dataset
from acqwriter.engine.stream import FrameError, FrameStream, StreamError, open_stream
from acqwriter.format.summary import DatasetSummary, Summary
from acqwriter.spec.dataset import DatasetSpec, ImageSpec, PlateSpec
from acqwriter.spec.model import Compression, PyramidSpec, SpecError, StreamSpec

__all__ = [
    "Compression",
    "DatasetSpec",
    "DatasetSummary",
    "DatasetWriter",
    "FrameError",
    "FrameStream",
    "ImageSpec",
    "PlateSpec",
    "PyramidSpec",
    "SpecError",
    "StreamError",
    "StreamSpec",
    "Summary",
    "__version__",
    "open_dataset",
    "open_stream",
]
