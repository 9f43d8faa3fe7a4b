"""The hostile suite as one script: kill the offline tools at random moments, fill a
disk with per-frame metadata, feed hostile spec files and requests, race writers, and
measure the idle daemon, then print how many of each were tried.

    python benchmarks/hostile.py                 # the suite's own counts (20 kills each)
    python benchmarks/hostile.py --kills 200     # a longer soak of the kill tests

It runs ``tests/e2e/test_hostile.py`` (the same checks CI runs) with pytest, the kill count
raised as asked, and prints the counts the tests recorded. Exit status: pytest's.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=20, help="SIGKILLs of pyramid and recover")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "tried.json"
        env = {**os.environ, "HOSTILE_KILLS": str(args.kills), "HOSTILE_REPORT": str(report)}
        run = subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "-q",
                "-p",
                "no:cacheprovider",
                "tests/e2e/test_hostile.py",
            ],
            cwd=ROOT,
            env=env,
        )
        counts = json.loads(report.read_text()) if report.exists() else {}
    print(f"\ntried {sum(counts.values())} hostile things:")
    for what, n in sorted(counts.items()):
        print(f"  {n:6d}  {what}")
    return run.returncode


if __name__ == "__main__":
    sys.exit(main())
