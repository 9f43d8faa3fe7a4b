"""The object store (:class:`acqwriter.store.objects.ObjectStore`) against a real
S3-compatible server on the loopback (moto's server mode, as zarr-python's own tests
use): the store interface's guarantees, and a dataset written through it by the engine,
read back with zarr-python."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("obstore")
pytest.importorskip("moto.server")

import s3 as s3_helpers  # the fixture below is named s3

import acqwriter
from acqwriter import SpecError, open_stream
from acqwriter.store.objects import LOCK_NAME, ObjectStore


@pytest.fixture
def s3(s3_endpoint):
    return s3_endpoint


def _store(endpoint: str, prefix: str) -> ObjectStore:
    return ObjectStore.from_url(f"s3://lab/{prefix}", options=_options(endpoint))


def _options(endpoint: str) -> dict[str, str]:
    return {
        "endpoint": endpoint,
        "access_key_id": "test",
        "secret_access_key": "test",
        "region": "us-east-1",
    }


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


def test_line_log_grows_by_whole_appends_in_bounded_segments(s3, monkeypatch):
    from acqwriter.store import objects

    monkeypatch.setattr(objects, "LOG_SEGMENT_BYTES", 64)  # a few lines a segment
    store = _store(s3, "lines")
    log = "0/frame_metadata.jsonl"
    store.append_lines(log, b'{"index": 0}\n{"index": 1}\n')
    store.append_lines(log, b'{"index": 2}\n')
    records = [b'{"index": %d}' % i for i in range(12)]
    for i in range(3, 12):
        store.append_lines(log, records[i] + b"\n")
    again = _store(s3, "lines")  # another client, as a reader is
    assert again.read_lines(log).splitlines() == records
    segments = again.list_dir("0")
    assert segments[0] == "frame_metadata.jsonl" and len(segments) > 2  # rolled over
    assert all(again.size(f"0/{name}") <= 64 for name in segments)  # each append's upload
    # a store that continues a log it did not start appends after its last segment
    store2 = _store(s3, "lines")
    store2.append_lines(log, b'{"index": 12}\n')
    assert again.read_lines(log).splitlines() == [*records, b'{"index": 12}']


def test_a_shard_streams_in_order_is_sealed_and_appears_whole_only_when_finished(s3):
    store = _store(s3, "shards")
    part = 6 * 2**20 + 123  # more than one multipart part
    segments = [bytes([i + 1]) * part for i in range(4)]
    sink = store.open_shard("0/c/0/0")
    assert sink.parts_in_order
    sink.write(segments[1], part, part)  # ahead of a gap: waits in memory
    assert s3_helpers.uploads(s3, "shards/") == []
    sink.write(segments[0], part, 0)  # fills the gap: both stream
    assert s3_helpers.uploads(s3, "shards/") == ["shards/0/c/0/0"]
    assert not store.exists("0/c/0/0")  # an upload in progress is no object
    sink.seal(2 * part, b"TAIL")  # the shard so far, valid, at its key
    assert store.read_bytes("0/c/0/0") == segments[0] + segments[1] + b"TAIL"
    sink.write(segments[3], part, 3 * part)
    sink.write(segments[2], part, 2 * part)
    assert store.read_bytes("0/c/0/0").endswith(b"TAIL")  # the sealed copy until the finish
    sink.finish(4 * part)
    assert store.read_bytes("0/c/0/0") == b"".join(segments)
    assert store.list_dir("0/c/0") == ["0"]  # no temporary object, no copy
    assert s3_helpers.uploads(s3, "shards/") == []


def test_an_abandoned_shard_leaves_no_object_and_no_upload(s3):
    store = _store(s3, "gone")
    sink = store.open_shard("0/c/1")
    sink.write(b"x" * (6 * 2**20), 6 * 2**20, 0)
    assert s3_helpers.uploads(s3, "gone/") == ["gone/0/c/1"]
    sink.abandon()
    assert s3_helpers.uploads(s3, "gone/") == [] and not store.exists("0/c/1")
    with pytest.raises(OSError, match="abandoned"):
        sink.write(b"y", 1, 6 * 2**20)


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
    group = s3_helpers.group(s3, f"run-{shards}.ome.zarr")
    assert group.attrs["acqwriter"]["state"] == "complete"
    np.testing.assert_array_equal(group["0"][...], frames)
    assert group["1"].shape == (40, 32, 40)
    lines = store.read_lines("0/frame_metadata.jsonl").splitlines()
    assert len(lines) == 40


def _spec(endpoint: str, out: str, **fields) -> dict:
    return {
        "out": out,
        "shape": (48, 64),
        "dtype": "uint16",
        "storage_options": _options(endpoint),
        **fields,
    }


def _zarr_group(endpoint: str, prefix: str):
    return s3_helpers.group(endpoint, prefix)


@pytest.mark.parametrize("ngff_version", ["0.5", "0.4"])
def test_a_stream_to_an_s3_url_reads_back_exactly(s3, ngff_version):
    out = f"s3://lab/url-{ngff_version}.ome.zarr"
    frames = np.random.default_rng(5).poisson(200, (30, 48, 64)).astype(np.uint16)
    spec = _spec(s3, out, ngff_version=ngff_version, pyramid={"when": "live", "levels": 2})
    with open_stream(spec) as stream:
        for frame in frames:
            stream.append(frame)
    summary = stream.summary
    assert summary.state == "complete" and summary.frames_written == 30
    assert summary.path == out
    group = _zarr_group(s3, f"url-{ngff_version}.ome.zarr")
    np.testing.assert_array_equal(group["0"][...], frames)
    assert group["1"].shape == (30, 24, 32)
    # the credentials are nowhere in what was written
    store = _store(s3, f"url-{ngff_version}.ome.zarr")
    root = "zarr.json" if ngff_version == "0.5" else ".zattrs"
    document = store.read_bytes(root).decode()
    assert "storage_options" not in document and "secret_access_key" not in document
    assert out in document  # where it is, as a URL


def test_tensorstore_reads_what_was_streamed_to_s3(s3, monkeypatch):
    ts = pytest.importorskip("tensorstore")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    frames = np.random.default_rng(6).poisson(90, (12, 48, 64)).astype(np.uint16)
    with open_stream(_spec(s3, "s3://lab/ts.ome.zarr", shards="none")) as stream:
        for frame in frames:
            stream.append(frame)
    array = ts.open(
        {
            "driver": "zarr3",
            "kvstore": {
                "driver": "s3",
                "bucket": "lab",
                "path": "ts.ome.zarr/0/",
                "endpoint": s3,
                "aws_region": "us-east-1",
                "aws_credentials": {"type": "environment"},
            },
        },
        read=True,
    ).result()
    np.testing.assert_array_equal(array.read().result(), frames)


def test_a_plate_streams_to_s3(s3, aws_env):
    image = {"shape": [48, 64], "dtype": "uint16", "dims": "tcyx", "sizes": {"t": 2, "c": 2}}
    spec = {
        "out": "s3://lab/plate.ome.zarr",
        "layout": "plate",
        "plate": {"rows": 1, "columns": 2},
        "images": {"A/1/0": image, "A/2/0": image},
        "storage_options": _options(s3),
    }
    frames = np.random.default_rng(7).poisson(50, (8, 48, 64)).astype(np.uint16)
    with acqwriter.open_dataset(spec) as dataset:
        for i, key in enumerate(["A/1/0", "A/2/0"]):
            for t in range(2):
                for c in range(2):
                    dataset.append(frames[4 * i + 2 * t + c], image=key, index={"t": t, "c": c})
    group = _zarr_group(s3, "plate.ome.zarr")
    assert [w["path"] for w in group.attrs["ome"]["plate"]["wells"]] == ["A/1", "A/2"]
    np.testing.assert_array_equal(group["A/2/0/0"][...], frames[4:].reshape(2, 2, 48, 64))
    from acqwriter.post.info import dataset_info, format_info

    info = dataset_info("s3://lab/plate.ome.zarr")  # credentials from the AWS environment
    assert info["layout"] == "plate" and info["state"] == "complete"
    assert info["images"]["A/2/0"]["path"] == "s3://lab/plate.ome.zarr/A/2/0"
    assert info["images"]["A/2/0"]["shape"] == [2, 2, 48, 64]
    assert info["frames_recorded"] == 8 and info["stored_bytes"] > 0
    assert "A/2/0: A/2/0  shape (2, 2, 48, 64)" in format_info(info)


def test_an_existing_dataset_is_replaced_only_with_overwrite(s3):
    out = "s3://lab/again.ome.zarr"
    with open_stream(_spec(s3, out)) as stream:
        stream.append(np.ones((48, 64), np.uint16))
    with pytest.raises(SpecError, match=r"already exists \(set overwrite to replace it\)"):
        open_stream(_spec(s3, out))
    with open_stream(_spec(s3, out, overwrite=True)) as stream:
        stream.append(np.full((48, 64), 7, np.uint16))
        stream.append(np.full((48, 64), 8, np.uint16))
    assert _zarr_group(s3, "again.ome.zarr")["0"].shape[0] == 2


def test_a_second_writer_on_a_prefix_and_a_missing_bucket_are_refused_up_front(s3):
    out = "s3://lab/busy.ome.zarr"
    first = open_stream(_spec(s3, out))
    try:
        with pytest.raises(SpecError, match="being written by another writer"):
            open_stream(_spec(s3, out, overwrite=True))
    finally:
        first.close()
    spec = _spec(s3, "s3://no-such-bucket/run.ome.zarr")
    spec["storage_options"] |= {"access_key_id": "AKID-4F2C", "secret_access_key": "Se-9b1E"}
    with pytest.raises(SpecError) as info:
        open_stream(spec)
    message = str(info.value)
    assert message.startswith("out: cannot reach s3://no-such-bucket/run.ome.zarr")
    assert "NoSuchBucket" in message and "\n" not in message
    assert "AKID-4F2C" not in message and "Se-9b1E" not in message


@pytest.mark.parametrize("value", ["0", "soon", "7200", "nan"])
def test_a_retry_timeout_that_is_not_seconds_is_refused_naming_the_option(s3, value):
    spec = _spec(s3, "s3://lab/retry.ome.zarr")
    spec["storage_options"] |= {"retry_timeout_s": value}
    with pytest.raises(SpecError) as info:
        open_stream(spec)
    assert str(info.value) == (
        f"out: storage_options.retry_timeout_s: expected seconds from 1 to 3600, got {value!r}"
    )


@pytest.mark.parametrize(
    ("out", "words"),
    [
        ("gs://lab/run.ome.zarr", "'gs' URLs are not supported"),
        ("s3://lab", "a dataset needs a prefix of its own"),
        ("s3://lab/a/../b", "without empty, '.' or '..' parts"),
    ],
)
def test_a_url_that_cannot_be_a_dataset_names_what_is_wrong(out, words):
    with pytest.raises(SpecError, match="out") as info:
        open_stream({"out": out, "shape": (8, 8), "dtype": "uint8"})
    assert words in str(info.value) and "\n" not in str(info.value)


def test_a_stalled_upload_holds_the_writer_threads_back_instead_of_growing_memory(s3, monkeypatch):
    """Segments that arrive behind a stalled upload wait in memory only up to
    AHEAD_BYTES; past it the threads that bring them wait (as on a slow disk), so they
    fill no more segments and the ring absorbs the frames."""
    import threading

    from acqwriter.store import object_shards

    part = 6 * 2**20
    monkeypatch.setattr(object_shards, "AHEAD_BYTES", 3 * part)
    store = _store(s3, "stall")
    sink = store.open_shard("0/c/0")
    gate = threading.Event()
    real_open = sink._open

    class StalledUpload:
        """Fault injection around the real upload: its writes wait for ``gate`` (a
        network that stopped answering)."""

        def __init__(self, inner):
            self.inner = inner

        def write(self, data):
            gate.wait()
            return self.inner.write(data)

        def close(self):
            self.inner.close()

        def __exit__(self, *exc):
            return self.inner.__exit__(*exc)

    sink._open = lambda: StalledUpload(real_open())
    segments = [bytes([i + 1]) * part for i in range(7)]
    done: list[int] = []
    threads = [
        threading.Thread(
            target=lambda i=i: (sink.write(segments[i], part, i * part), done.append(i))
        )
        for i in range(7)
    ]
    threads[0].start()  # takes the streaming role and stalls in the upload
    while not sink._streaming:
        threading.Event().wait(0.01)
    for thread in threads[1:]:
        thread.start()
    while len(sink._ahead) < 6:  # every later segment has arrived
        threading.Event().wait(0.01)
    while len(done) < 3:
        threading.Event().wait(0.01)
    # within AHEAD_BYTES: returned (the first three to arrive, in whatever order the
    # threads ran); the rest cannot until the upload moves
    assert len(done) == 3 and set(done) <= set(range(1, 7))
    assert sink._ahead_bytes == 6 * part  # the waiting threads fill nothing more
    gate.set()  # the network answers again
    for thread in threads:
        thread.join()
    assert sorted(done) == list(range(7))
    sink.finish(7 * part)
    assert store.read_bytes("0/c/0") == b"".join(segments)


def test_a_failed_request_is_one_line_naming_the_server_and_the_retries():
    """The two ways obstore reports a server that does not answer: retried by the client
    (connection refused), and failed while being sent on a pooled connection (not
    retried by the client; ``ObjectStore`` retries such a PUT itself)."""
    from acqwriter.store.objects import _UNSENT, _reason

    refused = Exception(
        "Generic S3 error: Error performing PUT http://127.0.0.1:9/b/k in 2.1s, after 9 "
        "retries, max_retries: 100 - HTTP error: error sending request ... Os { code: 111, "
        'kind: ConnectionRefused, message: "Connection refused" }'
    )
    expected = "http://127.0.0.1:9: connection refused (gave up after 11 retries)"
    assert _reason(refused, 2) == expected
    unsent = Exception(
        "Generic S3 error: Error performing PUT http://127.0.0.1:46293/r/g.ome.zarr/0/zarr.json"
        " in 255.589µs - HTTP error: error sending request"
    )
    assert _UNSENT.search(str(unsent)) and not _UNSENT.search(str(refused))
    assert _reason(unsent, 5) == "http://127.0.0.1:46293: no answer (gave up after 5 retries)"


def test_a_pyramid_build_log_in_segments_is_dropped_whole(s3, monkeypatch):
    """A cluster build's log on a bucket is several segments once it is long; dropping
    it leaves none behind, so the next build's log holds only its own lines."""
    from acqwriter.post.cluster import BUILD_LOG, drop_build_log
    from acqwriter.store import objects

    monkeypatch.setattr(objects, "LOG_SEGMENT_BYTES", 64)
    store = _store(s3, "buildlog")
    for b in range(12):
        store.append_lines(BUILD_LOG, b'{"level": 1, "batch": %d}\n' % b)
    assert len([n for n in store.list_dir() if n.startswith(BUILD_LOG)]) > 2
    drop_build_log(store)
    assert not [n for n in _store(s3, "buildlog").list_dir() if n.startswith(BUILD_LOG)]
    fresh = _store(s3, "buildlog")  # the next build, another process
    fresh.append_lines(BUILD_LOG, b'{"header": 1}\n')
    store.append_lines(BUILD_LOG, b'{"level": 1, "batch": 0}\n')  # the first store again
    assert fresh.read_lines(BUILD_LOG).splitlines() == [
        b'{"header": 1}',
        b'{"level": 1, "batch": 0}',
    ]
