"""A pyramid build on a Dask distributed cluster, resumable.

The client (this process) holds the dataset's writer lock and decides the work; the
cluster's workers do it. Each task is one batch of consecutive output chunks of one
level (:class:`~acqwriter.post.regions.LevelRegions`, the code the single-machine
builder runs, so the bytes are the same): it opens the dataset itself (a path on a
shared filesystem or an object-store URL), reads only the source chunks under its
chunks and writes whole chunks. Tasks are submitted in waves, a few per worker thread
at a time, never as a graph of the whole dataset: the scheduler holds a few hundred
tasks whatever the dataset's size.

Levels are chained: a batch of level k+1 is submitted as soon as every chunk of level k
it reads is done, so the levels overlap. A level is listed in the image's
``multiscales`` (with its extent) only when all its chunks are written.

Resuming. The client appends one line per finished batch to the image's build log
(``.acqwriter.pyramid.jsonl``, after a header naming the levels' shapes, chunks,
method and batch size). A build killed at any moment (the client, a worker, the
scheduler) leaves a valid dataset: the levels listed are whole, and a chunk of an
unlogged batch is rewritten. Running the same build again reads the log and submits
only the batches not in it; a log of other settings (levels, method, level 0 grown)
starts the build over. A finished build removes its log. A worker lost mid-build is
the scheduler's to handle: its tasks run again elsewhere (a batch is idempotent). A
scheduler lost mid-build cancels every task; the build stops with :class:`ClusterLost`
and the log keeps what was done.

A collection's or a plate's images are built side by side (one client thread each, up
to :data:`~acqwriter.post.pyramid.IMAGES_AT_ONCE`), each keeping its ``share`` of the
tasks in flight: a plate of small wells has a task or two per level of each.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from collections.abc import Callable
from concurrent.futures import CancelledError
from dataclasses import dataclass
from typing import Any

import numpy as np

from acqwriter.format.image import Level, image_group, level0
from acqwriter.format.keys import PYRAMID_BUILD_LOG
from acqwriter.format.versions import write_group
from acqwriter.plan.pyramid import level_chunks, level_factors, no_pyramid_reason, plan_levels
from acqwriter.post.regions import level0_shape, source_chunks, write_level_metadata
from acqwriter.spec.model import StreamSpec
from acqwriter.store.base import Store

__all__ = ["BUILD_LOG", "ClusterBuild", "ClusterLost", "drop_build_log", "need_dask"]

BUILD_LOG = PYRAMID_BUILD_LOG
BATCH_BYTES = 64 << 20  # raw output per task: a few chunks, bounded memory per task
TASKS_PER_THREAD = 3  # tasks in flight per worker thread: the scheduler's queue stays short


class ClusterLost(RuntimeError):
    """The cluster stopped answering mid-build (its scheduler gone, the connection
    closed): the levels listed are whole and the build log keeps the regions made, so
    the same build run again resumes."""


def drop_build_log(store: Store) -> None:
    """Remove an image's build log whole (:meth:`Store.remove_lines`)."""
    store.remove_lines(BUILD_LOG)


def need_dask() -> Any:
    """``distributed``, or ImportError saying in one line what to install."""
    try:
        import distributed
    except ImportError:
        raise ImportError(
            "a Dask cluster build needs dask and distributed: pip install 'acqwriter[dask]'"
        ) from None
    return distributed


@dataclass(frozen=True)
class _Level:
    k: int
    shape: tuple[int, ...]
    chunks: tuple[int, ...]
    grid: tuple[int, ...]
    batch: int  # chunks per task

    @property
    def chunk_count(self) -> int:
        return math.prod(self.grid)

    @property
    def batches(self) -> int:
        return math.ceil(self.chunk_count / self.batch)

    def indexes(self, b: int) -> list[tuple[int, ...]]:
        flat = range(b * self.batch, min((b + 1) * self.batch, self.chunk_count))
        return [tuple(int(i) for i in np.unravel_index(f, self.grid)) for f in flat]


def _make_batch(root: str, path: str, spec_json: str, k: int, shape: Any, chunks: Any,
                indexes: list[tuple[int, ...]]) -> int:  # fmt: skip
    """One task, run in a worker: make output chunks ``indexes`` of level ``k``."""
    from acqwriter.post.regions import LevelRegions, use_settings
    from acqwriter.store.existing import open_store
    from acqwriter.store.prefixed import PrefixedStore

    spec = StreamSpec.model_validate_json(spec_json)
    store: Store = open_store(root, sync=spec.sync)
    if path:
        store = PrefixedStore(store, path)
    use_settings(store, spec)
    regions = LevelRegions(store, spec, k, tuple(shape), tuple(chunks))
    made = sum(regions.make(tuple(index)) for index in indexes)
    if spec.sync == "always":
        store.flush()
    return made


