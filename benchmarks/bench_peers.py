"""acqwriter against the writers users would otherwise pick, side by side, in one run.

Each (scenario, writer, repetition) runs in a fresh child process, interleaved
(A B C … A B C …), on the same realistic frames (background, cells, shot noise; the
frame index stamped in; see ``acqwriter.simulators.frames``). The timed region is
creation → every append → close → ``syncfs`` of the output filesystem, so data still in
the page cache is not counted as written. The first successful run of each writer is read
back (tensorstore; for acqwriter also zarr-python, and its root group is validated against
the official OME-NGFF 0.5 schemas) and compared bit-exact with the frames appended. Peak RSS is the
child's ``VmHWM`` (see :func:`peak_rss_mb`); on-disk size is measured after close.

Ratios are acqwriter ÷ peer twice over: of the medians, and pair by pair (repetition i
of acqwriter against repetition i of the peer, which ran next to it), reported as the
median and range of those pairs. A peer whose package is not installed is reported as
such and not run (``pip install ".[bench]"`` installs them all).

Scenarios (``--scenarios a,b,c,d,e``):

* a — 2048×2048 uint16, one frame per chunk, blosc lz4 5 shuffle;
* b — the same with blosc zstd 1 bitshuffle, 1 MiB blosc blocks (acqwriter's default
  for zstd; given to every writer that takes a block size: tensorstore, zarr-python);
* b0 — (b) with c-blosc's own block size for every writer (run only when named);
* c — light-sheet: chunks 32×256×256 (t × y × x), blosc lz4;
* d — small frames 512×512 at a high count (per-frame overhead), blosc lz4;
* e — t × c × z, 3 channels, 20-plane stacks, 2048×2048, one frame per chunk, blosc lz4.

Writers: acqwriter (defaults), acqwriter-sharded (explicit ~16 MiB shards along t),
acqwriter-buffered (page cache); tensorstore zarr3 preallocated (8 writes in flight)
and resized per chunk row; zarr-python 3 preallocated; acquire-zarr; ome-writers with
its tensorstore, zarr-python and acquire-zarr backends. Peers whose codec presets differ from the
scenario's are marked in the output (ome-writers offers blosc zstd only at level 3 with
byte shuffle; acquire-zarr takes no blosc block size and uses c-blosc's).

    python benchmarks/bench_peers.py --scenarios a --repeats 3
    python benchmarks/bench_peers.py --json out.json --markdown table.md --plot plot.png
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import importlib.util
import json
import math
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

# acqwriter.codec.settings.ZSTD_BLOCK_BYTES, the block size acqwriter's "auto" gives blosc zstd (not
# imported: a peer's child process must not load acqwriter and its pydantic models, which
# would add to its peak RSS; tests/e2e/test_bench_peers.py checks the two agree)
ZSTD_BLOCK_BYTES = 1 << 20
_BLOSC_SHUFFLE = {"noshuffle": 0, "shuffle": 1, "bitshuffle": 2}  # c-blosc's numbering


@dataclass(frozen=True)
class Scenario:
    name: str
    shape: tuple[int, int]
    frames: int
    dims: str = "tyx"
    sizes: tuple[tuple[str, int], ...] = ()
    chunk_t: int = 1
    chunk_yx: tuple[int, int] | None = None  # None: the whole frame
    codec: str = "lz4"  # "lz4": blosc lz4 5 shuffle; "zstd": blosc zstd 1 bitshuffle
    blocksize: int = 0  # blosc block size (bytes) for every writer that takes one; 0: c-blosc's

    @property
    def blosc(self) -> tuple[str, int, str]:
        """(cname, clevel, shuffle) of the scenario's blosc codec, for every writer."""
        return ("lz4", 5, "shuffle") if self.codec == "lz4" else ("zstd", 1, "bitshuffle")

    @property
    def codec_label(self) -> str:
        cname, clevel, shuffle = self.blosc
        blocks = f", {self.blocksize >> 10} KiB blocks" if self.blocksize else ""
        return f"blosc {cname} {clevel} {shuffle}{blocks}"

    @property
    def outer(self) -> tuple[int, ...]:
        sizes = dict(self.sizes)
        per_t = int(np.prod([sizes[a] for a in self.dims[1:-2]])) if len(self.dims) > 3 else 1
        return (self.frames // per_t, *[sizes[a] for a in self.dims[1:-2]])

    @property
    def full_shape(self) -> tuple[int, ...]:
        return (*self.outer, *self.shape)

    @property
    def chunks(self) -> tuple[int, ...]:
        yx = self.chunk_yx or self.shape
        return (self.chunk_t, *[1] * (len(self.dims) - 3), *yx)


def scenario_from_dict(d: dict[str, Any]) -> Scenario:
    return Scenario(
        **{
            **d,
            "shape": tuple(d["shape"]),
            "sizes": tuple(tuple(x) for x in d["sizes"]),
            "chunk_yx": tuple(d["chunk_yx"]) if d["chunk_yx"] else None,
        }
    )


def scenarios(frames_scale: float) -> dict[str, Scenario]:
    def n(count: int) -> int:
        return max(1, int(count * frames_scale))

    return {
        "a": Scenario("a", (2048, 2048), n(300)),
        "b": Scenario("b", (2048, 2048), n(300), codec="zstd", blocksize=ZSTD_BLOCK_BYTES),
        "b0": Scenario("b0", (2048, 2048), n(300), codec="zstd"),
        "c": Scenario(
            "c", (2048, 2048), 32 * max(1, n(320) // 32), chunk_t=32, chunk_yx=(256, 256)
        ),
        "d": Scenario("d", (512, 512), n(20000)),
        "e": Scenario(
            "e", (2048, 2048), 60 * max(1, n(300) // 60), dims="tczyx", sizes=(("c", 3), ("z", 20))
        ),
    }


WRITERS = [
    "acqwriter",
    "acqwriter-sharded",
    "acqwriter-buffered",
    "tensorstore",
    "tensorstore-resized",
    "zarr-python",
    "acquire-zarr",
    "ome-writers-tensorstore",
    "ome-writers-zarr-python",
    "ome-writers-acquire-zarr",
]


# OpenBLAS (numpy's, used while the frame bank is rendered) leaves its threads spinning
# for a while after a call: 2.6 % of a run's CPU (perf), stolen from whichever writer ran
# next. One BLAS thread for every child: the same for all writers.
CHILD_ENV = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}

# the module each writer needs, to report a missing peer instead of running it to fail
WRITER_MODULES = {
    "tensorstore": "tensorstore",
    "tensorstore-resized": "tensorstore",
    "zarr-python": "zarr",
    "acquire-zarr": "acquire_zarr",
    "ome-writers-tensorstore": "ome_writers",
    "ome-writers-zarr-python": "ome_writers",
    "ome-writers-acquire-zarr": "ome_writers",
}


# -- the frames --------------------------------------------------------------------------
def frame_source(sc: Scenario):
    from acqwriter.simulators import FrameBank

    bank = FrameBank(sc.shape, "uint16", seed=1)
    frames = [bank.frame(i) for i in range(bank.size)]

    from acqwriter.simulators import write_stamp

    def frame(i: int) -> np.ndarray:
        out = frames[i % len(frames)]
        write_stamp(out, i)  # different every frame (stamp), same content cycle for all writers
        return out

    return frame, bank


def peak_rss_mb() -> float:
    """This process's peak RSS. ``VmHWM`` belongs to the process's own memory map, whereas
    ``ru_maxrss`` survives ``execve``: a child started by a parent that had grown to
    834 MB (the ceiling measurement) reported 834 MB whatever it used."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def settle(seconds: float) -> None:
    """Start the next writer from the same memory state as every other: write back and
    drop the page cache (as root; skipped otherwise), then wait ``seconds``.

    Why: on this VM a buffered writer runs at 2.8 GB/s into memory freed less than ~2 s
    before and at ~375 MB/s once the host has taken it back (FIELD-NOTES); without this,
    a writer's speed depends on what ran just before it (the previous child's exit frees
    its ring and page cache), and the order of the interleaving biases the ratios."""
    os.sync()
    with contextlib.suppress(OSError):
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    time.sleep(seconds)


def child_result(cmd: list[str], label: str) -> dict[str, Any] | None:
    """Run one measurement in a fresh process; its last stdout line is its JSON result.
    A failed run is reported (its last stderr line) and gives None."""
    run = subprocess.run(cmd, capture_output=True, text=True)
    if run.returncode != 0:
        print(f"{label}: failed: {run.stderr.strip().splitlines()[-1:]}", flush=True)
        return None
    return json.loads(run.stdout.strip().splitlines()[-1])


def syncfs(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.syncfs(fd) != 0:
            os.sync()
    finally:
        os.close(fd)


# -- writers (each: create, append every frame, close) ------------------------------------
def _t_shard(sc: Scenario) -> dict[str, int]:
    """Shards along t of about 16 MiB raw (at least two chunks), set explicitly (acqwriter's
    "auto" shards only chunks under 2 MiB; this variant shards big frames too)."""
    frame_bytes = sc.shape[0] * sc.shape[1] * 2
    chunks_per_shard = max(2, (16 << 20) // (frame_bytes * sc.chunk_t))
    return {sc.dims[0]: sc.chunk_t * chunks_per_shard}


def acqwriter_spec(
    sc: Scenario, out: Path, io: str = "auto", shards: Any = "auto"
) -> dict[str, Any]:
    """The spec acqwriter writes a scenario with (also ``phases.py``'s)."""
    cname, clevel, shuffle = sc.blosc
    return {
        "out": str(out),
        "shape": sc.shape,
        "dtype": "uint16",
        "dims": sc.dims,
        "sizes": dict(sc.sizes),
        "chunks": {"t": sc.chunk_t, "y": sc.chunks[-2], "x": sc.chunks[-1]},
        "codec": {
            "name": "blosc",
            "cname": cname,
            "level": clevel,
            "shuffle": shuffle,
            "blocksize": sc.blocksize,
        },
        "pyramid": {"enabled": False},
        "sync": "close",
        "io": io,
        "shards": shards,
        "expected_frames": sc.frames,
    }


def run_acqwriter(
    sc: Scenario, out: Path, frame, io: str = "auto", shards: Any = "auto"
) -> dict[str, Any]:
    from acqwriter import open_stream

    stream = open_stream(acqwriter_spec(sc, out, io, shards))
    for i in range(sc.frames):
        stream.append(frame(i))
    s = stream.close()
    return {"latency_p50_ms": s.latency_p50_ms, "latency_p99_ms": s.latency_p99_ms, "path0": "0"}


def _ts_codecs(sc: Scenario) -> list[dict[str, Any]]:
    cname, clevel, shuffle = sc.blosc
    blosc = {"cname": cname, "clevel": clevel, "shuffle": shuffle}
    return [
        {"name": "bytes", "configuration": {"endian": "little"}},
        {"name": "blosc", "configuration": {**blosc, "typesize": 2, "blocksize": sc.blocksize}},
    ]


def _frame_index(sc: Scenario, i: int) -> tuple[int, ...]:
    return tuple(int(v) for v in np.unravel_index(i, sc.outer))


def run_tensorstore(sc: Scenario, out: Path, frame, resized: bool = False) -> dict[str, Any]:
    import tensorstore as ts

    shape = list(sc.full_shape)
    if resized:
        shape[0] = 0
    spec = {
        "driver": "zarr3",
        "kvstore": {"driver": "file", "path": str(out)},
        "metadata": {
            "shape": shape,
            "data_type": "uint16",
            "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": list(sc.chunks)}},
            "codecs": _ts_codecs(sc),
            "dimension_names": list(sc.dims),
            "fill_value": 0,
        },
        "create": True,
        "delete_existing": True,
    }
    arr = ts.open(spec).result()
    pending: list[Any] = []
    rows = 0
    if sc.chunk_t > 1:  # whole chunks along t (single frames would read-modify-write them)
        buf = np.empty((sc.chunk_t, *sc.shape), np.uint16)
        for i in range(sc.frames):
            buf[i % sc.chunk_t] = frame(i)
            if i % sc.chunk_t == sc.chunk_t - 1:
                t0 = i - sc.chunk_t + 1
                if resized:
                    arr = arr.resize(
                        exclusive_max=[i + 1, *sc.full_shape[1:]], expand_only=True
                    ).result()
                pending.append(arr[t0 : i + 1].write(buf.copy()))
                if len(pending) >= 2:
                    pending.pop(0).result()
        for f in pending:
            f.result()
        return {}
    for i in range(sc.frames):
        idx = _frame_index(sc, i)
        if resized and idx[0] >= rows:
            rows = min(sc.outer[0], rows + sc.chunk_t)
            for f in pending:
                f.result()
            pending.clear()
            arr = arr.resize(exclusive_max=[rows, *sc.full_shape[1:]], expand_only=True).result()
        # tensorstore reads the source while the write is in flight: give it its own copy
        pending.append(arr[idx].write(frame(i).copy()))
        if len(pending) >= 8:
            pending.pop(0).result()
    for f in pending:
        f.result()
    return {}


