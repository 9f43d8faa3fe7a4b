"""Faults on object storage, against a real S3-compatible server on the loopback (moto's
server mode): a writer SIGKILLed at random moments then ``recover`` on the bucket, the
server stopped and restarted mid-acquisition, a server that is not there, refused
credentials, and a killed writer's lock."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import s3

from acqwriter import open_stream
from acqwriter.post.downsample import downsample
from acqwriter.post.info import dataset_info
from acqwriter.post.recover import RecoverError, recover
from acqwriter.simulators import FrameBank, read_stamp
from helpers import run_cli

pytest.importorskip("obstore")
HERE = Path(__file__).resolve().parents[1]  # tests/: helper scripts
SHAPE = (48, 40)  # crash_writer.py's frames


def _level(endpoint: str, prefix: str, path: str) -> np.ndarray:
    """A level read back by tensorstore's ``s3`` kvstore (zarr-python's sharded reads
    are one request per inner chunk: seconds per check against moto)."""
    import tensorstore as ts

    spec = {
        "driver": "zarr3",
        "kvstore": {
            "driver": "s3",
            "bucket": "lab",
            "path": f"{prefix}/{path}/",
            "endpoint": endpoint,
            "aws_region": "us-east-1",
            "aws_credentials": {"type": "environment"},
        },
    }
    return ts.open(spec).result().read().result()


def _assert_exact(endpoint: str, prefix: str, seed: int) -> int:
    """Every frame inside the extent is exactly the writer's; returns the extent."""
    data = _level(endpoint, prefix, "0")
    bank = FrameBank(SHAPE, "uint16", size=3, seed=seed)
    for i, frame in enumerate(data):
        assert read_stamp(frame) == i, f"frame {i} carries stamp {read_stamp(frame)}"
        np.testing.assert_array_equal(frame, bank.frame(i))
    return data.shape[0]


def _start_writer(url: str, seed: int, shards: str) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "crash_writer.py"), url, str(seed), "close", shards],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    line = proc.stdout.readline()
    assert line.strip() == "ready", proc.stderr.read()
    return proc


@pytest.mark.parametrize("shards", ["none", "auto"])
def test_sigkill_at_random_moments_then_recover_on_the_bucket(aws_env, shards):
    """``auto``: every shard is streamed as a multipart upload and sealed often, so
    kills land mid-upload; recover aborts those uploads and finishes the dataset."""
    rng = random.Random(20261207)
    extents = []
    kills = 3  # each one a few seconds against moto (a Python server)
    for k in range(kills):
        prefix = f"kill-{shards}-{k}.ome.zarr"
        url = f"s3://lab/{prefix}"
        proc = _start_writer(url, k, shards)
        # moments spread over the run (the k-th in its own window): a busy machine slows
        # the Python S3 server, and kills close together could land on one commit
        time.sleep(rng.uniform(0.2, 0.6) + 0.7 * k)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        assert proc.returncode == -signal.SIGKILL
        extent = _assert_exact(aws_env, prefix, k)  # valid and exact as the kill left it
        assert ".acqwriter.lock" in s3.keys(aws_env, prefix)  # the dead writer's
        assert dataset_info(url)["writer"] == "gone"  # its lock names a dead process
        account = recover(url)  # its holder is gone: the lock is taken over at once
        recovered = _assert_exact(aws_env, prefix, k)
        assert recovered == account["rows"] >= extent
        attrs = s3.group(aws_env, prefix).attrs.asdict()
        assert attrs["acqwriter"]["state"] == "recovered"
        if recovered:
            assert len(attrs["ome"]["multiscales"][0]["datasets"]) == 2
            level1 = _level(aws_env, prefix, "1")
            level0 = _level(aws_env, prefix, "0")
            np.testing.assert_array_equal(level1, downsample(level0, (1, 2, 2), "mean"))
        keys = s3.keys(aws_env, prefix)
        assert ".acqwriter.lock" not in keys and not any(k.endswith(".tmp") for k in keys)
        assert s3.uploads(aws_env, prefix) == []
        # the per-frame records are exactly the recovered frames'
        lines = b"".join(
            bytes(s3.store(aws_env, prefix).get(key).bytes())
            for key in sorted(
                (k for k in keys if "frame_metadata.jsonl" in k),
                key=lambda k: int(k.rpartition(".")[2]) if k[-1].isdigit() else 0,
            )
        ).splitlines()
        assert [json.loads(line)["index"] for line in lines] == list(range(recovered))
        again = recover(url)  # idempotent
        assert again["nothing_to_recover"] and again["state"] == "recovered"
        extents.append(recovered)
    assert len(set(extents)) >= 2 and max(extents) > 10  # kills at different moments