class ClusterBuild:
    """Builds images' pyramids on ``client``'s cluster (a ``distributed.Client``)."""

    def __init__(self, client: Any, root: str, batch_bytes: int = BATCH_BYTES) -> None:
        self.client = client
        # workers may run elsewhere: a path is made absolute (the same on a shared
        # filesystem), a URL is passed as it is
        self.root = root if "://" in root else os.path.abspath(root)
        self.batch_bytes = batch_bytes
        self.resumed: dict[str, int] = {}  # image path -> batches found done in its log
        self.share = 1  # images built side by side: each keeps its share of tasks in flight

    def chunk_count(self, store: Store, spec: StreamSpec) -> int:
        """Chunks the build of this image makes, every level."""
        return sum(lv.chunk_count for lv in self._plan(store, spec, self.batch_bytes))

    def threads(self) -> int:
        workers = self.client.scheduler_info(n_workers=-1).get("workers", {})
        return max(1, sum(w.get("nthreads", 1) for w in workers.values()))

    def build(
        self,
        store: Store,
        path: str,
        spec: StreamSpec,
        *,
        state: str,
        extra: dict[str, Any],
        progress: Any,
        on_level: Callable[[list[Level]], None] | None = None,
    ) -> list[Level]:
        """Build (or resume) the pyramid of the image at ``path`` (``store`` is its
        store, seen from this process); returns its levels, level 0 included."""
        plan = self._plan(store, spec, self.batch_bytes)
        header = {
            "levels": [[list(lv.shape), list(lv.chunks)] for lv in plan],
            "method": spec.pyramid.method,
            "downsample_z": spec.pyramid.downsample_z,
            "batch": [lv.batch for lv in plan],
            "level0": list(level0_shape(store, spec)),
        }
        done = self._resume(store, header, plan)
        self.resumed[path] = sum(len(d) for d in done.values())
        if not self.resumed[path]:  # a fresh build: level 0 only, then the header
            self._list(store, spec, [level0(spec)], state, extra)
            for name in store.list_dir():
                if name.isdigit() and name != "0":
                    store.remove_tree(name)
            drop_build_log(store)
            store.append_lines(BUILD_LOG, (json.dumps(header) + "\n").encode())
        for lv in plan:
            write_level_metadata(store, spec, lv.k, lv.shape, lv.chunks)
        levels = self._run(store, path, spec, plan, done, progress, state, extra)
        store.flush()
        drop_build_log(store)
        return levels

    # -- the plan and the log -------------------------------------------------------------
    @staticmethod
    def _plan(store: Store, spec: StreamSpec, batch_bytes: int) -> list[_Level]:
        plan = []
        for k, shape in enumerate(plan_levels(spec, level0_shape(store, spec)), start=1):
            chunks = level_chunks(spec, shape)
            grid = tuple(math.ceil(s / c) for s, c in zip(shape, chunks, strict=True))
            chunk_bytes = math.prod(chunks) * np.dtype(spec.dtype).itemsize
            plan.append(_Level(k, shape, chunks, grid, max(1, batch_bytes // chunk_bytes)))
        return plan

    @staticmethod
    def _resume(store: Store, header: dict[str, Any], plan: list[_Level]) -> dict[int, set[int]]:
        """The batches the log says are done, per level; none when there is no log or
        it is of other settings."""
        done: dict[int, set[int]] = {lv.k: set() for lv in plan}
        try:
            lines = store.read_lines(BUILD_LOG).decode().splitlines()
        except FileNotFoundError:
            return done
        try:
            if not lines or json.loads(lines[0]) != header:
                return done
            for line in lines[1:]:
                entry = json.loads(line)
                done[int(entry["level"])].add(int(entry["batch"]))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError):
            pass  # a torn last line: the batches before it count
        return done

    @staticmethod
    def _list(store: Store, spec: StreamSpec, levels: list[Level], state: str,
              extra: dict[str, Any]) -> None:  # fmt: skip
        group = image_group(
            spec, levels, state=state, extra=extra, no_pyramid=no_pyramid_reason(spec)
        )
        write_group(store.write_atomic, group, spec.ngff_version)

    # -- the waves ------------------------------------------------------------------------
    def _run(self, store: Store, path: str, spec: StreamSpec, plan: list[_Level],
             done: dict[int, set[int]], progress: Any, state: str,
             extra: dict[str, Any]) -> list[Level]:  # fmt: skip
        distributed = need_dask()
        spec_json = spec.model_dump_json()
        chunk_done = {lv.k: np.zeros(lv.chunk_count, bool) for lv in plan}
        for lv in plan:
            for b in done[lv.k]:
                chunk_done[lv.k][b * lv.batch : (b + 1) * lv.batch] = True
        cursor = {lv.k: 0 for lv in plan}
        listed = [level0(spec)]
        limit = max(TASKS_PER_THREAD, TASKS_PER_THREAD * self.threads() // self.share)
        futures: dict[Any, tuple[_Level, int, int]] = {}  # -> level, batch, chunks
        queue = distributed.as_completed()
        started = time.perf_counter()
        regions = {lv.k: _Sources(spec, lv, plan) for lv in plan}
        for lv in plan:  # what an earlier run made counts
            progress.batch_done(lv.k, int(chunk_done[lv.k].sum()), 0)
        progress.start_level(1, len(plan), plan[0].chunk_count if plan else 0)

        def ready(lv: _Level, indexes: list[tuple[int, ...]]) -> bool:
            if lv.k == 1:
                return True
            below = regions[lv.k].sources(indexes)
            return bool(chunk_done[lv.k - 1][below].all())

        def submit() -> None:
            for lv in plan:
                while len(futures) < limit and cursor[lv.k] < lv.batches:
                    b = cursor[lv.k]
                    if b in done[lv.k]:
                        cursor[lv.k] += 1
                        continue
                    indexes = lv.indexes(b)
                    if not ready(lv, indexes):
                        break  # this level waits for the one above it
                    key = f"acqwriter-pyramid-{path or 'image'}-{lv.k}-{b}-{started}"
                    future = self.client.submit(
                        _make_batch, self.root, path, spec_json, lv.k, lv.shape, lv.chunks,
                        indexes, key=key, pure=False,
                    )  # fmt: skip
                    futures[future] = (lv, b, len(indexes))
                    queue.add(future)
                    cursor[lv.k] += 1

        def list_whole_levels() -> None:
            while len(listed) <= len(plan) and chunk_done[len(listed)].all():
                listed.append(
                    Level(str(len(listed)), level_factors(spec, len(listed)), spec.pyramid.method)
                )
                store.flush()  # the level's chunks durable before it is listed
                self._list(store, spec, listed, state, extra)
                if len(listed) <= len(plan):
                    nxt = plan[len(listed) - 1]
                    progress.start_level(nxt.k, len(plan), nxt.chunk_count)

        list_whole_levels()
        submit()
        try:
            while futures:
                future = next(queue)
                lv, b, count = futures.pop(future)
                made = self._result(future)  # an error ends the build; the log keeps the rest
                line = json.dumps({"level": lv.k, "batch": b}) + "\n"
                store.append_lines(BUILD_LOG, line.encode())
                chunk_done[lv.k][b * lv.batch : (b + 1) * lv.batch] = True
                done[lv.k].add(b)
                progress.batch_done(lv.k, count, made)
                list_whole_levels()
                submit()
        finally:
            if futures:
                self._cancel(list(futures))
        if len(listed) != len(plan) + 1:
            raise RuntimeError("pyramid build: a level was left with chunks not made")
        return listed

    def _result(self, future: Any) -> int:
        """A finished task's result. A task's own error (a full disk on a worker) is
        raised as it is; a task cancelled because the scheduler went (the client cancels
        every task when it loses the connection) or a result that cannot be fetched any
        more is :class:`ClusterLost`."""
        from distributed.comm import CommClosedError

        try:
            return future.result()
        except (CancelledError, CommClosedError) as exc:
            how = "its tasks were cancelled" if isinstance(exc, CancelledError) else (
                "the connection closed"
            )  # fmt: skip
            raise ClusterLost(
                f"the scheduler {self.client.scheduler.address} was lost: {how}"
            ) from None

    def _cancel(self, futures: list[Any]) -> None:
        """Cancel tasks left in flight when the build stops; a client that lost its
        scheduler has nothing to cancel (its tasks were cancelled with the connection)."""
        if self.client.status not in ("running", "newly-created"):
            return
        # the scheduler may go as the build stops: then nothing runs for this client
        with contextlib.suppress(OSError, CancelledError, TimeoutError):
            self.client.cancel(futures)


class _Sources:
    """Which chunks of the level above a batch of ``lv`` reads, as flat indexes."""

    def __init__(self, spec: StreamSpec, lv: _Level, plan: list[_Level]) -> None:
        self.step = level_factors(spec, 1)
        self.chunks = lv.chunks
        self.above = plan[lv.k - 2] if lv.k > 1 else None

    def sources(self, indexes: list[tuple[int, ...]]) -> np.ndarray:
        above = self.above
        assert above is not None  # level 1 reads level 0, which is whole
        flat = {
            int(np.ravel_multi_index(src, above.grid))
            for index in indexes
            for src in source_chunks(index, self.chunks, self.step, above.chunks, above.shape)
        }
        return np.fromiter(sorted(flat), dtype=np.int64)
