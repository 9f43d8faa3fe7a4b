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

from acqwriter import jsonio
from acqwriter.codec.chain import chunk_encoder
from acqwriter.format.display import MEASURED_KEY
from acqwriter.format.image import (
    FINISHED_STATES,
    carried_attrs,
    frame_metadata_key,
    image_group,
    level0,
)
from acqwriter.format.versions import (
    array_document,
    array_keys,
    read_stored,
    write_attributes,
    write_group,
)
from acqwriter.format.zarr_v3 import encode_array_metadata
from acqwriter.plan.layout import FrameLayout
from acqwriter.plan.pyramid import no_pyramid_reason
from acqwriter.post.evidence import consecutive_records, group_ok, measure
from acqwriter.post.hierarchy import image_paths
from acqwriter.post.pyramid import BuildProgress, replace_pyramid, use_settings
from acqwriter.post.reader import ShardCache
from acqwriter.spec.model import StreamSpec
from acqwriter.store.base import FINAL_RESERVE_NAME, RESERVE_NAME, Store
from acqwriter.store.existing import open_store
from acqwriter.store.prefixed import PrefixedStore

__all__ = ["RecoverError", "RecoverWriteError", "recover"]


class RecoverError(ValueError):
    """The dataset cannot be recovered; the message says why."""


class RecoverWriteError(RecoverError):
    """Recovery could not write (a full disk, a read-only filesystem); the dataset is
    valid as it is and recovery can be run again."""


def _never_written(store: Store) -> bool:
    """A dataset acqwriter created whose writer died before its first document: it
    holds nothing but acqwriter's own objects (lock, reserves, probe)."""
    try:
        names = store.list_dir()
    except OSError:
        return False
    return bool(names) and all(name.startswith(".acqwriter.") for name in names)


def _load_root(store: Store, root: str) -> tuple[dict[str, Any], StreamSpec]:
    try:
        attrs = read_stored(store.read_bytes)[1]
    except FileNotFoundError:
        if _never_written(store):
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


def recover(
    path: str | Path,
    *,
    threads: int | None = None,
    verify: str = "new",
    progress: BuildProgress | None = None,
) -> dict[str, Any]:
    """Recover the dataset at ``path`` (a folder or an ``s3://bucket/prefix`` URL);
    returns an account of what was done.

    A dataset its writer finished (``state`` in :data:`FINISHED_STATES`) has nothing to
    recover: it is left untouched and the account says ``nothing_to_recover``."""
    try:
        store = open_store(path, sync="close")
        where = store.location
    except ValueError as exc:
        raise RecoverError(str(exc)) from None
    try:
        return _recover(store, where, threads=threads, verify=verify, progress=progress)
    except RecoverError:
        raise
    except OSError as exc:  # the store cannot be reached or read
        raise RecoverWriteError(f"{where}: cannot recover: {exc.strerror or exc}") from None


def _recover(
    store: Store,
    where: str,
    *,
    threads: int | None,
    verify: str,
    progress: BuildProgress | None,
) -> dict[str, Any]:
    layout = dataset_layout(store)
    if layout is not None:
        return _recover_dataset(
            store, where, layout, threads=threads, verify=verify, progress=progress
        )
    acq, spec = _load_root(store, where)
    if acq.get("state") in FINISHED_STATES:
        return {"path": where, "nothing_to_recover": True, "state": acq["state"]}
    _lock(store, where)
    try:
        return _recover_locked(
            where, store, acq, spec, threads=threads, verify=verify, progress=progress
        )
    except OSError as exc:  # a full disk: every step so far left a valid dataset
        raise _write_error(where, exc) from None
    finally:
        store.release_lock()


def _write_error(root: str, exc: OSError) -> RecoverWriteError:
    """A write failed (a full disk, an unreachable store): every step so far left a
    valid dataset."""
    return RecoverWriteError(
        f"{root}: cannot finish recovering ({exc.strerror or exc}); the dataset is "
        "valid as it is: free space (or reach the store) and run recover again"
    )


def _lock(store: Store, root: str) -> None:
    """Hold the dataset's writer lock (a dead writer's is taken over), or refuse naming
    the live writer."""
    try:
        store.take_lock()
    except FileExistsError as exc:
        raise RecoverError(
            f"{root}: a live writer holds the lock; stop it before recovering"
            + (f" ({exc.strerror})" if exc.strerror and "://" in root else "")
        ) from None
    except OSError as exc:
        raise RecoverError(f"{root}: cannot take the writer lock: {exc.strerror or exc}") from None


