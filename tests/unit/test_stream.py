"""The streaming engine end to end: frames in, read back bit-exact by independent readers."""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest
from stores import StoreWrapper, local_store

from acqwriter import FrameError, SpecError, StreamError, open_stream
from acqwriter.simulators import FrameBank, read_stamp
from helpers import check_dataset, frame_records, read_tensorstore, read_zarr


def frames_of(shape, dtype, n, seed=1):
    bank = FrameBank(shape, dtype, size=3, seed=seed)
    return bank, [bank.frame(i) for i in range(n)]


def flat_frames(array: np.ndarray, frame_shape) -> np.ndarray:
    return array.reshape(-1, *frame_shape)


@pytest.mark.parametrize(
    "codec",
    [
        "lz4",
        "blosc-zstd",
        "zstd",
        "none",
        {"name": "blosc", "cname": "lz4", "shuffle": "bitshuffle", "level": 9},
    ],
)
def test_roundtrip_every_codec_both_readers(tmp_path, codec):
    out = tmp_path / "a.ome.zarr"
    _, frames = frames_of((96, 80), "uint16", 12)
    with open_stream({"out": out, "shape": (96, 80), "dtype": "uint16", "codec": codec}) as stream:
        for frame in frames:
            stream.append(frame)
    summary = stream.summary
    assert summary.ok and summary.frames_written == 12 and summary.shape == [12, 96, 80]
    check_dataset(out)
    for data in (read_zarr(out), read_tensorstore(out)):
        assert data.shape == (12, 96, 80)
        assert [read_stamp(f) for f in data] == list(range(12))
        np.testing.assert_array_equal(data, np.stack(frames))


@pytest.mark.parametrize(
    ("blocksize", "expected"), [("auto", 1 << 20), (0, None), (300_000, 300_000)]
)
def test_blosc_block_size_reaches_every_chunk_and_readers(tmp_path, blocksize, expected):
    """The block size in ``zarr.json`` is the one in every chunk's blosc header ("auto":
    1 MiB for zstd; 0: c-blosc's own, smaller, choice), and both readers decode it."""
    out = tmp_path / "b.ome.zarr"
    shape = (1024, 1024)  # 2 MiB chunks: several 1 MiB blocks
    _, frames = frames_of(shape, "uint16", 3)
    codec = {"name": "blosc", "cname": "zstd", "shuffle": "bitshuffle", "level": 1}
    spec = {"out": out, "shape": shape, "dtype": "uint16", "shards": "none"}
    with open_stream({**spec, "codec": {**codec, "blocksize": blocksize}}) as stream:
        for frame in frames:
            stream.append(frame)
    assert stream.summary.ok
    meta = json.loads((out / "0" / "zarr.json").read_text())
    blosc = meta["codecs"][-1]
    assert blosc["name"] == "blosc"
    assert blosc["configuration"]["blocksize"] == (expected or 0)
    for t in range(3):
        header = (out / "0" / "c" / str(t) / "0" / "0").read_bytes()[:16]
        nbytes, block = np.frombuffer(header[4:12], "<u4")
        assert nbytes == 2 << 20
        if expected is None:
            assert 0 < block < 1 << 20  # c-blosc's choice for zstd level 1
        else:
            assert block == expected
    for data in (read_zarr(out), read_tensorstore(out)):
        np.testing.assert_array_equal(data, np.stack(frames))


def test_chunks_spanning_frames_with_padding(tmp_path):
    """Chunks of 4 time points × 48×40 tiles over a 100×90 frame; 10 frames → last chunk
    holds 2 frames and every edge tile is partial: both padded with the fill value."""
    out = tmp_path / "c.ome.zarr"
    shape = (100, 90)
    _, frames = frames_of(shape, "uint16", 10)
    spec = {
        "out": out,
        "shape": shape,
        "dtype": "uint16",
        "chunks": {"t": 4, "y": 48, "x": 40},
        "shards": "none",  # chunk files (test_shards covers the same inside shards)
    }
    with open_stream(spec) as stream:
        for frame in frames:
            stream.append(frame)
    assert stream.summary.ok
    meta = json.loads((out / "0" / "zarr.json").read_text())
    assert meta["shape"] == [10, 100, 90]
    assert meta["chunk_grid"]["configuration"]["chunk_shape"] == [4, 48, 40]
    np.testing.assert_array_equal(read_tensorstore(out), np.stack(frames))
    np.testing.assert_array_equal(read_zarr(out), np.stack(frames))
    # the last chunk along t, decoded raw: frames 8, 9 then fill; edge tile padded too
    import numcodecs

    raw = numcodecs.Blosc().decode((out / "0" / "c" / "2" / "2" / "2").read_bytes())
    chunk = np.frombuffer(raw, np.uint16).reshape(4, 48, 40)
    np.testing.assert_array_equal(chunk[:2, :4, :10], np.stack(frames[8:10])[:, 96:100, 80:90])
    assert not chunk[2:].any() and not chunk[:, 4:].any() and not chunk[:, :, 10:].any()