def run_zarr_python(sc: Scenario, out: Path, frame) -> dict[str, Any]:
    import zarr
    from zarr.codecs import BloscCodec

    cname, clevel, shuffle = sc.blosc
    comp = BloscCodec(cname=cname, clevel=clevel, shuffle=shuffle, blocksize=sc.blocksize)
    arr = zarr.create_array(
        str(out),
        shape=sc.full_shape,
        chunks=sc.chunks,
        dtype="uint16",
        compressors=[comp],
        fill_value=0,
        dimension_names=list(sc.dims),
        overwrite=True,
    )
    if sc.chunk_t == 1:
        for i in range(sc.frames):
            arr[_frame_index(sc, i)] = frame(i)
    else:  # whole chunks along t: buffer chunk_t frames, write once (partial writes re-read)
        buf = np.empty((sc.chunk_t, *sc.shape), np.uint16)
        for i in range(sc.frames):
            buf[i % sc.chunk_t] = frame(i)
            if i % sc.chunk_t == sc.chunk_t - 1:
                arr[i - sc.chunk_t + 1 : i + 1] = buf
    return {}


def run_acquire_zarr(sc: Scenario, out: Path, frame) -> dict[str, Any]:
    import acquire_zarr as az

    kinds = {
        "t": az.DimensionType.TIME,
        "c": az.DimensionType.CHANNEL,
        "z": az.DimensionType.SPACE,
        "y": az.DimensionType.SPACE,
        "x": az.DimensionType.SPACE,
    }
    dims = []
    for axis, size, chunk in zip(sc.dims, sc.full_shape, sc.chunks, strict=True):
        dims.append(
            az.Dimension(
                name=axis,
                kind=kinds[axis],
                array_size_px=size if axis != "t" else 0,
                chunk_size_px=chunk,
                shard_size_chunks=1,
            )
        )
    cname, clevel, shuffle = sc.blosc
    codec = az.CompressionCodec.BLOSC_LZ4 if cname == "lz4" else az.CompressionCodec.BLOSC_ZSTD
    settings = az.StreamSettings(
        store_path=str(out),
        overwrite=True,
        arrays=[
            az.ArraySettings(
                dimensions=dims,
                data_type=np.uint16,
                compression=az.CompressionSettings(
                    compressor=az.Compressor.BLOSC1,
                    codec=codec,
                    level=clevel,
                    shuffle=_BLOSC_SHUFFLE[shuffle],
                ),
            )
        ],
    )
    stream = az.ZarrStream(settings)
    for i in range(sc.frames):
        stream.append(frame(i))
    stream.close()
    # acquire-zarr's CompressionSettings take no block size: c-blosc chooses
    return {"path0": ".", "blocks_differ": bool(sc.blocksize)}


