"""Many positions against one image: does a dataset of N images keep the single-image
speed?

Scenario (a)'s frames (2048² uint16, blosc lz4 5 shuffle, one frame per chunk), written
once as one image of ``F`` frames and once as ``N`` positions of ``F / N`` time points
each, interleaved per time point (position 0, 1, …, N-1, then the next time point) as
a multi-position acquisition delivers them. Each run is a fresh process, settled first
(sync, drop caches, wait), timed from open to close and sync; the two layouts
alternate, so drift hits both alike::

    python benchmarks/positions.py --positions 16 --frames 304 --pairs 5

Prints the median MB/s of each with its range, every pair's ratio (positions / image)
and the peak RSS of each.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import bench_peers


def run_one(layout: str, positions: int, frames: int) -> dict[str, float]:
    import acqwriter

    sc = bench_peers.scenarios(1.0)["a"]
    frame, _ = bench_peers.frame_source(sc)
    for i in range(16):
        frame(i)
    workdir = Path(tempfile.mkdtemp(prefix="acqwriter-positions-", dir="."))
    spec = bench_peers.acqwriter_spec(sc, workdir / "p.ome.zarr")
    spec["expected_frames"] = frames
    bench_peers.settle(3)
    try:
        t0 = time.perf_counter()
        if layout == "image":
            stream = acqwriter.open_stream(spec)
            for i in range(frames):
                stream.append(frame(i))
            summary = stream.close()
        else:
            image = {k: spec.pop(k) for k in ("shape", "dtype", "dims", "sizes", "chunks")}
            image["pyramid"] = spec.pop("pyramid")
            spec.pop("shards")
            keys = [f"p{p}" for p in range(positions)]
            ds = acqwriter.open_dataset(
                {**spec, "layout": "collection", "images": {k: image for k in keys}}
            )
            for i in range(frames):
                ds.append(frame(i), image=keys[i % positions])
            summary = ds.close()
        bench_peers.syncfs(workdir)
        elapsed = time.perf_counter() - t0
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    assert summary.state == "complete" and summary.frames_written == frames
    raw = frames * sc.shape[0] * sc.shape[1] * 2
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"mb_s": raw / 1e6 / elapsed, "rss_mb": peak}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--positions", type=int, default=16)
    parser.add_argument("--frames", type=int, default=304)
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--one", choices=["image", "positions"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one, args.positions, args.frames)))
        return
    results: dict[str, list[dict[str, float]]] = {"image": [], "positions": []}
    for i in range(args.pairs):
        order = ["image", "positions"] if i % 2 == 0 else ["positions", "image"]
        for layout in order:
            out = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--one",
                    layout,
                    "--positions",
                    str(args.positions),
                    "--frames",
                    str(args.frames),
                ],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            results[layout].append(json.loads(out.strip().splitlines()[-1]))
    image = [r["mb_s"] for r in results["image"]]
    many = [r["mb_s"] for r in results["positions"]]
    pairs = ", ".join(f"{m / s:.2f}" for m, s in zip(many, image, strict=True))
    print(
        f"one image: {statistics.median(image):.0f} MB/s [{min(image):.0f}-{max(image):.0f}], "
        f"peak RSS {max(r['rss_mb'] for r in results['image']):.0f} MB\n"
        f"{args.positions} positions: {statistics.median(many):.0f} MB/s "
        f"[{min(many):.0f}-{max(many):.0f}], peak RSS "
        f"{max(r['rss_mb'] for r in results['positions']):.0f} MB\n"
        f"ratio of medians {statistics.median(many) / statistics.median(image):.3f} "
        f"(pairs {pairs})"
    )


if __name__ == "__main__":
    main()
