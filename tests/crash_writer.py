"""Run as a separate process: stream stamped frames until killed.

Usage: crash_writer.py OUT SEED [sync [shards [ngff_version [pyramid]]]] (pyramid:
WHEN:LEVELS, default close:2). Prints "ready" once
the dataset exists. The frames are FrameBank((48, 40), uint16, size=3,
seed=SEED).frame(i), appended in order, so a test can check every frame inside whatever
extent the kill leaves.
"""

from __future__ import annotations

import sys
import time

from acqwriter import open_stream
from acqwriter.simulators import FrameBank

SHAPE = (48, 40)


def main() -> None:
    out, seed = sys.argv[1], int(sys.argv[2])
    sync = sys.argv[3] if len(sys.argv) > 3 else "close"
    shards = sys.argv[4] if len(sys.argv) > 4 else "none"  # "auto": t-shards, sealed often
    ngff = sys.argv[5] if len(sys.argv) > 5 else "0.5"
    when, levels = (sys.argv[6] if len(sys.argv) > 6 else "close:2").split(":")
    bank = FrameBank(SHAPE, "uint16", size=3, seed=seed)
    frames = [bank.frame(i) for i in range(4000)]
    stream = open_stream(
        {
            "out": out,
            "shape": SHAPE,
            "dtype": "uint16",
            "chunks": {"t": 3, "y": 32, "x": 32},
            "commit_interval_s": 0.01,
            "ring_bytes": 8 << 20,
            "sync": sync,
            "pyramid": {"when": when, "levels": int(levels)},
            "shards": shards,
            "shard_seal_s": 0.02,
            "ngff_version": ngff,
        }
    )
    print("ready", flush=True)
    for frame in frames:
        stream.append(frame)
        time.sleep(0.0005)
    stream.close()
    print("closed", flush=True)


if __name__ == "__main__":
    main()