def run_ome_writers(sc: Scenario, out: Path, frame, backend: str) -> dict[str, Any]:
    from ome_writers import (
        AcquisitionSettings,
        OmeZarrFormat,
        create_stream,
        dims_from_standard_axes,
    )

    sizes = {a: n for a, n in zip(sc.dims, sc.full_shape, strict=True)}
    sizes["t"] = None if backend != "zarr-python" else sizes["t"]
    chunk_shapes = dict(zip(sc.dims, sc.chunks, strict=True))
    settings = AcquisitionSettings(
        root_path=str(out),
        dimensions=dims_from_standard_axes(sizes, chunk_shapes=chunk_shapes),
        dtype="uint16",
        overwrite=True,
        compression="blosc-lz4" if sc.codec == "lz4" else "blosc-zstd",
        format=OmeZarrFormat(backend=backend),
    )
    with create_stream(settings) as stream:
        for i in range(sc.frames):
            stream.append(frame(i).copy())  # ome-writers does not copy: give it its own buffer
    return {"codec_differs": sc.codec != "lz4" or bool(sc.blocksize)}


RUNNERS = {
    "acqwriter": run_acqwriter,
    "acqwriter-sharded": lambda sc, out, fr: run_acqwriter(sc, out, fr, shards=_t_shard(sc)),
    "acqwriter-buffered": lambda sc, out, fr: run_acqwriter(sc, out, fr, io="buffered"),
    "tensorstore": run_tensorstore,
    "tensorstore-resized": lambda sc, out, fr: run_tensorstore(sc, out, fr, resized=True),
    "zarr-python": run_zarr_python,
    "acquire-zarr": run_acquire_zarr,
    "ome-writers-tensorstore": lambda sc, out, fr: run_ome_writers(sc, out, fr, "tensorstore"),
    "ome-writers-zarr-python": lambda sc, out, fr: run_ome_writers(sc, out, fr, "zarr-python"),
    "ome-writers-acquire-zarr": lambda sc, out, fr: run_ome_writers(sc, out, fr, "acquire-zarr"),
}


