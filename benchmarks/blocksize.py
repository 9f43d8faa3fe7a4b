"""Blosc block size against compression speed and ratio, on the bench frames.

Why it exists: it is how ``codec.blocksize: auto`` was chosen (1 MiB for zstd, c-blosc's
own choice for lz4; ``acqwriter.spec.model.Compression``). It compresses realistic frames
(``FrameBank``: background, cells, shot noise) with both copies of c-blosc acqwriter may
use — python-blosc's AVX2 build and numcodecs' — through ``blosc_compress_ctx`` into a
preallocated buffer (as the writer does), on one thread per core, and prints MB/s raw
(median of 5) and the compression ratio per block size; then decompression speed.

    python benchmarks/blocksize.py
    python benchmarks/blocksize.py --shape 512x512 --frames 32
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

import numcodecs.blosc as nb
import numpy as np

from acqwriter.codec.blosc import _compress_ctx, blosc_compressor
from acqwriter.simulators import FrameBank

SIZES = [0, 256 << 10, 512 << 10, 1 << 20, 2 << 20, 4 << 20, 8 << 20]
CODECS = [("zstd", 2, 1), ("lz4", 1, 5)]  # cname, shuffle (2: bit, 1: byte), level


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shape", default="2048x2048")
    p.add_argument("--frames", type=int, default=16)
    args = p.parse_args()
    shape = tuple(int(v) for v in args.shape.lower().split("x"))
    bank = FrameBank(shape, "uint16", seed=1)
    frames = [bank.frame(i).copy() for i in range(args.frames)]
    threads = len(os.sched_getaffinity(0))
    dests = [np.empty(frames[0].nbytes + 16, np.uint8) for _ in range(threads)]
    raw = sum(f.nbytes for f in frames)
    fast, fast_path = blosc_compressor()
    builds = [("numcodecs", _compress_ctx(nb.__file__))]
    if fast_path != nb.__file__:
        builds.insert(0, ("python-blosc", fast))
    with ThreadPoolExecutor(threads) as pool:
        for build, fn in builds:
            for cname, shuffle, level in CODECS:
                for blocksize in SIZES:

                    def work(
                        k: int, fn=fn, cname=cname, shuffle=shuffle, level=level, bs=blocksize
                    ):
                        d = dests[k]
                        return sum(
                            fn(
                                level,
                                shuffle,
                                2,
                                f.nbytes,
                                f.ctypes.data,
                                d.ctypes.data,
                                f.nbytes + 16,
                                cname.encode(),
                                bs,
                                1,
                            )
                            for f in frames[k::threads]
                        )

                    speeds = []
                    for _ in range(5):
                        t0 = time.perf_counter()
                        stored = sum(pool.map(work, range(threads)))
                        speeds.append(raw / 1e6 / (time.perf_counter() - t0))
                    print(
                        f"{build:12s} {cname} level {level} {'bit' if shuffle == 2 else 'byte'}"
                        f"shuffle, blocks {blocksize >> 10:5d} KiB (0: c-blosc's): "
                        f"{statistics.median(speeds):6.0f} MB/s raw on {threads} threads, "
                        f"ratio {raw / stored:.3f}"
                    )
    for blocksize in (0, 1 << 20):
        f = frames[0]
        n = fast(
            1,
            2,
            2,
            f.nbytes,
            f.ctypes.data,
            dests[0].ctypes.data,
            f.nbytes + 16,
            b"zstd",
            blocksize,
            1,
        )
        chunk = dests[0][:n].tobytes()
        t0 = time.perf_counter()
        for _ in range(10):
            nb.decompress(chunk)
        speed = 10 * f.nbytes / 1e6 / (time.perf_counter() - t0)
        print(f"decompress zstd 1 bitshuffle, blocks {blocksize >> 10} KiB: {speed:.0f} MB/s")


if __name__ == "__main__":
    main()
