"""Sustained rate: the simulated camera free-running at F frames/s into acqwriter.

    python benchmarks/sustained.py --fps 120 --frames 3000 --core-buffer-mb 256 --ring-mb 1024

Prints frames written and dropped (with reasons) and the ring's high-water mark. A
free-running camera loses frames (``buffer_overflow``) as soon as the pipeline falls
behind for longer than the core's buffer plus acqwriter's ring can absorb.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from acqwriter.acquisition_spec import AcquisitionSpec
from acqwriter.devices import Microscope, run_acquisition


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--fps", type=float, default=150.0)
    p.add_argument("--frames", type=int, default=3000)
    p.add_argument("--height", type=int, default=2048)
    p.add_argument("--width", type=int, default=2048)
    p.add_argument("--core-buffer-mb", type=int, default=256)
    p.add_argument("--ring-mb", type=int, default=512)
    args = p.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="acqwriter-sustained-", dir="."))
    scope = Microscope.open("sim", shape=(args.height, args.width), fps=args.fps)
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
    print(
        f"{args.fps:g} frames/s, core buffer {args.core_buffer_mb} MiB, ring {args.ring_mb} MiB: "
        f"written {s.frames_written}, dropped {s.frames_dropped} {s.dropped_by_reason}, "
        f"ring high water {s.ring_high_water_frames}/{s.ring_capacity_frames}, "
        f"{s.throughput_mb_s:.0f} MB/s raw; "
        f"dropped at {s.dropped_indices[:3]}…{s.dropped_indices[-3:]}"
    )


if __name__ == "__main__":
    main()
