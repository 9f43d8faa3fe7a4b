"""Streaming to object storage: acqwriter against acquire-zarr's S3 sink and tensorstore's
``s3`` kvstore, and the server's own ceiling, in one run on one server.

The server is moto's S3 server (``python -m moto.server``) in a process of its own on the
loopback: MinIO cannot be installed here, so the ceiling is moto's, which is far below a
real store's (moto is a Python server: it parses and keeps every byte). What matters is
the ratio to that ceiling and to the peers on the same server.

Each (scenario, writer, repetition) runs in a fresh child process, interleaved
(A B C … A B C …), on the same realistic frames as ``bench_peers.py`` (background,
cells, shot noise, the index stamped in). The timed region is creation → every append →
close (the last object is on the server when close returns). Peak RSS is the child's
``VmHWM``. The ceiling is a plain multipart upload (obstore, 5 MiB parts, 12 in flight:
the library acqwriter uses) of as many bytes as acqwriter stored, into one object; and,
since one upload does not fill the server, the same bytes as frame-sized objects PUT
from 8 threads (``ceiling-puts``); the faster of the two is the ceiling reported.
After each run its objects are deleted, so the server's memory does not grow.

Writers: acqwriter (defaults: chunks PUT as they are encoded; scenario d's small
chunks go into shards streamed as multipart uploads), acquire-zarr (its S3 sink:
multipart, 5 MiB parts), tensorstore zarr3 on the ``s3`` kvstore (preallocated,
8 writes in flight), and the ceiling.

    python benchmarks/object_store.py --scenarios a,d --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_peers import (
    Scenario,
    _ts_codecs,
    acqwriter_spec,
    frame_source,
    peak_rss_mb,
)

BUCKET = "bench"
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench",
    "AWS_REGION": "us-east-1",
    "AWS_DEFAULT_REGION": "us-east-1",
}
WRITERS = ["acqwriter", "acquire-zarr", "tensorstore", "ceiling", "ceiling-puts"]


def scenarios(frames_a: int, frames_d: int) -> dict[str, Scenario]:
    return {
        "a": Scenario("a", (2048, 2048), frames_a),
        "d": Scenario("d", (512, 512), frames_d),
    }


# -- the server --------------------------------------------------------------------------
def start_server() -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.2)
    _client(endpoint).create_bucket(Bucket=BUCKET)
    return proc, endpoint


def _client(endpoint: str) -> Any:
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        region_name=CREDENTIALS["AWS_REGION"],
    )


def stored_bytes(endpoint: str, prefix: str) -> int:
    pages = _client(endpoint).get_paginator("list_objects_v2")
    return sum(
        obj["Size"]
        for page in pages.paginate(Bucket=BUCKET, Prefix=prefix + "/")
        for obj in page.get("Contents", [])
    )


def delete_prefix(endpoint: str, prefix: str) -> None:
    client = _client(endpoint)
    pages = client.get_paginator("list_objects_v2")
    for page in pages.paginate(Bucket=BUCKET, Prefix=prefix + "/"):
        keys = [{"Key": obj["Key"]} for obj in page.get("Contents", [])]
        if keys:
            client.delete_objects(Bucket=BUCKET, Delete={"Objects": keys})


# -- writers (in the child) ----------------------------------------------------------------
def run_acqwriter(sc: Scenario, endpoint: str, prefix: str, frame: Any) -> dict[str, Any]:
    from acqwriter import open_stream

    spec = acqwriter_spec(sc, Path("unused"), io="auto")
    spec["out"] = f"s3://{BUCKET}/{prefix}"
    spec.pop("io")
    stream = open_stream(spec)
    for i in range(sc.frames):
        stream.append(frame(i))
    summary = stream.close()
    assert summary.state == "complete", summary.error
    return {}


def run_acquire_zarr(sc: Scenario, endpoint: str, prefix: str, frame: Any) -> dict[str, Any]:
    import acquire_zarr as az

    dims = [
        az.Dimension(
            name="t", kind=az.DimensionType.TIME, array_size_px=0, chunk_size_px=1,
            shard_size_chunks=1,
        ),
        az.Dimension(
            name="y", kind=az.DimensionType.SPACE, array_size_px=sc.shape[0],
            chunk_size_px=sc.shape[0], shard_size_chunks=1,
        ),
        az.Dimension(
            name="x", kind=az.DimensionType.SPACE, array_size_px=sc.shape[1],
            chunk_size_px=sc.shape[1], shard_size_chunks=1,
        ),
    ]  # fmt: skip
    settings = az.StreamSettings(
        store_path=prefix,
        s3=az.S3Settings(endpoint=endpoint, bucket_name=BUCKET, region="us-east-1"),
        overwrite=True,
        arrays=[
            az.ArraySettings(
                dimensions=dims,
                data_type=np.uint16,
                compression=az.CompressionSettings(
                    compressor=az.Compressor.BLOSC1,
                    codec=az.CompressionCodec.BLOSC_LZ4,
                    level=5,
                    shuffle=1,
                ),
            )
        ],
    )
    stream = az.ZarrStream(settings)
    for i in range(sc.frames):
        stream.append(frame(i))
    stream.close()
    return {}


def run_tensorstore(sc: Scenario, endpoint: str, prefix: str, frame: Any) -> dict[str, Any]:
    import tensorstore as ts

    spec = {
        "driver": "zarr3",
        "kvstore": {
            "driver": "s3",
            "bucket": BUCKET,
            "path": prefix + "/",
            "endpoint": endpoint,
            "aws_region": "us-east-1",
            "aws_credentials": {"type": "environment"},
        },
        "metadata": {
            "shape": list(sc.full_shape),
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
    for i in range(sc.frames):
        pending.append(arr[i].write(frame(i).copy()))
        if len(pending) >= 8:
            pending.pop(0).result()
    for f in pending:
        f.result()
    return {}


def run_ceiling(sc: Scenario, endpoint: str, prefix: str, nbytes: int) -> dict[str, Any]:
    import obstore
    from obstore.store import S3Store

    store = S3Store(
        BUCKET, endpoint=endpoint, region="us-east-1", client_options={"allow_http": True}
    )
    part = os.urandom(5 << 20)  # incompressible, as compressed chunks are
    with obstore.open_writer(store, f"{prefix}/upload", buffer_size=5 << 20) as writer:
        for start in range(0, nbytes, len(part)):
            writer.write(part[: min(len(part), nbytes - start)])
    return {}


def run_ceiling_puts(sc: Scenario, endpoint: str, prefix: str, nbytes: int) -> dict[str, Any]:
    """The same bytes as whole objects of a compressed frame's size, PUT from 8
    threads at once (what a writer of unsharded chunks can reach)."""
    from concurrent.futures import ThreadPoolExecutor

    import obstore
    from obstore.store import S3Store

    store = S3Store(
        BUCKET, endpoint=endpoint, region="us-east-1", client_options={"allow_http": True}
    )
    size = max(1, sc.shape[0] * sc.shape[1])  # about a compressed frame (2 bytes raw)
    body = os.urandom(size)
    count = max(1, nbytes // size)
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: obstore.put(store, f"{prefix}/o{i}", body), range(count)))
    return {}


def child(args: argparse.Namespace) -> None:
    sc = scenarios(args.frames_a, args.frames_d)[args.scenario]
    frame, _ = frame_source(sc)
    frame(0)  # the frame bank is built before the clock starts
    t0 = time.perf_counter()
    if args.writer == "ceiling":
        run_ceiling(sc, args.endpoint, args.prefix, args.nbytes)
    elif args.writer == "ceiling-puts":
        run_ceiling_puts(sc, args.endpoint, args.prefix, args.nbytes)
    else:
        runner = {
            "acqwriter": run_acqwriter,
            "acquire-zarr": run_acquire_zarr,
            "tensorstore": run_tensorstore,
        }[args.writer]
        runner(sc, args.endpoint, args.prefix, frame)
    seconds = time.perf_counter() - t0
    print(json.dumps({"seconds": seconds, "peak_rss_mb": peak_rss_mb()}))


# -- the parent ----------------------------------------------------------------------------
def read_back(sc: Scenario, endpoint: str, prefix: str, path0: str) -> bool:
    """The first and last frames as tensorstore reads them from the bucket equal what
    was appended."""
    import tensorstore as ts

    frame, _ = frame_source(sc)
    spec = {
        "driver": "zarr3",
        "kvstore": {
            "driver": "s3",
            "bucket": BUCKET,
            "path": f"{prefix}/{path0}/" if path0 else prefix + "/",
            "endpoint": endpoint,
            "aws_region": "us-east-1",
            "aws_credentials": {"type": "environment"},
        },
    }
    arr = ts.open(spec).result()
    last = sc.frames - 1
    return bool(
        np.array_equal(arr[0].read().result(), frame(0))
        and np.array_equal(arr[last].read().result(), frame(last))
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenarios", default="a,d")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--frames-a", type=int, default=64)
    parser.add_argument("--frames-d", type=int, default=1500)
    parser.add_argument("--writers", default=",".join(WRITERS))
    parser.add_argument("--json", type=Path)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--writer", help=argparse.SUPPRESS)
    parser.add_argument("--scenario", help=argparse.SUPPRESS)
    parser.add_argument("--endpoint", help=argparse.SUPPRESS)
    parser.add_argument("--prefix", help=argparse.SUPPRESS)
    parser.add_argument("--nbytes", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    os.environ.update(CREDENTIALS)
    server, endpoint = start_server()
    os.environ["AWS_ENDPOINT_URL"] = endpoint
    writers = args.writers.split(",")
    results: dict[str, dict[str, list[dict[str, Any]]]] = {}
    try:
        for name in args.scenarios.split(","):
            sc = scenarios(args.frames_a, args.frames_d)[name]
            raw = sc.frames * sc.shape[0] * sc.shape[1] * 2
            per: dict[str, list[dict[str, Any]]] = {w: [] for w in writers}
            nbytes = raw // 2
            for rep in range(args.repeats):
                for writer in writers:
                    prefix = f"{name}-{writer}-{rep}"
                    cmd = [
                        sys.executable, __file__, "--child", "--writer", writer,
                        "--scenario", name, "--endpoint", endpoint, "--prefix", prefix,
                        "--frames-a", str(args.frames_a), "--frames-d", str(args.frames_d),
                        "--nbytes", str(nbytes),
                    ]  # fmt: skip
                    run = subprocess.run(cmd, capture_output=True, text=True)
                    if run.returncode != 0:
                        print(f"{name} {writer}: failed: {run.stderr.strip()[-300:]}", flush=True)
                        delete_prefix(endpoint, prefix)
                        continue
                    result = json.loads(run.stdout.strip().splitlines()[-1])
                    result["stored_bytes"] = stored_bytes(endpoint, prefix)
                    if writer == "acqwriter" and rep == 0:
                        nbytes = result["stored_bytes"]  # the ceiling uploads as much
                    if rep == 0 and writer in ("acqwriter", "acquire-zarr", "tensorstore"):
                        path0 = "0" if writer == "acqwriter" else ""  # the others: the root
                        try:
                            result["read_back_exact"] = read_back(sc, endpoint, prefix, path0)
                        except ValueError as exc:  # not readable as written
                            print(f"{name} {writer}: read back failed: {exc}"[:300], flush=True)
                            result["read_back_exact"] = False
                    result["raw_mb_s"] = raw / result["seconds"] / 1e6
                    result["stored_mb_s"] = result["stored_bytes"] / result["seconds"] / 1e6
                    per[writer].append(result)
                    print(
                        f"{name} {writer:13s} rep {rep}: {result['seconds']:.2f} s "
                        f"{result['raw_mb_s']:7.1f} MB/s raw, {result['stored_mb_s']:6.1f} "
                        f"MB/s stored, peak RSS {result['peak_rss_mb']:.0f} MB",
                        flush=True,
                    )
                    delete_prefix(endpoint, prefix)
            results[name] = per
            report(name, per)
    finally:
        server.terminate()
        server.wait()
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


def report(name: str, per: dict[str, list[dict[str, Any]]]) -> None:
    print(f"\nscenario {name}: median (min–max); stored MB/s against the ceiling's")
    ceilings = [per.get(name) or [] for name in ("ceiling", "ceiling-puts")]
    tops = [statistics.median(r["stored_mb_s"] for r in runs) for runs in ceilings if runs]
    top = max(tops) if tops else None  # the faster way of putting the bytes there
    ours = per.get("acqwriter") or []
    for writer, runs in per.items():
        if not runs:
            print(f"  {writer:13s} no successful run")
            continue
        raw = [r["raw_mb_s"] for r in runs]
        stored = [r["stored_mb_s"] for r in runs]
        rss = [r["peak_rss_mb"] for r in runs]
        line = (
            f"  {writer:13s} raw {statistics.median(raw):7.1f} ({min(raw):.1f}–{max(raw):.1f}) "
            f"stored {statistics.median(stored):6.1f} MB/s, RSS {statistics.median(rss):.0f} MB"
        )
        if top:
            line += f", {statistics.median(stored) / top:.2f} of the ceiling"
        if ours and writer not in ("acqwriter", "ceiling", "ceiling-puts"):
            pairs = [
                a["seconds"] and b["seconds"] / a["seconds"]
                for a, b in zip(ours, runs, strict=False)
            ]
            line += f", acqwriter ÷ it (time ratio, pairs) {statistics.median(pairs):.2f}"
        if "read_back_exact" in runs[0]:
            line += f", read back exact: {runs[0]['read_back_exact']}"
        print(line, flush=True)


if __name__ == "__main__":
    main()
