"""Many more SIGKILLs than the test suite does (slow; run by hand).

Kills the writer of ``tests/crash_writer.py`` at random moments, checks every dataset
(schema, zarr-python, tensorstore, every frame's stamp and pixels) and recovers it:

    python benchmarks/crash_soak.py --kills 200
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from test_crash import assert_exact, kill_and_check  # noqa: E402

from acqwriter.post.recover import recover  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--sync", choices=["none", "close", "always"], default="close")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    workdir = Path(tempfile.mkdtemp(prefix="acqwriter-crash-"))
    t0 = time.monotonic()
    extents = []
    try:
        for k in range(args.kills):
            out, extent = kill_and_check(workdir, k, rng, sync=args.sync)
            account = recover(out)
            assert assert_exact(out, k) == account["rows"] >= extent
            extents.append((extent, account["rows"]))
            shutil.rmtree(out)
            if (k + 1) % 20 == 0:
                print(f"{k + 1} kills ok ({time.monotonic() - t0:.0f} s)", flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    gained = sum(r - e for e, r in extents)
    print(
        f"{len(extents)} kills: every dataset valid and exact; extents {min(e for e, _ in extents)}"
        f"..{max(e for e, _ in extents)} frames; recover added {gained} frames in total"
    )


if __name__ == "__main__":
    main()
