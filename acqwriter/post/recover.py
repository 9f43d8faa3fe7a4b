"""Finish a dataset whose writer died (``acqwriter recover PATH``).

What a crash leaves (see :mod:`acqwriter.engine.stream` invariants): a valid dataset whose
extent covers committed blocks; per-frame metadata lines for every committed frame and
possibly for a block whose extent rewrite did not happen yet (lines are appended
*after* the block's chunks are written and *before* the extent covers them, so a line
proves its chunks were written); chunk files beyond that, written but never committed;
maybe a torn last metadata line, temporary files and the disk reserve.

Recovery, in order, each step idempotent:

1. refuse what cannot be recovered, with the reason: no ``zarr.json``, unreadable root
   metadata, not an acqwriter dataset (no ``attributes.acqwriter.spec``), a writer still
   holding the lock;
2. keep the longest run of complete, consecutive metadata records (a torn last line is
   cut off) — the frames whose durability is proven;
3. extend the extent over those frames' rows, after checking that every chunk they need
   exists and decodes (``verify="all"`` checks the whole array, not only the new rows);
   a block whose chunk is missing or torn ends the recovered extent there;
4. delete what lies beyond: uncommitted chunks, temporary files, the reserve;
5. rebuild the pyramid and mark the root ``state: "recovered"`` with an account.

Frames whose chunks were written but whose block was not yet committed (at most about
``commit_interval_s`` of the newest frames) are not recovered: nothing on disk says
which of their frames were real and which were dropped.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from acqwriter import jsonio
from acqwriter.codec.chain import chunk_encoder
from acqwriter.format.display import MEASURED_KEY, sample_windows, time_increment
from acqwriter.format.keys import ArrayKeys
from acqwriter.format.ngff_v05 import (
    FINISHED_STATES,
    carried_attrs,
    frame_metadata_key,
    group_metadata,
    level0,
)
from acqwriter.format.versions import (
    array_document,
    array_keys,
    group_document,
    read_attributes,
    stored_version,
    write_group,
)
from acqwriter.format.zarr_v3 import encode_array_metadata
from acqwriter.plan.layout import FrameLayout
from acqwriter.plan.pyramid import no_pyramid_reason
from acqwriter.post.hierarchy import dataset_images
from acqwriter.post.pyramid import BuildProgress, replace_pyramid, use_settings
from acqwriter.post.reader import LevelReader, read_inner_chunk
from acqwriter.spec.model import StreamSpec
from acqwriter.store.local import FINAL_RESERVE_NAME, RESERVE_NAME, LocalStore, never_written

__all__ = ["RecoverError", "RecoverWriteError", "recover"]


class RecoverError(ValueError):
    """The dataset cannot be recovered; the message says why."""


class RecoverWriteError(RecoverError):
    """Recovery could not write (a full disk, a read-only filesystem); the dataset is
    valid as it is and recovery can be run again."""


def _load_root(root: Path) -> tuple[dict[str, Any], StreamSpec]:
    try:
        attrs = read_attributes(lambda key: (root / key).read_bytes())
    except FileNotFoundError:
        if never_written(root):
            raise RecoverError(
                f"{root}: created by acqwriter, but its writer died before writing its first "
                "document: it holds no frame; nothing to recover (delete it, or write over "
                "it with --overwrite)"
            ) from None
        raise RecoverError(
            f"{root}: not a Zarr dataset (no zarr.json); nothing to recover"
        ) from None
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise RecoverError(f"{root}: root zarr.json is corrupt ({exc}); cannot recover") from None
    acq = attrs.get("acqwriter") if isinstance(attrs, dict) else None
    if not isinstance(acq, dict) or "spec" not in acq:
        raise RecoverError(
            f"{root}: not written by acqwriter (no attributes.acqwriter.spec); cannot recover"
        )
    try:
        spec = StreamSpec.model_validate({**acq["spec"], "overwrite": True, "disk_check": False})
    except ValueError as exc:
        raise RecoverError(
            f"{root}: the stored spec does not validate ({exc}); cannot recover"
        ) from None
    return acq, spec


def _consecutive_records(store: LocalStore, key: str) -> tuple[list[dict[str, Any]], bool]:
    """Records 0, 1, 2 … up to the first torn, unparsable or out-of-order line."""
    try:
        raw = store.read_bytes(key)
    except FileNotFoundError:
        return [], True
    records: list[dict[str, Any]] = []
    clean = True
    for line in raw.split(b"\n"):
        if not line:
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            clean = False
            break
        if not isinstance(record, dict) or record.get("index") != len(records):
            clean = False
            break
        records.append(record)
    clean = clean and (not raw or raw.endswith(b"\n"))
    return records, clean


def _group_ok(
    store: LocalStore,
    keys: ArrayKeys,
    layout: FrameLayout,
    decoder: Any,
    key: tuple[int, ...],
    all_dropped: bool,
) -> bool:
    """Every tile chunk of a group exists and decodes to a whole chunk (inside a shard
    whose index is whole and passes its checksum, when sharded)."""
    plan = layout.shards
    for ty in range(layout.tiles_y):
        for tx in range(layout.tiles_x):
            try:
                if plan is None:
                    data = store.read_bytes(keys.chunk(layout.chunk_coords(key, ty, tx)))
                else:
                    shard = keys.chunk(plan.grid_coords(plan.shard_of(key)))
                    found = read_inner_chunk(store, shard, plan.position(key, ty, tx), plan.n_inner)
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
_WINDOW_FRAMES = 8


def _measure(
    store: LocalStore, layout: FrameLayout, records: list[dict[str, Any]], decoder: Any
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
    reader = LevelReader(store, "0", decoder)
    c_at = layout.outer_dims.index("c") if sizes.get("c") else None
    for index in real[:: max(1, len(real) // (_WINDOW_FRAMES * n_c))]:
        coords = layout.coords(index)
        channel = coords[c_at] if c_at is not None else 0
        if len(by_channel[channel]) >= _WINDOW_FRAMES:
            continue
        region = (*tuple(slice(c, c + 1) for c in coords), slice(None), slice(None))
        by_channel[channel].append(reader[region].reshape(layout.frame_shape))
    return {
        "time_increment_s": time_increment(starts),
        "channel_windows": sample_windows(by_channel),
    }


def recover(
    path: str | Path,
    *,
    threads: int | None = None,
    verify: str = "new",
    progress: BuildProgress | None = None,
) -> dict[str, Any]:
    """Recover the dataset at ``path``; returns an account of what was done.

    A dataset its writer finished (``state`` in :data:`FINISHED_STATES`) has nothing to
    recover: it is left untouched and the account says ``nothing_to_recover``."""
    root = Path(path)
    layout = dataset_layout(root)
    if layout is not None:
        return _recover_dataset(root, layout, threads=threads, verify=verify, progress=progress)
    acq, spec = _load_root(root)
    if acq.get("state") in FINISHED_STATES:
        return {"path": str(root), "nothing_to_recover": True, "state": acq["state"]}
    store = _locked_store(root)
    try:
        return _recover_locked(
            root, store, acq, spec, threads=threads, verify=verify, progress=progress
        )
    except OSError as exc:  # a full disk: every step so far left a valid dataset
        raise _write_error(root, exc) from None
    finally:
        store.release_lock()


def _write_error(root: Path, exc: OSError) -> RecoverWriteError:
    """A write failed (a full disk): every step so far left a valid dataset."""
    return RecoverWriteError(
        f"{root}: cannot finish recovering ({exc.strerror or exc}); the dataset is "
        "valid as it is: free space and run recover again"
    )


def _locked_store(root: Path) -> LocalStore:
    """The dataset's store, holding its writer lock (or a refusal naming the live
    writer)."""
    store = LocalStore(root, sync="close")
    try:
        store.take_lock()
    except FileExistsError:
        raise RecoverError(
            f"{root}: a live writer holds the lock; stop it before recovering"
        ) from None
    return store


def dataset_layout(root: Path) -> dict[str, Any] | None:
    """The ``attributes.acqwriter`` of a collection or plate root, or None (an image)."""
    try:
        acq = read_attributes(lambda key: (root / key).read_bytes())["acqwriter"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if isinstance(acq, dict) and acq.get("layout") in ("collection", "plate"):
        return acq
    return None


def _recover_dataset(
    root: Path,
    acq: dict[str, Any],
    *,
    threads: int | None,
    verify: str,
    progress: BuildProgress | None,
) -> dict[str, Any]:
    """Recover each image of a collection or plate (each is a one-image dataset at its
    path), holding the dataset's lock, then mark the root ``recovered``."""
    if acq.get("state") in FINISHED_STATES:
        return {"path": str(root), "nothing_to_recover": True, "state": acq["state"]}
    try:
        images = dataset_images(root, acq)
    except ValueError as exc:
        raise RecoverError(str(exc)) from None
    store = _locked_store(root)
    accounts: dict[str, Any] = {}
    try:
        for key, image_root in images.items():
            image_acq, spec = _load_root(image_root)
            if image_acq.get("state") in FINISHED_STATES:
                accounts[key] = {"path": str(image_root), "nothing_to_recover": True}
                continue
            accounts[key] = _recover_locked(
                image_root,
                LocalStore(image_root, sync="close"),
                image_acq,
                spec,
                threads=threads,
                verify=verify,
                progress=progress,
            )
        for name in (RESERVE_NAME, FINAL_RESERVE_NAME):
            (root / name).unlink(missing_ok=True)
        attrs = read_attributes(store.read_bytes)
        attrs["acqwriter"] = {
            **acq,
            "state": "recovered",
            "recovery": {"images": accounts, "time": time.time()},
        }
        version = stored_version(lambda key: (root / key).exists())
        write_group(store.write_atomic, group_document(jsonio.finite(attrs)), version)
        store.flush()
    except OSError as exc:
        raise _write_error(root, exc) from None
    finally:
        store.release_lock()
    done = [a for a in accounts.values() if not a.get("nothing_to_recover")]
    return {
        "path": str(root),
        "layout": acq["layout"],
        "nothing_to_recover": False,
        "images": accounts,
        "frames": sum(a["frames"] for a in done),
        "rows": sum(a["rows"] for a in done),
        "rows_before": sum(a["rows_before"] for a in done),
        "frames_dropped": sum(a["frames_dropped"] for a in done),
        "uncommitted_chunks_removed": sum(a["uncommitted_chunks_removed"] for a in done),
        "pyramid_levels": min((a["pyramid_levels"] for a in done), default=1),
    }


