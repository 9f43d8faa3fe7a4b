"""acqwriter: stream microscope camera frames to OME-Zarr while the acquisition runs.

Embedding API (see README)::

    import acqwriter
    spec = acqwriter.StreamSpec(out="run.ome.zarr", shape=(2048, 2048), dtype="uint16")
    with acqwriter.open_stream(spec) as stream:
        stream.append(frame, metadata={"exposure_ms": 10})
    print(stream.summary.describe())

Layers (:mod:`acqwriter.layers`), each importing only those before it. The core:
``codec`` → ``spec`` → ``format`` → ``plan`` → ``store`` → ``post`` → ``engine``:
compression, what to write (validated values), keys and documents on disk (Zarr arrays
and shards, OME-NGFF groups, dataset layouts), the plan decided once before anything
is wired (images, levels, frame slots, threads, memory and disk), where the bytes go,
what reads and rebuilds a dataset (reader, pyramid, recover, info), and the streaming
pipeline (:class:`FrameStream`, :class:`DatasetWriter`). The hardware layer:
``acqwriter.devices`` (Micro-Manager cameras and stages) and ``acqwriter.simulators``.
The outer layers: ``mda`` (the pymmcore-plus sink) → ``acquisition`` (the one runner)
→ ``control`` (the daemon) → ``cli``.
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
