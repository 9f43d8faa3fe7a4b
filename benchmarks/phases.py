"""Where one acqwriter run of a bench_peers scenario spends its time: open, appends, close.

The same frames and spec (``bench_peers.acqwriter_spec``) as ``bench_peers.py``'s
``acqwriter`` writer, one run in this process, split into the open (ring population,
metadata), the append loop and the close (draining the ring, final extent, fsync), with
the process's user and kernel CPU seconds. Use it to measure a fast-path step before and
after (interleave the two variants; the disk's speed drifts by tens of percent over
minutes)::

    python benchmarks/phases.py a
    python benchmarks/phases.py a threads=3            # any spec field=value
    SCALE=0.5 python benchmarks/phases.py d 'shards={"t":32}'

``PHASES_PAUSE=1`` prints ``READY <pid>`` and waits 1.5 s before the timed region, for
``perf record -p <pid>`` to attach after the frames are rendered.

``PHASES_SETTLE=5`` starts the timed region as bench_peers' ``--settle 5`` does (sync,
drop the page cache, wait 5 s): without it, inode allocation on this journal-less ext4
costs ~8× more (it skips inodes freed in the last 5 minutes, reading the inode table
for each while its blocks are cached: 300 frames' ``c/<t>/0/0`` took 0.5 s of kernel
time right after earlier runs' deletions, 0.06 s settled).

``PHASES_TIMELINE=0.05`` also prints the process's CPU use per 50 ms of the timed region
(user and kernel, in cores: 2.0 is both cores busy), marking where the appends end:
idle cores show where the pipeline waits rather than works.

Frames compressed by the producer mean the writer, not the producer, was the
bottleneck. For big unsharded chunks the producer compresses as soon
as the writer threads have a backlog, so the ring's high water stays low unless the disk
lags: there a high water equal to the ring's capacity means the encoded-chunk buffers
ran out, i.e. the disk fell behind; for other layouts it means the writer threads did.
"""

from __future__ import annotations

import itertools
import json
import os
import resource
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import bench_peers

from acqwriter import open_stream


def main() -> None:
    name = sys.argv[1] if len(sys.argv) > 1 else "a"
    sc = bench_peers.scenarios(float(os.environ.get("SCALE", "1")))[name]
    frame, _ = bench_peers.frame_source(sc)
    for i in range(min(sc.frames, 16)):
        frame(i)
    workdir = Path(tempfile.mkdtemp(prefix="acqwriter-phases-", dir="."))
    spec = bench_peers.acqwriter_spec(sc, workdir / "p.ome.zarr")
    for arg in sys.argv[2:]:
        key, value = arg.split("=", 1)
        spec[key] = json.loads(value) if value[:1] in "{[" or value.isdigit() else value
    if os.environ.get("PHASES_SETTLE"):
        bench_peers.settle(float(os.environ["PHASES_SETTLE"]))
    if os.environ.get("PHASES_PAUSE"):  # let a profiler attach to the timed region only
        print("READY", os.getpid(), flush=True)
        time.sleep(1.5)
    samples: list[tuple[float, float, float]] = []
    stop = threading.Event()
    step = float(os.environ.get("PHASES_TIMELINE", "0") or 0)

    def sample() -> None:
        while not stop.is_set():
            c = os.times()
            samples.append((time.perf_counter(), c.user, c.system))
            stop.wait(step)

    sampler = threading.Thread(target=sample, daemon=True)
    try:
        if step > 0:
            sampler.start()
        c0, t0 = os.times(), time.perf_counter()
        stream = open_stream(spec)
        t1 = time.perf_counter()
        for i in range(sc.frames):
            stream.append(frame(i))
        t2 = time.perf_counter()
        summary = stream.close()
        bench_peers.syncfs(workdir)
        t3, c1 = time.perf_counter(), os.times()
    finally:
        stop.set()
        shutil.rmtree(workdir, ignore_errors=True)
    if step > 0:
        sampler.join()
        for (ta, ua, sa), (tb, ub, sb) in itertools.pairwise(samples):
            if tb < t0 or ta > t3:
                continue
            dt = tb - ta
            mark = " <- appends end" if ta <= t2 < tb else ""
            print(
                f"  {ta - t0:6.3f} s  user {(ub - ua) / dt:4.2f}  kernel {(sb - sa) / dt:4.2f}"
                f"  {'#' * round(10 * ((ub - ua) + (sb - sa)) / dt)}{mark}"
            )
    raw = sc.frames * sc.shape[0] * sc.shape[1] * 2
    print(
        f"{name}: open {t1 - t0:.3f} s, append {t2 - t1:.3f} s, close+sync {t3 - t2:.3f} s, "
        f"total {t3 - t0:.3f} s = {raw / 1e6 / (t3 - t0):.0f} MB/s raw "
        f"({sc.frames / (t3 - t0):.0f} frames/s); CPU user {c1.user - c0.user:.2f} s, "
        f"kernel {c1.system - c0.system:.2f} s; ring high water "
        f"{summary.ring_high_water_frames}/{summary.ring_capacity_frames}; peak RSS "
        f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB "
        f"(ring {summary.ring_bytes / 2**20:.0f} MiB); "
        f"{summary.frames_inline} frames compressed by the producer (writer behind)"
    )


if __name__ == "__main__":
    main()
