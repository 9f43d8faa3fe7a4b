"""Sustained rate: the simulated camera free-running at F frames/s into acqwriter.

    python benchmarks/sustained.py --fps 150 --frames 3000
    python benchmarks/sustained.py --fps 150,160,170,180,190 --json benchmarks/out/sustained.json

For every rate (in the order given, each in a fresh core and stream) prints frames
written and dropped (with reasons and the first and last lost indices) and the ring's
high-water mark; with several rates it ends with the **highest drop-free rate**: the
highest rate given with zero drops (rates above it that also had none are listed too,
the machine is noisy). A free-running camera loses frames (``buffer_overflow``) as soon
as the pipeline falls behind for longer than the core's buffer plus acqwriter's ring can
absorb; a ring high water equal to its capacity says the writer, not a hiccup, was the
limit. The camera renders frames in Python on the same cores the writer uses, so the
rate measured is that of the whole simulated rig, a lower bound for a real camera.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from acqwriter.acquisition import open_microscope, run_acquisition
from acqwriter.acquisition.spec import AcquisitionSpec


def run_rate(fps: float, args: argparse.Namespace) -> dict[str, Any]:
    """One free-running acquisition at ``fps``; what was written and lost."""
    workdir = Path(tempfile.mkdtemp(prefix="acqwriter-sustained-", dir=args.workdir))
    scope = open_microscope("sim", shape=(args.height, args.width), fps=fps)
    try:
        scope.core.setCircularBufferMemoryFootprint(args.core_buffer_mb)
        spec = AcquisitionSpec.parse(
            {
                "out": str(workdir / "s.ome.zarr"),
                "frames": args.frames,
                "pyramid": {"enabled": False},
                "ring_bytes": args.ring_mb << 20,
            }
        )
        s = run_acquisition(scope, spec).summary
    finally:
        scope.close()
        shutil.rmtree(workdir, ignore_errors=True)
    return {
        "fps": fps,
        "frames": args.frames,
        "shape": [args.height, args.width],
        "core_buffer_mb": args.core_buffer_mb,
        "ring_mb": args.ring_mb,
        "written": s.frames_written,
        "dropped": s.frames_dropped,
        "dropped_by_reason": s.dropped_by_reason,
        "first_dropped": s.dropped_indices[:3],
        "last_dropped": s.dropped_indices[-3:],
        "ring_high_water": s.ring_high_water_frames,
        "ring_capacity": s.ring_capacity_frames,
        "mb_per_s_raw": s.throughput_mb_s,
    }


def describe(r: dict[str, Any]) -> str:
    lost = f" at {r['first_dropped']}…{r['last_dropped']}" if r["dropped"] else ""
    return (
        f"{r['fps']:g} frames/s, core buffer {r['core_buffer_mb']} MiB, ring {r['ring_mb']} MiB: "
        f"written {r['written']}, dropped {r['dropped']} {r['dropped_by_reason']}{lost}, "
        f"ring high water {r['ring_high_water']}/{r['ring_capacity']}, "
        f"{r['mb_per_s_raw']:.0f} MB/s raw"
    )


def highest_drop_free(results: list[dict[str, Any]]) -> float | None:
    """The highest rate that lost nothing (None: every rate lost frames)."""
    clean = [r["fps"] for r in results if r["dropped"] == 0 and r["written"] == r["frames"]]
    return max(clean) if clean else None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--fps", default="150", help="a rate or comma-separated rates, frames/s")
    p.add_argument("--frames", type=int, default=3000)
    p.add_argument("--height", type=int, default=2048)
    p.add_argument("--width", type=int, default=2048)
    p.add_argument("--core-buffer-mb", type=int, default=256)
    p.add_argument("--ring-mb", type=int, default=512)
    p.add_argument("--workdir", default=".", help="where the datasets go (deleted after)")
    p.add_argument("--json", type=Path, help="write every run and the verdict here")
    args = p.parse_args()
    try:
        rates = [float(v) for v in args.fps.split(",") if v.strip()]
    except ValueError:
        p.error(f"--fps: expected numbers separated by commas, got {args.fps!r}")
    if not rates or any(r <= 0 for r in rates):
        p.error(f"--fps: expected positive rates, got {args.fps!r}")

    results = []
    for fps in rates:
        results.append(run_rate(fps, args))
        print(describe(results[-1]), flush=True)
    best = highest_drop_free(results)
    if len(rates) > 1:
        print(
            "highest drop-free rate: "
            + (f"{best:g} frames/s" if best is not None else "none of the rates given")
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps({"runs": results, "highest_drop_free_fps": best}, indent=2) + "\n"
        )


if __name__ == "__main__":
    main()