def _find_array(out: Path, sc: Scenario) -> Path | None:
    for meta in sorted(out.rglob("zarr.json"), key=lambda p: len(p.parts)):
        doc = json.loads(meta.read_text())
        if doc.get("node_type") == "array" and len(doc.get("shape", [])) == len(sc.dims):
            return meta.parent
    return None


SCHEMA_DIR = Path(__file__).resolve().parents[1] / "tests" / "ngff_schemas" / "0.5"


def _ngff_errors(root: Path) -> str | None:
    """None when the group's attributes pass the official OME-NGFF 0.5 ``image`` and
    ``strict_image`` schemas, with the test suite's own validator (``tests/helpers.py``,
    schemas copied from the spec repository into tests/); else why not."""
    try:
        import jsonschema

        sys.path.insert(0, str(SCHEMA_DIR.parents[1]))  # tests/
        from helpers import ngff_validator
    except ImportError:
        return "NGFF schema not checked (pip install jsonschema referencing)"
    attrs = json.loads((root / "zarr.json").read_text()).get("attributes", {})
    for name in ("image", "strict_image"):
        error = jsonschema.exceptions.best_match(ngff_validator(name).iter_errors(attrs))
        if error is not None:
            return f"NGFF 0.5 {name} schema: {error.message}"
    return None