def test_tczyx_order_and_uneven_z_chunks(tmp_path):
    out = tmp_path / "tcz.ome.zarr"
    shape = (40, 56)
    n_t, n_c, n_z = 3, 2, 5
    _, frames = frames_of(shape, "uint8", n_t * n_c * n_z)
    spec = {
        "out": out,
        "shape": shape,
        "dtype": "uint8",
        "dims": "tczyx",
        "sizes": {"c": n_c, "z": n_z},
        "chunks": {"z": 2, "y": 16, "x": 16},
        "channels": [{"name": "GFP", "color": "00FF00"}, {"name": "mCherry", "color": "FF0000"}],
        "z_step": 0.5,
        "pixel_size": 0.1,
        "time_increment": 2.5,
    }
    with open_stream(spec) as stream:
        for frame in frames:
            stream.append(frame)
    attrs = check_dataset(out)
    data = read_tensorstore(out)
    assert data.shape == (n_t, n_c, n_z, *shape)
    expected = np.stack(frames).reshape(n_t, n_c, n_z, *shape)
    np.testing.assert_array_equal(data, expected)
    assert read_stamp(data[2, 1, 3]) == (2 * n_c + 1) * n_z + 3
    ms = attrs["ome"]["multiscales"][0]
    assert [a["name"] for a in ms["axes"]] == list("tczyx")
    assert ms["axes"][0] == {"name": "t", "type": "time", "unit": "second"}
    assert ms["axes"][1] == {"name": "c", "type": "channel"}
    assert ms["datasets"][0]["coordinateTransformations"][0]["scale"] == [2.5, 1.0, 0.5, 0.1, 0.1]
    assert [c["label"] for c in attrs["ome"]["omero"]["channels"]] == ["GFP", "mCherry"]


def test_caller_may_reuse_its_buffer_after_append(tmp_path):
    out = tmp_path / "reuse.ome.zarr"
    bank, _ = frames_of((64, 64), "uint16", 0)
    buffer = np.empty((64, 64), np.uint16)
    with open_stream({"out": out, "shape": (64, 64), "dtype": "uint16", "threads": 1}) as stream:
        for i in range(50):
            bank.fill(buffer, i)  # the same buffer every time, like a camera ring
            stream.append(buffer)
        buffer[...] = 0xFFFF
    data = read_zarr(out)
    assert [read_stamp(f) for f in data] == list(range(50))
    for i, frame in enumerate(data):
        np.testing.assert_array_equal(frame, bank.frame(i))


def test_bad_frames_are_refused_and_nothing_is_written(tmp_path):
    out = tmp_path / "bad.ome.zarr"
    _, frames = frames_of((32, 32), "uint16", 3)
    with open_stream({"out": out, "shape": (32, 32), "dtype": "uint16"}) as stream:
        stream.append(frames[0])
        with pytest.raises(FrameError, match=r"frame.shape: expected \(32, 32\).*got \(32, 16\)"):
            stream.append(frames[1][:, :16])
        with pytest.raises(FrameError, match=r"frame\.dtype: expected uint16, got float32"):
            stream.append(frames[1].astype(np.float32))
        with pytest.raises(FrameError, match=r"frame\.shape"):
            stream.append(frames[1].reshape(-1))
        stream.append(frames[1])
        stream.append(frames[2])
    assert stream.summary.frames_written == 3 and stream.summary.ok
    np.testing.assert_array_equal(read_zarr(out), np.stack(frames))
    with pytest.raises(StreamError, match="closed"):
        stream.append(frames[0])


