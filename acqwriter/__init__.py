"""acqwriter: stream microscope camera frames to OME-Zarr while the acquisition runs.

Embedding API (see README)::

    import acqwriter
    spec = acqwriter.StreamSpec(out="run.ome.zarr", shape=(2048, 2048), dtype="uint16")
    with acqwriter.open_stream(spec) as stream:
        stream.append(frame, metadata={"exposure_ms": 10})
    print(stream.summary.describe())

Modules, in data-flow order: ``spec`` (what to write) → ``layout`` (index/chunk
arithmetic) → ``ring`` (bounded frame pool) → ``stream`` (engine: writer threads,
committer) → ``codecs`` / ``storage`` (bytes to disk) → ``ome`` (metadata documents)
→ ``pyramid`` (after acquisition) → ``summary``. Cameras live in
``acqwriter.devices``, simulators in ``acqwriter.simulators``, the CLI in ``cli``.
"""

from acqwriter._version import __version__
from acqwriter.engine.stream import FrameError, FrameStream, StreamError, open_stream
from acqwriter.format.summary import Summary
from acqwriter.spec.model import Compression, PyramidSpec, SpecError, StreamSpec

__all__ = [
    "Compression",
    "FrameError",
    "FrameStream",
    "PyramidSpec",
    "SpecError",
    "StreamError",
    "StreamSpec",
    "Summary",
    "__version__",
    "open_stream",
]