def verify(sc: Scenario, out: Path, frame, writer: str = "") -> str:
    """ "exact" when every frame reads back bit-exact through tensorstore, and for
    acqwriter's own writers also through zarr-python and with the root group passing
    the official NGFF 0.5 schemas; else what failed. Compared a block of frames at a
    time (scenario d is 10 GB raw)."""
    import tensorstore as ts

    path = _find_array(out, sc)
    if path is None:
        return "no array found"
    readers = {
        "tensorstore": ts.open(
            {"driver": "zarr3", "kvstore": {"driver": "file", "path": str(path)}}
        ).result()
    }
    if writer.startswith("acqwriter"):
        import zarr

        readers["zarr-python"] = zarr.open_array(str(path), mode="r")
    per_row = int(np.prod(sc.outer[1:]))
    rows = sc.frames // per_row
    step = max(1, (256 << 20) // (per_row * sc.shape[0] * sc.shape[1] * 2))
    for name, arr in readers.items():
        if arr.shape[0] < rows:
            return f"{name}: only {arr.shape[0] * per_row} of {sc.frames} frames"
        for start in range(0, rows, step):
            stop = min(rows, start + step)
            block = arr[start:stop]
            block = block.read().result() if name == "tensorstore" else block
            block = np.asarray(block).reshape(-1, *sc.shape)
            for j, got in enumerate(block):
                if not np.array_equal(got, frame(start * per_row + j)):
                    return f"{name}: frame {start * per_row + j} differs"
    if writer.startswith("acqwriter"):
        problem = _ngff_errors(out)
        if problem is not None:
            return problem
    return "exact"


def child(args: argparse.Namespace) -> None:
    sc = scenario_from_dict(json.loads(args.scenario_json))
    frame, _ = frame_source(sc)
    for i in range(min(sc.frames, 16)):  # warm the frame cycle outside the timed region
        frame(i)
    out = Path(args.workdir) / f"{args.writer}.ome.zarr"
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    extra = RUNNERS[args.writer](sc, out, frame)
    syncfs(Path(args.workdir))
    elapsed = time.perf_counter() - t0
    raw = sc.frames * sc.shape[0] * sc.shape[1] * 2
    disk = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    result = {
        "writer": args.writer,
        "scenario": sc.name,
        "elapsed_s": elapsed,
        "mb_s": raw / 1e6 / elapsed,
        "fps": sc.frames / elapsed,
        "disk_mb": disk / 1e6,
        "ratio": raw / disk if disk else None,
        "peak_rss_mb": peak_rss_mb(),
        **extra,
    }
    if args.verify:
        result["readback"] = verify(sc, out, frame, args.writer)
    shutil.rmtree(out, ignore_errors=True)
    print(json.dumps(result, default=str))


def disk_bandwidth(workdir: Path, blob: bytes, total: int = 1 << 30) -> tuple[float, float | None]:
    """MB/s of writing ``total`` bytes (``blob`` repeated: real compressed data) to one
    file in ``workdir``: through the page cache then ``syncfs``, and with O_DIRECT from
    an aligned 8 MiB buffer then ``fsync`` (None where the filesystem refuses O_DIRECT)."""
    target = workdir / "ceiling.bin"
    t0 = time.perf_counter()
    with open(target, "wb") as fh:
        written = 0
        while written < total:
            fh.write(blob)
            written += len(blob)
    syncfs(workdir)
    buffered = written / 1e6 / (time.perf_counter() - t0)
    target.unlink()
    direct: float | None = None
    try:
        import mmap

        buf = mmap.mmap(-1, 8 << 20)  # page-aligned
        buf.write(blob[: 8 << 20].ljust(8 << 20, b"\0"))
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_DIRECT, 0o644)
        try:
            t0 = time.perf_counter()
            for _ in range(total // (8 << 20)):
                os.write(fd, buf)
            os.fsync(fd)
            direct = total / 1e6 / (time.perf_counter() - t0)
        finally:
            os.close(fd)
    except OSError:
        pass
    target.unlink(missing_ok=True)
    return buffered, direct


def measure_ceiling(sc: Scenario, workdir: Path, total: int = 1 << 30) -> dict[str, Any]:
    """Compression on all cores with numcodecs, disk bandwidth buffered+syncfs and O_DIRECT
    (``total`` bytes each; ``disk_direct_mb_s`` is None where the filesystem refuses
    O_DIRECT)."""
    from concurrent.futures import ThreadPoolExecutor

    from numcodecs import Blosc

    _, bank = frame_source(sc)
    frames = [bank.frame(i) for i in range(bank.size)] * 4
    cname, clevel, shuffle = sc.blosc
    codec = Blosc(cname, clevel, _BLOSC_SHUFFLE[shuffle], sc.blocksize)
    # one untimed pass first (the first pass pays page faults for every output buffer and
    # measured 10-15 % slow), then the median of three
    speeds = []
    with ThreadPoolExecutor(len(os.sched_getaffinity(0))) as pool:
        for rep in range(4):
            t0 = time.perf_counter()
            encoded = list(pool.map(codec.encode, frames))
            if rep:
                speeds.append(sum(f.nbytes for f in frames) / 1e6 / (time.perf_counter() - t0))
    compress = statistics.median(speeds)
    ratio = sum(f.nbytes for f in frames) / sum(len(e) for e in encoded)
    buffered, direct = disk_bandwidth(workdir, b"".join(encoded), total)
    return {
        "compress_mb_s_raw": compress,
        "ratio": ratio,
        "disk_buffered_mb_s": buffered,
        "disk_direct_mb_s": direct,
        "ceiling_buffered_mb_s_raw": min(compress, buffered * ratio),
        "ceiling_direct_mb_s_raw": None if direct is None else min(compress, direct * ratio),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line, checked: every wrong value is named with what was expected
    before anything runs (a typo must not cost a 35-minute run)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--scenarios", default="a,b,c,d,e", help="comma-separated, of a,b,b0,c,d,e")
    p.add_argument(
        "--writers",
        default=",".join(WRITERS),
        help=f"comma-separated, must include acqwriter; of {','.join(WRITERS)}",
    )
    p.add_argument("--repeats", type=int, default=3, help="interleaved repetitions (≥ 3)")
    p.add_argument("--frames-scale", type=float, default=1.0, help="scale every frame count")
    p.add_argument(
        "--settle",
        type=float,
        default=None,
        metavar="S",
        help="before every run: sync, drop the page cache (root), wait S seconds (see settle)",
    )
    p.add_argument("--workdir", default=None)
    p.add_argument("--json", type=Path)
    p.add_argument("--markdown", type=Path)
    p.add_argument("--plot", type=Path)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--writer", help=argparse.SUPPRESS)
    p.add_argument("--scenario-json", help=argparse.SUPPRESS)
    p.add_argument("--verify", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        return args
    known = list(scenarios(1.0))
    args.scenario_list = _checked_list(p, "--scenarios", args.scenarios, known)
    args.writer_list = _checked_list(p, "--writers", args.writers, WRITERS)
    if "acqwriter" not in args.writer_list:
        p.error("--writers: must include acqwriter (every ratio is acqwriter ÷ writer)")
    if args.repeats < 1:
        p.error(
            f"--repeats: expected an integer ≥ 1 (3 or more for the protocol), got {args.repeats}"
        )
    if not (args.frames_scale > 0 and math.isfinite(args.frames_scale)):
        p.error(f"--frames-scale: expected a positive number, got {args.frames_scale}")
    if args.settle is not None and not (args.settle >= 0 and math.isfinite(args.settle)):
        p.error(f"--settle: expected seconds ≥ 0, got {args.settle}")
    if args.plot is not None and importlib.util.find_spec("matplotlib") is None:
        p.error('--plot: needs matplotlib (pip install ".[bench]")')
    return args


def _checked_list(
    p: argparse.ArgumentParser, flag: str, value: str, allowed: list[str]
) -> list[str]:
    choices = ",".join(allowed)
    items = [v.strip() for v in value.split(",") if v.strip()]
    if not items:
        p.error(f"{flag}: expected a comma-separated subset of {choices}, got {value!r}")
    for item in items:
        if item not in allowed:
            p.error(
                f"{flag}: unknown {item!r}; expected a comma-separated list of {','.join(allowed)}"
            )
    if len(set(items)) != len(items):
        p.error(f"{flag}: {value!r} names one entry twice")
    return items


def missing_package(writer: str) -> str | None:
    """The module a peer needs when it is not installed, else None."""
    module = WRITER_MODULES.get(writer)
    if module is not None and importlib.util.find_spec(module) is None:
        return module
    return None


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.child:
        child(args)
        return
    if args.repeats < 3:
        print(
            f"note: {args.repeats} repetition(s); the protocol's medians need 3 or more",
            file=sys.stderr,
        )
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="acqwriter-peers-", dir="."))
    workdir.mkdir(parents=True, exist_ok=True)
    table = scenarios(args.frames_scale)
    writers = args.writer_list
    missing = {w: m for w in writers if (m := missing_package(w))}
    for writer, module in missing.items():
        print(f"{writer}: not installed (no module {module!r}); skipped", file=sys.stderr)
    results: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count()},
        "protocol": {"settle_s": args.settle, "repeats": args.repeats, "order": writers},
        "scenarios": {},
    }
    try:
        for name in args.scenario_list:
            sc = table[name]
            runs: dict[str, list[dict[str, Any]]] = {w: [] for w in writers}
            for rep in range(args.repeats):
                for writer in writers:  # interleaved A B C …
                    if writer in missing:
                        runs[writer].append(
                            {"error": f"not installed (no module {missing[writer]!r})"}
                        )
                        continue
                    if args.settle is not None:
                        settle(args.settle)
                    cmd = [
                        sys.executable,
                        __file__,
                        "--child",
                        "--writer",
                        writer,
                        "--workdir",
                        str(workdir),
                        "--scenario-json",
                        json.dumps(asdict(sc)),
                    ]
                    if not any("readback" in r for r in runs[writer]):
                        cmd.append("--verify")  # the writer's first successful run
                    proc = subprocess.run(
                        cmd, capture_output=True, text=True, timeout=3600, env=CHILD_ENV
                    )
                    if proc.returncode != 0:
                        tail = proc.stderr.strip().splitlines()[-1:] or [f"exit {proc.returncode}"]
                        runs[writer].append({"error": tail[0]})
                        print(
                            f"{name} {writer}: FAILED {proc.stderr.strip()[-300:]}", file=sys.stderr
                        )
                        continue
                    r = json.loads(proc.stdout.strip().splitlines()[-1])
                    runs[writer].append(r)
                    print(
                        f"{name} rep {rep} {writer:26s} {r['mb_s']:8.1f} MB/s {r['fps']:8.1f} fps "
                        f"rss {r['peak_rss_mb']:6.0f} MB {r.get('readback', '')}",
                        file=sys.stderr,
                    )
            # 1 GiB per disk measurement at full scale, less for a scaled-down smoke run
            ceiling_bytes = (8 << 20) * max(8, min(128, round(128 * args.frames_scale)))
            ceiling = measure_ceiling(sc, workdir, ceiling_bytes)
            results["scenarios"][name] = {
                "scenario": asdict(sc),
                "runs": runs,
                "ceiling": ceiling,
                "summary": summarize(runs, ceiling),
            }
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    text = markdown(results)
    print(text)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))
    if args.markdown:
        args.markdown.write_text(text)
    if args.plot:
        plot(results, args.plot)


