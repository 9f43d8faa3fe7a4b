"""What to write: frozen, validated values; no I/O and no knowledge of the machine.

``model`` holds the stream spec and its parts, ``dataset`` the spec of a dataset of
many images (collection, plate), ``palette`` the default channel colours, ``files``
reads and writes spec files (JSON, YAML, TOML). Validation errors name the field
(:mod:`acqwriter.validation`).
"""

from acqwriter.codec.settings import Compression
from acqwriter.spec.model import Channel, PyramidSpec, StreamSpec, WriterOptions
from acqwriter.validation import SpecError

__all__ = ["Channel", "Compression", "PyramidSpec", "SpecError", "StreamSpec", "WriterOptions"]
