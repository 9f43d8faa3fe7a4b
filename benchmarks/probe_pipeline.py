"""Probe: is the writer compression-bound or I/O-bound?

Streams 300 frames of 2048² uint16 (lz4, one frame per chunk, ring 256 MiB) twice in
one process, with chunk writes discarded (``null``: the compression pipeline alone) or
written for real (``disk``), and prints where the time goes. Results: RESULTS.md.

    python benchmarks/probe_pipeline.py null
    python benchmarks/probe_pipeline.py disk
"""

from __future__ import annotations

import sys
import time

from acqwriter import open_stream
from acqwriter.simulators import FrameBank, write_stamp
from acqwriter.store.create import create_local
from acqwriter.store.local import LocalStore


class NullStore(LocalStore):
    """Discards chunk bytes (metadata still goes to disk)."""

    def write_chunk_from(self, key, n, buf=None):
        return n


def main() -> None:
    mode = sys.argv[1] if len(sys.argv) > 1 else "disk"
    bank = FrameBank((2048, 2048), "uint16", seed=1)
    frames = [bank.frame(i) for i in range(bank.size)]
    spec = {
        "out": f"probe_{mode}.ome.zarr",
        "overwrite": True,
        "shape": (2048, 2048),
        "dtype": "uint16",
        "chunks": {"y": 2048, "x": 2048},
        "pyramid": {"enabled": False},
        "disk_check": False,
        "ring_bytes": 256 << 20,
    }
    for _ in range(2):
        t0 = time.perf_counter()
        store = None
        if mode == "null":
            store = create_local(spec["out"], overwrite=True, sync="close")
            store.__class__ = NullStore  # the same directory and lock, chunks discarded
            store.enable_direct_io("auto")
        stream = open_stream(spec, store=store)
        t1 = time.perf_counter()
        for i in range(300):
            frame = frames[i % len(frames)]
            write_stamp(frame, i)
            stream.append(frame)
        t2 = time.perf_counter()
        stream.close()
        t3 = time.perf_counter()
        rate = 300 * frames[0].nbytes / 1e6 / (t3 - t0)
        print(
            f"{mode}: open {t1 - t0:.2f} s, appends {t2 - t1:.2f} s, close {t3 - t2:.2f} s, "
            f"total {t3 - t0:.2f} s -> {rate:.0f} MB/s raw"
        )


if __name__ == "__main__":
    main()