def summarize(runs: dict[str, list[dict[str, Any]]], ceiling: dict[str, Any]) -> dict[str, Any]:
    """Per writer: median and range of MB/s over its successful runs, median frames/s,
    the highest peak RSS, the read-back verdict, acqwriter's append→durable latency, and
    the ratio acqwriter ÷ writer, of the medians and pair by pair (repetition i against
    repetition i; a pair with a failed run is left out)."""
    out: dict[str, Any] = {}
    ours_runs = runs.get("acqwriter", [])
    ours = [r["mb_s"] for r in ours_runs if "mb_s" in r]
    ours_med = statistics.median(ours) if ours else None
    for writer, rs in runs.items():
        ok = [r for r in rs if "mb_s" in r]
        failed = [r.get("error") for r in rs if "mb_s" not in r]
        if not ok:
            out[writer] = {"failed": failed[0] if failed else "no runs", "failed_runs": len(failed)}
            continue
        mb = [r["mb_s"] for r in ok]
        med = statistics.median(mb)
        pairs = [
            a["mb_s"] / b["mb_s"]
            for a, b in zip(ours_runs, rs, strict=False)
            if "mb_s" in a and "mb_s" in b
        ]
        p50 = [r["latency_p50_ms"] for r in ok if r.get("latency_p50_ms") is not None]
        p99 = [r["latency_p99_ms"] for r in ok if r.get("latency_p99_ms") is not None]
        verdicts = [r["readback"] for r in ok if "readback" in r]
        out[writer] = {
            "mb_s": med,
            "mb_s_min": min(mb),
            "mb_s_max": max(mb),
            "fps": statistics.median(r["fps"] for r in ok),
            "peak_rss_mb": max(r["peak_rss_mb"] for r in ok),
            "disk_mb": statistics.median(r["disk_mb"] for r in ok),
            "readback": next(
                (v for v in verdicts if v != "exact"), verdicts[0] if verdicts else None
            ),
            "latency_p50_ms": statistics.median(p50) if p50 else None,
            "latency_p99_ms": max(p99) if p99 else None,
            "codec_differs": ok[0].get("codec_differs", False),
            "blocks_differ": ok[0].get("blocks_differ", False),
            "runs": len(ok),
            "failed_runs": len(failed),
            "acqwriter_ratio": (ours_med / med) if ours_med else None,
            "acqwriter_ratio_pairs": pairs,
            "acqwriter_ratio_paired_median": statistics.median(pairs) if pairs else None,
        }
    if ours_med:
        direct = ceiling.get("ceiling_direct_mb_s_raw")
        out["acqwriter_fraction_of_ceiling"] = {
            "buffered": ours_med / ceiling["ceiling_buffered_mb_s_raw"],
            "direct": ours_med / direct if direct else None,
        }
    return out


