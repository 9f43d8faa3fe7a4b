"""The store interface: the engine, the shards, the pyramid and the reader run on any
:class:`acqwriter.store.base.Store`. An in-memory store proves it (no file is written
until the dataset is exported), and its capacity makes it a full disk."""

from __future__ import annotations

import errno
import json
import time

import numpy as np
import pytest

from acqwriter import StreamError, open_stream
from acqwriter.codec.chain import chunk_encoder
from acqwriter.post.reader import LevelReader
from acqwriter.simulators import FrameBank
from acqwriter.store.base import PartialAppend, StorageError
from acqwriter.store.create import create_local
from acqwriter.store.memory import MemoryStore
from helpers import check_dataset, frame_records, read_tensorstore, read_zarr

CASES = {
    "files": {"shards": "none"},
    "shards": {"shards": {"t": 4}},
    "sealed-t-shards": {"shards": {"t": 8}, "shard_seal_s": 0.01, "commit_interval_s": 0.01},
    "big-chunks-io-threads": {"shape": (1024, 1024)},
    "tiles-tcz": {
        "dims": "tczyx",
        "sizes": {"c": 2, "z": 3},
        "chunks": {"z": 3, "y": 32, "x": 32},
        "shape": (64, 64),
    },
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_stream_runs_entirely_in_memory(tmp_path, case):
    extra = dict(CASES[case])
    shape = tuple(extra.pop("shape", (64, 48)))
    per_t = 6 if "sizes" in extra else 1
    n = 12 * per_t
    bank = FrameBank(shape, "uint16", size=5, seed=3)
    store = MemoryStore()
    out = tmp_path / "mem.ome.zarr"
    spec = {"out": out, "shape": shape, "dtype": "uint16", **extra}
    with open_stream(spec, store=store) as stream:
        for i in range(n):
            stream.append(bank.frame(i), metadata={"i": i})
    summary = stream.summary
    assert summary.ok and summary.frames_written == n and summary.pyramid_levels >= 1
    assert not out.exists()  # nothing touched the filesystem
    assert "0/zarr.json" in store.objects and not any(k.endswith(".tmp") for k in store.objects)
    # the pyramid was built from the store too
    levels = json.loads(store.read_bytes("zarr.json"))["attributes"]["ome"]["multiscales"][0]
    assert len(levels["datasets"]) == summary.pyramid_levels
    # the reader reads it back from memory, exact
    reader = LevelReader(store, "0", chunk_encoder(stream.spec.codec))
    expected = np.stack([bank.frame(i) for i in range(n)])
    got = reader[tuple(slice(None) for _ in reader.shape)]
    np.testing.assert_array_equal(got.reshape(expected.shape), expected)
    # exported, it is a valid dataset every reader opens, with its per-frame metadata
    exported = store.to_directory(tmp_path / "exported.ome.zarr")
    check_dataset(exported)
    for read in (read_zarr, read_tensorstore):
        np.testing.assert_array_equal(read(exported).reshape(expected.shape), expected)
    assert [r["metadata"]["i"] for r in frame_records(exported)] == list(range(n))


def test_a_full_memory_store_fails_the_stream_cleanly(tmp_path):
    """A capacity reached mid-stream is a full disk: the stream fails with ENOSPC, the
    extent covers only frames whose chunks and metadata are stored, and they read back
    exact."""
    shape = (64, 64)
    bank = FrameBank(shape, "uint16", size=5, seed=4)
    store = MemoryStore(capacity=200_000 + 5 * 2**20)  # frames + the two reserves
    spec = {"out": tmp_path / "full.ome.zarr", "shape": shape, "dtype": "uint16"}
    spec |= {"shards": "none", "codec": "none", "disk_check": False, "min_free_bytes": 0}
    spec |= {"ring_bytes": 16 * 64 * 64 * 2}  # the writer, not the ring, meets the full store
    stream = open_stream(spec, store=store)
    appended = 0
    with pytest.raises(StreamError, match=r"writer failed"):
        for i in range(500):
            stream.append(bank.frame(i))
            appended += 1
            if appended == 10:  # a first commit before the store fills, however slow
                deadline = time.monotonic() + 30
                while stream.progress()["frames_written"] == 0 and time.monotonic() < deadline:
                    time.sleep(0.01)
    summary = stream.close()
    assert summary.state == "failed" and "no space" in summary.error.lower()
    assert 0 < summary.frames_written < appended
    exported = store.to_directory(tmp_path / "exported.ome.zarr")
    check_dataset(exported)
    data = read_zarr(exported)
    assert data.shape[0] == summary.frames_written
    for i, frame in enumerate(data):
        np.testing.assert_array_equal(frame, bank.frame(i))


def test_memory_store_keeps_whole_lines_and_atomic_documents():
    store = MemoryStore(capacity=30)
    store.write_atomic("a.json", b"{}")
    with pytest.raises(PartialAppend) as info:
        store.append_lines("lines", b"0123456789\n0123456789\n0123456789\n")
    assert info.value.lines == 2 and store.read_bytes("lines") == b"0123456789\n" * 2
    assert info.value.errno == errno.ENOSPC
    with pytest.raises(StorageError):
        store.write_atomic("a.json", b"x" * 40)
    assert store.read_bytes("a.json") == b"{}"  # the old document stays whole
    assert store.list_dir() == ["a.json", "lines"]
    store.remove_tree("lines")
    assert not store.exists("lines") and store.exists("a.json")


@pytest.mark.parametrize("make", ["memory", "local"])
def test_a_shard_sink_is_published_whole_or_not_at_all(tmp_path, make):
    store = (
        MemoryStore()
        if make == "memory"
        else create_local(tmp_path / "s.ome.zarr", overwrite=False, sync="none")
    )
    sink = store.open_shard("0/c/0")
    assert sink.write(b"abcd" + bytes(4092), 4, 0) >= 4
    assert not store.exists("0/c/0")
    sink.seal(4, b"xy")  # a valid copy of what came so far, while the shard grows
    assert store.read_bytes("0/c/0") == b"abcdxy"
    sink.write(b"ef" + bytes(4094), 2, 4)
    sink.finish(6)
    assert store.read_bytes("0/c/0") == b"abcdef" and not store.exists("0/c/.0.shard.tmp")
    assert store.list_dir("0/c") == ["0"]
    other = store.open_shard("0/c/1")
    other.write(b"efgh" + bytes(4092), 4, 0)
    other.abandon()
    assert not store.exists("0/c/.1.shard.tmp") and not store.exists("0/c/1")


@pytest.mark.parametrize("where", ["memory", "local"])
def test_a_shard_is_sealed_before_any_of_its_segments_is_written(tmp_path, where):
    """A slow stream's shard is sealed while all its chunks are still in memory (no
    segment written, so no temporary object yet): the seal publishes them alone."""
    import time

    from stores import local_store

    out = tmp_path / "slow.ome.zarr"
    store = MemoryStore() if where == "memory" else local_store(out)
    spec = {"out": out, "shape": (16, 16), "dtype": "uint16", "shards": {"t": 8}}
    spec |= {"shard_seal_s": 0.01, "commit_interval_s": 0.01, "pyramid": {"enabled": False}}
    with open_stream(spec, store=store) as stream:
        for i in range(3):
            stream.append(np.full((16, 16), i, np.uint16))
        deadline = time.monotonic() + 30
        while stream.progress()["rows_committed"] < 3 and time.monotonic() < deadline:
            time.sleep(0.01)  # sealed: the three rows are in the extent
        assert stream.progress()["rows_committed"] == 3
        for i in range(3, 5):
            stream.append(np.full((16, 16), i, np.uint16))
    assert stream.summary.ok and stream.summary.frames_written == 5
    assert MemoryStore().read_range("absent", 0, 0) == b""
