"""The MDA path: pymmcore-plus's engine with the Python simulated camera as fast as it
goes, written by acqwriter's handler, by pymmcore-plus's default sink, or by nobody.

A sequence of 4 positions × 3 channels × 10 z planes × ``T`` time points of 2048²
uint16 frames on the simulated core (``acqwriter.simulators.sim_core``). Writers, each
run in a fresh process, settled first, interleaved over ``--repeats`` rounds:

* ``nothing``: a handler connected to the core that does nothing (what the engine
  delivers);
* ``acqwriter``: ``MDAWriter(path, core=mmc)``, lz4;
* ``default``: ``output="x.ome.zarr"`` (pymmcore-plus's ome-writers sink as users get it).

Prints frames/s (median and range), peak RSS and frames dropped, and the ratios::

    python benchmarks/mda.py --timepoints 2 --repeats 3
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


def sequence(timepoints: int):
    import useq

    return useq.MDASequence(
        axis_order="tpcz",
        time_plan={"interval": 0, "loops": timepoints},
        stage_positions=[{"x": 600.0 * i, "y": 0.0, "name": f"pos{i}"} for i in range(4)],
        channels=["DAPI", "FITC", "TRITC"],
        z_plan={"range": 9, "step": 1},
    )


def run_one(writer: str, timepoints: int) -> dict[str, float]:
    from acqwriter.simulators import sim_core

    core = sim_core((2048, 2048), "uint16", buffer_mb=512)
    seq = sequence(timepoints)
    workdir = Path(tempfile.mkdtemp(prefix="acqwriter-mda-", dir="."))
    out = workdir / "x.ome.zarr"
    frames = [0]
    dropped = 0

    def count(*_args) -> None:
        frames[0] += 1

    bench_peers.settle(3)
    try:
        t0 = time.perf_counter()
        if writer == "nothing":
            core.mda.events.frameReady.connect(count)
            core.run_mda(seq, block=True)
        elif writer == "acqwriter":
            from acqwriter.mda import MDAWriter

            handler = MDAWriter(out, core=core, codec="lz4", pyramid={"enabled": False})
            core.run_mda(seq, block=True)
            handler.detach()
            frames[0] = handler.summary.frames_written
            dropped = handler.summary.frames_dropped
        else:
            core.mda.events.frameReady.connect(count)
            core.run_mda(seq, output=str(out), block=True)
        bench_peers.syncfs(workdir)
        elapsed = time.perf_counter() - t0
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"fps": frames[0] / elapsed, "frames": frames[0], "rss_mb": peak, "dropped": dropped}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timepoints", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--writers", default="nothing,acqwriter,default")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one, args.timepoints)))
        return
    writers = args.writers.split(",")
    results: dict[str, list[dict[str, float]]] = {w: [] for w in writers}
    for i in range(args.repeats):
        for writer in writers if i % 2 == 0 else writers[::-1]:
            run = subprocess.run(
                [sys.executable, __file__, "--one", writer, "--timepoints", str(args.timepoints)],
                capture_output=True,
                text=True,
            )
            if run.returncode != 0:
                print(f"{writer}: failed: {run.stderr.strip().splitlines()[-1:]}", flush=True)
                continue
            results[writer].append(json.loads(run.stdout.strip().splitlines()[-1]))
    medians = {}
    for writer, runs in results.items():
        if not runs:
            continue
        fps = [r["fps"] for r in runs]
        medians[writer] = statistics.median(fps)
        print(
            f"{writer:<10} {medians[writer]:6.1f} frames/s [{min(fps):.1f}-{max(fps):.1f}], "
            f"{runs[0]['frames']:.0f} frames, peak RSS {max(r['rss_mb'] for r in runs):.0f} MB, "
            f"dropped {max(r['dropped'] for r in runs):.0f}"
        )
    if "acqwriter" in medians:
        for other in ("nothing", "default"):
            if other in medians:
                print(f"acqwriter / {other}: {medians['acqwriter'] / medians[other]:.2f}")


if __name__ == "__main__":
    main()
