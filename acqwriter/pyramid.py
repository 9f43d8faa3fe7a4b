"""Multiscale pyramid, built after acquisition, out of core.

Level k+1 is level k downsampled 2× in y and x (and z when ``pyramid.downsample_z``);
t and c are never downsampled. Each output chunk is computed from the 2×2 (×2) block of
source chunks under it, read with zarr-python (not the hot path: acquisition is over),
and written with the same codec and chunk shape through the storage layer, so memory
is a few chunks per thread whatever the dataset size.

``mean`` sums in int64 (float64 for floats) and rounds integers half up,
``(sum + n // 2) // n``; where a dimension is odd the last block is clipped to the
pixels that exist (implemented by edge-replicating one row/column, which leaves the
mean unchanged). ``nearest`` keeps the first (top-left) pixel of each block.

A level appears in the root ``multiscales`` only after all its chunks are written; a
crash midway leaves a valid dataset with the levels finished so far.
"""

from __future__ import annotations

import json
import math
import shutil
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from acqwriter.codecs import chunk_encoder
from acqwriter.ome import Level, array_metadata, encode_array_metadata, group_metadata, level0
from acqwriter.spec import StreamSpec
from acqwriter.storage import LocalStore

__all__ = ["build_pyramid", "downsample", "plan_levels", "rebuild_pyramid"]


