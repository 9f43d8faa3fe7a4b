"""Multiscale pyramid, built after acquisition, out of core.

Level k+1 is level k downsampled 2× in y and x (and z when ``pyramid.downsample_z``);
t and c are never downsampled. Each output chunk is computed from the 2×2 (×2) block of
source chunks under it, read straight from the chunk files (:mod:`acqwriter.post.reader`),
and written with the same codec and chunk shape through the storage layer, so memory
is a few chunks per thread whatever the dataset size.

The values come from :func:`acqwriter.post.downsample.downsample` (``mean`` rounded
half up, odd edges clipped; ``nearest`` the first pixel of each block).

A level appears in the root ``multiscales`` only after all its chunks are written; a
crash midway leaves a valid dataset with the levels finished so far.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError

from acqwriter.format.image import FINISHED_STATES, Level, carried_attrs, image_group, level0
from acqwriter.format.versions import read_stored, write_group
from acqwriter.plan.pyramid import level_chunks, level_factors, no_pyramid_reason, plan_levels
from acqwriter.post.cluster import drop_build_log
from acqwriter.post.hierarchy import image_paths
from acqwriter.post.regions import LevelRegions, level0_shape, use_settings, write_level_metadata
from acqwriter.spec.model import StreamSpec
from acqwriter.spec.pyramid import PyramidSpec
from acqwriter.store.base import Store
from acqwriter.store.existing import open_store
from acqwriter.store.prefixed import PrefixedStore

__all__ = [
    "BuildProgress",
    "build_levels",
    "build_pyramid",
    "plan_levels",
    "pyramid_threads",
    "rebuild_pyramid",
]


class BuildProgress:
    """Where a pyramid build is, for progress displays: the level being written (1-based),
    how many there are, its chunks written so far and in all, and the bytes made.
    Written by the build's threads, read by anyone (plain attributes: a display may be a
    chunk behind, never wrong about what it names)."""

    def __init__(self, on_level: Callable[[], None] | None = None) -> None:
        self.on_level = on_level  # called as each level starts (displays never miss one)
        self.level = 0
        self.levels = 0
        self.chunks_done = 0
        self.chunks_total = 0
        self.level_chunks: list[int] = []  # chunks of each level started so far
        self.notes: list[str] = []  # why an image got no lower level
        self.bytes_done = 0
        self.dashboard: str | None = None  # a cluster build's dashboard link
        self.label: str | None = None  # what one bar of several images' levels counts
        self._ahead: dict[int, int] = {}  # chunks made of levels not shown yet
        self._t0: float | None = None
        self._lock = threading.Lock()

    def start_level(self, level: int, levels: int, chunks: int) -> None:
        with self._lock:
            if self._t0 is None:
                self._t0 = time.perf_counter()
            self.level, self.levels = level, levels
            self.chunks_done, self.chunks_total = self._ahead.pop(level, 0), chunks
            self.level_chunks.append(chunks)
        if self.on_level is not None:
            self.on_level()

    def chunk_done(self, nbytes: int) -> None:
        self.batch_done(self.level, 1, nbytes)

    def batch_done(self, level: int, chunks: int, nbytes: int) -> None:
        """``chunks`` of ``level`` written (a cluster build makes levels side by side:
        a level's count starts from what was made before it is shown)."""
        with self._lock:
            self.bytes_done += nbytes
            if level == self.level:
                self.chunks_done += chunks
            else:
                self._ahead[level] = self._ahead.get(level, 0) + chunks

    def snapshot(self) -> dict[str, Any]:
        """The fields progress displays and events carry (``pyramid_*``)."""
        return {
            "pyramid_level": self.level,
            "pyramid_levels": self.levels,
            "pyramid_chunks_done": self.chunks_done,
            "pyramid_chunks_total": self.chunks_total,
            "pyramid_level_chunks": list(self.level_chunks),
            "pyramid_mb_per_s": self.mb_per_s(),
            "pyramid_label": self.label,
        }

    def mb_per_s(self) -> float:
        """Raw megabytes of pyramid produced per second since the build started."""
        if self._t0 is None:
            return 0.0
        elapsed = time.perf_counter() - self._t0
        return self.bytes_done / 1e6 / elapsed if elapsed > 0 else 0.0


def _write_level(regions: LevelRegions, threads: int, progress: BuildProgress) -> None:
    """Compute and write every chunk of one level from the level above it, on
    ``threads`` threads, with a bounded number of chunks in flight (bounded memory)."""
    errors: list[BaseException] = []
    gate = threading.Semaphore(2 * threads)

    def one_chunk(index: tuple[int, ...]) -> None:
        try:
            progress.chunk_done(regions.make(index))
        except BaseException as exc:
            errors.append(exc)
        finally:
            gate.release()

    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="acqwriter-pyramid") as pool:
        for index in np.ndindex(*regions.grid):
            if errors:
                break
            gate.acquire()
            pool.submit(one_chunk, tuple(int(i) for i in index))
    if errors:
        raise errors[0]


