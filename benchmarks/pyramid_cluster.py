"""Pyramid builds of one existing dataset on this machine: acqwriter's single-machine
builder, acqwriter on a Dask cluster (``--workers 2``), ngff-zarr (``to_multiscales``
+ ``to_ngff_zarr``) and ome-zarr-py (``write_image`` with scale factors), the last two
on the same Dask cluster.

The dataset is level 0 of an acqwriter stream of realistic 2048² uint16 frames
(background, cells, Poisson noise; blosc lz4, one frame per chunk, no pyramid), at
least four times the memory each Dask worker is given (``--worker-mb``). Each build is
a fresh process on a fresh copy of the dataset, the builders interleaved, settled
first (sync, drop caches); wall time runs from the start of the build to the data on
disk (syncfs), peak RSS is the build process's and, for cluster builds, each worker's.
The peers have no "rebuild the pyramid of this store": they read level 0 as a Dask
array and write a new dataset, level 0 included (that copy is part of their time).

Graph size: acqwriter's tasks are submitted a few per worker thread at a time (the
scheduler never holds more than ``3 × threads``); the peers' graphs are counted
(``len(graph)``) before they run. Scheduler memory is the client process's RSS (a
``LocalCluster``'s scheduler runs in it)::

    python benchmarks/pyramid_cluster.py --frames 136 --repeats 3
    python benchmarks/pyramid_cluster.py --frames 34 --repeats 1    # the smaller size

Prints one line per run and a summary (median wall time, peak RSS) per builder.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

SHAPE = (2048, 2048)
LEVELS = 4
BUILDERS = ("acqwriter", "acqwriter-workers2", "ngff-zarr", "ome-zarr-py")


def cells(rng: np.random.Generator) -> np.ndarray:
    """A 2048² background of 110 with 60 bright discs (cells): the mean a frame's
    Poisson noise is drawn around."""
    yy, xx = np.mgrid[: SHAPE[0], : SHAPE[1]]
    base = np.full(SHAPE, 110.0)
    for _ in range(60):
        cy, cx = rng.uniform(0, SHAPE[0]), rng.uniform(0, SHAPE[1])
        base[(yy - cy) ** 2 + (xx - cx) ** 2 < rng.uniform(100, 900)] += rng.uniform(300, 2000)
    return base


def make_dataset(out: Path, frames: int) -> None:
    import acqwriter

    rng = np.random.default_rng(5)
    base = cells(rng)
    spec = {"out": out, "shape": SHAPE, "dtype": "uint16", "pyramid": {"when": "none"},
            "expected_frames": frames}  # fmt: skip
    with acqwriter.open_stream(spec) as stream:
        for i in range(frames):
            stream.append(rng.poisson(np.roll(base, 3 * i, axis=1)).astype(np.uint16))


class _Peak:
    """Peak RSS of this process and of each child process, sampled every 50 ms."""

    def __init__(self) -> None:
        import psutil

        self.me = psutil.Process()
        self.peak_self = 0
        self.peak_children: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.peak_self = max(self.peak_self, self.me.memory_info().rss)
            for child in self.me.children(recursive=True):
                try:
                    rss = child.memory_info().rss
                except Exception:  # gone between listing and reading
                    continue
                self.peak_children[child.pid] = max(self.peak_children.get(child.pid, 0), rss)

    def stop(self) -> dict[str, float]:
        self._stop.set()
        self._thread.join()
        workers = sorted(self.peak_children.values(), reverse=True)
        return {
            "client_rss_mb": self.peak_self / 2**20,
            "worker_rss_mb": [round(w / 2**20) for w in workers[:4]],
        }


def _cluster(worker_mb: int) -> tuple[Any, Any]:
    import distributed

    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
        memory_limit=f"{worker_mb}MiB",
    )  # fmt: skip
    return cluster, distributed.Client(cluster)


def _acqwriter_tasks(data: Path) -> str:
    """acqwriter's cluster tasks for this dataset, all levels, and the most the
    scheduler holds at once (3 per worker thread, two threads)."""
    from acqwriter.format.versions import read_stored
    from acqwriter.post.cluster import BATCH_BYTES, ClusterBuild
    from acqwriter.spec.model import StreamSpec
    from acqwriter.store.existing import open_store

    store = open_store(str(data))
    spec = StreamSpec.model_validate(
        {**read_stored(store.read_bytes)[1]["acqwriter"]["spec"], "overwrite": True}
    )
    plan = ClusterBuild._plan(store, spec, BATCH_BYTES)
    return f"{sum(lv.batches for lv in plan)} tasks, at most 6 held"


def run_one(builder: str, source: Path, workdir: Path, worker_mb: int) -> dict[str, Any]:
    import dask.array as da

    sys.path.insert(0, str(Path(__file__).parent))
    import bench_peers

    data = workdir / "run.ome.zarr"
    shutil.copytree(source, data)
    cluster = client = None
    if builder != "acqwriter":
        cluster, client = _cluster(worker_mb)
    bench_peers.settle(3)
    peak = _Peak()
    graph = None
    t0 = time.perf_counter()
    if builder.startswith("acqwriter"):
        from acqwriter.post import build_pyramid

        build_pyramid(data, levels=LEVELS, client=client)
        target = data
        graph = _acqwriter_tasks(data) if client is not None else None
    else:
        arr = da.from_zarr(str(data / "0"))
        target = workdir / "peer.ome.zarr"
        if builder == "ngff-zarr":
            import ngff_zarr as nz

            # ngff-zarr's to_ngff_zarr under a distributed client fails to serialize its
            # graph here (TypeError: _HLGExprSequence); it runs on Dask's threaded
            # scheduler instead, in this process, with the same two cores
            client.close()
            cluster.close()
            cluster = client = None
            image = nz.to_ngff_image(arr, dims=["t", "y", "x"])
            ms = nz.to_multiscales(
                image, scale_factors=[2**k for k in range(1, LEVELS)],
                method=nz.Methods.DASK_BIN_SHRINK,
            )  # fmt: skip
            graph = sum(len(img.data.__dask_graph__()) for img in ms.images)
            nz.to_ngff_zarr(str(target), ms, version="0.5")
        else:
            import zarr
            from ome_zarr.writer import write_image

            group = zarr.open_group(str(target), mode="w")
            delayed = write_image(
                arr, group, axes="tyx", scale_factors=[2**k for k in range(1, LEVELS)],
                compute=False,
            )  # fmt: skip
            graph = sum(len(d.__dask_graph__()) for d in delayed)
            client.compute(delayed, sync=True)
    bench_peers.syncfs(target)
    elapsed = time.perf_counter() - t0
    memory = peak.stop()
    if client is not None:
        client.close()
        cluster.close()
    raw = sum(f.stat().st_size for f in (data / "0").rglob("*") if f.is_file())
    return {"builder": builder, "seconds": elapsed, "graph_tasks": graph,
            "level0_stored_mb": raw / 1e6, **memory}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=136)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--worker-mb", type=int, default=256)
    parser.add_argument("--builders", default=",".join(BUILDERS))
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--source", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        with tempfile.TemporaryDirectory(prefix="acqwriter-pc-", dir=".") as tmp:
            result = run_one(args.one, Path(args.source), Path(tmp), args.worker_mb)
        print(json.dumps(result))
        return
    raw_gb = args.frames * SHAPE[0] * SHAPE[1] * 2 / 2**30
    print(f"dataset: {args.frames} x {SHAPE} uint16 = {raw_gb:.2f} GiB raw; "
          f"workers {args.worker_mb} MiB each ({raw_gb * 1024 / args.worker_mb:.1f}x)")  # fmt: skip
    builders = args.builders.split(",")
    results: dict[str, list[dict[str, Any]]] = {b: [] for b in builders}
    with tempfile.TemporaryDirectory(prefix="acqwriter-pc-src-", dir=".") as tmp:
        source = Path(tmp) / "source.ome.zarr"
        make_dataset(source, args.frames)
        for i in range(args.repeats):
            for builder in builders if i % 2 == 0 else builders[::-1]:
                cmd = [sys.executable, __file__, "--one", builder, "--source", str(source),
                       "--worker-mb", str(args.worker_mb)]  # fmt: skip
                run = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
                if run.returncode != 0:
                    tail = (run.stderr.strip().splitlines() or ["?"])[-1]
                    print(f"{builder}: failed: {tail}")
                    results[builder].append({"failed": tail})
                    continue
                result = json.loads(run.stdout.strip().splitlines()[-1])
                results[builder].append(result)
                print(json.dumps(result))
    for builder, runs in results.items():
        ok = [r for r in runs if "seconds" in r]
        if not ok:
            print(f"{builder:<20} failed every run")
            continue
        secs = [r["seconds"] for r in ok]
        client = max(r["client_rss_mb"] for r in ok)
        workers = max((max(r["worker_rss_mb"] or [0]) for r in ok), default=0)
        print(
            f"{builder:<20} {statistics.median(secs):7.1f} s [{min(secs):.1f}-{max(secs):.1f}]"
            f"  client/scheduler RSS {client:.0f} MB, worker RSS {workers} MB, "
            f"graph {ok[0]['graph_tasks']}, {len(ok)}/{len(runs)} runs ok"
        )


if __name__ == "__main__":
    main()
