"""Soak: a long acquisition from the simulated camera at a rate the machine sustains.

Reports dropped frames, RSS over time (it must stay flat: the ring is preallocated and
bounded), and the frame-to-disk latency percentiles (``append`` → frame inside the
committed extent, from the stream's summary). Data volume: default 1024×1024 uint16 at
50 frames/s is 100 MB/s raw, ~33 GB on disk for 10 minutes; the dataset is deleted at
the end unless ``--keep``.

    python benchmarks/soak.py                         # 10 minutes
    python benchmarks/soak.py --minutes 2 --fps 50 --json soak.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path

import psutil

from acqwriter.acquisition import open_microscope, run_acquisition
from acqwriter.acquisition.spec import AcquisitionSpec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--fps", type=float, default=50.0)
    parser.add_argument("--height", type=int, default=1024)
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--codec", default="lz4")
    parser.add_argument("--ring-mb", type=int, default=512)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="acqwriter-soak-", dir="."))
    out = workdir / "soak.ome.zarr"
    process = psutil.Process()
    samples: list[tuple[float, float, int, int]] = []  # t, rss MB, frames written, ring occupancy
    latest: dict = {}
    done = threading.Event()
    t0 = time.monotonic()

    def sampler() -> None:
        while not done.wait(1.0):
            samples.append(
                (
                    time.monotonic() - t0,
                    process.memory_info().rss / 2**20,
                    latest.get("frames_written", 0),
                    latest.get("ring_occupancy", 0),
                )
            )

    scope = open_microscope("sim", shape=(args.height, args.width), fps=args.fps, seed=1)
    thread = threading.Thread(target=sampler, daemon=True)
    try:
        spec = AcquisitionSpec.parse(
            {
                "out": str(out),
                "duration": args.minutes * 60,
                "codec": args.codec,
                "ring_bytes": args.ring_mb * 2**20,
                "pyramid": {"enabled": False},
                "overflow": "block",
            }
        )
        thread.start()
        report = run_acquisition(scope, spec, on_progress=latest.update, progress_interval_s=0.5)
    finally:
        done.set()
        scope.close()
    s = report.summary
    rss = [r for _, r, _, _ in samples]
    steady = rss[len(rss) // 5 :] or rss  # after warm-up
    half = len(steady) // 2
    drift = (statistics.median(steady[half:]) - statistics.median(steady[:half])) if half else 0.0
    result = {
        "minutes": args.minutes,
        "fps_target": args.fps,
        "frame": [args.height, args.width],
        "frames_written": s.frames_written,
        "frames_dropped": s.frames_dropped,
        "dropped_by_reason": s.dropped_by_reason,
        "throughput_mb_s": s.throughput_mb_s,
        "frames_per_s": s.frames_per_s,
        "latency_ms": {"p50": s.latency_p50_ms, "p99": s.latency_p99_ms, "max": s.latency_max_ms},
        "rss_mb": {
            "min": min(rss),
            "max": max(rss),
            "first": rss[0],
            "last": rss[-1],
            "steady_drift": drift,
        },
        "ring_high_water": s.ring_high_water_frames,
        "ring_capacity": s.ring_capacity_frames,
        "ok": report.ok,
        "reason": report.reason(),
        "samples": samples,
    }
    print(json.dumps({k: v for k, v in result.items() if k != "samples"}, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    if not args.keep:
        shutil.rmtree(workdir if args.workdir is None else out, ignore_errors=True)


if __name__ == "__main__":
    main()
