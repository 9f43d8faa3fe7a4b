"""Many positions against one image: does a dataset of N images keep the single-image
speed?

Scenario (a)'s frames (2048² uint16, blosc lz4 5 shuffle, one frame per chunk), written
once as one image of ``F`` frames and once as a plate of ``N`` wells (one field each)
of ``F / N`` time points, interleaved per time point (position 0, 1, …, N-1, then the
next time point) as a multi-position acquisition delivers them; with ``--peers``, the
same plate by acquire-zarr's HCS support and ome-writers' plate output too. Each run
is a fresh process, settled first (sync, drop caches, wait), timed from open to close
and sync; the writers alternate, so drift hits all alike::

    python benchmarks/positions.py --positions 16 --frames 304 --pairs 5
    python benchmarks/positions.py --pairs 3 \\
        --peers acquire-zarr,ome-writers-tensorstore,ome-writers-acquire-zarr
    python benchmarks/positions.py --pairs 3 --peers collection-0.5,collection-0.6

Prints the median MB/s of each with its range, every pair's ratio (positions / image)
and the peak RSS of each.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import bench_peers


def _plate_keys(positions: int) -> list[tuple[str, str]]:
    """(row, column) of each position: a square-ish plate, one field per well."""
    columns = max(1, round(positions**0.5))
    return [("ABCDEFGHIJKLMNOP"[p // columns], str(p % columns + 1)) for p in range(positions)]


def _acquire_zarr_plate(out: Path, sc, positions: int, frames: int, frame) -> None:
    import acquire_zarr as az
    import numpy as np

    def settings():
        dims = [
            az.Dimension(
                name="t",
                kind=az.DimensionType.TIME,
                array_size_px=0,
                chunk_size_px=1,
                shard_size_chunks=1,
            ),
            *(
                az.Dimension(
                    name=a,
                    kind=az.DimensionType.SPACE,
                    array_size_px=n,
                    chunk_size_px=n,
                    shard_size_chunks=1,
                )
                for a, n in zip("yx", sc.shape, strict=True)
            ),
        ]
        compression = az.CompressionSettings(
            compressor=az.Compressor.BLOSC1,
            codec=az.CompressionCodec.BLOSC_LZ4,
            level=5,
            shuffle=1,
        )
        return az.ArraySettings(dimensions=dims, data_type=np.uint16, compression=compression)

    wells = _plate_keys(positions)
    plate = az.Plate(
        path="plate",
        name="plate",
        row_names=sorted({r for r, _ in wells}),
        column_names=sorted({c for _, c in wells}, key=int),
        acquisitions=[az.Acquisition(id=0, name="run")],
        wells=[
            az.Well(
                row_name=r,
                column_name=c,
                images=[az.FieldOfView(path="0", acquisition_id=0, array_settings=settings())],
            )
            for r, c in wells
        ],
    )
    stream = az.ZarrStream(
        az.StreamSettings(store_path=str(out), overwrite=True, hcs_plates=[plate])
    )
    keys = [f"plate/{r}/{c}/0" for r, c in wells]
    for i in range(frames):
        stream.append(frame(i), key=keys[i % positions])
    stream.close()


def _ome_writers_plate(out: Path, sc, positions: int, frames: int, frame, backend: str) -> None:
    from ome_writers import (
        AcquisitionSettings,
        OmeZarrFormat,
        Plate,
        Position,
        create_stream,
        dims_from_standard_axes,
    )

    wells = _plate_keys(positions)
    places = [Position(name="0", plate_row=r, plate_column=c) for r, c in wells]
    settings = AcquisitionSettings(
        root_path=str(out),
        dimensions=dims_from_standard_axes(
            {"t": frames // positions, "p": places, "y": sc.shape[0], "x": sc.shape[1]}
        ),
        dtype="uint16",
        overwrite=True,
        compression="blosc-lz4",
        plate=Plate(
            row_names=sorted({r for r, _ in wells}),
            column_names=sorted({c for _, c in wells}, key=int),
        ),
        format=OmeZarrFormat(backend=backend),
    )
    with create_stream(settings) as stream:
        for i in range(frames):
            stream.append(frame(i).copy())  # ome-writers does not copy


def run_one(writer: str, positions: int, frames: int) -> dict[str, float]:
    import acqwriter

    sc = bench_peers.scenarios(1.0)["a"]
    frame, _ = bench_peers.frame_source(sc)
    for i in range(16):
        frame(i)
    workdir = Path(tempfile.mkdtemp(prefix="acqwriter-positions-", dir="."))
    spec = bench_peers.acqwriter_spec(sc, workdir / "p.ome.zarr")
    spec["expected_frames"] = frames
    bench_peers.settle(3)
    try:
        t0 = time.perf_counter()
        if writer == "image":
            stream = acqwriter.open_stream(spec)
            for i in range(frames):
                stream.append(frame(i))
            summary = stream.close()
            assert summary.state == "complete" and summary.frames_written == frames
        elif writer == "positions":
            image = {k: spec.pop(k) for k in ("shape", "dtype", "dims", "sizes", "chunks")}
            image["pyramid"] = spec.pop("pyramid")
            spec.pop("shards")
            keys = [f"{r}/{c}/0" for r, c in _plate_keys(positions)]
            ds = acqwriter.open_dataset(
                {**spec, "layout": "plate", "images": {k: image for k in keys}}
            )
            for i in range(frames):
                ds.append(frame(i), image=keys[i % positions])
            summary = ds.close()
            assert summary.state == "complete" and summary.frames_written == frames
        elif writer.startswith("collection-"):  # a collection placed by the stage
            image = {k: spec.pop(k) for k in ("shape", "dtype", "dims", "sizes", "chunks")}
            image["pyramid"] = spec.pop("pyramid")
            spec.pop("shards")
            keys = [f"p{p}" for p in range(positions)]
            images = {
                k: {**image, "stage": {"x": 1000.0 * p, "y": 0.0}} for p, k in enumerate(keys)
            }
            ds = acqwriter.open_dataset(
                {
                    **spec,
                    "layout": "collection",
                    "ngff_version": writer.removeprefix("collection-"),
                    "images": images,
                }
            )
            for i in range(frames):
                ds.append(frame(i), image=keys[i % positions])
            summary = ds.close()
            assert summary.state == "complete" and summary.frames_written == frames
        elif writer == "acquire-zarr":
            _acquire_zarr_plate(workdir / "p.zarr", sc, positions, frames, frame)
        else:
            backend = writer.removeprefix("ome-writers-")
            _ome_writers_plate(workdir / "p.ome.zarr", sc, positions, frames, frame, backend)
        bench_peers.syncfs(workdir)
        elapsed = time.perf_counter() - t0
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    raw = frames * sc.shape[0] * sc.shape[1] * 2
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"mb_s": raw / 1e6 / elapsed, "rss_mb": peak}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--positions", type=int, default=16)
    parser.add_argument("--frames", type=int, default=304)
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument(
        "--peers",
        default="",
        help="also write the plate with these, in the same rounds: acquire-zarr, "
        "ome-writers-tensorstore, ome-writers-acquire-zarr; or acqwriter's collection "
        "placed by the stage in an OME-NGFF version: collection-0.5, collection-0.6",
    )
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one, args.positions, args.frames)))
        return
    writers = ["image", "positions", *filter(None, args.peers.split(","))]
    results: dict[str, list[dict[str, float]]] = {w: [] for w in writers}
    for i in range(args.pairs):
        order = writers if i % 2 == 0 else writers[::-1]
        for writer in order:
            cmd = [sys.executable, __file__, "--one", writer]
            cmd += ["--positions", str(args.positions), "--frames", str(args.frames)]
            if (result := bench_peers.child_result(cmd, writer)) is not None:
                results[writer].append(result)
    base = statistics.median(r["mb_s"] for r in results["positions"])
    for writer in writers:
        rates = [r["mb_s"] for r in results[writer]]
        if not rates:
            continue
        rss = max(r["rss_mb"] for r in results[writer])
        print(
            f"{writer:<26} {statistics.median(rates):6.0f} MB/s "
            f"[{min(rates):.0f}-{max(rates):.0f}], peak RSS {rss:.0f} MB; acqwriter's "
            f"{args.positions} positions / this: {base / statistics.median(rates):.2f}x"
        )
    image = [r["mb_s"] for r in results["image"]]
    many = [r["mb_s"] for r in results["positions"]]
    pairs = ", ".join(f"{m / s:.2f}" for m, s in zip(many, image, strict=True))
    print(
        f"positions / one image: {statistics.median(many) / statistics.median(image):.3f} "
        f"(pairs {pairs})"
    )


if __name__ == "__main__":
    main()
