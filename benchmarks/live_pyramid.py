"""Pyramid levels written live, at close, or not at all: what each costs, interleaved.

For scenario (a) (300 × 2048² uint16, lz4, one frame per chunk), (c) (320 frames in
32 × 256² chunks) and the 16-well plate (scenario (a)'s frames, 304 of them over 16
wells), as fast as the writer takes them and, with ``--fps``, at a camera's pace, each
of ``--modes`` runs in a fresh process, settled first, in rounds whose order alternates::

    python benchmarks/live_pyramid.py --scenarios a,c,plate --pairs 5
    python benchmarks/live_pyramid.py --scenarios a --fps 100 --pairs 3

Per scenario and mode it prints the median and range of: the level-0 rate (raw MB/s
from open to level 0 on disk, i.e. the whole run minus a close-time pyramid build),
the time from the last frame to ``close`` returning (fsync included), the whole time
to a finished multiscale dataset, and peak RSS; then the ratio of the level-0 rates
(live / none) and how much sooner ``live`` finishes than ``close`` against the
``close`` build it replaces.
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

sys.path.insert(0, str(Path(__file__).parent))

import bench_peers
from positions import _plate_keys


def run_one(scenario: str, mode: str, fps: float) -> dict[str, float]:
    import acqwriter

    plate = scenario == "plate"
    sc = bench_peers.scenarios(1.0)["a" if plate else scenario]
    frames = 304 if plate else sc.frames
    frame, _ = bench_peers.frame_source(sc)
    for i in range(min(frames, 16)):
        frame(i)
    workdir = Path(tempfile.mkdtemp(prefix="acqwriter-live-pyramid-", dir="."))
    spec = bench_peers.acqwriter_spec(sc, workdir / "p.ome.zarr")
    spec["expected_frames"] = frames
    spec["pyramid"] = mode
    bench_peers.settle(3)
    try:
        t0 = time.perf_counter()
        if plate:
            image = {k: spec.pop(k) for k in ("shape", "dtype", "dims", "sizes", "chunks")}
            image["pyramid"] = spec.pop("pyramid")
            spec.pop("shards")
            keys = [f"{r}/{c}/0" for r, c in _plate_keys(16)]
            writer = acqwriter.open_dataset(
                {**spec, "layout": "plate", "images": {k: image for k in keys}}
            )

            def append(i: int) -> None:
                writer.append(frame(i), image=keys[i % 16])
        else:
            writer = acqwriter.open_stream(spec)

            def append(i: int) -> None:
                writer.append(frame(i))

        for i in range(frames):
            if fps:  # a camera's pace: frame i is ready at i / fps
                wait = t0 + i / fps - time.perf_counter()
                if wait > 0:
                    time.sleep(wait)
            append(i)
        t_last = time.perf_counter()
        summary = writer.close()
        bench_peers.syncfs(workdir)
        t_end = time.perf_counter()
        assert summary.state == "complete" and summary.frames_written == frames
        if plate:
            built = sum(s.pyramid_duration_s for s in summary.images.values())
            levels = min(s.pyramid_levels for s in summary.images.values())
        else:
            built, levels = summary.pyramid_duration_s, summary.pyramid_levels
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    raw = frames * sc.shape[0] * sc.shape[1] * 2
    return {
        "level0_mb_s": raw / 1e6 / (t_end - t0 - built),
        "close_s": t_end - t_last,
        "total_s": t_end - t0,
        "build_s": built,
        "levels": levels,
        "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def _stats(values: list[float], fmt: str = "{:.2f}") -> str:
    return f"{fmt.format(statistics.median(values))} [{fmt.format(min(values))}–" + (
        f"{fmt.format(max(values))}]"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenarios", default="a,c,plate")
    parser.add_argument("--modes", default="none,close,live")
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--fps", type=float, default=0.0, help="a camera's pace (0: none)")
    parser.add_argument("--one", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one[0], args.one[1], args.fps)))
        return
    modes = args.modes.split(",")
    for scenario in args.scenarios.split(","):
        results: dict[str, list[dict[str, float]]] = {m: [] for m in modes}
        for i in range(args.pairs):
            for mode in modes if i % 2 == 0 else modes[::-1]:
                cmd = [sys.executable, __file__, "--one", scenario, mode, "--fps", str(args.fps)]
                if (result := bench_peers.child_result(cmd, f"{scenario} {mode}")) is not None:
                    results[mode].append(result)
        pace = f" at {args.fps:g} frames/s" if args.fps else ""
        print(f"{scenario}{pace}, {args.pairs} rounds:")
        for mode, runs in results.items():
            if not runs:
                continue
            print(
                f"  {mode:5s}: level 0 {_stats([r['level0_mb_s'] for r in runs], '{:.0f}')} MB/s, "
                f"last frame → closed {_stats([r['close_s'] for r in runs])} s, "
                f"total {_stats([r['total_s'] for r in runs])} s, "
                f"build {_stats([r['build_s'] for r in runs])} s, "
                f"levels {int(runs[0]['levels'])}, "
                f"peak RSS {_stats([r['rss_mb'] for r in runs], '{:.0f}')} MB"
            )
        if results.get("live") and results.get("none"):
            ratio = statistics.median(r["level0_mb_s"] for r in results["live"]) / (
                statistics.median(r["level0_mb_s"] for r in results["none"])
            )
            print(f"  live / none level-0 rate: {ratio:.2f}")
        if results.get("live") and results.get("close"):
            close_total = statistics.median(r["total_s"] for r in results["close"])
            live_total = statistics.median(r["total_s"] for r in results["live"])
            build = statistics.median(r["build_s"] for r in results["close"])
            print(
                f"  live finishes {close_total - live_total:.2f} s before close "
                f"(close's build: {build:.2f} s)"
            )


if __name__ == "__main__":
    main()
