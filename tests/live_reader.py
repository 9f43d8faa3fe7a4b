"""Run as a separate process: read a dataset *while* it is being written, over and over.

Every pass must find a valid OME-NGFF 0.5 dataset whose extent holds only complete,
correct frames (stamp == index, pixels == the simulator's frame). Prints ``ready`` after
its first pass, ``extent N`` each time the extent it reads changes, and last one JSON
line: the extents seen and any failure. Exits when the writer marks the dataset complete.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import zarr

from acqwriter.simulators import FrameBank, read_stamp
from helpers import validate_ngff


def main() -> None:
    path = Path(sys.argv[1])
    shape = (int(sys.argv[2]), int(sys.argv[3]))
    bank = FrameBank(shape, "uint16", size=3, seed=11)
    seen: list[int] = []
    failures: list[str] = []
    passes = 0
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            root = json.loads((path / "zarr.json").read_text())
            validate_ngff(root["attributes"])
            arr = zarr.open_array(str(path / "0"), mode="r")
            data = arr[...]
            for i, frame in enumerate(data):
                if read_stamp(frame) != i or not np.array_equal(frame, bank.frame(i)):
                    failures.append(f"frame {i} wrong at extent {len(data)}")
                    break
            if not seen or seen[-1] != len(data):
                seen.append(len(data))
                print(f"extent {len(data)}", flush=True)
            if not passes:
                print("ready", flush=True)
            passes += 1
            if root["attributes"]["acqwriter"]["state"] != "acquiring":
                break
        except FileNotFoundError:
            time.sleep(0.005)  # not created yet
        except Exception as exc:
            failures.append(f"{type(exc).__name__}: {exc}")
            break
    print(json.dumps({"extents": seen, "failures": failures, "passes": passes}))


if __name__ == "__main__":
    main()
