"""Pyramid builds of a plate of many small wells: acqwriter's single-machine builder,
and ``--workers 2`` with the wells built side by side (the default) or one at a time
(``IMAGES_AT_ONCE = 1``, how cluster builds ran before), on the same plate.

The plate is ``--wells`` wells of one field, each ``--frames`` realistic 2048² uint16
frames (background, cells, Poisson noise; blosc lz4, one frame per chunk), acquired
with no pyramid. Each build is a fresh process on a fresh copy, the builders
interleaved, settled first (sync, drop caches); wall time runs from the start of the
build (the cluster already up) to the data on disk (syncfs)::

    python benchmarks/pyramid_plate.py --wells 48 --frames 2 --repeats 3

Prints one line per run and the median and range per builder.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from pyramid_cluster import SHAPE, cells  # a sibling script, not a package

LEVELS = 4
BUILDERS = ("acqwriter", "workers2-side-by-side", "workers2-one-at-a-time")


def make_plate(out: Path, wells: int, frames: int) -> None:
    import acqwriter

    rng = np.random.default_rng(7)
    base = cells(rng)
    keys = [f"{'ABCDEFGH'[i // 12]}/{i % 12 + 1}/0" for i in range(wells)]
    image = {"shape": SHAPE, "dtype": "uint16", "pyramid": {"when": "none"}}
    spec = {"out": out, "layout": "plate", "images": {k: image for k in keys}}
    with acqwriter.open_dataset(spec) as ds:
        for w, key in enumerate(keys):
            for i in range(frames):
                frame = rng.poisson(np.roll(base, 5 * w + 3 * i, axis=1)).astype(np.uint16)
                ds.append(frame, image=key)


def run_one(builder: str, source: Path, workdir: Path) -> dict[str, Any]:
    import bench_peers

    import acqwriter.post.pyramid as pyramid
    from acqwriter.post import build_pyramid

    data = workdir / "plate.ome.zarr"
    shutil.copytree(source, data)
    cluster = client = None
    if builder != "acqwriter":
        import distributed

        cluster = distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
        )
        client = distributed.Client(cluster)
        if builder.endswith("one-at-a-time"):
            pyramid.IMAGES_AT_ONCE = 1
    bench_peers.settle(3)
    t0 = time.perf_counter()
    build_pyramid(data, levels=LEVELS, client=client)
    bench_peers.syncfs(data)
    elapsed = time.perf_counter() - t0
    if client is not None:
        client.close()
        cluster.close()
    return {"builder": builder, "seconds": elapsed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--wells", type=int, default=48)
    parser.add_argument("--frames", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--source", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        work = Path(tempfile.mkdtemp(prefix="plate-run-"))
        try:
            print(json.dumps(run_one(args.one, Path(args.source), work)))
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return
    root = Path(tempfile.mkdtemp(prefix="plate-bench-"))
    try:
        source = root / "source.ome.zarr"
        make_plate(source, args.wells, args.frames)
        raw_mb = args.wells * args.frames * SHAPE[0] * SHAPE[1] * 2 / 1e6
        print(f"plate: {args.wells} wells x {args.frames} frames of 2048² uint16, "
              f"{raw_mb:.0f} MB raw, {LEVELS} levels")  # fmt: skip
        results: dict[str, list[float]] = {b: [] for b in BUILDERS}
        for rep in range(args.repeats):
            for builder in BUILDERS:
                run = subprocess.run(
                    [sys.executable, __file__, "--one", builder, "--source", str(source)],
                    capture_output=True, text=True, check=True,
                )  # fmt: skip
                seconds = json.loads(run.stdout.strip().splitlines()[-1])["seconds"]
                results[builder].append(seconds)
                print(f"rep {rep} {builder:24s} {seconds:6.2f} s", flush=True)
        print("\n| builder | median | range |\n|---|---|---|")
        for builder, times in results.items():
            print(f"| {builder} | {statistics.median(times):.2f} s | "
                  f"{min(times):.2f}–{max(times):.2f} |")  # fmt: skip
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
