"""Record N frames from the simulated camera as fast as possible; report speed and memory.

Two paths are measured, interleaved A B A B, each repetition in a fresh child process
(so peak RSS is per run and no page cache warmth or allocator state carries over):

* ``camera``: SimCamera → UniMMCore circular buffer → ``popNextImageAndMD`` →
  ``FrameStream.append`` (what ``acqwriter acquire --camera sim`` does);
* ``writer``: precomputed stamped frames → ``FrameStream.append`` (the writer alone).

The timed region runs from opening the stream to ``close()`` returning, which
includes the final extent commit and the fsync (``sync="close"`` → syncfs); the
pyramid is disabled so the figure is the streaming rate. Frames are realistic
(background, cells, shot noise; see ``acqwriter.simulators.frames``), never zeros.

    python benchmarks/bench_sim_camera.py --frames 300 --repeats 3
    python benchmarks/bench_sim_camera.py --json results.json

Later issues add peers (acquire-zarr, tensorstore, ome-writers, zarr-python) as more
``--path`` kinds measured in the same interleaved loop; each kind is a function
``run_<kind>(args) -> dict`` below.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def _dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _spec(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    return {
        "out": str(out),
        "shape": [args.height, args.width],
        "dtype": args.dtype,
        "codec": args.codec,
        "chunks": {"y": args.height, "x": args.width},  # one frame per chunk
        "ring_bytes": args.ring_mb * 2**20,
        "pyramid": {"enabled": False},
        "sync": "close",
    }


def run_writer(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    from acqwriter import open_stream
    from acqwriter.simulators import FrameBank

    bank = FrameBank((args.height, args.width), args.dtype, seed=1)
    frames = [bank.frame(i) for i in range(bank.size)]  # stamped once, reused cyclically
    t0 = time.perf_counter()
    stream = open_stream(_spec(args, out))
    for i in range(args.frames):
        stream.append(frames[i % len(frames)])
    summary = stream.close()
    elapsed = time.perf_counter() - t0
    return {"elapsed_s": elapsed, "summary": summary.model_dump()}


def run_camera(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    from acqwriter.acquisition import open_microscope, run_acquisition
    from acqwriter.acquisition.spec import AcquisitionSpec

    scope = open_microscope("sim", shape=(args.height, args.width), dtype=args.dtype, seed=1)
    try:
        spec = AcquisitionSpec.parse({**_spec(args, out), "frames": args.frames})
        t0 = time.perf_counter()
        report = run_acquisition(scope, spec)
        elapsed = time.perf_counter() - t0
    finally:
        scope.close()
    return {"elapsed_s": elapsed, "summary": report.summary.model_dump(), "ok": report.ok}


def measure_ceiling(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """Compression on all cores (same frames, same codec; numcodecs, as bench_peers.py:
    one untimed pass, then the median of three) and the disk, buffered + syncfs and
    O_DIRECT (:func:`bench_peers.disk_bandwidth`)."""
    from concurrent.futures import ThreadPoolExecutor

    from acqwriter.codec.chain import chunk_encoder
    from acqwriter.simulators import FrameBank
    from acqwriter.spec.model import Compression

    bank = FrameBank((args.height, args.width), args.dtype, seed=1)
    frames = [bank.frame(i) for i in range(bank.size)] * 8
    encoder = chunk_encoder(Compression.model_validate(args.codec))
    threads = len(os.sched_getaffinity(0))
    durations = []
    with ThreadPoolExecutor(threads) as pool:
        for rep in range(4):  # the first pass pays page faults for every output buffer
            t0 = time.perf_counter()
            encoded = list(pool.map(encoder.encode, frames))
            if rep:
                durations.append(time.perf_counter() - t0)
    compress_s = statistics.median(durations)
    raw = sum(f.nbytes for f in frames)
    ratio = raw / sum(len(e) for e in encoded)
    # the same disk measurement as bench_peers.py: one file, buffered + syncfs and O_DIRECT
    sys.path.insert(0, str(Path(__file__).parent))
    from bench_peers import disk_bandwidth

    buffered, direct = disk_bandwidth(workdir, b"".join(encoded), 1 << 30)
    compress = raw / 1e6 / compress_s
    return {
        "compress_mb_s_raw": compress,
        "ratio": ratio,
        "disk_buffered_mb_s": buffered,
        "disk_direct_mb_s": direct,
        "ceiling_buffered_mb_s_raw": min(compress, buffered * ratio),
        "ceiling_direct_mb_s_raw": None if direct is None else min(compress, direct * ratio),
    }


def child(args: argparse.Namespace) -> None:
    out = Path(args.workdir) / f"{args.path}.ome.zarr"
    shutil.rmtree(out, ignore_errors=True)
    result = {"run_writer": run_writer, "run_camera": run_camera}[f"run_{args.path}"](args, out)
    s = result["summary"]
    raw = s["frames_written"] * args.height * args.width * (1 if args.dtype == "uint8" else 2)
    result.update(
        path=args.path,
        frames=args.frames,
        frames_written=s["frames_written"],
        drops=s["frames_dropped"],
        mb_s=raw / 1e6 / result["elapsed_s"],
        fps=s["frames_written"] / result["elapsed_s"],
        disk_bytes=_dir_size(out),
        ratio=s["compression_ratio"],
        peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        ring_mb=s["ring_bytes"] / 2**20,
    )
    shutil.rmtree(out, ignore_errors=True)
    print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--height", type=int, default=2048)
    parser.add_argument("--width", type=int, default=2048)
    parser.add_argument("--dtype", default="uint16", choices=["uint8", "uint16"])
    parser.add_argument("--codec", default="lz4")
    parser.add_argument("--ring-mb", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--paths", default="camera,writer")
    parser.add_argument("--workdir", default=None, help="where datasets go (default: a temp dir)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--path", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="acqwriter-bench-", dir="."))
    workdir.mkdir(parents=True, exist_ok=True)
    paths = args.paths.split(",")
    runs: dict[str, list[dict[str, Any]]] = {p: [] for p in paths}
    for rep in range(args.repeats):
        for path in paths:  # interleaved A B A B
            cmd = [sys.executable, __file__, "--child", "--path", path, "--workdir", str(workdir)]
            for name in ("frames", "height", "width", "dtype", "codec", "ring_mb"):
                cmd += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                sys.exit(f"{path} repetition {rep} failed:\n{proc.stderr}")
            result = json.loads(proc.stdout.strip().splitlines()[-1])
            runs[path].append(result)
            print(
                f"rep {rep} {path:7s} {result['mb_s']:7.1f} MB/s {result['fps']:6.1f} fps "
                f"drops {result['drops']} rss {result['peak_rss_mb']:.0f} MB",
                file=sys.stderr,
            )
    ceiling = measure_ceiling(args, workdir)
    if not args.workdir:
        shutil.rmtree(workdir, ignore_errors=True)
    print(
        f"\n{args.frames} frames {args.height}x{args.width} {args.dtype}, codec {args.codec}, "
        f"one frame per chunk, ring {args.ring_mb} MiB, {os.cpu_count()} CPUs; "
        f"median [min-max] of {args.repeats}"
    )
    print(
        f"{'path':8s} {'MB/s raw':>22s} {'frames/s':>20s} {'drops':>6s} {'peak RSS MB':>12s} "
        f"{'on disk MB':>11s} {'ratio':>6s}"
    )
    summary = {}
    for path, results in runs.items():
        mb = [r["mb_s"] for r in results]
        fps = [r["fps"] for r in results]
        row = {
            "mb_s_median": statistics.median(mb),
            "mb_s_min": min(mb),
            "mb_s_max": max(mb),
            "fps_median": statistics.median(fps),
            "fps_min": min(fps),
            "fps_max": max(fps),
            "drops_max": max(r["drops"] for r in results),
            "peak_rss_mb_max": max(r["peak_rss_mb"] for r in results),
            "disk_mb": statistics.median(r["disk_bytes"] for r in results) / 1e6,
            "ratio": statistics.median(r["ratio"] or 0 for r in results),
        }
        summary[path] = row
        print(
            f"{path:8s} {row['mb_s_median']:8.1f} [{row['mb_s_min']:.0f}-{row['mb_s_max']:.0f}]"
            f"{'':>5s} {row['fps_median']:7.1f} [{row['fps_min']:.0f}-{row['fps_max']:.0f}]"
            f"{'':>4s} {row['drops_max']:6d} {row['peak_rss_mb_max']:12.0f} "
            f"{row['disk_mb']:11.0f} {row['ratio']:6.2f}"
        )
    direct = ceiling["ceiling_direct_mb_s_raw"]
    print(
        f"ceiling: compression {ceiling['compress_mb_s_raw']:.0f} MB/s raw on all cores "
        f"(ratio {ceiling['ratio']:.2f}); disk buffered+syncfs "
        f"{ceiling['disk_buffered_mb_s']:.0f} MB/s, O_DIRECT "
        + (
            "unsupported"
            if ceiling["disk_direct_mb_s"] is None
            else f"{ceiling['disk_direct_mb_s']:.0f} MB/s"
        )
        + f" -> {ceiling['ceiling_buffered_mb_s_raw']:.0f} (buffered) / "
        + ("-" if direct is None else f"{direct:.0f}")
        + " (direct) MB/s raw"
    )
    for path, row in summary.items():
        row["fraction_of_ceiling_buffered"] = (
            row["mb_s_median"] / ceiling["ceiling_buffered_mb_s_raw"]
        )
        row["fraction_of_ceiling_direct"] = row["mb_s_median"] / direct if direct else None
        print(
            f"  {path}: {100 * row['fraction_of_ceiling_buffered']:.0f} % of the buffered "
            "ceiling"
            + (
                f", {100 * row['fraction_of_ceiling_direct']:.0f} % of the direct one"
                if direct
                else ""
            )
        )
    if args.json:
        doc = {"args": vars(args), "ceiling": ceiling, "summary": summary, "runs": runs}
        args.json.write_text(json.dumps(doc, indent=2, default=str))


if __name__ == "__main__":
    main()