def dataset_layout(store: Store) -> dict[str, Any] | None:
    """The ``attributes.acqwriter`` of a collection or plate root, or None (an image)."""
    try:
        acq = read_stored(store.read_bytes)[1]["acqwriter"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if isinstance(acq, dict) and acq.get("layout") in ("collection", "plate"):
        return acq
    return None


def _recover_dataset(
    store: Store,
    root: str,
    acq: dict[str, Any],
    *,
    threads: int | None,
    verify: str,
    progress: BuildProgress | None,
) -> dict[str, Any]:
    """Recover each image of a collection or plate (each is a one-image dataset at its
    path), holding the dataset's lock, then mark the root ``recovered``."""
    if acq.get("state") in FINISHED_STATES:
        return {"path": root, "nothing_to_recover": True, "state": acq["state"]}
    try:
        images = image_paths(store, root, acq)
    except ValueError as exc:
        raise RecoverError(str(exc)) from None
    _lock(store, root)
    accounts: dict[str, Any] = {}
    try:
        store.abort_uploads()
        for key, path in images.items():
            image_store = PrefixedStore(store, path) if path else store
            image_root = f"{root}/{path}" if path else root
            image_acq, spec = _load_root(image_store, image_root)
            if image_acq.get("state") in FINISHED_STATES:
                accounts[key] = {"path": image_root, "nothing_to_recover": True}
                continue
            accounts[key] = _recover_locked(
                image_root,
                image_store,
                image_acq,
                spec,
                threads=threads,
                verify=verify,
                progress=progress,
            )
        for name in (RESERVE_NAME, FINAL_RESERVE_NAME):
            store.remove(name)
        version, attrs = read_stored(store.read_bytes)
        attrs["acqwriter"] = {
            **acq,
            "state": "recovered",
            "recovery": {"images": accounts, "time": time.time()},
        }
        write_attributes(store.write_atomic, jsonio.finite(attrs), version)
        store.flush()
    except OSError as exc:
        raise _write_error(root, exc) from None
    finally:
        store.release_lock()
    done = [a for a in accounts.values() if not a.get("nothing_to_recover")]
    return {
        "path": root,
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
    root: str,
    store: Store,
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
    records, ends, clean = consecutive_records(store, metadata_key)
    fpr, rpb = layout.frames_per_row, layout.rows_per_block
    proven_rows = max(len(records) // fpr, rows_before)
    decoder = chunk_encoder(spec.codec)
    first_row = 0 if verify == "all" else rows_before
    rows = proven_rows
    shards = ShardCache(store)  # the writer is dead: its shards no longer change
    for block in range(first_row // rpb, -(-proven_rows // rpb)):
        lo = block * layout.frames_per_block
        hi = min(lo + layout.frames_per_block, proven_rows * fpr)
        by_group: dict[tuple[int, ...], list[bool]] = {}
        for index in range(lo, hi):
            dropped = records[index].get("dropped", False) if index < len(records) else False
            by_group.setdefault(layout.batch_of(index), []).append(bool(dropped))
        if not all(
            group_ok(store, keys, layout, decoder, key, all(d), shards)
            for key, d in by_group.items()
        ):
            rows = min(rows, block * rpb)
            break

    # The metadata log holds exactly the records of the recovered frames.
    kept = records[: rows * fpr]
    if not clean or len(records) != len(kept):
        store.truncate_lines(metadata_key, ends[len(kept) - 1] if kept else 0)
    store.write_atomic(keys.metadata, encode_array_metadata(array_meta, layout.array_shape(rows)))

    # Remove what lies beyond the extent, and leftovers of the crash.
    removed = 0
    last_block = -(-rows // rpb)  # blocks [0, last_block) are inside the extent
    for name in store.list_dir(keys.chunks):
        if name.isdigit() and int(name) >= last_block:
            beyond = f"{keys.chunks}/{name}"
            removed += len(store.walk(beyond))
            store.remove_tree(beyond)
    store.abort_uploads()  # shards a killed writer was streaming (object stores)
    for key in store.walk(""):
        if key.rpartition("/")[2].startswith(".") and key.endswith(".tmp"):
            store.remove(key)
    for name in (RESERVE_NAME, FINAL_RESERVE_NAME):
        store.remove(name)

    carried = {**carried_attrs(acq), MEASURED_KEY: measure(store, layout, kept, decoder)}
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
        image_group(
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