# Pyramid threads per core: the build reads level 0 back from disk (written with O_DIRECT,
# so not in the page cache), and a thread waiting for its read leaves its core to
# another's decoding, averaging and compressing, all of which release the GIL.
PYRAMID_THREADS_PER_CORE = 3


# What the build's threads may hold together: each keeps about eight chunks' worth of
# buffers (the read, the decoded chunk, two accumulators, the output chunk, its encoding)
PYRAMID_MEMORY_BYTES = 512 << 20
_BUFFERS_PER_THREAD = 8


def pyramid_threads(chunk_bytes: int = 0) -> int:
    """Threads that build a pyramid: :data:`PYRAMID_THREADS_PER_CORE` per core the
    process may run on (the build runs after the acquisition, alone), fewer when chunks
    of ``chunk_bytes`` would take their buffers past :data:`PYRAMID_MEMORY_BYTES`."""
    wanted = PYRAMID_THREADS_PER_CORE * max(1, len(os.sched_getaffinity(0)))
    if chunk_bytes:
        wanted = min(wanted, PYRAMID_MEMORY_BYTES // (_BUFFERS_PER_THREAD * chunk_bytes))
    return max(1, wanted)


def build_levels(
    store: Store,
    spec: StreamSpec,
    *,
    threads: int | None = None,
    progress: BuildProgress | None = None,
) -> list[Level]:
    """Write levels 1.. into ``store`` from level 0; returns every level (0 included).

    ``threads``: default :func:`pyramid_threads`. ``progress`` is updated as chunks are
    written (see :class:`BuildProgress`)."""
    base_chunk_bytes = math.prod(spec.resolved_chunks()) * np.dtype(spec.dtype).itemsize
    threads = threads or pyramid_threads(base_chunk_bytes)
    progress = progress or BuildProgress()
    levels = [level0(spec)]
    shapes = plan_levels(spec, level0_shape(store, spec))
    try:
        for k, shape in enumerate(shapes, start=1):
            chunks = level_chunks(spec, shape)
            progress.start_level(k, len(shapes), math.prod(_grid(shape, chunks)))
            write_level_metadata(store, spec, k, shape, chunks)
            # level k - 1 is complete and nothing else writes it
            _write_level(LevelRegions(store, spec, k, shape, chunks), threads, progress)
            levels.append(Level(str(k), level_factors(spec, k), spec.pyramid.method))
        store.flush()
    except BaseException:
        # No level is listed before the build ends (the caller lists them): what was
        # built goes, rather than fill a disk that is likely full already.
        for k in range(1, len(shapes) + 1):
            store.remove_tree(str(k))
        raise
    return levels


def _grid(shape: tuple[int, ...], chunks: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(math.ceil(s / c) for s, c in zip(shape, chunks, strict=True))


def replace_pyramid(
    store: Store,
    spec: StreamSpec,
    *,
    state: str,
    extra: dict[str, Any],
    threads: int | None,
    progress: BuildProgress | None = None,
) -> list[Level]:
    """Drop levels 1.. and build them again. The group is first rewritten to list level 0
    only (``state``), so a reader or a crash never meets a listed level being rebuilt."""
    write_group(
        store.write_atomic,
        image_group(
            spec, [level0(spec)], state=state, extra=extra, no_pyramid=no_pyramid_reason(spec)
        ),
        spec.ngff_version,
    )
    for name in store.list_dir():
        if name.isdigit() and name != "0":  # levels 1..: folders named by their number
            store.remove_tree(name)
    drop_build_log(store)  # a cut-short cluster build's: these levels are new
    return build_levels(store, spec, threads=threads, progress=progress)


def build_pyramid(
    path_or_url: str | Path,
    *,
    levels: int | None = None,
    method: str | None = None,
    client: Any = None,
    task_bytes: int | None = None,
    threads: int | None = None,
    progress: BuildProgress | None = None,
) -> list[Level]:
    """Build the pyramid of a finished dataset (a folder or an ``s3://bucket/prefix``
    URL) again, with ``levels`` (level 0 included) and ``method`` when given (kept in
    the dataset's spec from then on). ``client``: a ``distributed.Client``; the build
    then runs on its cluster and resumes where an earlier one was cut short
    (:mod:`acqwriter.post.cluster`), ``task_bytes`` of output per task (default
    64 MiB); without it, on this machine's ``threads``."""
    return rebuild_pyramid(
        path_or_url, threads=threads, progress=progress, levels=levels, method=method,
        client=client, task_bytes=task_bytes,
    )  # fmt: skip


def rebuild_pyramid(
    root: str | Path,
    *,
    threads: int | None = None,
    progress: BuildProgress | None = None,
    levels: int | None = None,
    method: str | None = None,
    client: Any = None,
    task_bytes: int | None = None,
) -> list[Level]:
    """Drop and rebuild the pyramid of a finished acqwriter dataset (``acqwriter
    pyramid PATH``; a folder or an ``s3://bucket/prefix`` URL), holding its writer lock;
    its state stays what it was. For a collection or a plate, every image's pyramid (the
    levels of the last are returned).

    Refused, with the reason, for a dataset a live writer holds and for one whose writer
    died (``acqwriter recover`` finishes that, pyramid included)."""
    store = open_store(root, sync="close")
    where = store.location
    try:
        attrs = read_stored(store.read_bytes)[1]["acqwriter"]
    except FileNotFoundError:
        raise FileNotFoundError(f"{where}: not a Zarr dataset (no zarr.json)") from None
    except (KeyError, ValueError, TypeError) as exc:
        raise ValueError(f"{where}: not an acqwriter dataset (no acqwriter in zarr.json)") from exc
    images: list[str] = [""]
    if isinstance(attrs, dict) and attrs.get("layout") in ("collection", "plate"):
        images = list(image_paths(store, where, attrs).values())
        state = attrs.get("state")
        if state not in FINISHED_STATES:
            raise ValueError(
                f"{where}: its writer did not finish it (state {state!r}): run "
                f"'acqwriter recover {where}' first (it builds the pyramid too)"
            )
    settings = {k: v for k, v in (("levels", levels), ("method", method)) if v is not None}
    cluster = None
    if client is not None:
        from acqwriter.post.cluster import BATCH_BYTES, ClusterBuild

        cluster = ClusterBuild(client, store.location, task_bytes or BATCH_BYTES)
    try:
        store.take_lock()
    except FileExistsError as exc:
        raise ValueError(f"{where}: {exc}".replace(f"{where!r} ", "")) from None
    progress = progress or BuildProgress()
    try:
        builds = [
            _Build(f"{where}/{path}" if path else where, path, threads, progress, cluster)
            for path in images
        ]
        stores = [PrefixedStore(store, path) if path else store for path in images]
        if cluster is not None and len(builds) > 1:
            return _on_cluster_together(builds, stores, settings, cluster, progress)
        built: list[Level] = []
        for build, image_store in zip(builds, stores, strict=True):
            built = build.run(image_store, settings)
    finally:
        store.release_lock()
    return built


def _on_cluster_together(
    builds: list[_Build], stores: list[Store], settings: dict[str, Any], cluster: Any,
    progress: BuildProgress,
) -> list[Level]:  # fmt: skip
    """The images of a collection or a plate built side by side on the cluster: a plate
    of small wells has a task or two per level of each, and one image at a time would
    leave most workers idle. Every image is checked before any is touched; progress is
    one bar of every level's chunks of every image. The first error stops images not
    started yet (those running finish: their work is logged) and is raised."""
    jobs = [build.prepare(image, settings) for build, image in zip(builds, stores, strict=True)]
    total = sum(cluster.chunk_count(image, job[0]) for image, job in zip(stores, jobs, strict=True))
    progress.label = f"pyramids of {len(builds)} images"
    progress.start_level(1, 1, total)
    at_once = min(len(builds), cluster.threads(), IMAGES_AT_ONCE)
    cluster.share = at_once
    failed = threading.Event()
    errors: list[BaseException] = []
    built: list[list[Level]] = [[] for _ in builds]

    def one(i: int) -> None:
        if failed.is_set():
            return
        try:
            built[i] = builds[i].finish(stores[i], *jobs[i], share=_Share(progress))
        except BaseException as exc:
            failed.set()
            errors.append(exc)

    with ThreadPoolExecutor(at_once, thread_name_prefix="acqwriter-image") as pool:
        list(pool.map(one, range(len(builds))))
    if errors:
        raise errors[0]
    return built[-1]


# Images a cluster build runs side by side at most (threads of this client, each waiting
# on its image's tasks)
IMAGES_AT_ONCE = 64


class _Share:
    """One image's view of a build whose progress is one bar for every image: its chunks
    count toward the bar, its levels do not start bars of their own."""

    def __init__(self, progress: BuildProgress) -> None:
        self.progress = progress

    def start_level(self, level: int, levels: int, chunks: int) -> None:
        pass

    def batch_done(self, level: int, chunks: int, nbytes: int) -> None:
        self.progress.batch_done(1, chunks, nbytes)


class _Build:
    """One image's rebuild; the caller holds the dataset's lock."""

    def __init__(
        self, root: str, path: str, threads: int | None, progress: BuildProgress, cluster: Any
    ) -> None:
        self.root, self.path, self.threads = root, path, threads
        self.progress, self.cluster = progress, cluster

    def run(self, store: Store, settings: dict[str, Any]) -> list[Level]:
        return self.finish(store, *self.prepare(store, settings))

    def prepare(
        self, store: Store, settings: dict[str, Any]
    ) -> tuple[StreamSpec, str, dict[str, Any]]:
        """The image's spec with ``settings``, its state and carried attributes; a
        ValueError or FileNotFoundError naming the image if it cannot be rebuilt."""
        root = self.root
        try:
            attrs = read_stored(store.read_bytes)[1]["acqwriter"]
            spec = StreamSpec.model_validate({**attrs["spec"], "overwrite": True})
        except FileNotFoundError:
            raise FileNotFoundError(f"{root}: not a Zarr dataset (no zarr.json)") from None
        except (KeyError, ValueError, TypeError) as exc:
            raise ValueError(
                f"{root}: not an acqwriter dataset (no acqwriter.spec in zarr.json)"
            ) from exc
        use_settings(store, spec)
        state = attrs.get("state")
        if state not in FINISHED_STATES:
            raise ValueError(
                f"{root}: its writer did not finish it (state {state!r}): run "
                f"'acqwriter recover {root}' first (it builds the pyramid too)"
            )
        return _with_settings(spec, settings), state, carried_attrs(attrs)

    def finish(
        self, store: Store, spec: StreamSpec, state: str, extra: dict[str, Any],
        share: Any = None,
    ) -> list[Level]:  # fmt: skip
        """Build the levels and list them. ``share``: where a cluster build's progress
        goes when images are built side by side (default: :attr:`progress`)."""
        root = self.root
        if self.cluster is None:
            levels = replace_pyramid(
                store, spec, state=state, extra=extra, threads=self.threads,
                progress=self.progress,
            )  # fmt: skip
        else:
            levels = self.cluster.build(
                store, self.path, spec, state=state, extra=extra,
                progress=share or self.progress,
            )  # fmt: skip
            if self.cluster.resumed.get(self.path):
                self.progress.notes.append(
                    f"{root}: resumed: {self.cluster.resumed[self.path]} task(s) of regions "
                    "already written were kept"
                )
        note = no_pyramid_reason(spec, rebuild=True) if len(levels) == 1 else None
        if note is not None:
            self.progress.notes.append(f"{root}: no lower level: {note}")
        if "summary" in extra:
            extra["summary"]["pyramid_levels"] = len(levels)
            extra["summary"]["pyramid_note"] = note
        group = image_group(
            spec, levels, state=state, extra=extra, no_pyramid=no_pyramid_reason(spec)
        )
        write_group(store.write_atomic, group, spec.ngff_version)
        store.flush()
        return levels


def _with_settings(spec: StreamSpec, settings: dict[str, Any]) -> StreamSpec:
    """``spec`` with the pyramid ``levels``/``method`` a rebuild asks for, or ValueError
    naming the setting and what it takes."""
    if not settings:
        return spec
    try:
        pyramid = PyramidSpec.model_validate({**spec.pyramid.model_dump(), **settings})
    except ValidationError as exc:
        error = exc.errors()[0]
        name = ".".join(str(p) for p in error["loc"]) or "pyramid"
        raise ValueError(f"{name}: {error['msg']}, got {error.get('input')!r}") from None
    return spec.model_copy(update={"pyramid": pyramid})