def test_a_live_writer_on_the_bucket_is_not_recovered_and_a_second_is_refused(aws_env, tmp_path):
    url = "s3://lab/live.ome.zarr"
    proc = _start_writer(url, 1, "none")
    try:
        assert dataset_info(url)["writer"] == "alive"
        with pytest.raises(RecoverError, match="a live writer holds the lock"):
            recover(url)
        second = run_cli(
            "acquire", "--camera", "sim", "--frames", "2", "--out", url, "--overwrite",
            cwd=tmp_path,
        )  # fmt: skip
        assert second.returncode == 2
        assert "being written by another writer (locked)" in second.stderr
        assert f"process {proc.pid}" in second.stderr  # who holds it
    finally:
        proc.kill()
        proc.wait(30)


def test_a_killed_writer_on_another_host_is_taken_over_only_after_its_silence(aws_env, monkeypatch):
    """A lock whose holder cannot be asked (another host) is stale only after
    STALE_AFTER_S without a heartbeat; a fresh one refuses."""
    import obstore

    from acqwriter.store import object_lock
    from acqwriter.store.objects import ObjectStore

    body = {"writer": "acqwriter", "host": "scope-pc-2", "pid": 4242, "process_started": 1.0}
    obstore.put(s3.store(aws_env, "far.ome.zarr"), ".acqwriter.lock", json.dumps(body).encode())
    store = ObjectStore.from_url("s3://lab/far.ome.zarr")
    with pytest.raises(FileExistsError, match="process 4242 on 'scope-pc-2', last heard"):
        store.take_lock()
    monkeypatch.setattr(object_lock, "STALE_AFTER_S", 0.0)
    store.take_lock()  # silent for longer than that: taken over
    held = json.loads(
        bytes(obstore.get(s3.store(aws_env, "far.ome.zarr"), ".acqwriter.lock").bytes())
    )
    assert held["pid"] == os.getpid()
    store.release_lock()
    assert ".acqwriter.lock" not in s3.keys(aws_env, "far.ome.zarr")


def test_a_writer_whose_lock_is_taken_over_stops_writing(aws_env, monkeypatch):
    import obstore

    from acqwriter.store import object_lock
    from acqwriter.store.objects import ObjectStore

    monkeypatch.setattr(object_lock, "HEARTBEAT_S", 0.05)
    store = ObjectStore.from_url("s3://lab/taken.ome.zarr")
    store.take_lock()
    store.write_atomic("a.json", b"{}")
    # another tool judged it dead and took the lock over (a new ETag)
    obstore.put(s3.store(aws_env, "taken.ome.zarr"), ".acqwriter.lock", b'{"pid": 1}')
    deadline = time.monotonic() + 60
    while store._lock is not None and not store._lock.lost and time.monotonic() < deadline:
        time.sleep(0.05)
    with pytest.raises(OSError, match="its writer lock was taken over; writing stopped"):
        store.write_atomic("b.json", b"{}")
    store.release_lock()  # not its lock any more: left alone
    assert ".acqwriter.lock" in s3.keys(aws_env, "taken.ome.zarr")


def _restartable_server():
    """A server on a port of its own, for a test to stop and start again there."""
    moto_server = pytest.importorskip("moto.server")
    server, endpoint = s3.start_server("restart")
    return moto_server, server, int(endpoint.rsplit(":", 1)[1]), endpoint


def test_the_server_stopped_and_restarted_mid_acquisition_loses_nothing():
    """The writes that meet the stopped server are retried with backoff; once it is
    back every frame is stored and the dataset is complete."""
    moto_server, server, port, endpoint = _restartable_server()
    options = {
        "endpoint": endpoint,
        "access_key_id": "test",
        "secret_access_key": "test",
        "region": "us-east-1",
    }
    rng = np.random.default_rng(3)
    frames = rng.poisson(200, (60, 96, 80)).astype(np.uint16)
    stopped, restarted = threading.Event(), threading.Event()
    servers = [server]

    def outage() -> None:
        stopped.wait()
        servers[0].stop()
        time.sleep(2.0)  # writes meet a refused connection meanwhile
        again = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        again.start()  # moto's buckets live in this process: they are all still there
        servers.append(again)
        restarted.set()

    thread = threading.Thread(target=outage)
    thread.start()
    try:
        spec = {
            "out": "s3://restart/run.ome.zarr",
            "storage_options": options,
            "shape": (96, 80),
            "dtype": "uint16",
            "commit_interval_s": 0.02,
            "pyramid": "live",
        }
        with open_stream(spec) as stream:
            for i, frame in enumerate(frames):
                stream.append(frame)
                if i == 20:
                    stopped.set()
                    time.sleep(0.3)  # the server goes away under the writer
        summary = stream.summary
        assert restarted.is_set()
        assert summary.state == "complete", summary.error
        assert summary.frames_written == 60 and summary.frames_dropped == 0
        group = s3.group(endpoint, "run.ome.zarr", "restart")
        np.testing.assert_array_equal(group["0"][...], frames)
        assert group.attrs["acqwriter"]["state"] == "complete"
    finally:
        thread.join()
        for s in servers:
            s.stop()


