"""What to write: the validated description of one OME-Zarr stream.

A :class:`StreamSpec` is everything the writer needs before the first frame arrives:
the axes and their sizes, the frame shape and dtype, the chunking, the codec, the
physical calibration, the channels, the output path and the resource limits (ring
size, overflow policy, writer threads, fsync policy, pyramid).

Data flow: a spec file (JSON/YAML/TOML, see :mod:`acqwriter.spec.files`), CLI options or
daemon ``configure`` parameters → pydantic validation here → :class:`SpecError` naming
the field and what was expected, or a frozen spec that :func:`acqwriter.open_stream`
turns into a layout (:mod:`acqwriter.plan.layout`) and on-disk metadata
(:mod:`acqwriter.format.ngff_v05`).

Axes follow OME-NGFF: an ordered subset of ``t, c, z`` followed by ``y, x``. Each camera
frame is one ``(y, x)`` plane; frames arrive in C order over the other axes (for
``tczyx``: z fastest, then c, then t). Only the first axis may be unbounded
(``sizes[first] = None``): it is the axis along which the array grows on disk.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import numpy as np
from pydantic import Field, Strict, field_validator, model_validator

from acqwriter.codec.settings import Compression
from acqwriter.spec.files import dump_spec, load_spec
from acqwriter.spec.location import ObjectURL, parse_object_url
from acqwriter.spec.pyramid import PyramidSpec
from acqwriter.validation import SpecError, StrictModel, format_validation_error

# The OME-NGFF versions acqwriter writes (the one list: spec, format, CLI)
NgffVersion = Literal["0.4", "0.5", "0.6"]
NGFF_VERSIONS: tuple[str, ...] = get_args(NgffVersion)

__all__ = [
    "AXIS_ORDER",
    "FRAME_CHUNK_MAX_BYTES",
    "NGFF_VERSIONS",
    "SPACE_UNITS",
    "SUPPORTED_DTYPES",
    "TIME_UNITS",
    "Channel",
    "Compression",
    "PyramidSpec",
    "SpecError",
    "StreamSpec",
    "StrictModel",
    "WriterOptions",
    "format_validation_error",
]

# Frames up to this size are one chunk by default: compressed straight from the frame
# slot, one file per frame, where tiles cost a copy into a tile buffer and a file and a
# compressor call per tile (measured in docs/decisions.md). Larger frames keep 1024²
# tiles, so a chunk stays a few MiB for viewers.
FRAME_CHUNK_MAX_BYTES = 8 << 20

AXIS_ORDER = "tczyx"
SUPPORTED_DTYPES = ("uint8", "uint16", "uint32", "int8", "int16", "int32", "float32")

# Units allowed by OME-NGFF 0.4/0.5 (the UDUNITS-2 names the spec lists).
SPACE_UNITS = frozenset(
    [
        "angstrom",
        "attometer",
        "centimeter",
        "decimeter",
        "exameter",
        "femtometer",
        "foot",
        "gigameter",
        "hectometer",
        "inch",
        "kilometer",
        "megameter",
        "meter",
        "micrometer",
        "mile",
        "millimeter",
        "nanometer",
        "parsec",
        "petameter",
        "picometer",
        "terameter",
        "yard",
        "yoctometer",
        "yottameter",
        "zeptometer",
        "zettameter",
    ]
)
TIME_UNITS = frozenset(
    [
        "attosecond",
        "centisecond",
        "day",
        "decisecond",
        "exasecond",
        "femtosecond",
        "gigasecond",
        "hectosecond",
        "hour",
        "kilosecond",
        "megasecond",
        "microsecond",
        "millisecond",
        "minute",
        "nanosecond",
        "petasecond",
        "picosecond",
        "second",
        "terasecond",
        "yoctosecond",
        "yottasecond",
        "zeptosecond",
        "zettasecond",
    ]
)

# Integers are strict: ``true`` is not 1 and ``2.0`` is not 2 (a hand-edited file with
# ``shape: [true, true]`` must not become a 1×1 camera).
PositiveInt = Annotated[int, Strict(), Field(gt=0)]
NonNegativeInt = Annotated[int, Strict(), Field(ge=0)]
MAX_THREADS = 64  # writer threads; more only time-slice the same cores
MAX_RING_BYTES = 1 << 40  # 1 TiB: beyond any machine; the memory check refuses less
FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
PositiveFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]


_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):/{1,}")


MAX_NAME_BYTES = 255  # a file name's limit on every filesystem acqwriter writes to


def check_local_path(text: str) -> None:
    """Refuse what no filesystem path can be: a URL (``s3://bucket/x`` would otherwise
    become a local folder ``s3:/bucket/x``: object-store URLs are
    :class:`~acqwriter.spec.location.ObjectURL`), a NUL byte, a name longer than
    :data:`MAX_NAME_BYTES` bytes."""
    match = _URL.match(text)
    if match:
        parse_object_url(text)  # a URL of another kind, or a malformed one: its error
    if "\0" in text:
        raise ValueError("expected a path without NUL bytes")
    for part in text.split("/"):
        if len(part.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES:
            raise ValueError(
                f"a file or folder name is {len(part.encode('utf-8', 'surrogateescape'))} "
                f"bytes long; at most {MAX_NAME_BYTES} (got {part[:40]!r}...)"
            )


class Channel(StrictModel):
    """One channel: a name and a display colour as 6 hex digits (RRGGBB); without one,
    the colour comes from :mod:`acqwriter.spec.palette` (``DAPI`` blue, ``FITC`` green)."""

    name: str = Field(min_length=1)
    color: str | None = None
    # display (start, end); default: measured from the data (acqwriter.format.display)
    window: tuple[FiniteFloat, FiniteFloat] | None = None

    @field_validator("color")
    @classmethod
    def _hex(cls, value: str | None) -> str | None:
        if value is None:
            return value
        value = value.removeprefix("#").upper()
        if len(value) != 6 or any(ch not in "0123456789ABCDEF" for ch in value):
            raise ValueError(f"expected 6 hex digits RRGGBB, got {value!r}")
        return value


class WriterOptions(StrictModel):
    """Fields shared by a stream spec and an acquisition spec (everything but the frame).

    ``io``: ``"auto"`` (default) writes chunk files with O_DIRECT where the filesystem
    accepts it and through the page cache otherwise; ``"direct"`` insists (an error where
    refused); ``"buffered"`` always uses the page cache, whose write-back, not
    compression, limits the rate (``docs/decisions.md``).

    ``shards`` (Zarr v3 ``sharding_indexed``; see :func:`acqwriter.plan.sharding.shard_factors`):
    ``"auto"`` (default) packs small chunks into shard files, ``"none"`` writes one file
    per chunk, or ``{"t": 64}``-style sizes along non-frame axes, each a multiple of the
    chunk size there (a shard always spans the whole frame in y and x).

    ``ring_bytes``: the memory for what is in flight. The ring holds
    ``ring_bytes // frame_bytes`` frames, minus the staging of shards that are open
    together (t-shards of a t × c × z stack keep a whole time point's shards open, each
    staging at least 8 MiB) and the writer threads' buffers for big sharded chunks (see
    :func:`acqwriter.plan.resources.Resources`). It is backed with memory only as far as a
    backlog reaches (:mod:`acqwriter.engine.slots`), but opening a stream refuses a ring larger
    than the memory available.

    ``shard_seal_s``: when shards span several steps of the first axis, a frame written
    into a shard that is not full yet becomes part of the dataset (inside the extent,
    readable, durable per ``sync``) within about this many seconds: the unfinished shard
    is *sealed*, i.e. its chunks so far plus an index are published atomically in its
    place, and republished as it grows (see :mod:`acqwriter.engine.shards`). Fast streams fill
    their shards sooner and never pay for it.

    Disk space: with ``disk_check`` (default) opening a stream refuses when the estimate
    for ``expected_frames`` (uncompressed: the ratio is unknown before the data, plus 5 %)
    and ``min_free_bytes`` do not fit in the free space; while writing, the stream stops
    cleanly (``append`` raises, everything received is written) when free space falls
    below ``min_free_bytes``.
    """

    out: ObjectURL | Path
    # the object store's own settings (endpoint, region, credentials; obstore's config
    # keys) for those the AWS environment does not give: never stored, shown or echoed
    storage_options: dict[str, str] = Field(default_factory=dict, exclude=True, repr=False)
    overwrite: bool = False
    dims: str = "tyx"
    sizes: dict[str, PositiveInt | None] = Field(default_factory=dict)
    chunks: dict[str, PositiveInt] = Field(default_factory=dict)
    codec: Compression = Field(default_factory=Compression)
    pixel_size: PositiveFloat = 1.0
    pixel_unit: str = "micrometer"
    z_step: PositiveFloat = 1.0
    # None: z is a plane index, not a distance (planes unevenly spaced, or not known)
    z_unit: str | None = "micrometer"
    time_increment: PositiveFloat | None = None  # None: measured (see acqwriter.format.display)
    time_unit: str = "second"
    channels: list[Channel] = Field(default_factory=list)
    name: str | None = None
    ring_bytes: Annotated[PositiveInt, Field(le=MAX_RING_BYTES)] = 512 * 2**20
    overflow: Literal["block", "drop"] = "block"
    threads: Annotated[PositiveInt, Field(le=MAX_THREADS)] | None = None
    sync: Literal["none", "close", "always"] = "close"
    io: Literal["auto", "direct", "buffered"] = "auto"
    shards: Literal["auto", "none"] | dict[str, PositiveInt] = "auto"
    pyramid: PyramidSpec = Field(default_factory=PyramidSpec)
    commit_interval_s: Annotated[float, Field(ge=0.01, le=60, allow_inf_nan=False)] = 0.25
    shard_seal_s: Annotated[float, Field(ge=0.01, le=3600, allow_inf_nan=False)] = 1.0
    ngff_version: NgffVersion = "0.5"  # 0.4: Zarr v2, for tools that need it; 0.6: RFC-5
    expected_frames: PositiveInt | None = None
    disk_check: bool = True
    min_free_bytes: NonNegativeInt = 256 * 2**20

    @field_validator("out", mode="before")
    @classmethod
    def _path(cls, value: Any) -> Any:
        if isinstance(value, ObjectURL):
            return value
        if isinstance(value, str | os.PathLike):
            text = os.fspath(value)
            if isinstance(text, str) and not text.strip():
                raise ValueError("expected a path such as run.ome.zarr, got an empty string")
            if isinstance(text, str) and _URL.match(text):
                return parse_object_url(text)
            check_local_path(str(text))
        return value

    @field_validator("dims")
    @classmethod
    def _dims(cls, value: str) -> str:
        value = value.strip().lower()
        if not value.endswith("yx") or len(value) < 3:
            raise ValueError("expected axes ending in 'yx' with at least one of t, c, z before")
        order = [AXIS_ORDER.index(a) if a in AXIS_ORDER else -1 for a in value]
        if -1 in order or order != sorted(set(order)):
            raise ValueError(
                f"expected an ordered subset of '{AXIS_ORDER}' (each once, in that order) "
                f"ending in 'yx', got {value!r}"
            )
        return value

    @field_validator("pixel_unit", "z_unit")
    @classmethod
    def _space_unit(cls, value: str | None, info: Any) -> str | None:
        if value is None and info.field_name == "z_unit":
            return value
        if value not in SPACE_UNITS:
            raise ValueError("expected an OME-NGFF space unit such as 'micrometer' or 'nanometer'")
        return value

    @field_validator("time_unit")
    @classmethod
    def _time_unit(cls, value: str) -> str:
        if value not in TIME_UNITS:
            raise ValueError("expected an OME-NGFF time unit such as 'second' or 'millisecond'")
        return value

    @model_validator(mode="after")
    def _axes_consistent(self) -> WriterOptions:
        outer = self.dims[:-2]
        for key in self.sizes:
            if key not in outer:
                raise ValueError(
                    f"sizes.{key}: axis {key!r} is not one of the non-frame axes {list(outer)} "
                    f"of dims {self.dims!r}"
                )
        for key in self.chunks:
            if key not in self.dims:
                raise ValueError(f"chunks.{key}: axis {key!r} is not in dims {self.dims!r}")
        if isinstance(self.shards, dict):
            for key in self.shards:
                if key in ("y", "x"):
                    raise ValueError(
                        f"shards.{key}: a shard always spans whole frames in y and x; "
                        "give shard sizes for the non-frame axes only"
                    )
                if key not in outer:
                    raise ValueError(
                        f"shards.{key}: axis {key!r} is not one of the non-frame axes "
                        f"{list(outer)} of dims {self.dims!r}"
                    )
        if self.ngff_version == "0.4" and isinstance(self.shards, dict):
            raise ValueError(
                "shards: OME-NGFF 0.4 is stored in Zarr v2, which has no shards; remove "
                "shards (each chunk is its own file) or write ngff_version 0.5 or 0.6"
            )
        for axis in outer[1:]:
            if self.sizes.get(axis) is None and not (axis == "c" and self.channels):
                raise ValueError(
                    f"sizes.{axis}: expected a positive integer (only the first axis, "
                    f"{outer[0]!r}, may be unbounded)"
                )
        if self.channels:
            if "c" not in outer:
                raise ValueError("channels: given, but dims has no 'c' axis")
            n_c = self.sizes.get("c")
            if n_c is not None and n_c != len(self.channels):
                raise ValueError(
                    f"channels: expected {n_c} entries to match sizes.c, got {len(self.channels)}"
                )
        return self

    # -- files ------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Any:
        """Load and validate a JSON/YAML/TOML spec file (by extension)."""
        return load_spec(path, cls)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Save to a JSON/YAML/TOML file (by extension)."""
        dump_spec(self, path)

    # -- derived, after validation ------------------------------------------------------
    @property
    def outer_dims(self) -> str:
        """The non-frame axes, slowest first (e.g. ``"tcz"``)."""
        return self.dims[:-2]

    def outer_sizes(self) -> tuple[int | None, ...]:
        sizes = dict(self.sizes)
        if self.channels and sizes.get("c") is None:
            sizes["c"] = len(self.channels)
        return tuple(sizes.get(a) for a in self.outer_dims)