def test_bounded_first_axis_refuses_extra_frames(tmp_path):
    out = tmp_path / "full.ome.zarr"
    _, frames = frames_of((16, 16), "uint8", 4)
    with open_stream(
        {"out": out, "shape": (16, 16), "dtype": "uint8", "sizes": {"t": 3}}
    ) as stream:
        for frame in frames[:3]:
            stream.append(frame)
        with pytest.raises(StreamError, match=r"stream is full: sizes.t = 3"):
            stream.append(frames[3])
    assert read_zarr(out).shape == (3, 16, 16)


def test_skip_records_camera_losses_in_place(tmp_path):
    out = tmp_path / "skip.ome.zarr"
    _, frames = frames_of((16, 24), "uint16", 6)
    with open_stream({"out": out, "shape": (16, 24), "dtype": "uint16"}) as stream:
        stream.append(frames[0])
        assert stream.skip(2, reason="camera") == [1, 2]
        for frame in frames[3:]:
            stream.append(frame)
    s = stream.summary
    assert (s.frames_written, s.frames_dropped, s.dropped_indices) == (4, 2, [1, 2])
    assert s.dropped_by_reason == {"camera": 2} and not s.ok
    data = read_zarr(out)
    assert data.shape == (6, 16, 24)
    assert not data[1].any() and not data[2].any()
    np.testing.assert_array_equal(data[3:], np.stack(frames[3:]))
    records = frame_records(out)
    assert [r["dropped"] for r in records] == [False, True, True, False, False, False]
    assert records[1]["drop_reason"] == "camera"


class SlowStore(StoreWrapper):
    """A real LocalStore whose chunk writes wait on a gate: a disk slower than the camera."""

    gate = threading.Event()

    def write_chunk_from(self, key, n, buf=None):
        self.gate.wait(10)
        return super().write_chunk_from(key, n, buf)


def test_drop_policy_counts_indices_and_stores_fill(tmp_path, monkeypatch):

    SlowStore.gate.clear()
    out = tmp_path / "drop.ome.zarr"
    _, frames = frames_of((32, 32), "uint16", 10)
    frame_bytes = 32 * 32 * 2
    spec = {
        "out": out,
        "shape": (32, 32),
        "dtype": "uint16",
        "overflow": "drop",
        "ring_bytes": 3 * frame_bytes,
        "threads": 1,
        "shards": "none",  # chunk files: the gate holds every write (shards would not wait)
    }
    stream = open_stream(spec, store=SlowStore(local_store(out)))
    indices = [stream.append(f, metadata={"n": i}) for i, f in enumerate(frames)]
    assert indices == list(range(10))
    assert stream.progress()["ring_occupancy"] == 3
    SlowStore.gate.set()
    summary = stream.close()
    assert summary.dropped_indices == list(range(3, 10))
    assert summary.frames_written == 3 and summary.dropped_by_reason == {"ring_full": 7}
    assert summary.ring_high_water_frames == 3 and summary.ring_capacity_frames == 3
    data = read_zarr(out)
    np.testing.assert_array_equal(data[:3], np.stack(frames[:3]))
    assert not data[3:].any()
    records = frame_records(out)
    assert [r["dropped"] for r in records] == [False] * 3 + [True] * 7
    assert records[5]["drop_reason"] == "ring_full" and records[5]["metadata"] == {"n": 5}


def test_block_policy_waits_instead_of_dropping(tmp_path, monkeypatch):

    SlowStore.gate.clear()
    out = tmp_path / "block.ome.zarr"
    _, frames = frames_of((32, 32), "uint16", 8)
    spec = {
        "out": out,
        "shape": (32, 32),
        "dtype": "uint16",
        "ring_bytes": 2 * 32 * 32 * 2,
        "threads": 1,
        "shards": "none",  # SlowStore gates chunk-file writes
    }
    stream = open_stream(spec, store=SlowStore(local_store(out)))
    done = threading.Event()

    def produce():
        for frame in frames:
            stream.append(frame)
        done.set()

    producer = threading.Thread(target=produce)
    producer.start()
    assert not done.wait(0.5)  # blocked: ring full, disk gated
    assert stream.progress()["frames_appended"] <= 3
    SlowStore.gate.set()
    assert done.wait(10)
    producer.join()
    summary = stream.close()
    assert summary.ok and summary.frames_written == 8 and summary.frames_dropped == 0
    np.testing.assert_array_equal(read_zarr(out), np.stack(frames))