def test_refused_credentials_and_an_unreachable_server_stop_before_the_first_frame(
    aws_env, monkeypatch, tmp_path
):
    import moto.settings

    monkeypatch.setattr(moto.settings, "INITIAL_NO_AUTH_ACTION_COUNT", 0)  # keys checked
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "nobody")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
    run = run_cli(
        "acquire", "--camera", "sim", "--frames", "5", "--out", "s3://lab/x.ome.zarr",
        cwd=tmp_path,
    )  # fmt: skip
    assert run.returncode == 2, run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in run.stderr
    assert "cannot reach s3://lab/x.ome.zarr: InvalidAccessKeyId" in lines[0]
    assert "wrong" not in run.stderr  # the secret is never shown
    monkeypatch.setattr(moto.settings, "INITIAL_NO_AUTH_ACTION_COUNT", float("inf"))
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    gone = run_cli(
        "acquire", "--camera", "sim", "--frames", "5", "--out", "s3://lab/x.ome.zarr",
        cwd=tmp_path,
    )  # fmt: skip
    assert gone.returncode == 2, gone.stderr
    assert gone.stderr.strip().endswith(
        "cannot reach s3://lab/x.ome.zarr: http://127.0.0.1:9: connection refused "
        "(gave up after 4 retries)"
    ), gone.stderr
    assert ".acqwriter.lock" not in s3.keys(aws_env, "x.ome.zarr")


def _extent(endpoint: str) -> int:
    import obstore

    try:
        found = obstore.get(s3.store(endpoint, "gone.ome.zarr", "restart"), "0/zarr.json")
    except FileNotFoundError:
        return 0
    return json.loads(bytes(found.bytes()))["shape"][0]


def test_a_server_gone_for_longer_than_the_retries_stops_the_stream_then_recover_finishes(
    monkeypatch,
):
    """Past ``retry_timeout_s`` the write fails and the stream stops with the reason;
    what is on the server is a valid dataset of exact frames, which ``recover``
    finishes once the server is back."""
    import tensorstore as ts

    moto_server, server, port, endpoint = _restartable_server()
    for name, value in {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    frames = np.random.default_rng(8).poisson(200, (400, 64, 48)).astype(np.uint16)
    spec = {
        "out": "s3://restart/gone.ome.zarr",
        "storage_options": {"retry_timeout_s": "2"},
        "shape": (64, 48),
        "dtype": "uint16",
        "chunks": {"t": 4},
        "shards": "none",  # chunks PUT as they come (a shard would wait for its seal)
        "commit_interval_s": 0.02,
    }

    def stored() -> tuple[np.ndarray, str]:
        kv = {
            "driver": "s3",
            "bucket": "restart",
            "path": "gone.ome.zarr/",
            "endpoint": endpoint,
            "aws_region": "us-east-1",
            "aws_credentials": {"type": "environment"},
        }
        root = json.loads(ts.KvStore.open(kv).result().read("zarr.json").result().value)
        kv["path"] += "0/"
        level0 = ts.open({"driver": "zarr3", "kvstore": kv}).result().read().result()
        return level0, root["attributes"]["acqwriter"]["state"]

    servers = [server]
    try:
        stream = open_stream(spec)
        appended = 0
        for i, frame in enumerate(frames):
            if i == 40:
                while _extent(endpoint) == 0:  # some frames committed on the server
                    time.sleep(0.02)
                servers[0].stop()  # gone: no answer for longer than the retries
            try:
                stream.append(frame)
            except Exception:
                break
            appended += 1
        summary = stream.close()
        assert summary.state == "failed", summary
        assert summary.frames_received == appended and summary.frames_written > 0
        assert f"{endpoint}: " in summary.error and "gave up after" in summary.error
        assert "\n" not in summary.error
        again = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        again.start()  # back, with the same buckets (moto keeps them in this process)
        servers.append(again)
        while ".acqwriter.lock" in s3.keys(
            endpoint, "gone.ome.zarr", "restart"
        ):  # the writer's retried unlock
            time.sleep(0.1)
        level0, state = stored()  # what the server holds: valid, exact, and not finished
        assert 0 < level0.shape[0] <= appended and state == "acquiring"
        np.testing.assert_array_equal(level0, frames[: level0.shape[0]])
        account = recover("s3://restart/gone.ome.zarr")
        level0, state = stored()
        assert account["rows"] == level0.shape[0] and state == "recovered"
        np.testing.assert_array_equal(level0, frames[: level0.shape[0]])
    finally:
        for s in servers:
            s.stop()