def downsample(data: np.ndarray, factors: tuple[int, ...], method: str) -> np.ndarray:
    """Downsample ``data`` by integer ``factors`` per axis (see module docstring)."""
    if method == "nearest":
        return data[tuple(slice(None, None, f) for f in factors)]
    if method != "mean":
        raise ValueError(f"pyramid.method: expected 'mean' or 'nearest', got {method!r}")
    pad = [(0, (-n) % f) for n, f in zip(data.shape, factors, strict=True)]
    if any(p for _, p in pad):
        data = np.pad(data, pad, mode="edge")
    split: list[int] = []
    for n, f in zip(data.shape, factors, strict=True):
        split += [n // f, f]
    acc = np.float64 if data.dtype.kind == "f" else np.int64
    summed = data.reshape(split).sum(axis=tuple(range(1, 2 * data.ndim, 2)), dtype=acc)
    n = math.prod(factors)
    if data.dtype.kind == "f":
        return (summed / n).astype(data.dtype)
    return ((summed + n // 2) // n).astype(data.dtype)


def plan_levels(spec: StreamSpec, shape: tuple[int, ...]) -> list[tuple[int, ...]]:
    """Shapes of levels 1.. for a level-0 ``shape`` (empty list: no pyramid needed)."""
    pyr = spec.pyramid
    dims = spec.dims
    chunks = spec.resolved_chunks()
    cy, cx = chunks[-2], chunks[-1]
    shapes: list[tuple[int, ...]] = []
    current = tuple(shape)
    want = pyr.max_levels if pyr.levels == "auto" else pyr.levels
    while len(shapes) + 1 < want:
        fits = current[-2] <= cy and current[-1] <= cx
        if pyr.levels == "auto" and fits:
            break
        if current[-2] == 1 and current[-1] == 1:
            break
        nxt = list(current)
        for i, axis in enumerate(dims):
            if axis in "yx" or (axis == "z" and pyr.downsample_z):
                nxt[i] = math.ceil(current[i] / 2)
        current = tuple(nxt)
        shapes.append(current)
    return shapes


def _factors(spec: StreamSpec, level: int) -> tuple[int, ...]:
    return tuple(
        2**level if axis in "yx" or (axis == "z" and spec.pyramid.downsample_z) else 1
        for axis in spec.dims
    )


def _write_level(
    store: LocalStore,
    encoder: Any,
    spec: StreamSpec,
    source: Any,
    prefix: str,
    shape: tuple[int, ...],
    chunks: tuple[int, ...],
    step: tuple[int, ...],
    threads: int,
) -> None:
    """Compute and write every chunk of one level from the level above it."""
    grid = [math.ceil(s / c) for s, c in zip(shape, chunks, strict=True)]
    errors: list[BaseException] = []
    gate = threading.Semaphore(2 * threads)  # bounded in-flight chunks: bounded memory

    def one_chunk(index: tuple[int, ...]) -> None:
        try:
            out_sl = [
                slice(i * c, min((i + 1) * c, s))
                for i, c, s in zip(index, chunks, shape, strict=True)
            ]
            src_sl = tuple(
                slice(o.start * f, min(o.stop * f, n))
                for o, f, n in zip(out_sl, step, source.shape, strict=True)
            )
            block = downsample(np.asarray(source[src_sl]), step, spec.pyramid.method)
            block = block[tuple(slice(0, o.stop - o.start) for o in out_sl)]
            if block.shape != chunks:  # edge chunk: pad with the fill value
                padded = np.zeros(chunks, dtype=block.dtype)
                padded[tuple(slice(0, n) for n in block.shape)] = block
                block = padded
            key = prefix + "/".join(map(str, index))
            store.write_chunk(key, encoder.encode(np.ascontiguousarray(block)))
        except BaseException as exc:
            errors.append(exc)
        finally:
            gate.release()

    with ThreadPoolExecutor(max_workers=threads) as pool:
        for index in np.ndindex(*grid):
            if errors:
                break
            gate.acquire()
            pool.submit(one_chunk, tuple(int(i) for i in index))
    if errors:
        raise errors[0]


def build_pyramid(root: Path, spec: StreamSpec, *, threads: int = 2) -> list[Level]:
    """Write levels 1.. under ``root`` from level 0; returns every level (0 included)."""
    import zarr

    store = LocalStore(root, sync=spec.sync)
    encoder = chunk_encoder(spec.codec)
    base_chunks = spec.resolved_chunks()
    src_shape = tuple(json.loads(store.read_bytes("0/zarr.json"))["shape"])
    levels = [level0(spec)]
    step = tuple(
        2 if axis in "yx" or (axis == "z" and spec.pyramid.downsample_z) else 1
        for axis in spec.dims
    )
    for k, shape in enumerate(plan_levels(spec, src_shape), start=1):
        chunks = tuple(min(c, s) for c, s in zip(base_chunks, shape, strict=True))
        meta = array_metadata(spec, shape, chunks)
        store.write_atomic(f"{k}/zarr.json", encode_array_metadata(meta, shape))
        source = zarr.open_array(store=str(root / str(k - 1)), mode="r")
        _write_level(store, encoder, spec, source, f"{k}/c/", shape, chunks, step, threads)
        levels.append(Level(str(k), _factors(spec, k), spec.pyramid.method))
    store.flush()
    return levels


def rebuild_pyramid(root: Path, *, threads: int = 2) -> list[Level]:
    """Drop and rebuild the pyramid of an acqwriter dataset (``acqwriter pyramid PATH``)."""
    root = Path(root)
    store = LocalStore(root, sync="close")
    try:
        group = json.loads(store.read_bytes("zarr.json"))
        attrs = group["attributes"]["acqwriter"]
        spec = StreamSpec.model_validate({**attrs["spec"], "overwrite": True})
    except FileNotFoundError:
        raise FileNotFoundError(f"{root}: not a Zarr dataset (no zarr.json)") from None
    except (KeyError, ValueError, TypeError) as exc:
        raise ValueError(
            f"{root}: not an acqwriter dataset (no acqwriter.spec in zarr.json)"
        ) from exc
    extra = {
        k: v for k, v in attrs.items() if k not in ("version", "state", "frame_metadata", "spec")
    }
    # First un-list the old levels (the group then points at level 0 only), then delete them.
    store.write_atomic(
        "zarr.json", group_metadata(spec, [level0(spec)], state="complete", extra=extra)
    )
    for child in root.iterdir():
        if child.is_dir() and child.name.isdigit() and child.name != "0":
            shutil.rmtree(child)
    levels = build_pyramid(root, spec, threads=threads)
    if "summary" in extra:
        extra["summary"]["pyramid_levels"] = len(levels)
    store.write_atomic("zarr.json", group_metadata(spec, levels, state="complete", extra=extra))
    store.flush()
    return levels
