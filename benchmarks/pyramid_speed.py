"""How long the pyramid takes after an acquisition, beside the acquisition itself.

Writes ``FRAMES`` realistic frames (background, drifting cells, shot noise:
``acqwriter.simulators.FrameBank``) of ``SHAPE`` uint16 with ``CODEC`` through
``open_stream`` and closes the stream with its pyramid, as ``acqwriter acquire`` does;
prints the summary's write and pyramid durations (the pyramid's includes its fsync).
Repeats ``--repeats`` times and prints the median and the spread::

    python benchmarks/pyramid_speed.py --frames 500 --repeats 5
    python benchmarks/pyramid_speed.py --frames 300 --shape 2048x2048 --codec blosc-zstd

To compare two versions of acqwriter in one run, point ``PYTHONPATH`` at each checkout's
source tree in turn (``--json`` prints one line per run); the frames come from this
checkout's ``simulators/frames.py`` when ``acqwriter.simulators`` is not importable.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import acqwriter


def _frame_bank(shape: tuple[int, int]):
    try:
        from acqwriter.simulators.frames import FrameBank
    except ImportError:  # a bare source tree on PYTHONPATH: load the module by path
        path = Path(__file__).resolve().parents[1] / "simulators" / "frames.py"
        spec = importlib.util.spec_from_file_location("_frames", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        FrameBank = module.FrameBank
    return FrameBank(shape, "uint16", seed=1)


def _settle(seconds: float) -> None:
    """Start from the same memory state: on this journal-less ext4, files created within
    minutes of deletions cost several times more (see benchmarks/phases.py)."""
    os.sync()
    with contextlib.suppress(OSError):
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    time.sleep(seconds)


def run_once(root: Path, bank, frames: int, codec: str) -> dict[str, float]:
    out = root / "pyr.ome.zarr"
    spec = acqwriter.StreamSpec(
        out=out, shape=bank.shape, dtype="uint16", codec=codec, overwrite=True
    )
    buf = np.empty(bank.shape, np.uint16)
    with acqwriter.open_stream(spec) as stream:
        for i in range(frames):
            bank.fill(buf, i)
            stream.append(buf)
    summary = stream.summary
    shutil.rmtree(out)
    return {
        "write_s": summary.write_duration_s,
        "pyramid_s": summary.pyramid_duration_s,
        "levels": summary.pyramid_levels,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=500)
    parser.add_argument("--shape", default="2048x2048")
    parser.add_argument("--codec", default="lz4")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=None, help="where to write (default: tmp)")
    parser.add_argument("--json", action="store_true", help="one JSON line per run")
    parser.add_argument(
        "--settle",
        type=float,
        default=0.0,
        help="before each run: sync, drop the page cache (as root) and wait this many s",
    )
    args = parser.parse_args()
    shape = tuple(int(v) for v in args.shape.lower().split("x"))
    bank = _frame_bank(shape)
    runs = []
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        for _ in range(args.repeats):
            if args.settle:
                _settle(args.settle)
            result = run_once(Path(tmp), bank, args.frames, args.codec)
            runs.append(result)
            if args.json:
                print(json.dumps({"acqwriter": acqwriter.__file__, **result}), flush=True)
    pyr = [r["pyramid_s"] for r in runs]
    write = [r["write_s"] for r in runs]
    print(
        f"{args.frames} x {args.shape} {args.codec}: write median {statistics.median(write):.2f} s "
        f"({min(write):.2f}-{max(write):.2f}), pyramid median {statistics.median(pyr):.2f} s "
        f"({min(pyr):.2f}-{max(pyr):.2f}), {runs[0]['levels']} levels",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