def test_appends_from_two_threads_are_all_written(tmp_path):
    out = tmp_path / "two.ome.zarr"
    bank, _ = frames_of((24, 24), "uint16", 0)
    stream = open_stream({"out": out, "shape": (24, 24), "dtype": "uint16"})

    def produce(offset):
        for i in range(offset, 200, 2):
            stream.append(bank.frame(i))

    threads = [threading.Thread(target=produce, args=(k,)) for k in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    summary = stream.close()
    assert summary.frames_written == 200 and summary.ok
    data = read_zarr(out)
    stamps = [read_stamp(f) for f in data]
    assert sorted(stamps) == list(range(200))
    for frame, stamp in zip(data, stamps, strict=True):
        np.testing.assert_array_equal(frame, bank.frame(stamp))


def test_output_path_rules(tmp_path):
    out = tmp_path / "exists.ome.zarr"
    spec = {"out": out, "shape": (8, 8), "dtype": "uint8"}
    open_stream(spec).close()
    with pytest.raises(SpecError, match="already exists"):
        open_stream(spec)
    with open_stream({**spec, "overwrite": True}) as stream:
        stream.append(np.ones((8, 8), np.uint8))
    assert read_zarr(out).shape == (1, 8, 8)
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.docx").write_text("do not delete")
    with pytest.raises(SpecError, match="not a Zarr dataset; refusing to delete"):
        open_stream({**spec, "out": precious, "overwrite": True})
    assert (precious / "thesis.docx").exists()


def test_dataset_is_valid_before_first_frame_and_after_empty_close(tmp_path):
    out = tmp_path / "empty.ome.zarr"
    stream = open_stream({"out": out, "shape": (16, 16), "dtype": "uint16"})
    check_dataset(out)
    assert read_zarr(out).shape == (0, 16, 16)
    summary = stream.close()
    assert summary.frames_written == 0 and summary.shape == [0, 16, 16]
    check_dataset(out)


def test_stopped_mid_stack_marks_missing_planes(tmp_path):
    out = tmp_path / "mid.ome.zarr"
    _, frames = frames_of((16, 16), "uint16", 7)
    spec = {"out": out, "shape": (16, 16), "dtype": "uint16", "dims": "tzyx", "sizes": {"z": 3}}
    with open_stream(spec) as stream:
        for frame in frames:
            stream.append(frame)
    s = stream.summary
    assert s.shape == [3, 3, 16, 16] and s.frames_written == 7
    assert s.missing_indices == [7, 8] and s.frames_dropped == 0
    data = read_zarr(out).reshape(-1, 16, 16)
    np.testing.assert_array_equal(data[:7], np.stack(frames))
    assert not data[7:].any()
    records = frame_records(out)
    assert len(records) == 9 and records[8] == {
        "index": 8,
        "dropped": True,
        "drop_reason": "missing",
    }


def test_summary_accounts_bytes_and_rates(tmp_path):
    out = tmp_path / "sum.ome.zarr"
    _, frames = frames_of((128, 128), "uint16", 20)
    with open_stream(
        {
            "out": out,
            "shape": (128, 128),
            "dtype": "uint16",
            "pyramid": {"enabled": False},
            "shards": "none",  # stored bytes == the chunk files' sizes
        }
    ) as stream:
        for frame in frames:
            stream.append(frame)
    s = stream.summary
    assert s.raw_bytes == 20 * 128 * 128 * 2
    chunk_bytes = sum(p.stat().st_size for p in (out / "0" / "c").rglob("*") if p.is_file())
    assert s.stored_bytes == chunk_bytes
    assert s.compression_ratio == pytest.approx(s.raw_bytes / chunk_bytes)
    assert 1.2 < s.compression_ratio < 4  # realistic frames, not zeros
    assert s.duration_s > 0 and s.throughput_mb_s > 0 and s.frames_per_s > 0
    root = json.loads((out / "zarr.json").read_text())["attributes"]["acqwriter"]
    assert root["state"] == "complete" and root["summary"]["frames_written"] == 20


class FullDiskStore(StoreWrapper):
    """A real LocalStore that fails with ENOSPC after ``budget`` chunks (injected through the
    storage layer: the real full-disk tests, on a size-limited tmpfs, are in test_faults.py)."""

    budget = 7

    def write_chunk_from(self, key, n, buf=None):
        import errno

        if key.startswith("0/c/"):
            if FullDiskStore.budget <= 0:
                raise OSError(errno.ENOSPC, "No space left on device")
            FullDiskStore.budget -= 1
        return super().write_chunk_from(key, n, buf)


def test_write_error_stops_cleanly_with_valid_dataset(tmp_path, monkeypatch):

    FullDiskStore.budget = 7
    out = tmp_path / "full.ome.zarr"
    bank, _ = frames_of((32, 32), "uint16", 0)
    stream = open_stream(
        {"out": out, "shape": (32, 32), "dtype": "uint16", "threads": 1, "shards": "none"},
        store=FullDiskStore(local_store(out)),
    )
    with pytest.raises(StreamError, match="No space left on device"):
        for i in range(1000):
            stream.append(bank.frame(i))
            time.sleep(0.001)
    summary = stream.close()
    assert summary.state == "failed" and "No space left on device" in summary.error
    assert not summary.ok
    assert summary.frames_written == 7
    check_dataset(out)
    data = read_zarr(out)
    assert data.shape == (7, 32, 32)  # the extent holds exactly the frames on disk
    for i, frame in enumerate(data):
        np.testing.assert_array_equal(frame, bank.frame(i))
    assert (
        json.loads((out / "zarr.json").read_text())["attributes"]["acqwriter"]["state"] == "failed"
    )
    assert len(frame_records(out)) == 7


@pytest.mark.parametrize("io", ["direct", "auto"])
def test_direct_io_roundtrip(tmp_path, io):
    out = tmp_path / f"{io}.ome.zarr"
    _, frames = frames_of((100, 90), "uint16", 9)  # odd sizes: compressed chunks unaligned
    spec = {
        "out": out,
        "shape": (100, 90),
        "dtype": "uint16",
        "chunks": {"t": 2, "y": 64},
        "io": io,
        "codec": "zstd",
    }
    try:
        stream = open_stream(spec)
    except SpecError as exc:
        pytest.skip(f"this filesystem refuses O_DIRECT: {exc}")
    with stream:
        for frame in frames:
            stream.append(frame)
    assert stream.store.direct
    np.testing.assert_array_equal(read_tensorstore(out), np.stack(frames))
    np.testing.assert_array_equal(read_zarr(out), np.stack(frames))
    check_dataset(out)


def slow_compression(delay: float = 0.01):
    """An encoder (``open_stream(..., encoder=...)``) whose writer threads take ``delay``
    s per chunk (the real encoder still runs, timing only): a producer outruns them and
    finds the slots full, as it does when compression is slower than the camera."""
    from acqwriter.codec.blosc import IntoEncoder

    class SlowEncoder(IntoEncoder):
        def encode_into(self, data, *args):
            if threading.current_thread().name.startswith("acqwriter-compress"):
                time.sleep(delay)
            return super().encode_into(data, *args)

    return SlowEncoder


@pytest.mark.parametrize(
    ("shape", "extra"),
    [
        ((64, 48), {"shards": "none"}),  # the producer writes the chunk file itself
        ((64, 48), {"shards": "none", "sync": "always"}),
        ((1024, 1024), {}),  # big chunks: handed to the I/O threads
    ],
    ids=["files", "files-sync", "io-threads"],
)
def test_full_ring_frames_are_compressed_by_the_producer(tmp_path, monkeypatch, shape, extra):
    slow = slow_compression()
    out = tmp_path / "inline.ome.zarr"
    bank, _ = frames_of(shape, "uint16", 0)
    frame_bytes = shape[0] * shape[1] * 2
    buffer = np.empty(shape, np.uint16)
    n = 24
    spec = {"out": out, "shape": shape, "dtype": "uint16", "threads": 1}
    spec |= {"ring_bytes": 2 * frame_bytes, **extra}
    with open_stream(spec, encoder=slow) as stream:
        for i in range(n):
            bank.fill(buffer, i)  # one buffer, refilled at once: nothing may keep it
            assert stream.append(buffer, metadata={"i": i}) == i
        live = stream.progress()["frames_inline"]
        buffer[...] = 0xFFFF
    summary = stream.summary
    assert summary.ok and summary.frames_written == n and summary.frames_dropped == 0
    assert 0 < summary.frames_inline == live < n  # some frames went through the ring
    assert summary.ring_high_water_frames == 2
    assert "compressed by the producer (writer behind)" in summary.describe()
    check_dataset(out)
    for reader in (read_zarr, read_tensorstore):
        data = reader(out)
        assert data.shape == (n, *shape)
        for i, frame in enumerate(data):
            np.testing.assert_array_equal(frame, bank.frame(i))
    assert [r["metadata"] for r in frame_records(out)] == [{"i": i} for i in range(n)]


def test_a_backlog_of_big_chunks_is_compressed_by_the_producer_before_the_ring_fills(
    tmp_path, monkeypatch
):
    """Big unsharded chunks (pipelined to the I/O threads): once the writer threads have
    a backlog the producer compresses its own frames, so the ring's backlog stays short
    and its memory mostly untouched, and every frame reads back exact."""
    slow = slow_compression(0.02)
    out = tmp_path / "early.ome.zarr"
    shape = (1024, 1024)
    bank, _ = frames_of(shape, "uint16", 0)
    buffer = np.empty(shape, np.uint16)
    n, capacity = 40, 24
    spec = {"out": out, "shape": shape, "dtype": "uint16", "threads": 1}
    spec |= {"ring_bytes": capacity * shape[0] * shape[1] * 2}
    with open_stream(spec, encoder=slow) as stream:
        assert stream.slots.capacity == capacity
        for i in range(n):
            bank.fill(buffer, i)
            stream.append(buffer, metadata={"i": i})
        buffer[...] = 0xFFFF  # nothing may still read the caller's buffer
    summary = stream.summary
    assert summary.ok and summary.frames_written == n and summary.frames_dropped == 0
    # how many the producer compressed depends on the two threads' relative speed on a
    # shared machine (15 to 30 of 40 seen), and while another process's fsync stalls
    # the disk, frames go to the slots by design (they absorb the stall) and may fill
    # them: that the producer took frames over, and none was dropped, is the rule
    assert summary.frames_inline >= 1
    assert summary.ring_high_water_frames <= capacity
    check_dataset(out)
    for reader in (read_zarr, read_tensorstore):
        data = reader(out)
        for i, frame in enumerate(data):
            np.testing.assert_array_equal(frame, bank.frame(i))
    assert [r["metadata"] for r in frame_records(out)] == [{"i": i} for i in range(n)]


def test_a_compression_failure_on_the_producer_fails_the_stream_cleanly(tmp_path, monkeypatch):
    """The producer's own compression (big chunks, writer threads behind) raising: append
    raises StreamError naming the error, the dataset stays valid with every frame in its
    extent exact (a failed stream stops: its extent ends at the first frame not on
    disk), and the encoded-chunk buffer the producer held goes back to the pool
    once (two compressors sharing a buffer would corrupt chunks)."""
    producer_calls = [0]

    # the producer compresses only while the writer threads are behind, and how often
    # depends on the machine's load: the failure is its third compression, which comes
    # within a few frames once the writers take 50 ms a chunk
    class FailingOnTheProducer(slow_compression(0.05)):
        def encode_into(self, data, *args):
            if threading.current_thread() is threading.main_thread():
                producer_calls[0] += 1
                if producer_calls[0] == 3:
                    raise RuntimeError("injected compression failure")
            return super().encode_into(data, *args)

    out = tmp_path / "fail.ome.zarr"
    shape = (1024, 1024)
    bank, _ = frames_of(shape, "uint16", 0)
    spec = {"out": out, "shape": shape, "dtype": "uint16", "threads": 1}
    stream = open_stream(spec, encoder=FailingOnTheProducer)
    assert stream.encoded_buffers is not None
    with pytest.raises(StreamError, match="injected compression failure"):
        for i in range(400):
            stream.append(bank.frame(i))
    summary = stream.close()
    assert summary.state == "failed" and "injected compression failure" in summary.error
    assert stream.encoded_buffers.all_returned()  # each buffer back once, none lost
    check_dataset(out)
    data = read_zarr(out)
    assert data.shape[0] == summary.frames_written  # frames before the failure, exact
    for i, frame in enumerate(data):
        np.testing.assert_array_equal(frame, bank.frame(i))


def test_a_ring_bigger_than_the_memory_available_is_refused(tmp_path) -> None:
    """The ring is backed on demand, so a shortage is caught at open, not when a disk
    stall first fills the ring half-way through; nothing is created."""
    import psutil

    from acqwriter import SpecError

    out = tmp_path / "huge.ome.zarr"
    total = psutil.virtual_memory().total
    spec = {"out": out, "shape": (2048, 2048), "dtype": "uint16", "ring_bytes": 2 * total}
    with pytest.raises(SpecError, match=r"ring_bytes: the ring needs \d+ MiB .* available"):
        open_stream(spec)
    assert not out.exists()
    # a bounded stream's ring is capped at its frames: the same ring_bytes is fine
    with open_stream(spec | {"sizes": {"t": 4}}) as stream:
        stream.append(np.zeros((2048, 2048), np.uint16))
    assert stream.summary.ok


@pytest.mark.parametrize("shards", ["auto", {"t": 4}], ids=["auto-shards", "t-shards"])
def test_sharded_frames_wait_for_a_slot_instead(tmp_path, monkeypatch, shards):
    """Into shards the producer does not compress: its frames are a whole ring ahead of
    the writer threads and would each open a shard (and its staging) of their own, so
    memory would grow with the ring. They wait for a slot; nothing is lost."""
    slow = slow_compression()
    out = tmp_path / "sharded.ome.zarr"
    _, frames = frames_of((64, 48), "uint16", 24)
    spec = {"out": out, "shape": (64, 48), "dtype": "uint16", "threads": 1, "shards": shards}
    spec |= {"ring_bytes": 2 * 64 * 48 * 2, "sync": "always"}
    with open_stream(spec, encoder=slow) as stream:
        for i, frame in enumerate(frames):
            stream.append(frame, metadata={"i": i})
    summary = stream.summary
    assert summary.ok and summary.frames_inline == 0 and summary.frames_written == 24
    assert summary.ring_high_water_frames == 2
    check_dataset(out)
    for reader in (read_zarr, read_tensorstore):
        np.testing.assert_array_equal(reader(out), np.stack(frames))
    assert [r["metadata"] for r in frame_records(out)] == [{"i": i} for i in range(24)]


def test_chunks_spanning_frames_wait_for_a_slot_instead(tmp_path, monkeypatch):
    """A frame that is only part of a chunk cannot be compressed alone: it waits."""
    slow = slow_compression()
    out = tmp_path / "span.ome.zarr"
    _, frames = frames_of((32, 32), "uint16", 12)
    spec = {"out": out, "shape": (32, 32), "dtype": "uint16", "threads": 1}
    spec |= {"chunks": {"t": 2}, "ring_bytes": 4 * 32 * 32 * 2, "shards": "none"}
    with open_stream(spec, encoder=slow) as stream:
        for frame in frames:
            stream.append(frame)
    assert stream.summary.ok and stream.summary.frames_inline == 0
    np.testing.assert_array_equal(read_zarr(out), np.stack(frames))


@pytest.mark.parametrize("chunks", [{}, {"t": 2, "y": 16, "x": 16}])
def test_close_compresses_the_backlog_beside_the_writer_threads(tmp_path, monkeypatch, chunks):
    """At close the ring's backlog is compressed by the closing thread too (it would
    otherwise only wait), whole-frame chunks and chunks assembled from several frames
    alike; the data reads back exact."""
    closers: list[str] = []

    class SeenCompressing(slow_compression(0.02)):
        def encode_into(self, data, *args):
            name = threading.current_thread().name
            if not name.startswith("acqwriter-"):
                closers.append(name)
            return super().encode_into(data, *args)

    slow = SeenCompressing
    out = tmp_path / "backlog.ome.zarr"
    _, frames = frames_of((32, 32), "uint16", 16)
    spec = {"out": out, "shape": (32, 32), "dtype": "uint16", "threads": 1, "chunks": chunks}
    spec |= {"ring_bytes": 16 * 32 * 32 * 2, "shards": "none"}
    stream = open_stream(spec, encoder=slow)
    for frame in frames:
        stream.append(frame)
    assert stream.summary.frames_inline == 0  # the ring held every frame: a backlog
    summary = stream.close()
    assert summary.ok and summary.frames_written == 16
    assert closers and set(closers) == {threading.current_thread().name}
    check_dataset(out)
    for reader in (read_zarr, read_tensorstore):
        np.testing.assert_array_equal(reader(out), np.stack(frames))


def test_drop_policy_never_compresses_on_the_producer(tmp_path, monkeypatch):
    """Under ``drop`` the producer must never be held up: a full ring drops the frame."""
    slow = slow_compression(0.05)
    out = tmp_path / "dropfast.ome.zarr"
    _, frames = frames_of((32, 32), "uint16", 10)
    spec = {"out": out, "shape": (32, 32), "dtype": "uint16", "threads": 1}
    spec |= {"ring_bytes": 2 * 32 * 32 * 2, "overflow": "drop"}
    with open_stream(spec, encoder=slow) as stream:
        for frame in frames:
            stream.append(frame)
    summary = stream.summary
    assert summary.frames_inline == 0 and summary.frames_dropped > 0
    assert summary.frames_written + summary.frames_dropped == 10


def test_a_failure_while_compressing_on_the_producer_is_raised(tmp_path, monkeypatch):

    slow = slow_compression()
    FullDiskStore.budget = 5
    out = tmp_path / "inlinefail.ome.zarr"
    bank, _ = frames_of((32, 32), "uint16", 0)
    spec = {"out": out, "shape": (32, 32), "dtype": "uint16", "threads": 1}
    spec |= {"ring_bytes": 2 * 32 * 32 * 2, "shards": "none"}
    stream = open_stream(spec, store=FullDiskStore(local_store(out)), encoder=slow)
    with pytest.raises(StreamError, match="No space left on device"):
        for i in range(100):
            stream.append(bank.frame(i))
    summary = stream.close()
    assert summary.state == "failed" and "No space left on device" in summary.error
    check_dataset(out)
    data = read_zarr(out)
    assert data.shape[0] == summary.frames_written <= 5
    for i, frame in enumerate(data):
        np.testing.assert_array_equal(frame, bank.frame(i))


def _resident(address: int, nbytes: int) -> int:
    from helpers import resident_pages

    return resident_pages(address, nbytes)


@pytest.mark.parametrize("shards", ["none", "auto"])
def test_close_gives_the_ring_memory_back_and_keeps_every_frame(tmp_path, shards):
    """The stream's own ring is unmapped once every frame has left it (in the background,
    beside the close's fsyncs); what was appended reads back whole and the summary still
    reports the ring."""
    from acqwriter.engine.slots import wait_for_releases

    shape = (512, 512)
    _, frames = frames_of(shape, "uint16", 40, seed=21)
    out = tmp_path / f"{shards}.ome.zarr"
    stream = open_stream(
        {
            "out": out,
            "shape": shape,
            "dtype": "uint16",
            "ring_bytes": 16 << 20,
            "shards": shards,
            "pyramid": {"enabled": False},
        }
    )
    address, nbytes = stream.slots.slots.ctypes.data, stream.slots.slots.nbytes
    for frame in frames:
        stream.append(frame)
    summary = stream.close()
    assert wait_for_releases(timeout=30)
    assert _resident(address, nbytes) == 0  # the ring's memory was given back
    assert summary.frames_written == 40 and summary.ring_capacity_frames == 32
    assert 1 <= summary.ring_high_water_frames <= 32
    np.testing.assert_array_equal(read_zarr(out), np.stack(frames))
    check_dataset(out)


def test_a_ring_given_to_the_stream_outlives_it_and_serves_the_next(tmp_path):
    from acqwriter.engine.preflight import preallocate_slots
    from acqwriter.spec.model import StreamSpec

    shape = (256, 256)
    spec = {"shape": shape, "dtype": "uint16", "ring_bytes": 4 << 20, "pyramid": {"enabled": False}}
    ring = preallocate_slots(StreamSpec.parse({**spec, "out": tmp_path / "first.ome.zarr"}))
    address, nbytes = ring.slots.ctypes.data, ring.slots.nbytes
    for name, seed in (("first", 1), ("second", 2)):
        _, frames = frames_of(shape, "uint16", 12, seed=seed)
        out = tmp_path / f"{name}.ome.zarr"
        with open_stream({**spec, "out": out}, slots=ring) as stream:
            for frame in frames:
                stream.append(frame)
        assert stream.summary.frames_written == 12
        np.testing.assert_array_equal(read_zarr(out), np.stack(frames))
        assert ring.slots.ctypes.data == address and _resident(address, nbytes) > 0


def test_latency_percentiles_match_numpy():
    from acqwriter.engine.ledger import percentile_of_sorted

    rng = np.random.default_rng(5)
    for n in (1, 2, 3, 7, 100, 301, 1000):
        values = np.sort(rng.exponential(20.0, n))
        for q in (0, 1, 50, 90, 99, 99.9, 100):
            assert percentile_of_sorted(values, q) == pytest.approx(np.percentile(values, q))
