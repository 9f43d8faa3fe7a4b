"""The acquisition options shared by ``acqwriter acquire`` and ``acqwriter ctl configure``.

:func:`add_spec_options` declares them (same names as the spec fields, see
:class:`acqwriter.acquisition.spec.AcquisitionSpec`); :func:`spec_mapping` overlays the
options given on the command line on a ``--spec`` file, into the mapping the spec is
validated from. Both front ends import this module; neither imports the other for it.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

from acqwriter.spec.model import NGFF_VERSIONS, SpecError
from acqwriter.spec.pyramid import PYRAMID_WHEN

__all__ = ["add_spec_options", "spec_mapping"]


def _pair(text: str, sep: str = "x") -> list[int]:
    parts = text.lower().replace(",", sep).split(sep)
    try:
        return [int(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected integers like 2048{sep}2048, got {text!r}"
        ) from None


def _shape(text: str) -> list[int]:
    values = _pair(text)
    if len(values) != 2:
        raise argparse.ArgumentTypeError(f"expected HEIGHTxWIDTH, e.g. 2048x2048, got {text!r}")
    return values


def _roi(text: str) -> list[int]:
    values = _pair(text, ",")
    if len(values) != 4:
        raise argparse.ArgumentTypeError(f"expected X,Y,WIDTH,HEIGHT, got {text!r}")
    return values


def _blocksize(text: str) -> int | str:
    """``auto`` or a whole number of bytes; the range is checked by the spec."""
    text = text.strip().lower()
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected 'auto' or a whole number of bytes, got {text!r}"
        ) from None


def _out(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a path such as run.ome.zarr, got ''")
    return text


def _channel(text: str) -> dict[str, Any]:
    """``NAME[:RRGGBB[:START-END]]`` → a channel (name, colour, display window)."""
    parts = text.split(":")
    if not parts[0].strip() or len(parts) > 3:
        raise argparse.ArgumentTypeError(
            f"expected NAME, NAME:RRGGBB or NAME:RRGGBB:START-END, e.g. GFP:00FF00, got {text!r}"
        )
    channel: dict[str, Any] = {"name": parts[0].strip()}
    if len(parts) > 1 and parts[1].strip():
        channel["color"] = parts[1].strip()
    if len(parts) > 2:
        window = re.fullmatch(r"\s*(-?[\d.]+)\s*-\s*(-?[\d.]+)\s*", parts[2])
        if not window:
            raise argparse.ArgumentTypeError(
                f"expected the display window as START-END, e.g. 100-4000, got {parts[2]!r}"
            )
        channel["window"] = [float(window.group(1)), float(window.group(2))]
    return channel


def _axis_map(text: str) -> dict[str, Any]:
    """``t=32,y=256`` → dict; ``32x256x256`` → {"_trailing": [32, 256, 256]}."""
    text = text.strip()
    if "=" not in text:
        return {"_trailing": _pair(text)}
    out: dict[str, Any] = {}
    for item in text.split(","):
        key, _, value = item.partition("=")
        key = key.strip().lower()
        value = value.strip().lower()
        if not key or not value:
            raise argparse.ArgumentTypeError(
                f"expected axis=value pairs like t=32,y=256, got {text!r}"
            )
        try:
            out[key] = None if value in ("none", "null", "unbounded") else int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{key}: expected an integer, got {value!r}") from None
    return out


def add_spec_options(p: argparse.ArgumentParser) -> None:
    """The acquisition-spec options shared by ``acquire`` and ``ctl configure``."""
    p.add_argument(
        "--spec", type=Path, help="spec file (.json/.yaml/.toml) with any of the fields below"
    )
    p.add_argument("--camera", help="'sim' (default), 'demo', or a Micro-Manager .cfg path")
    p.add_argument("--frames", type=int, help="number of frames")
    p.add_argument(
        "--timepoints", type=int, help="number of time points (frames = time points x c x z)"
    )
    p.add_argument(
        "--ngff",
        dest="ngff_version",
        choices=list(NGFF_VERSIONS),
        help="OME-NGFF version: 0.5 (default, Zarr v3), 0.6 (Zarr v3, coordinate systems; "
        "positions as a scene placed by the stage) or 0.4 (Zarr v2, for tools that cannot "
        "read 0.5 yet; no shards)",
    )
    p.add_argument(
        "--sequence",
        type=Path,
        help="a useq MDASequence (.yaml/.json, useq-schema's format) to run: it moves the "
        "stages and switches channels, and says the length, channels, z and positions",
    )
    p.add_argument(
        "--positions",
        type=int,
        help="visit N stage positions (one field of view apart along x) every time point, "
        "each position its own image of a collection; the length counts each position's frames",
    )
    p.add_argument(
        "--allow-partial",
        dest="allow_partial",
        action="store_true",
        default=None,
        help="accept a frame count that ends inside a time point (its missing frames flagged)",
    )
    p.add_argument("--duration", help="acquisition time, e.g. 10s, 500ms, 2m")
    p.add_argument("--shape", type=_shape, help="frame HEIGHTxWIDTH (sim camera)")
    p.add_argument("--dtype", choices=["uint8", "uint16"], help="pixel type (sim camera)")
    p.add_argument(
        "--fps", type=float, help="frame rate of the sim camera (default: as fast as possible)"
    )
    p.add_argument("--exposure", dest="exposure_ms", type=float, help="exposure in ms")
    p.add_argument("--roi", type=_roi, help="camera ROI X,Y,WIDTH,HEIGHT")
    p.add_argument("--binning", type=int, help="camera binning")
    p.add_argument("--out", type=_out, help="output dataset path (e.g. run.ome.zarr)")
    p.add_argument(
        "--overwrite", action="store_true", default=None, help="replace an existing dataset"
    )
    p.add_argument("--dims", help="axes, an ordered subset of tczyx ending in yx (default tyx)")
    p.add_argument("--sizes", type=_axis_map, help="sizes of the non-frame axes, e.g. c=3,z=20")
    p.add_argument(
        "--chunks",
        type=_axis_map,
        help="chunk shape: t=32,y=256,x=256 or 32x256x256 (trailing axes)",
    )
    p.add_argument("--codec", help="lz4 | blosc-lz4 | blosc-zstd | zstd | none")
    p.add_argument("--clevel", type=int, help="compression level")
    p.add_argument(
        "--shuffle", choices=["shuffle", "bitshuffle", "noshuffle"], help="blosc shuffle"
    )
    p.add_argument(
        "--blocksize",
        type=_blocksize,
        help="blosc block size in bytes, 0 (c-blosc chooses) or auto (default: 1 MiB for zstd)",
    )
    p.add_argument(
        "--channel",
        dest="channels",
        type=_channel,
        action="append",
        help="channel NAME[:RRGGBB[:START-END]] (repeat per channel), e.g. GFP:00FF00",
    )
    p.add_argument("--pixel-size", dest="pixel_size", type=float, help="pixel size (µm by default)")
    p.add_argument("--z-step", dest="z_step", type=float, help="z step")
    p.add_argument("--time-increment", dest="time_increment", type=float, help="time step (s)")
    p.add_argument("--ring-mb", type=float, help="ring buffer size in MiB (default 512)")
    p.add_argument("--overflow", choices=["block", "drop"], help="when the ring is full")
    p.add_argument("--threads", type=int, help="writer threads (default: one per core)")
    p.add_argument(
        "--sync", choices=["none", "close", "always"], help="fsync policy (default close)"
    )
    p.add_argument(
        "--pyramid",
        choices=list(PYRAMID_WHEN),
        help="lower levels written live (during acquisition), built at close, or none",
    )
    p.add_argument("--no-pyramid", action="store_true", help="the same as --pyramid none")
    p.add_argument("--pyramid-method", choices=["mean", "nearest"])


_PLAIN_FIELDS = [
    "camera",
    "frames",
    "timepoints",
    "positions",
    "ngff_version",
    "allow_partial",
    "duration",
    "shape",
    "dtype",
    "fps",
    "exposure_ms",
    "roi",
    "binning",
    "out",
    "overwrite",
    "dims",
    "sizes",
    "pixel_size",
    "z_step",
    "time_increment",
    "channels",
    "overflow",
    "threads",
    "sync",
]


def spec_mapping(args: argparse.Namespace) -> dict[str, Any]:
    """Spec file fields, overridden by the options given on the command line (unvalidated)."""
    from acqwriter.spec.files import load_mapping

    data: dict[str, Any] = load_mapping(args.spec) if args.spec else {}
    if getattr(args, "sequence", None) is not None:
        data["sequence"] = load_mapping(args.sequence)
    for name in _PLAIN_FIELDS:
        value = getattr(args, name, None)
        if value is not None:
            data[name] = str(value) if isinstance(value, Path) else value
    if args.ring_mb is not None:
        data["ring_bytes"] = int(args.ring_mb * 2**20)
    codec_given = any(
        v is not None for v in (args.codec, args.clevel, args.shuffle, args.blocksize)
    )
    if codec_given:
        from acqwriter.spec.model import Compression

        base = data.get("codec", "lz4") if args.codec is None else args.codec
        try:
            codec = Compression.model_validate(base).model_dump()
        except Exception:
            codec = base  # let full validation report it against the field name
        if isinstance(codec, dict):
            if args.clevel is not None:
                codec["level"] = args.clevel
            if args.shuffle is not None:
                codec["shuffle"] = args.shuffle
            if args.blocksize is not None:
                codec["blocksize"] = args.blocksize
        data["codec"] = codec
    if args.no_pyramid or args.pyramid_method or args.pyramid:
        pyramid = data.get("pyramid") or {}
        pyramid = {"when": pyramid} if isinstance(pyramid, str) else dict(pyramid)
        if args.pyramid:
            pyramid["when"] = args.pyramid
            pyramid.pop("enabled", None)
        if args.no_pyramid:
            if args.pyramid not in (None, "none"):
                raise SpecError(f"--no-pyramid contradicts --pyramid {args.pyramid}")
            pyramid.update(when="none", enabled=False)
        if args.pyramid_method:
            pyramid["method"] = args.pyramid_method
        data["pyramid"] = pyramid
    if args.chunks is not None:
        chunks = dict(args.chunks)
        trailing = chunks.pop("_trailing", None)
        if trailing is not None:
            dims = str(data.get("dims", "tyx"))
            if len(trailing) > len(dims):
                raise SpecError(
                    f"chunks: {len(trailing)} values for the {len(dims)} axes of dims {dims!r}"
                )
            chunks = dict(zip(dims[-len(trailing) :], trailing, strict=True))
        data["chunks"] = chunks
    if data.get("camera", "sim") == "sim" and "out" in data:
        data.setdefault("shape", [2048, 2048])
        data.setdefault("dtype", "uint16")
    if "out" not in data:
        raise SpecError("out: required (give --out PATH or 'out' in the spec file)")
    return data