def _recover_locked(
    root: Path,
    store: LocalStore,
    acq: dict[str, Any],
    spec: StreamSpec,
    *,
    threads: int | None,
    verify: str,
    progress: BuildProgress | None,
) -> dict[str, Any]:
    layout = FrameLayout(spec)
    keys = array_keys("0", spec.ngff_version)
    try:
        meta0 = json.loads(store.read_bytes(keys.metadata))
        rows_before = int(meta0["shape"][0])
    except (FileNotFoundError, json.JSONDecodeError, KeyError, TypeError, ValueError):
        meta0, rows_before = None, 0  # regenerated below from the stored spec
    array_meta = array_document(spec, layout.array_shape(0), layout.chunk_shape, layout.shard_shape)

    metadata_key = frame_metadata_key(acq)
    records, clean = _consecutive_records(store, metadata_key)
    fpr, rpb = layout.frames_per_row, layout.rows_per_block
    proven_rows = max(len(records) // fpr, rows_before)
    decoder = chunk_encoder(spec.codec)
    first_row = 0 if verify == "all" else rows_before
    rows = proven_rows
    for block in range(first_row // rpb, -(-proven_rows // rpb)):
        lo = block * layout.frames_per_block
        hi = min(lo + layout.frames_per_block, proven_rows * fpr)
        by_group: dict[tuple[int, ...], list[bool]] = {}
        for index in range(lo, hi):
            dropped = records[index].get("dropped", False) if index < len(records) else False
            by_group.setdefault(layout.batch_of(index), []).append(bool(dropped))
        if not all(
            _group_ok(store, keys, layout, decoder, key, all(d)) for key, d in by_group.items()
        ):
            rows = min(rows, block * rpb)
            break

    # The metadata file holds exactly the records of the recovered frames.
    kept = records[: rows * fpr]
    lines = b"".join(jsonio.dumps(r, separators=(",", ":")).encode() + b"\n" for r in kept)
    if not clean or len(records) != len(kept):
        store.write_atomic(metadata_key, lines)
    store.write_atomic(keys.metadata, encode_array_metadata(array_meta, layout.array_shape(rows)))

    # Remove what lies beyond the extent, and leftovers of the crash.
    removed = 0
    last_block = -(-rows // rpb)  # blocks [0, last_block) are inside the extent
    chunk_root = root / keys.chunks
    if chunk_root.is_dir():
        for child in chunk_root.iterdir():
            if child.name.isdigit() and int(child.name) >= last_block:
                removed += sum(1 for p in child.rglob("*") if p.is_file()) if child.is_dir() else 1
                store.remove_tree(f"{keys.chunks}/{child.name}")
    for tmp in root.rglob(".*.tmp"):
        tmp.unlink(missing_ok=True)
    for name in (RESERVE_NAME, FINAL_RESERVE_NAME):
        (root / name).unlink(missing_ok=True)

    carried = {**carried_attrs(acq), MEASURED_KEY: _measure(store, layout, kept, decoder)}
    levels = [level0(spec)]
    if spec.pyramid.enabled and rows > 0:
        use_settings(store, spec)
        levels = replace_pyramid(
            store, spec, state="recovering", extra=carried, threads=threads, progress=progress
        )
    dropped = [r["index"] for r in kept if r.get("dropped")]
    account = {
        "path": str(root),
        "rows_before": rows_before,
        "rows": rows,
        "frames": rows * fpr,
        "frames_dropped": len(dropped),
        "dropped_indices": dropped,
        "metadata_records_found": len(records),
        "metadata_was_torn": not clean,
        "uncommitted_chunks_removed": removed,
        "array_metadata_regenerated": meta0 is None,
        "pyramid_levels": len(levels),
        "nothing_to_recover": False,
        "time": time.time(),
    }
    write_group(
        store.write_atomic,
        group_metadata(
            spec,
            levels,
            state="recovered",
            extra={**carried, "recovery": account},
            no_pyramid=no_pyramid_reason(spec),
        ),
        spec.ngff_version,
    )
    store.flush()
    return account
