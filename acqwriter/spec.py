"""What to write: the validated description of one OME-Zarr stream.

A :class:`StreamSpec` is everything the writer needs before the first frame arrives:
the axes and their sizes, the frame shape and dtype, the chunking, the codec, the
physical calibration, the channels, the output path and the resource limits (ring
size, overflow policy, writer threads, fsync policy, pyramid).

Data flow: a spec file (JSON/YAML/TOML, see :mod:`acqwriter.spec_io`), CLI options or
daemon ``configure`` parameters → pydantic validation here → :class:`SpecError` naming
the field and what was expected, or a frozen spec that :func:`acqwriter.open_stream`
turns into a layout (:mod:`acqwriter.layout`) and on-disk metadata
(:mod:`acqwriter.ome`).

Axes follow OME-NGFF: an ordered subset of ``t, c, z`` followed by ``y, x``. Each camera
frame is one ``(y, x)`` plane; frames arrive in C order over the other axes (for
``tczyx``: z fastest, then c, then t). Only the first axis may be unbounded
(``sizes[first] = None``): it is the axis along which the array grows on disk.
"""

from __future__ import annotations

import difflib
import math
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    Strict,
    ValidationError,
    field_validator,
    model_validator,
)

__all__ = [
    "AXIS_ORDER",
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


class SpecError(ValueError):
    """An invalid spec: the message names each offending field and what was expected."""

    def __init__(self, message: str, errors: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.errors = errors or []


MAX_ERROR_LINES = 20
_NAMED = re.compile(r"^([A-Za-z_][\w.\[\]']*): ")


def format_validation_error(exc: ValidationError, prefix: str = "") -> SpecError:
    """Turn a pydantic error into one readable line per field: ``field: expected …, got …``."""
    lines = []
    errors = []
    for err in exc.errors(include_url=False):
        loc = ""
        for part in err["loc"]:
            text = str(part)
            if isinstance(part, int) or text.isidentifier():
                loc += f".{text}" if loc else text
            else:  # an odd key (e.g. from a hand-edited file): quote it
                loc += f"[{text!r}]"
        field = f"{prefix}{loc}" if loc else (prefix.rstrip(".") or "spec")
        given = err.get("input")
        shown = repr(given)
        if len(shown) > 80:
            shown = shown[:77] + "..."
        msg = err["msg"].removeprefix("Value error, ")
        named = _NAMED.match(msg)
        if not loc and named:  # a check across fields names its own field
            field, msg = f"{prefix}{named.group(1)}", msg[named.end() :]
            lines.append(f"{field}: {msg}")
        elif err["type"] == "missing":
            lines.append(f"{field}: required field is missing")
        elif (
            isinstance(given, dict) and err["type"] not in ("dict_type", "model_type")
        ) or "got " in msg:  # the message already shows what was given
            lines.append(f"{field}: {msg}")
        else:
            lines.append(f"{field}: {msg} (got {shown})")
        errors.append({"field": field, "message": msg})
    if len(lines) > MAX_ERROR_LINES:  # a hostile file can hold thousands of bad fields
        lines = [*lines[:MAX_ERROR_LINES], f"... and {len(lines) - MAX_ERROR_LINES} more"]
    if len(lines) == 1:  # the usual case: one line that says it all
        return SpecError(f"invalid spec: {lines[0]}", errors)
    return SpecError("invalid spec:\n  " + "\n  ".join(lines), errors)


_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):/{1,}")


MAX_NAME_BYTES = 255  # a file name's limit on every filesystem acqwriter writes to


def check_local_path(text: str) -> None:
    """Refuse what no filesystem path can be: a URL (``s3://bucket/x`` would otherwise
    become a local folder ``s3:/bucket/x``; acqwriter writes to filesystems only), a NUL
    byte, a name longer than :data:`MAX_NAME_BYTES` bytes."""
    match = _URL.match(text)
    if match:
        raise ValueError(
            f"{match.group(1)!r} URLs are not supported: acqwriter writes to a local or "
            f"mounted filesystem path only (give e.g. /data/run.ome.zarr), got {text[:80]!r}"
        )
    if "\0" in text:
        raise ValueError("expected a path without NUL bytes")
    for part in text.split("/"):
        if len(part.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES:
            raise ValueError(
                f"a file or folder name is {len(part.encode('utf-8', 'surrogateescape'))} "
                f"bytes long; at most {MAX_NAME_BYTES} (got {part[:40]!r}...)"
            )


def did_you_mean(given: str, choices: Any) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``choices``, or an empty string."""
    close = difflib.get_close_matches(str(given), [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


class StrictModel(BaseModel):
    """Base of every spec model: unknown fields are errors, instances are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


ZSTD_BLOCK_BYTES = 1 << 20  # blosc block size "auto" picks for zstd (see Compression)
MIN_BLOCK_BYTES = 128  # c-blosc's smallest block (MIN_BUFFERSIZE)
MAX_BLOCK_BYTES = 1 << 30  # c-blosc 1 keeps sizes in 31 bits; a block is at most a chunk


_CODEC_SHORTHANDS: dict[str, dict[str, Any]] = {
    "lz4": {"name": "blosc", "cname": "lz4", "shuffle": "shuffle", "level": 5},
    "blosc-lz4": {"name": "blosc", "cname": "lz4", "shuffle": "shuffle", "level": 5},
    "blosc-zstd": {"name": "blosc", "cname": "zstd", "shuffle": "bitshuffle", "level": 1},
    "zstd": {"name": "zstd", "level": 1},
    "none": {"name": "none"},
}


class Compression(StrictModel):
    """How chunks are compressed.

    ``name="blosc"`` uses ``cname`` (lz4 or zstd) with ``shuffle``, ``level`` and
    ``blocksize``; ``name="zstd"`` is plain zstd at ``level``; ``name="none"`` stores raw
    bytes. A string shorthand is accepted wherever a codec is expected:
    ``lz4`` / ``blosc-lz4`` (blosc lz4 level 5 shuffle), ``blosc-zstd`` (blosc zstd level 1
    bitshuffle), ``zstd`` (plain zstd level 1), ``none``.

    ``blocksize`` is the size of the blocks blosc compresses one at a time inside a chunk
    (bytes; written to ``zarr.json`` and to every chunk's header, so any reader decodes
    it). ``0`` lets c-blosc choose (numcodecs' and zarr-python's default); ``"auto"``
    (default) is c-blosc's choice for lz4 and :data:`ZSTD_BLOCK_BYTES` for zstd. Why:
    c-blosc's own choice for zstd is 32 KiB at level 1 (128 KiB at level 3), and zstd
    resets its state for every block: on 2048² uint16 frames, zstd level 1 + bitshuffle
    compresses 1.7× faster (616 → 1 019 MB/s per core), decompresses 1.8× faster and
    stores 4 % less with 1 MiB blocks; lz4 gains nothing measurable
    (``docs/decisions.md``).
    """

    name: Literal["blosc", "zstd", "none"] = "blosc"
    cname: Literal["lz4", "zstd"] = "lz4"
    shuffle: Literal["shuffle", "bitshuffle", "noshuffle"] = "shuffle"
    level: Annotated[int, Strict()] = 5
    blocksize: Literal["auto"] | int = "auto"

    @field_validator("blocksize", mode="before")
    @classmethod
    def _blocksize(cls, value: Any) -> Any:
        ok = value == "auto" or (
            isinstance(value, int)
            and not isinstance(value, bool)
            and (value == 0 or MIN_BLOCK_BYTES <= value <= MAX_BLOCK_BYTES)
        )
        if not ok:
            raise ValueError(
                "expected 'auto', 0 (c-blosc chooses) or a number of bytes from "
                f"{MIN_BLOCK_BYTES} to {MAX_BLOCK_BYTES}, got {value!r}"
            )
        return value

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        if isinstance(value, str):
            key = value.strip().lower()
            if key not in _CODEC_SHORTHANDS:
                raise ValueError(
                    f"expected one of {', '.join(sorted(_CODEC_SHORTHANDS))} "
                    f"or an object with name/cname/shuffle/level, got {value!r}"
                    + did_you_mean(key, _CODEC_SHORTHANDS)
                )
            return dict(_CODEC_SHORTHANDS[key])
        return value

    @model_validator(mode="after")
    def _check_level(self) -> Compression:
        lo, hi = (0, 9) if self.name == "blosc" else (-131072, 22)
        if self.name != "none" and not lo <= self.level <= hi:
            raise ValueError(
                f"level: expected {lo}..{hi} for codec {self.name!r}, got {self.level}"
            )
        if self.name != "blosc" and self.blocksize != "auto":
            raise ValueError(
                f"blocksize: applies to blosc only, got {self.blocksize!r} for codec "
                f"{self.name!r} (remove it, or use name 'blosc')"
            )
        return self

    def block_bytes(self) -> int:
        """The blosc block size written (0: c-blosc chooses per chunk); 0 for non-blosc."""
        if self.name != "blosc":
            return 0
        if self.blocksize == "auto":
            return ZSTD_BLOCK_BYTES if self.cname == "zstd" else 0
        return int(self.blocksize)

    def describe(self) -> str:
        if self.name == "blosc":
            return f"blosc {self.cname} level {self.level} {self.shuffle}"
        if self.name == "zstd":
            return f"zstd level {self.level}"
        return "none"


class Channel(StrictModel):
    """One channel: a name and a display colour as 6 hex digits (RRGGBB)."""

    name: str = Field(min_length=1)
    color: str = "FFFFFF"
    # display (start, end); default: measured from the data (acqwriter.display)
    window: tuple[FiniteFloat, FiniteFloat] | None = None

    @field_validator("color")
    @classmethod
    def _hex(cls, value: str) -> str:
        value = value.removeprefix("#").upper()
        if len(value) != 6 or any(ch not in "0123456789ABCDEF" for ch in value):
            raise ValueError(f"expected 6 hex digits RRGGBB, got {value!r}")
        return value


class PyramidSpec(StrictModel):
    """The multiscale pyramid built after acquisition.

    Levels are downsampled 2× in y and x (and in z when ``downsample_z``). With
    ``levels="auto"`` levels are added until one fits in a single (y, x) chunk or
    ``max_levels`` (level 0 included) is reached; an integer asks for exactly that many
    levels (level 0 included), still capped where a level would be 1×1.
    ``method="mean"`` averages each block (integers rounded half up:
    ``(sum + n // 2) // n``; at an odd edge the block is clipped to the pixels that
    exist); ``"nearest"`` keeps the top-left pixel of each block.
    """

    enabled: bool = True
    levels: Literal["auto"] | PositiveInt = "auto"
    max_levels: PositiveInt = 8
    method: Literal["mean", "nearest"] = "mean"
    downsample_z: bool = False


class WriterOptions(StrictModel):
    """Fields shared by a stream spec and an acquisition spec (everything but the frame).

    ``io``: ``"auto"`` (default) writes chunk files with O_DIRECT where the filesystem
    accepts it and through the page cache otherwise; ``"direct"`` insists (an error where
    refused); ``"buffered"`` always uses the page cache. Direct I/O measured 1.55x the
    buffered rate here (benchmarks/RESULTS.md): the page cache's write-back, not
    compression, was the limit.

    ``shards`` (Zarr v3 ``sharding_indexed``; see :meth:`StreamSpec.shard_factors`):
    ``"auto"`` (default) packs small chunks into shard files, ``"none"`` writes one file
    per chunk, or ``{"t": 64}``-style sizes along non-frame axes, each a multiple of the
    chunk size there (a shard always spans the whole frame in y and x).

    ``ring_bytes``: the memory for what is in flight. The ring holds
    ``ring_bytes // frame_bytes`` frames, minus the staging of shards that are open
    together (t-shards of a t × c × z stack keep a whole time point's shards open, each
    staging at least 8 MiB) and the writer threads' buffers for big sharded chunks (see
    :func:`acqwriter.stream.ring_capacity`). It is backed with memory only as far as a
    backlog reaches (:mod:`acqwriter.ring`), but opening a stream refuses a ring larger
    than the memory available.

    ``shard_seal_s``: when shards span several steps of the first axis, a frame written
    into a shard that is not full yet becomes part of the dataset (inside the extent,
    readable, durable per ``sync``) within about this many seconds: the unfinished shard
    is *sealed*, i.e. its chunks so far plus an index are published atomically in its
    place, and republished as it grows (see :mod:`acqwriter.shards`). Fast streams fill
    their shards sooner and never pay for it.

    Disk space: with ``disk_check`` (default) opening a stream refuses when the estimate
    for ``expected_frames`` (uncompressed: the ratio is unknown before the data, plus 5 %)
    and ``min_free_bytes`` do not fit in the free space; while writing, the stream stops
    cleanly (``append`` raises, everything received is written) when free space falls
    below ``min_free_bytes``.
    """

    out: Path
    overwrite: bool = False
    dims: str = "tyx"
    sizes: dict[str, PositiveInt | None] = Field(default_factory=dict)
    chunks: dict[str, PositiveInt] = Field(default_factory=dict)
    codec: Compression = Field(default_factory=Compression)
    pixel_size: PositiveFloat = 1.0
    pixel_unit: str = "micrometer"
    z_step: PositiveFloat = 1.0
    z_unit: str = "micrometer"
    time_increment: PositiveFloat | None = None  # None: measured (see acqwriter.display)
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
    expected_frames: PositiveInt | None = None
    disk_check: bool = True
    min_free_bytes: NonNegativeInt = 256 * 2**20

    @field_validator("out", mode="before")
    @classmethod
    def _path(cls, value: Any) -> Any:
        if isinstance(value, str | os.PathLike):
            text = os.fspath(value)
            if isinstance(text, str) and not text.strip():
                raise ValueError("expected a path such as run.ome.zarr, got an empty string")
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
    def _space_unit(cls, value: str) -> str:
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
        from acqwriter.spec_io import load_spec

        return load_spec(path, cls)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Save to a JSON/YAML/TOML file (by extension)."""
        from acqwriter.spec_io import dump_spec

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


BIG_CHUNK_BYTES = 2 << 20  # chunks this big are pipelined or get more writer threads
THREAD_BUFFER_BYTES = 256 << 20  # cap on the writer threads' own buffers together
IO_THREADS = 4  # threads that write big encoded chunks (see io_threads)
AUTO_SHARD_BELOW_BYTES = 2 << 20  # "auto" shards chunks smaller than this (raw)
AUTO_SHARD_BYTES = 16 << 20  # … into shards of about this much raw data
# … and of at most this many inner chunks: a shard's index takes 16 bytes per inner chunk
# in memory and on disk, and the ring is sized by simulating one block of frames; only
# chunks under 1 KiB reach it (a 1×1 float32 frame made shards of 4 Mi chunks: a 64 MiB
# index per open shard, and 8 s to validate the spec)
AUTO_SHARD_MAX_INNER = 16384


class StreamSpec(WriterOptions):
    """Everything the writer needs: :class:`WriterOptions` plus the frame shape and dtype.

    ``shape`` is one frame, ``(y, x)``. ``chunks`` defaults to 1 along t/c/z and
    ``min(size, 1024)`` along y and x; a chunk may span several frames along t, c or z.
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
    def _ring_holds_open_chunks(self) -> StreamSpec:
        from acqwriter.layout import FrameLayout  # local: layout depends on this module

        layout = FrameLayout(self)
        need = layout.min_ring_frames
        frame_bytes = layout.frame_bytes
        if self.ring_bytes // frame_bytes < need:
            raise ValueError(
                f"ring_bytes: expected at least {need * frame_bytes} bytes ({need} frames of "
                f"{frame_bytes} bytes, the frames one chunk row holds open at once for chunks "
                f"{layout.chunk_shape}), got {self.ring_bytes}"
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
            default = 1 if axis in "tcz" else min(sizes[axis], 1024)
            chunk = self.chunks.get(axis, default)
            if sizes.get(axis) is not None:
                chunk = min(chunk, sizes[axis])
            out.append(chunk)
        return tuple(out)

    def shard_factors(self) -> tuple[int, ...]:
        """Inner chunks per shard along each non-frame axis (all 1: no sharding).

        ``"auto"`` shards only chunks smaller than :data:`AUTO_SHARD_BELOW_BYTES` (larger
        chunks make large files already; measured: per-file kernel work was ~40 % of CPU
        for 512 KiB chunks, negligible for 8 MiB ones). It grows a shard from the fastest
        non-frame axis outwards (z, then c, then the first axis, t) up to
        :data:`AUTO_SHARD_BYTES` of raw data (and :data:`AUTO_SHARD_MAX_INNER` inner
        chunks), covering an axis fully before growing the next. Along the first axis
        that means 512² uint16 frames go 32 to a shard: 20 000 frames make 625 files
        instead of 20 000 (scenario d: ~2× the frames/s,
        benchmarks/RESULTS.md). The price would be a dataset, live viewers and a crash's
        survivors lagging by a whole shard at slow rates; ``shard_seal_s`` bounds that
        lag in time instead (an unfinished shard is sealed, see :mod:`acqwriter.shards`).
        """
        chunks = self.resolved_chunks()
        n_outer = len(self.outer_dims)
        outer_chunks = chunks[:n_outer]
        sizes = self.outer_sizes()
        if self.shards == "none":
            return (1,) * n_outer
        if isinstance(self.shards, dict):
            out = []
            for axis, c in zip(self.outer_dims, outer_chunks, strict=True):
                size = self.shards.get(axis, c)
                if size % c:
                    raise SpecError(
                        f"shards.{axis}: expected a multiple of the chunk size {c} along "
                        f"{axis!r}, got {size}"
                    )
                out.append(size // c)
            return tuple(out)
        tiles = math.ceil(self.shape[0] / chunks[-2]) * math.ceil(self.shape[1] / chunks[-1])
        group_bytes = math.prod(chunks) * np.dtype(self.dtype).itemsize * tiles
        if math.prod(chunks) * np.dtype(self.dtype).itemsize >= AUTO_SHARD_BELOW_BYTES:
            return (1,) * n_outer
        factors = [1] * n_outer
        for axis_i in reversed(range(n_outer)):
            size, c = sizes[axis_i], outer_chunks[axis_i]
            room = min(
                AUTO_SHARD_BYTES // (group_bytes * math.prod(factors)),
                AUTO_SHARD_MAX_INNER // (tiles * math.prod(factors)),
            )
            if size is None:  # the first axis, unbounded
                factors[axis_i] = max(1, room)
                break
            limit = math.ceil(size / c)
            factors[axis_i] = max(1, min(limit, room))
            if factors[axis_i] < limit:
                break
        return tuple(factors)

    def writer_threads(self) -> int:
        """Threads that compress chunks: ``threads``, or by chunk size and layout.

        Unsharded chunks of 2 MiB or more go through a pipeline: one compressing thread
        per core hands each encoded chunk to the I/O threads (:meth:`io_threads`), so a
        core never waits for the disk. (Before, one thread per chunk compressed then
        blocked in its 2–3 ms direct write, and eight of them time-sliced on two cores
        finished their compressions together and left the disk idle in between: 2048²
        lz4 frames, 1 870 MB/s raw; pipelined 2 + 4 threads, 2 250; docs/decisions.md.)
        Sharded big chunks: each writer also writes its shard's full segments,
        so four per core keep the cores busy meanwhile (capped so the threads' own
        buffers stay under THREAD_BUFFER_BYTES). Small chunks block briefly and more
        threads only add lock traffic (512² frames: 960 MB/s with 3, 952 with 8 and 40 %
        more kernel time), so one per core plus one.

        One core is left to the producer when it can compress too: under ``block``, a
        frame that is one whole chunk and finds the ring full is compressed on the
        caller's thread (:meth:`acqwriter.stream.FrameStream.append`). A writer thread
        for every core then made three compressors time-slice two cores, and the
        producer, starved, copied frames into the ring that it could have compressed
        from its own buffer. With one writer thread fewer (2048² frames, two cores, 8
        interleaved pairs of 300 frames): 12 % less user CPU, lz4 2 366 against 2 312
        MB/s raw (median), t × c × z +6–14 %, zstd +1–2 %. A source slower than the
        writers never fills the ring, and the writer threads alone keep up with it."""
        if self.threads:
            return self.threads
        from acqwriter.layout import FrameLayout  # local: layout depends on this module

        cores = max(1, len(os.sched_getaffinity(0)))
        layout = FrameLayout(self)
        if layout.chunk_bytes < BIG_CHUNK_BYTES:
            return cores + 1
        if self.io_threads():  # pipelined: the I/O threads write
            return max(1, cores - 1) if self.producer_compresses() else cores
        # each thread holds up to two chunks (staging + compressed scratch)
        return max(cores + 1, min(4 * cores, THREAD_BUFFER_BYTES // (2 * layout.chunk_bytes)))

    def thread_buffer_bytes(self) -> int:
        """Memory the writer threads hold beside the ring for big chunks they write
        themselves (2 MiB or more, not pipelined: sharded): a staging chunk and a
        compressed scratch buffer each. It comes out of ``ring_bytes``
        (:func:`acqwriter.stream.ring_capacity`), as open shards' staging does, so that
        the ring + 300 MB bound holds: 2048² frames in 16 MiB t-shards took 836–950 MB
        of RSS with a 512 MiB ring and eight writer threads when they were not. Small
        chunks' buffers, and the pipelined path's encoded-chunk pool, are within the
        300 MB."""
        from acqwriter.layout import FrameLayout

        layout = FrameLayout(self)
        if layout.chunk_bytes < BIG_CHUNK_BYTES or self.io_threads():
            return 0
        return self.writer_threads() * 2 * layout.chunk_bytes

    def producer_compresses(self) -> bool:
        """Whether a frame that finds the ring full is compressed on the producer's
        thread (:meth:`acqwriter.stream.FrameStream.append`): under ``block``, when one
        frame is one whole chunk, and not into shards. The producer's frames are a whole
        ring ahead of the writer threads, so into shards each would open a shard (and
        its 8 MiB staging segment) of its own while the writers still fill the older
        ones: 512² frames with a 512 MiB ring peaked at 930 MB RSS, over the ring +
        300 MB bound (648 MB without)."""
        from acqwriter.layout import FrameLayout

        layout = FrameLayout(self)
        return self.overflow == "block" and layout.frame_is_chunk and layout.shards is None

    def io_threads(self) -> int:
        """Threads that only write encoded chunks (0: the compressing threads write).

        Four for unsharded chunks of 2 MiB or more: direct writes block a thread for
        2–3 ms each while using little CPU, and the disk measured the same 1.4–1.7 GB/s
        with 1 to 8 writers (2 + 4 and 2 + 6 threads gave the same speed). Small chunks
        are dominated by file creation, which is CPU in the kernel: a separate I/O stage
        measured no faster (512² frames: 1 018 vs 1 040 MB/s)."""
        from acqwriter.layout import FrameLayout

        layout = FrameLayout(self)
        if layout.shards is None and layout.chunk_bytes >= BIG_CHUNK_BYTES:
            return IO_THREADS
        return 0

    @classmethod
    def parse(cls, data: Any) -> StreamSpec:
        """Validate ``data`` (a mapping) or raise :class:`SpecError` naming each bad field."""
        if isinstance(data, cls):
            return data
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise format_validation_error(exc) from None
