"""Run as a separate process: append stamped frames until the stream refuses, then close.

Usage: fault_writer.py OUT SEED N_FRAMES [SPEC_JSON]. Prints "ready" once the dataset
exists, then one JSON line: the summary (and the first append error, if any).
"""

from __future__ import annotations

import json
import sys
import time

from acqwriter import StreamError, open_stream
from acqwriter.simulators import FrameBank

SHAPE = (64, 64)


def main() -> None:
    out, seed, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    extra = json.loads(sys.argv[4]) if len(sys.argv) > 4 else {}
    bank = FrameBank(SHAPE, "uint16", size=3, seed=seed)
    spec = {
        "out": out,
        "shape": SHAPE,
        "dtype": "uint16",
        "chunks": {"t": 2},
        "commit_interval_s": 0.01,
        "ring_bytes": 4 << 20,
        **extra,
    }
    stream = open_stream(spec)
    print("ready", flush=True)
    append_error = None
    for i in range(n):
        try:
            stream.append(bank.frame(i))
        except StreamError as exc:
            append_error = str(exc)
            break
        time.sleep(0.001)
    summary = stream.close()
    print(json.dumps({"summary": summary.model_dump(), "append_error": append_error}), flush=True)


if __name__ == "__main__":
    main()
