"""Before/after: one scenario's speed and peak RSS with two versions of acqwriter,
interleaved in one run (the disk's and the host's speed drift between runs).

    python benchmarks/ab.py --before /path/to/other/checkout --scenarios a,c,d,e,plate --pairs 5

Each run is ``benchmarks/phases.py SCENARIO`` in a fresh process, settled first
(``PHASES_SETTLE``), importing acqwriter from the other checkout for "before" and from
this one for "after". ``plate`` is ``benchmarks/positions.py``'s 16-well plate (scenario
(a)'s frames, 304 of them interleaved over the wells).
Prints, per scenario, the median MB/s of each version with its range, the ratio of the
medians, every pair's ratio, and the peak RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent


# Runs phases.py with acqwriter (and acqwriter.simulators, from the checkout's top-level
# simulators/) imported from ROOT: an editable install's import hook would otherwise win
# over PYTHONPATH.
BOOT = (
    "import runpy, sys; root, script, *argv = sys.argv[1:]; "
    "sys.meta_path[:] = [f for f in sys.meta_path "
    "if not getattr(f, '__module__', '').startswith('__editable__')]; "
    "sys.path.insert(0, root); import importlib.util, acqwriter; "
    "s = importlib.util.spec_from_file_location('acqwriter.simulators', "
    "root + '/simulators/__init__.py', submodule_search_locations=[root + '/simulators']); "
    "m = importlib.util.module_from_spec(s); sys.modules['acqwriter.simulators'] = m; "
    "s.loader.exec_module(m); sys.argv = [script, *argv]; "
    "runpy.run_path(script, run_name='__main__')"
)


def run(scenario: str, root: str, settle: str) -> tuple[float, float]:
    env = dict(os.environ, PHASES_SETTLE=settle)
    if scenario == "plate":
        script = [str(HERE / "positions.py"), "--one", "positions", "--positions", "16"]
        script += ["--frames", "304"]
    else:
        script = [str(HERE / "phases.py"), scenario]
    out = subprocess.run(
        [sys.executable, "-c", BOOT, root, *script],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    if scenario == "plate":
        result = json.loads(out.strip().splitlines()[-1])
        return result["mb_s"], result["rss_mb"]
    rate = float(re.search(r"= (\d+) MB/s raw", out).group(1))
    rss = float(re.search(r"peak RSS (\d+) MB", out).group(1))
    return rate, rss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", required=True, help="checkout of the earlier version")
    parser.add_argument("--scenarios", default="a,c,d,e")
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--settle", default="3")
    args = parser.parse_args()
    for scenario in args.scenarios.split(","):
        before: list[tuple[float, float]] = []
        after: list[tuple[float, float]] = []
        for i in range(args.pairs):
            order = [("before", args.before), ("after", str(HERE.parent))]
            if i % 2:
                order.reverse()  # alternate which goes first
            for name, path in order:
                (before if name == "before" else after).append(run(scenario, path, args.settle))
        b = [r for r, _ in before]
        a = [r for r, _ in after]
        ratio = statistics.median(a) / statistics.median(b)
        pairs = ", ".join(f"{x / y:.2f}" for x, y in zip(a, b, strict=True))
        print(
            f"{scenario}: before {statistics.median(b):.0f} MB/s [{min(b):.0f}-{max(b):.0f}], "
            f"after {statistics.median(a):.0f} [{min(a):.0f}-{max(a):.0f}], "
            f"ratio {ratio:.3f} (pairs {pairs}); peak RSS before "
            f"{max(r for _, r in before):.0f} MB, after {max(r for _, r in after):.0f} MB",
            flush=True,
        )


if __name__ == "__main__":
    main()
