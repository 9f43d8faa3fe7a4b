"""The object store (:class:`acqwriter.store.objects.ObjectStore`) against a real
S3-compatible server on the loopback (moto's server mode, as zarr-python's own tests
use): the store interface's guarantees, and a dataset written through it by the engine,
read back with zarr-python."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("obstore")
moto_server = pytest.importorskip("moto.server")

from acqwriter import open_stream  # noqa: E402
from acqwriter.store.objects import LOCK_NAME, ObjectStore  # noqa: E402


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """A moto S3 server on 127.0.0.1 (a free port) and a bucket; its endpoint URL."""
    import boto3

    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id="test",
        aws_secret_access_key="test",
        region_name="us-east-1",
    ).create_bucket(Bucket="lab")
    yield endpoint
    server.stop()


def _store(endpoint: str, prefix: str) -> ObjectStore:
    return ObjectStore.from_url(
        f"s3://lab/{prefix}",
        config={
            "endpoint": endpoint,
            "access_key_id": "test",
            "secret_access_key": "test",
            "region": "us-east-1",
        },
        client_options={"allow_http": True},
    )


def test_writes_reads_and_lists_objects(s3):
    store = _store(s3, "basic")
    buf, _ = store.scratch(10)
    memoryview(buf)[:10] = b"0123456789"
    assert store.write_chunk_from("0/c/0/0/0", 10) == 10
    store.write_atomic("zarr.json", b'{"a": 1}')
    store.write_atomic("zarr.json", b'{"a": 2}')  # replaced whole
    assert store.read_bytes("0/c/0/0/0") == b"0123456789"
    assert store.read_range("0/c/0/0/0", 3, 4) == b"3456"
    assert store.read_bytes("zarr.json") == b'{"a": 2}'
    assert store.size("0/c/0/0/0") == 10
    assert store.list_dir() == ["0", "zarr.json"] and store.list_dir("0/c") == ["0"]
    with pytest.raises(FileNotFoundError):
        store.read_bytes("nothing")
    store.remove_tree("0")
    assert store.list_dir() == ["zarr.json"]
    store.remove("nothing")  # absent is fine


def test_line_log_grows_by_whole_appends(s3):
    store = _store(s3, "lines")
    store.append_lines("0/frame_metadata.jsonl", b'{"index": 0}\n{"index": 1}\n')
    store.append_lines("0/frame_metadata.jsonl", b'{"index": 2}\n')
    again = _store(s3, "lines")  # another client, as a reader is
    lines = again.read_bytes("0/frame_metadata.jsonl").splitlines()
    assert lines == [b'{"index": 0}', b'{"index": 1}', b'{"index": 2}']


def test_a_shard_written_out_of_order_is_read_while_open_and_published_whole(s3):
    store = _store(s3, "shards")
    part = 6 * 2**20 + 123  # more than one multipart part
    segments = [bytes([i]) * part for i in range(3)]
    sink = store.open_shard("0/c/0/.shard.tmp")
    sink.write(segments[2], part, 2 * part)  # any order, as writer threads finish
    sink.write(segments[0], part, 0)
    assert store.read_range("0/c/0/.shard.tmp", 0, 4) == b"\x00" * 4  # a seal's read-back
    sink.write(segments[1], part, part)
    sink.finish(3 * part)
    store.publish("0/c/0/.shard.tmp", "0/c/0/0")
    assert store.read_bytes("0/c/0/0") == b"".join(segments)
    assert not store.exists("0/c/0/.shard.tmp")


def test_a_second_writer_on_one_prefix_is_refused(s3):
    first, second = _store(s3, "locked"), _store(s3, "locked")
    first.take_lock()
    with pytest.raises(FileExistsError, match="another writer holds it"):
        second.take_lock()
    first.release_lock()
    second.take_lock()  # free again once the first is done
    assert second.exists(LOCK_NAME)
    second.release_lock()


@pytest.mark.parametrize("shards", ["none", "auto"])
def test_the_engine_writes_a_dataset_readers_open(s3, tmp_path, shards):
    import obstore.store
    import zarr

    store = _store(s3, f"run-{shards}.ome.zarr")
    store.take_lock()
    rng = np.random.default_rng(4)
    frames = rng.poisson(300, (40, 64, 80)).astype(np.uint16)
    spec = {
        "out": str(tmp_path / "unused.ome.zarr"),  # the store given is where it goes
        "shape": (64, 80),
        "dtype": "uint16",
        "shards": shards,
        "shard_seal_s": 0.05,
        "pyramid": {"when": "live", "levels": 2},
    }
    with open_stream(spec, store=store) as stream:
        for frame in frames:
            stream.append(frame)
    assert stream.summary.state == "complete" and stream.summary.frames_written == 40
    assert not store.exists(LOCK_NAME)  # released at close
    reader = zarr.storage.ObjectStore(
        obstore.store.S3Store(
            "lab",
            prefix=f"run-{shards}.ome.zarr",
            endpoint=s3,
            access_key_id="test",
            secret_access_key="test",
            region="us-east-1",
            client_options={"allow_http": True},
        ),
        read_only=True,
    )
    group = zarr.open_group(store=reader, mode="r")
    assert group.attrs["acqwriter"]["state"] == "complete"
    np.testing.assert_array_equal(group["0"][...], frames)
    assert group["1"].shape == (40, 32, 40)
    lines = store.read_bytes("0/frame_metadata.jsonl").splitlines()
    assert len(lines) == 40
