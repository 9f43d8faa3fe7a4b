"""What a dataset whose writer died proves, read back for ``acqwriter recover``.

The per-frame metadata log proves which frames were committed (a line is written after
its frame's chunks and before the extent covers them): :func:`consecutive_records`
keeps the longest run of whole, consecutive records. :func:`group_ok` checks that every
chunk a group of frames needs exists and decodes; :func:`measure` reads back what a
finished writer would have measured (the interval between time points, display
windows).
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from acqwriter.format.display import sample_windows, time_increment
from acqwriter.format.keys import ArrayKeys
from acqwriter.plan.layout import FrameLayout
from acqwriter.post.reader import LevelReader, ShardCache
from acqwriter.store.base import Store

__all__ = ["consecutive_records", "group_ok", "measure"]


def consecutive_records(store: Store, key: str) -> tuple[list[dict[str, Any]], list[int], bool]:
    """Records 0, 1, 2 … up to the first torn, unparsable or out-of-order line; where
    each record's line ends in the log; whether nothing followed them."""
    try:
        raw = store.read_lines(key)
    except FileNotFoundError:
        return [], [], True
    records: list[dict[str, Any]] = []
    ends: list[int] = []
    clean = True
    start = 0
    while start < len(raw):
        stop = raw.find(b"\n", start)
        line = raw[start : len(raw) if stop < 0 else stop]
        start = len(raw) if stop < 0 else stop + 1
        if not line:
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            clean = False
            break
        if stop < 0 or not isinstance(record, dict) or record.get("index") != len(records):
            clean = False
            break
        records.append(record)
        ends.append(start)
    return records, ends, clean


def group_ok(
    store: Store,
    keys: ArrayKeys,
    layout: FrameLayout,
    decoder: Any,
    key: tuple[int, ...],
    all_dropped: bool,
    shards: ShardCache,
) -> bool:
    """Every tile chunk of a group exists and decodes to a whole chunk (inside a shard
    whose index is whole and passes its checksum, when sharded, read through
    ``shards``)."""
    plan = layout.shards
    for ty in range(layout.tiles_y):
        for tx in range(layout.tiles_x):
            try:
                if plan is None:
                    data = store.read_bytes(keys.chunk(layout.chunk_coords(key, ty, tx)))
                else:
                    shard = keys.chunk(plan.grid_coords(plan.shard_of(key)))
                    found = shards.inner(shard, plan.position(key, ty, tx), plan.n_inner)
                    if found is None:
                        raise FileNotFoundError(shard)
                    data = found
            except ValueError:
                return False  # torn shard: its index never got written
            except FileNotFoundError:
                if all_dropped:
                    continue  # a group of dropped frames is never written: fill value
                return False
            try:
                decoded = np.frombuffer(decoder.decode(data), np.uint8)
            except Exception:
                return False
            if decoded.size != layout.chunk_bytes:
                return False
    return True


# frames read back per channel to measure display windows (acqwriter.format.display)
WINDOW_FRAMES = 8


def measure(
    store: Store, layout: FrameLayout, records: list[dict[str, Any]], decoder: Any
) -> dict[str, Any]:
    """What a finished writer would have measured (:mod:`acqwriter.format.display`): the
    interval between time points from the records' arrival times, and display windows
    from a few frames of each channel read back."""
    fpr = layout.frames_per_row
    starts = []
    if layout.outer_dims[0] == "t":
        starts = [r["received_s"] for r in records[::fpr] if "received_s" in r]
    sizes = dict(zip(layout.outer_dims, layout.outer_sizes, strict=True))
    n_c = sizes.get("c") or 1
    real = [r["index"] for r in records if not r.get("dropped")]
    by_channel: list[list[np.ndarray]] = [[] for _ in range(n_c)]
    reader = LevelReader(store, "0", decoder, shards=ShardCache(store))
    c_at = layout.outer_dims.index("c") if sizes.get("c") else None
    for index in real[:: max(1, len(real) // (WINDOW_FRAMES * n_c))]:
        coords = layout.coords(index)
        channel = coords[c_at] if c_at is not None else 0
        if len(by_channel[channel]) >= WINDOW_FRAMES:
            continue
        region = (*tuple(slice(c, c + 1) for c in coords), slice(None), slice(None))
        by_channel[channel].append(reader[region].reshape(layout.frame_shape))
    return {
        "time_increment_s": time_increment(starts),
        "channel_windows": sample_windows(by_channel),
    }