class StreamSpec(WriterOptions):
    """Everything the writer needs: :class:`WriterOptions` plus the frame shape and dtype.

    ``shape`` is one frame, ``(y, x)``. ``chunks`` defaults to 1 along t/c/z and, along
    y and x, to the whole frame when a frame is at most :data:`FRAME_CHUNK_MAX_BYTES`
    (else ``min(size, 1024)``); a chunk may span several frames along t, c or z.
    """

    shape: tuple[PositiveInt, PositiveInt]
    dtype: str

    @field_validator("shape", mode="before")
    @classmethod
    def _shape(cls, value: Any) -> Any:
        if isinstance(value, str) or not hasattr(value, "__len__") or len(value) != 2:
            raise ValueError("expected the frame shape as [height, width]")
        return value

    @field_validator("dtype", mode="before")
    @classmethod
    def _dtype(cls, value: Any) -> str:
        """Any spelling of a supported type, in either byte order (``">u2"``): the
        array is stored little-endian, as its Zarr metadata says, and frames of the
        other byte order are converted as they are appended."""
        try:
            name = np.dtype(value).name
        except TypeError as exc:
            raise ValueError(f"expected one of {', '.join(SUPPORTED_DTYPES)}") from exc
        if name not in SUPPORTED_DTYPES:
            raise ValueError(f"expected one of {', '.join(SUPPORTED_DTYPES)}")
        return name

    @model_validator(mode="after")
    def _ring_holds_a_chunk(self) -> StreamSpec:
        """The frames of one chunk must fit in the ring (the plan checks the frames a
        whole row of chunks holds open at once: :class:`acqwriter.plan.resources.Resources`)."""
        need = math.prod(self.resolved_chunks()[:-2])
        if self.ring_bytes < need * self.frame_bytes:
            raise ValueError(
                f"ring_bytes: expected at least {need * self.frame_bytes} bytes ({need} "
                f"frames of {self.frame_bytes} bytes, one chunk's frames), got {self.ring_bytes}"
            )
        return self

    @model_validator(mode="after")
    def _shards_hold_whole_chunks(self) -> StreamSpec:
        if isinstance(self.shards, dict):
            chunks = dict(zip(self.dims, self.resolved_chunks(), strict=True))
            for axis, size in self.shards.items():
                if size % chunks[axis]:
                    raise ValueError(
                        f"shards.{axis}: expected a multiple of the chunk size "
                        f"{chunks[axis]} along {axis!r}, got {size}"
                    )
        return self

    @property
    def frame_bytes(self) -> int:
        return math.prod(self.shape) * np.dtype(self.dtype).itemsize

    def resolved_chunks(self) -> tuple[int, ...]:
        """Chunk shape over ``dims``, defaults filled in and clipped to bounded sizes."""
        out = []
        sizes = dict(zip(self.outer_dims, self.outer_sizes(), strict=True))
        sizes.update(y=self.shape[0], x=self.shape[1])
        for axis in self.dims:
            if axis in "tcz":
                default = 1
            elif self.frame_bytes <= FRAME_CHUNK_MAX_BYTES:
                default = sizes[axis]
            else:
                default = min(sizes[axis], 1024)
            chunk = self.chunks.get(axis, default)
            if sizes.get(axis) is not None:
                chunk = min(chunk, sizes[axis])
            out.append(chunk)
        return tuple(out)
