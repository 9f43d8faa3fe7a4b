"""What a live view costs the writer: scenario (a) with and without a view attached.

Scenario (a)'s frames (300 × 2048² uint16, blosc lz4 5 shuffle, one frame per chunk),
written once plainly and once with ``stream.view()`` attached and a viewer's refresh
loop reading the newest frame 30 times a second (what ndv does on ``coords_changed``),
interleaved, each run a fresh process, settled first, timed from open to close and
sync::

    python benchmarks/view_cost.py --pairs 5

Prints the median MB/s of each with its range, every pair's ratio (view / plain) and
the peak RSS of each. The MDA side is ``benchmarks/mda.py --writers
acqwriter,acqwriter-view``.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import bench_peers
from viewing import Refresher


def run_one(mode: str) -> dict[str, float]:
    import acqwriter

    sc = bench_peers.scenarios(1.0)["a"]
    frame, _ = bench_peers.frame_source(sc)
    for i in range(16):
        frame(i)
    workdir = Path(tempfile.mkdtemp(prefix="acqwriter-view-", dir="."))
    spec = bench_peers.acqwriter_spec(sc, workdir / "v.ome.zarr")
    bench_peers.settle(3)
    refresher = None
    try:
        t0 = time.perf_counter()
        stream = acqwriter.open_stream(spec)
        if mode == "view":
            refresher = Refresher(stream.view())
        for i in range(sc.frames):
            stream.append(frame(i))
        summary = stream.close()
        bench_peers.syncfs(workdir)
        elapsed = time.perf_counter() - t0
        assert summary.state == "complete" and summary.frames_written == sc.frames
    finally:
        if refresher is not None:
            refresher.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    raw = sc.frames * sc.shape[0] * sc.shape[1] * 2
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    shown = 0 if refresher is None else refresher.reads
    return {"mb_s": raw / 1e6 / elapsed, "rss_mb": peak, "reads": shown}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one)))
        return
    modes = ["plain", "view"]
    results: dict[str, list[dict[str, float]]] = {m: [] for m in modes}
    for i in range(args.pairs):
        for mode in modes if i % 2 == 0 else modes[::-1]:
            result = bench_peers.child_result([sys.executable, __file__, "--one", mode], mode)
            if result is not None:
                results[mode].append(result)
    for mode in modes:
        rates = [r["mb_s"] for r in results[mode]]
        rss = max(r["rss_mb"] for r in results[mode])
        reads = statistics.median(r["reads"] for r in results[mode])
        print(
            f"{mode:<6} {statistics.median(rates):6.0f} MB/s [{min(rates):.0f}-{max(rates):.0f}]"
            f", peak RSS {rss:.0f} MB, viewer reads per run {reads:.0f}"
        )
    plain = [r["mb_s"] for r in results["plain"]]
    view = [r["mb_s"] for r in results["view"]]
    pairs = ", ".join(f"{v / p:.2f}" for v, p in zip(view, plain, strict=True))
    ratio = statistics.median(view) / statistics.median(plain)
    print(f"view / plain: {ratio:.3f} (pairs {pairs})")


if __name__ == "__main__":
    main()
