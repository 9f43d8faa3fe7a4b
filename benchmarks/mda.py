"""The MDA path: pymmcore-plus's engine with the Python simulated camera as fast as it
goes, written by acqwriter's handler, by pymmcore-plus's default sink, or by nobody.

A sequence of 4 positions × 3 channels × 10 z planes × ``T`` time points of 2048²
uint16 frames on the simulated core (``acqwriter.simulators.sim_core``). Writers, each
run in a fresh process, settled first, interleaved over ``--repeats`` rounds:

* ``nothing``: a handler connected to the core that does nothing (what the engine
  delivers);
* ``acqwriter``: ``MDAWriter(path, core=mmc)``, lz4;
* ``acqwriter-output``: ``output=MDAWriter(path)``, lz4 (joins the running core);
* ``acqwriter-view``: ``acqwriter`` with ``MDAWriter.view()`` attached and a viewer's
  refresh loop reading the newest frame 30 times a second (``benchmarks/viewing.py``);
* ``acqwriter-alone``: the same ``MDAWriter`` called by hand with the camera's frames
  and the sequence's events, no engine: what the writer does on this machine without
  an MDA beside it (the ceiling for the two above);
* ``default``: ``output="x.ome.zarr"`` (pymmcore-plus's ome-writers sink as users get
  it: uncompressed);
* ``ome-writers-tensorstore`` and ``ome-writers-acquire-zarr``: the same sink given an
  ``AcquisitionSettings`` with that backend and blosc lz4, acqwriter's codec.

The camera's frame bank is built before the clock starts (a first snap): it is the
simulated camera's warm-up, not the engine's rate. Timed from ``run_mda`` to the
files synced. Prints frames/s (median and range), peak RSS and frames dropped, the
ratios, and the CPU seconds per frame of the acquisition thread and of the rest::

    python benchmarks/mda.py --timepoints 4 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import bench_peers
from viewing import Refresher


def sequence(timepoints: int):
    import useq

    return useq.MDASequence(
        axis_order="tpcz",
        time_plan={"interval": 0, "loops": timepoints},
        stage_positions=[{"x": 600.0 * i, "y": 0.0, "name": f"pos{i}"} for i in range(4)],
        channels=["DAPI", "FITC", "TRITC"],
        z_plan={"range": 9, "step": 1},
    )


def _ome_writers_settings(out: Path, backend: str):
    from ome_writers import AcquisitionSettings, OmeZarrFormat

    return AcquisitionSettings(
        root_path=str(out), format=OmeZarrFormat(backend=backend), compression="blosc-lz4"
    )


def _write_alone(out: Path, seq, camera) -> tuple[int, int]:
    """``MDAWriter`` fed by hand: the sequence's events with the camera's frames."""
    from acqwriter.mda import MDAWriter

    events = [e for e in seq if e.action is None or e.action.type == "acquire_image"]
    frames = camera.bank.frames
    height, width = camera.shape()
    info = {"width": width, "height": height, "dtype": "uint16", "pixel_size_um": 0.65}
    handler = MDAWriter(out, codec="lz4", pyramid={"enabled": False})
    handler.sequenceStarted(seq, {"image_infos": [info]})
    t0 = time.perf_counter()
    for i, event in enumerate(events):
        position = {"x": event.x_pos, "y": event.y_pos, "z": event.z_pos}
        meta = {"position": position, "runner_time_ms": (time.perf_counter() - t0) * 1e3}
        handler.frameReady(frames[i % len(frames)], event, meta)
    handler.sequenceFinished(seq)
    return handler.summary.frames_written, handler.summary.frames_dropped


def run_one(writer: str, timepoints: int) -> dict[str, float]:
    from acqwriter.simulators import sim_core
    from acqwriter.simulators.camera import SimCamera

    core = sim_core((2048, 2048), "uint16", buffer_mb=512)
    core.snapImage()  # builds the camera's frame bank
    core.getImage()
    camera = SimCamera((2048, 2048), "uint16")  # the same frames, for acqwriter-alone
    _ = camera.bank
    seq = sequence(timepoints)
    # CPU time of the acquisition thread: from the sequence's start to its last frame
    # (time.thread_time on that thread; our frameReady runs there before these)
    acq_cpu = [0.0, 0.0]

    def on_start(*_args) -> None:
        acq_cpu[0] = acq_cpu[1] = time.thread_time()

    def on_frame(*_args) -> None:
        acq_cpu[1] = time.thread_time()

    core.mda.events.sequenceStarted.connect(on_start)
    workdir = Path(tempfile.mkdtemp(prefix="acqwriter-mda-", dir="."))
    out = workdir / "x.ome.zarr"
    frames = [0]
    dropped = 0

    def count(*_args) -> None:
        frames[0] += 1

    bench_peers.settle(3)
    try:
        cpu0 = os.times()
        t0 = time.perf_counter()
        core.mda.events.frameReady.connect(on_frame)  # after acqwriter's (given the core)
        if writer == "nothing":
            core.mda.events.frameReady.connect(count)
            core.run_mda(seq, block=True)
        elif writer == "acqwriter-alone":
            frames[0], dropped = _write_alone(out, seq, camera)
        elif writer.startswith("acqwriter"):
            from acqwriter.mda import MDAWriter

            given = core if writer in ("acqwriter", "acqwriter-view") else None
            handler = MDAWriter(out, core=given, codec="lz4", pyramid={"enabled": False})
            refresher = Refresher(handler.view()) if writer == "acqwriter-view" else None
            core.run_mda(seq, output=None if given else handler, block=True)
            handler.detach()
            if refresher is not None:
                refresher.stop()
            frames[0] = handler.summary.frames_written
            dropped = handler.summary.frames_dropped
        else:
            core.mda.events.frameReady.connect(count)
            if writer == "default":
                output = str(out)
            else:
                output = _ome_writers_settings(out, writer.removeprefix("ome-writers-"))
            core.run_mda(seq, output=output, block=True)
        bench_peers.syncfs(workdir)
        elapsed = time.perf_counter() - t0
        cpu1 = os.times()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    n = max(frames[0], 1)
    cpu = (cpu1.user - cpu0.user + cpu1.system - cpu0.system) / n * 1e3
    return {
        "fps": frames[0] / elapsed,
        "frames": frames[0],
        "rss_mb": peak,
        "dropped": dropped,
        "cpu_ms_per_frame": cpu,
        "acq_thread_ms_per_frame": (acq_cpu[1] - acq_cpu[0]) / n * 1e3,
        "wall_ms_per_frame": elapsed / n * 1e3,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timepoints", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--writers",
        default="nothing,acqwriter,acqwriter-output,acqwriter-alone,default,"
        "ome-writers-tensorstore,ome-writers-acquire-zarr",
    )
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one, args.timepoints)))
        return
    writers = args.writers.split(",")
    results: dict[str, list[dict[str, float]]] = {w: [] for w in writers}
    for i in range(args.repeats):
        for writer in writers if i % 2 == 0 else writers[::-1]:
            cmd = [sys.executable, __file__, "--one", writer, "--timepoints", str(args.timepoints)]
            if (result := bench_peers.child_result(cmd, writer)) is not None:
                results[writer].append(result)
    medians = {}
    for writer, runs in results.items():
        if not runs:
            continue
        fps = [r["fps"] for r in runs]
        medians[writer] = statistics.median(fps)
        cpu = statistics.median(r["cpu_ms_per_frame"] for r in runs)
        acq = statistics.median(r["acq_thread_ms_per_frame"] for r in runs)
        print(
            f"{writer:<25} {medians[writer]:6.1f} frames/s [{min(fps):.1f}-{max(fps):.1f}], "
            f"{runs[0]['frames']:.0f} frames, peak RSS {max(r['rss_mb'] for r in runs):.0f} MB, "
            f"dropped {max(r['dropped'] for r in runs):.0f}, CPU {cpu:.1f} ms/frame "
            f"({acq:.1f} on the acquisition thread)"
        )
    for ours in ("acqwriter", "acqwriter-output"):
        for other in medians:
            if ours in medians and (other == "acqwriter-alone" or other[:9] != "acqwriter"):
                print(f"{ours} / {other}: {medians[ours] / medians[other]:.2f}")


if __name__ == "__main__":
    main()
