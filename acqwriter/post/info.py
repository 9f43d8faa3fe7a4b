"""Describe a dataset (``acqwriter info``), from its JSON documents only, read through
its store: a folder, or an object-store URL.

Works on any OME-NGFF 0.5 image; acqwriter datasets add their state, the write
summary and the dropped-frame flags read from the per-frame metadata.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from acqwriter.format.image import frame_metadata_key
from acqwriter.format.keys import GROUP_METADATA, ArrayKeys
from acqwriter.format.model import GroupMetadata
from acqwriter.format.versions import read_group, read_stored
from acqwriter.plan.pyramid import no_pyramid_reason
from acqwriter.post.hierarchy import image_paths
from acqwriter.spec.model import StreamSpec
from acqwriter.store.base import Store
from acqwriter.store.existing import open_store
from acqwriter.store.local import LocalStore, writer_alive
from acqwriter.store.prefixed import PrefixedStore

__all__ = ["dataset_info", "format_info", "read_frame_metadata"]

# States in which a live writer (or recover) owns the dataset: with no lock held, it died.
_LIVE_STATES = ("acquiring", "recovering")


def read_frame_metadata(path: str | Path) -> list[dict[str, Any]]:
    """Per-frame records of an acqwriter dataset, in index order, from where its root
    group says they are (``0/frame_metadata.jsonl``; older datasets: at the root).

    A torn last line (a crash while appending) is ignored."""
    return _records(_open(path)[0])


def _records(store: Store) -> list[dict[str, Any]]:
    try:
        acq = read_stored(store.read_bytes)[1]["acqwriter"]
    except (OSError, ValueError, KeyError, TypeError):
        acq = None
    records: list[dict[str, Any]] = []
    try:
        data = store.read_lines(frame_metadata_key(acq))
    except FileNotFoundError:
        return records
    for line in data.decode("utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return records


def _open(path: str | Path) -> tuple[Store, str, Callable[[], bool]]:
    """A dataset's store for reading, where it is, and whether a writer holds it (on an
    object store: its lock object names a holder that may be alive)."""
    store = open_store(path)
    where = store.location
    if isinstance(store, LocalStore):
        return store, where, lambda: writer_alive(store.root)
    return store, where, lambda: bool(store.writer_alive())


def _inner(meta: dict[str, Any]) -> tuple[list[Any], list[int], list[int] | None]:
    """(codecs, chunk shape, shard shape or None) of an array, looking inside a
    ``sharding_indexed`` codec: users think in chunks and codecs, shards are storage."""
    if meta.get("zarr_format") == 2:  # one compressor, no shards: as v3 codecs
        compressor = meta.get("compressor")
        codecs = []
        if compressor:
            name = compressor["id"]
            conf = {k: v for k, v in compressor.items() if k != "id"}
            codecs = [{"name": name, "configuration": conf}]
        return codecs, meta["chunks"], None
    grid = meta["chunk_grid"]["configuration"]["chunk_shape"]
    codecs = meta.get("codecs", [])
    if codecs and codecs[0]["name"] == "sharding_indexed":
        conf = codecs[0]["configuration"]
        return conf["codecs"], conf["chunk_shape"], grid
    return codecs, grid, None


def _codec(meta: dict[str, Any]) -> str:
    names = []
    for codec in _inner(meta)[0]:
        if codec["name"] in ("bytes", "transpose"):
            continue
        conf = codec.get("configuration", {})
        if codec["name"] == "blosc":
            names.append(
                f"blosc {conf.get('cname')} level {conf.get('clevel')} {conf.get('shuffle')}"
            )
        elif codec["name"] == "zstd":
            names.append(f"zstd level {conf.get('level')}")
        else:
            names.append(codec["name"])
    return " + ".join(names) or "none"


def _blosc_blocksize(meta: dict[str, Any]) -> int | None:
    """The blosc block size in ``zarr.json`` (0: chosen by c-blosc per chunk), or None."""
    for codec in _inner(meta)[0]:
        if codec["name"] == "blosc":
            return codec.get("configuration", {}).get("blocksize")
    return None


def dataset_info(
    path: str | Path, *, writer: str | None = None, store: Store | None = None
) -> dict[str, Any]:
    """What a dataset holds: for an image, its levels, size, state and frames; for a
    collection or a plate, the same for each image, by key. ``path``: a folder, or an
    object-store URL (``s3://bucket/prefix``). ``writer``: the state of the dataset's
    writer, when the caller knows it (an image inside a dataset); ``store``: the image's
    store then."""
    if store is None:
        store, where, alive = _open(path)
    else:
        where, alive = str(path), lambda: False
    try:
        group = read_group(store.read_bytes)
    except FileNotFoundError:
        raise FileNotFoundError(f"{where}: not a Zarr dataset (no zarr.json or .zattrs)") from None
    except (KeyError, ValueError, TypeError, IndexError) as exc:
        raise ValueError(f"{where}: its OME-NGFF metadata cannot be read ({exc})") from None
    acq = group.acqwriter
    if acq.get("layout") in ("collection", "plate"):
        return _collection_info(store, where, group, alive)
    if group.image is None:
        raise ValueError(f"{where}: not an OME-NGFF image (no multiscales in its attributes)")
    listed = [(level.path, list(level.scale)) for level in group.image.levels]
    levels = []
    version = 3 if store.exists(GROUP_METADATA) else 2
    for level_path, scale in listed:
        meta = json.loads(store.read_bytes(ArrayKeys(level_path, version).metadata))
        levels.append(
            {
                "path": level_path,
                "shape": meta["shape"],
                "chunks": _inner(meta)[1],
                "shards": _inner(meta)[2],
                "dtype": (meta.get("data_type") or np.dtype(meta["dtype"]).name),
                "scale": scale,
                "codec": _codec(meta),
                "blosc_blocksize": _blosc_blocksize(meta),
            }
        )
    level0 = levels[0]
    raw = math.prod(level0["shape"]) * np.dtype(level0["dtype"]).itemsize
    stored = store.tree_bytes(level0["path"])
    records = _records(store)
    dropped = [
        r["index"] for r in records if r.get("dropped") and r.get("drop_reason") != "missing"
    ]
    missing = [r["index"] for r in records if r.get("drop_reason") == "missing"]
    state = acq.get("state")
    if acq and writer is None:
        writer = "alive" if alive() else ("gone" if state in _LIVE_STATES else None)
    note = None
    if len(levels) == 1 and isinstance(acq, dict):
        note = (acq.get("summary") or {}).get("pyramid_note") or _pyramid_reason(acq, state)
    return {
        "path": where,
        "ome_version": group.version,
        "writer": writer,
        "pyramid_note": note,
        "axes": [a.name for a in group.image.axes],
        "shape": level0["shape"],
        "dtype": level0["dtype"],
        "codec": level0["codec"],
        "blosc_blocksize": level0["blosc_blocksize"],
        "levels": levels,
        "raw_bytes": raw,
        "stored_bytes": stored,
        "compression_ratio": raw / stored if stored else None,
        "state": state,
        "frames_recorded": len(records) if acq else None,
        "frames_dropped": len(dropped) if acq else None,
        "dropped_indices": dropped,
        "frames_missing": len(missing) if acq else None,
        "stage": _stage(acq),
    }


def _stage(acq: dict[str, Any]) -> dict[str, Any] | None:
    """Where the stage was when the image was taken (µm, the stage's axes), whether it
    was read back or planned, and what was assumed of the stage's axes."""
    stage = acq.get("stage") if isinstance(acq, dict) else None
    if not isinstance(stage, dict) or "x" not in stage or "y" not in stage:
        return None
    keys = ("x", "y", "z", "read_back", "assumed")
    return {k: stage[k] for k in keys if stage.get(k) is not None}


def _at(stage: dict[str, Any] | None) -> str:
    if not stage:
        return ""
    where = ", ".join(f"{a} {stage[a]:.2f}" for a in ("x", "y", "z") if a in stage)
    return f", stage {where} µm ({'read back' if stage.get('read_back') else 'planned'})"


def _pyramid_reason(acq: dict[str, Any], state: Any) -> str | None:
    """Why an image of one level has no other (None for a dataset not written by us)."""
    try:
        spec = StreamSpec.model_validate({**acq["spec"], "overwrite": True})
    except (KeyError, TypeError, ValueError):
        return None
    reason = no_pyramid_reason(spec)
    if reason is None and state in _LIVE_STATES:
        return "lower levels are built when the writer closes"
    if reason is None:
        return "not built (acqwriter pyramid PATH builds it)"
    return reason


def _collection_info(
    store: Store, where: str, group: GroupMetadata, alive: Callable[[], bool]
) -> dict[str, Any]:
    acq = group.acqwriter
    state = acq.get("state")
    writer = "alive" if alive() else ("gone" if state in _LIVE_STATES else None)
    paths = image_paths(store, where, acq)  # checked not to lead out
    images = {
        key: dataset_info(
            f"{where}/{path}" if path else where,
            writer=writer or "none",
            store=PrefixedStore(store, path) if path else store,
        )
        for key, path in paths.items()
    }
    for info in images.values():
        if info["writer"] == "none":
            info["writer"] = None
    raw = sum(i["raw_bytes"] for i in images.values())
    stored = sum(i["stored_bytes"] for i in images.values())
    return {
        "path": where,
        "ome_version": group.version,
        "layout": acq["layout"],
        "writer": writer,
        "state": state,
        "images": images,
        "raw_bytes": raw,
        "stored_bytes": stored,
        "compression_ratio": raw / stored if stored else None,
        "frames_recorded": sum(i["frames_recorded"] or 0 for i in images.values()),
        "frames_dropped": sum(i["frames_dropped"] or 0 for i in images.values()),
        "frames_missing": sum(i["frames_missing"] or 0 for i in images.values()),
    }


def _blocks(blocksize: int | None) -> str:
    if blocksize is None:
        return ""
    if not blocksize:
        return " (blocks chosen by c-blosc)"
    if blocksize % 1024 == 0:
        return f" ({blocksize // 1024} KiB blocks)"
    return f" ({blocksize} byte blocks)"


def _state_text(info: dict[str, Any]) -> str:
    """The state, and what to do when its writer is gone."""
    state = info["state"] or "n/a"
    if info.get("writer") == "gone":
        state += (
            f" — but its writer is gone (crashed or killed): run "
            f"'acqwriter recover {info['path']}' to finish it"
        )
    elif info.get("writer") == "alive":
        state += ", being written now"
    return state


def format_info(info: dict[str, Any]) -> str:
    if "images" in info:
        return _format_collection(info)
    ratio = f"{info['compression_ratio']:.2f}x" if info["compression_ratio"] else "n/a"
    state = _state_text(info)
    lines = [
        f"dataset   {info['path']}  (OME-NGFF {info['ome_version']}, state {state})",
        f"shape     {tuple(info['shape'])} {''.join(info['axes'])} {info['dtype']}",
        f"codec     {info['codec']}{_blocks(info.get('blosc_blocksize'))}",
        f"size      raw {info['raw_bytes'] / 1e6:.1f} MB, "
        f"stored {info['stored_bytes'] / 1e6:.1f} MB, ratio {ratio}",
        f"levels    {len(info['levels'])}"
        + (f" (no lower level: {info['pyramid_note']})" if info.get("pyramid_note") else ""),
    ]
    for level in info["levels"]:
        shards = f" in shards {tuple(level['shards'])}" if level["shards"] else ""
        lines.append(
            f"  {level['path']}: shape {tuple(level['shape'])} "
            f"chunks {tuple(level['chunks'])}{shards}"
        )
    if info["frames_dropped"] is not None:
        shown = ", ".join(map(str, info["dropped_indices"][:20]))
        lines.append(
            f"dropped   {info['frames_dropped']}"
            + (f" (indices {shown}{' …' if info['frames_dropped'] > 20 else ''})" if shown else "")
        )
    return "\n".join(lines)


def _format_collection(info: dict[str, Any]) -> str:
    state = _state_text(info)
    ratio = f"{info['compression_ratio']:.2f}x" if info["compression_ratio"] else "n/a"
    lines = [
        f"dataset   {info['path']}  ({info['layout']} of {len(info['images'])} images, "
        f"OME-NGFF {info['ome_version']}, state {state})",
        f"size      raw {info['raw_bytes'] / 1e6:.1f} MB, "
        f"stored {info['stored_bytes'] / 1e6:.1f} MB, ratio {ratio}",
        f"frames    {info['frames_recorded']} recorded, {info['frames_dropped']} dropped, "
        f"{info['frames_missing']} missing",
    ]
    for key, image in info["images"].items():
        lines.append(
            f"  {key}: {image['path'].removeprefix(info['path']).lstrip('/')}  shape "
            f"{tuple(image['shape'])} {''.join(image['axes'])} {image['dtype']}, "
            f"{len(image['levels'])} level(s), dropped {image['frames_dropped']}, "
            f"missing {image['frames_missing']}{_at(image.get('stage'))}"
        )
    return "\n".join(lines)
