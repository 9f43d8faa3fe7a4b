"""Trace the drain loop of the sustained scenario: when each frame was popped, how long
``popNextImageAndMD`` and ``append`` took, and the core's backlog (remaining images).

    python benchmarks/trace_drain.py --fps 150 --frames 600

A camera that falls behind its own schedule shows as evenly spaced pops at the wrong
interval with an empty backlog, then a burst (the backlog jumps) as it catches up; a slow
consumer shows as a backlog that grows while pops are slow (a simulated camera's first
pass over the core's buffer once showed as exactly that).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

import acqwriter.engine.stream as stream_module
from acqwriter.acquisition import open_microscope, run_acquisition
from acqwriter.acquisition.spec import AcquisitionSpec


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--fps", type=float, default=150.0)
    p.add_argument("--frames", type=int, default=600)
    p.add_argument("--core-buffer-mb", type=int, default=256)
    p.add_argument("--first", type=int, default=120, help="frames to list one by one")
    args = p.parse_args()

    appends: list[tuple[float, float]] = []  # (start, duration)
    pops: list[tuple[float, float, int]] = []  # (start, duration, backlog after)
    original_append = stream_module.FrameStream.append

    def timed_append(self: Any, image: Any, meta: Any = None) -> Any:
        t0 = time.perf_counter()
        result = original_append(self, image, meta)
        appends.append((t0, time.perf_counter() - t0))
        return result

    stream_module.FrameStream.append = timed_append  # type: ignore[method-assign]
    workdir = Path(tempfile.mkdtemp(prefix="acqwriter-trace-", dir="."))
    scope = open_microscope("sim", shape=(2048, 2048), fps=args.fps)
    core = scope.core
    original_pop = core.popNextImageAndMD

    def timed_pop(*a: Any, **k: Any) -> Any:
        t0 = time.perf_counter()
        result = original_pop(*a, **k)
        pops.append((t0, time.perf_counter() - t0, core.getRemainingImageCount()))
        return result

    core.popNextImageAndMD = timed_pop
    try:
        core.setCircularBufferMemoryFootprint(args.core_buffer_mb)
        spec = AcquisitionSpec.parse(
            {
                "out": str(workdir / "s.ome.zarr"),
                "frames": args.frames,
                "pyramid": {"enabled": False},
            }
        )
        summary = run_acquisition(scope, spec).summary
    finally:
        scope.close()
        shutil.rmtree(workdir, ignore_errors=True)

    print(f"dropped {summary.frames_dropped}: {summary.dropped_indices[:5]}…")
    t0 = pops[0][0]
    pop_ms = np.array([p[1] for p in pops]) * 1e3
    append_ms = np.array([a[1] for a in appends]) * 1e3
    for name, ms in (("pop", pop_ms), ("append", append_ms)):
        print(
            f"{name} ms: p50 {np.median(ms):.2f}  p99 {np.percentile(ms, 99):.2f}  "
            f"max {ms.max():.1f}"
        )
    print("frame  t (s)  gap (ms)  pop (ms)  append (ms)  backlog")
    for i in range(min(args.first, len(pops), len(appends))):
        gap = (pops[i][0] - pops[i - 1][0]) * 1e3 if i else 0.0
        print(
            f"{i:5d}  {pops[i][0] - t0:5.3f}  {gap:8.1f}  {pops[i][1] * 1e3:8.1f}  "
            f"{appends[i][1] * 1e3:11.1f}  {pops[i][2]:7d}"
        )


if __name__ == "__main__":
    main()
