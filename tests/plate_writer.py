"""Run as a separate process: a 2 × 2-well plate of 2 fields each, written until killed.

Usage: plate_writer.py OUT SEED [NGFF_VERSION [LAYOUT]] (plate or collection; each
image carries a stage position, ``x = 30 * k``). Prints "ready" once the dataset exists. Frame i of
field KEY is FrameBank((32, 24), uint16, size=3, seed=SEED + k).frame(t * 2 + c), for
the k-th key, time point t and channel c, given c-outer within each time point and the
fields interleaved, so a test can check every frame inside whatever extent a kill leaves.
"""

from __future__ import annotations

import sys
import time

import acqwriter
from acqwriter.simulators import FrameBank

SHAPE = (32, 24)
KEYS = ["A/1/0", "A/1/1", "A/2/0", "A/2/1", "B/1/0", "B/1/1", "B/2/0", "B/2/1"]


def main() -> None:
    out, seed = sys.argv[1], int(sys.argv[2])
    ngff = sys.argv[3] if len(sys.argv) > 3 else "0.5"
    layout = sys.argv[4] if len(sys.argv) > 4 else "plate"
    banks = [FrameBank(SHAPE, "uint16", size=3, seed=seed + k) for k in range(len(KEYS))]
    image = {
        "shape": SHAPE,
        "dtype": "uint16",
        "dims": "tcyx",
        "sizes": {"c": 2},
        "chunks": {"t": 2},
        "pyramid": {"levels": 2},
    }
    ds = acqwriter.open_dataset(
        {
            "out": out,
            "layout": layout,
            "ngff_version": ngff,
            "images": {
                key: {**image, "stage": {"x": 30.0 * k, "y": 5.0}} for k, key in enumerate(KEYS)
            },
            "commit_interval_s": 0.01,
            "ring_bytes": 8 << 20,
        }
    )
    print("ready", flush=True)
    for t in range(2000):
        for c in reversed(range(2)):
            for k, key in enumerate(KEYS):
                ds.append(banks[k].frame(t * 2 + c), image=key, index={"t": t, "c": c})
                time.sleep(0.0002)
    ds.close()
    print("closed", flush=True)


if __name__ == "__main__":
    main()