def markdown(results: dict[str, Any]) -> str:
    nan = float("nan")
    lines = []
    settle_s = results.get("protocol", {}).get("settle_s")
    if settle_s is not None:
        lines.append(
            f"\nEvery run started after sync + drop_caches + {settle_s:g} s (--settle): the same "
            "memory state for every writer."
        )
    for name, sc in results["scenarios"].items():
        s = sc["scenario"]
        c = sc["ceiling"]
        lines += [
            f"\n### Scenario {name}: {s['frames']} frames {s['shape'][0]}×{s['shape'][1]} uint16, "
            f"dims {s['dims']}, chunks {scenario_from_dict(s).chunks}, "
            f"{scenario_from_dict(s).codec_label}",
            "",
            "| writer | MB/s raw median [min–max] | frames/s | peak RSS MB | on disk MB "
            "| read back | acqwriter ÷ writer | pair by pair [min–max] |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for writer, row in sc["summary"].items():
            if writer == "acqwriter_fraction_of_ceiling":
                continue
            if "failed" in row:
                lines.append(f"| {writer} | failed: {row['failed']} | | | | | | |")
                continue
            mark = " (codec preset differs)" if row["codec_differs"] else ""
            if row.get("blocks_differ"):
                mark += " (c-blosc's block size: it takes none)"
            if row.get("failed_runs"):
                mark += f" ({row['failed_runs']} of {row['failed_runs'] + row['runs']} runs failed)"
            ratio = f"{row['acqwriter_ratio']:.2f}×" if row["acqwriter_ratio"] else ""
            pairs = row.get("acqwriter_ratio_pairs") or []
            paired = (
                f"{row['acqwriter_ratio_paired_median']:.2f}× [{min(pairs):.2f}–{max(pairs):.2f}]"
                if pairs and writer != "acqwriter"
                else ""
            )
            spread = f"{row['mb_s']:.0f} [{row['mb_s_min']:.0f}–{row['mb_s_max']:.0f}]"
            cells = [
                f"{writer}{mark}",
                spread,
                f"{row['fps']:.1f}",
                f"{row['peak_rss_mb']:.0f}",
                f"{row['disk_mb']:.0f}",
                str(row["readback"]),
                ratio,
                paired,
            ]
            lines.append("| " + " | ".join(cells) + " |")
        ours = sc["summary"].get("acqwriter", {})
        frac = sc["summary"].get("acqwriter_fraction_of_ceiling", {})
        direct_disk = c["disk_direct_mb_s"]
        direct_ceiling = c["ceiling_direct_mb_s_raw"]
        lines += [
            "",
            f"Ceiling (same run): compression {c['compress_mb_s_raw']:.0f} MB/s raw on all "
            f"cores (ratio {c['ratio']:.2f}); disk buffered+syncfs "
            f"{c['disk_buffered_mb_s']:.0f} MB/s, O_DIRECT "
            f"{'unsupported' if direct_disk is None else f'{direct_disk:.0f} MB/s'} "
            f"→ ceiling {c['ceiling_buffered_mb_s_raw']:.0f} (buffered) / "
            f"{'–' if direct_ceiling is None else f'{direct_ceiling:.0f}'} (direct) MB/s raw. "
            f"acqwriter: {100 * (frac.get('buffered') or nan):.0f} % / "
            f"{100 * (frac.get('direct') or nan):.0f} %; "
            f"latency append→committed p50 {ours.get('latency_p50_ms') or nan:.0f} ms, "
            f"p99 {ours.get('latency_p99_ms') or nan:.0f} ms.",
        ]
    return "\n".join(lines)


def plot(results: dict[str, Any], path: Path) -> None:
    """One panel per scenario: every writer's median MB/s with its min–max, acqwriter in
    red, each peer labelled with acqwriter ÷ peer, and the run's ceilings as lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results["scenarios"])
    fig, axes = plt.subplots(1, len(names), figsize=(5.5 * len(names), 4.5), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        summary = results["scenarios"][name]["summary"]
        ceiling = results["scenarios"][name]["ceiling"]
        writers = [w for w, r in summary.items() if isinstance(r, dict) and "mb_s" in r]
        values = [summary[w]["mb_s"] for w in writers]
        errs = [
            [summary[w]["mb_s"] - summary[w]["mb_s_min"] for w in writers],
            [summary[w]["mb_s_max"] - summary[w]["mb_s"] for w in writers],
        ]
        ax.barh(
            writers,
            values,
            xerr=errs,
            color=["tab:red" if w == "acqwriter" else "tab:gray" for w in writers],
        )
        for y, writer in enumerate(writers):
            ratio = summary[writer].get("acqwriter_ratio")
            if ratio and writer != "acqwriter":
                ax.text(values[y], y, f" {ratio:.2f}×", va="center", fontsize=8)
        for key, style, label in (
            ("ceiling_direct_mb_s_raw", "--", "ceiling, direct"),
            ("ceiling_buffered_mb_s_raw", ":", "ceiling, page cache"),
        ):
            if ceiling.get(key):
                ax.axvline(ceiling[key], color="black", linestyle=style, label=label)
        ax.set_title(f"scenario {name} (labels: acqwriter ÷ writer)")
        ax.set_xlabel("MB/s raw (median, min–max)")
        ax.legend(loc="upper right", fontsize=8, framealpha=0.9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


if __name__ == "__main__":
    main()
