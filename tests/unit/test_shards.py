"""Zarr v3 sharding (``sharding_indexed``, index at the end, crc32c): what readers see,
how many files land on disk, what the extent covers, crash recovery, bad specs."""

from __future__ import annotations

import errno
import json
import os
import time

import numpy as np
import pytest
from stores import StoreWrapper, local_store

from acqwriter import SpecError, StreamError, open_stream
from acqwriter.format.zarr_v3 import EMPTY, decode_index, encode_index, index_nbytes
from acqwriter.plan.sharding import shard_factors
from acqwriter.post.recover import recover
from acqwriter.simulators import FrameBank, read_stamp
from acqwriter.spec.model import StreamSpec
from acqwriter.store.base import ShardSink
from acqwriter.store.create import create_local
from helpers import check_dataset, frame_records, read_tensorstore, read_zarr


def _frames(shape, n, seed=1):
    bank = FrameBank(shape, "uint16", size=5, seed=seed)
    return [bank.frame(i) for i in range(n)]  # stamped, different every frame


def _write(out, frames, store=None, **spec):
    stream = open_stream(
        {"out": out, "shape": frames[0].shape, "dtype": "uint16", "pyramid": {"enabled": False}}
        | spec,
        store=store,
    )
    for f in frames:
        stream.append(f)
    return stream.close()


def _shard_files(out):
    return sorted(p for p in (out / "0" / "c").rglob("*") if p.is_file())


@pytest.mark.parametrize("io", ["auto", "buffered"])
def test_explicit_t_shards_read_back_exact_in_few_files(tmp_path, io):
    out = tmp_path / "s.ome.zarr"
    frames = _frames((96, 80), 29)
    summary = _write(out, frames, shards={"t": 8}, io=io)
    assert summary.frames_written == 29 and summary.state == "complete"
    check_dataset(out)
    expected = np.stack(frames)
    np.testing.assert_array_equal(read_zarr(out), expected)
    np.testing.assert_array_equal(read_tensorstore(out), expected)
    meta = json.loads((out / "0" / "zarr.json").read_text())
    assert meta["chunk_grid"]["configuration"]["chunk_shape"] == [8, 96, 80]
    codec = meta["codecs"][0]
    assert codec["name"] == "sharding_indexed"
    conf = codec["configuration"]
    assert conf["chunk_shape"] == [1, 96, 80] and conf["index_location"] == "end"
    assert [c["name"] for c in conf["index_codecs"]] == ["bytes", "crc32c"]
    files = _shard_files(out)
    assert len(files) == 4  # 29 frames in shards of 8 (the last one partial), not 29 files
    # the index is the last bytes of each file and passes its checksum
    for path in files:
        tail = path.read_bytes()[-index_nbytes(8) :]
        index = decode_index(tail, 8)
        assert index is not None
    last = decode_index(files[-1].read_bytes()[-index_nbytes(8) :], 8)
    assert int((last[:, 0] != EMPTY).sum()) == 5  # frames 24-28; the rest empty


def test_auto_shards_span_bounded_axes_then_t(tmp_path):
    out = tmp_path / "tcz.ome.zarr"
    frames = _frames((64, 48), 2 * 3 * 4)
    spec = {"dims": "tczyx", "sizes": {"c": 3, "z": 4}, "chunks": {"y": 32, "x": 32}}
    parsed = StreamSpec.parse({"out": out, "shape": (64, 48), "dtype": "uint16"} | spec)
    # 8 KiB groups (4 tiles of 32² uint16), 12 per t: 170 t per 16 MiB shard
    assert shard_factors(parsed) == (170, 3, 4)
    _write(out, frames, **spec)
    meta = json.loads((out / "0" / "zarr.json").read_text())
    # a shard: 170 t, all channels and planes, whole frames (tiles rounded up)
    assert meta["chunk_grid"]["configuration"]["chunk_shape"] == [170, 3, 4, 64, 64]
    assert meta["codecs"][0]["configuration"]["chunk_shape"] == [1, 1, 1, 32, 32]
    assert len(_shard_files(out)) == 1
    expected = np.stack(frames).reshape(2, 3, 4, 64, 48)
    np.testing.assert_array_equal(read_zarr(out), expected)
    np.testing.assert_array_equal(read_tensorstore(out), expected)


def test_auto_leaves_large_chunks_unsharded_and_shards_small_ones_along_t(tmp_path):
    big = StreamSpec.parse({"out": tmp_path / "a", "shape": (1024, 1024), "dtype": "uint16"})
    assert shard_factors(big) == (1,)
    small = StreamSpec.parse(
        {
            "out": tmp_path / "b",
            "shape": (64, 64),
            "dtype": "uint16",
            "dims": "tzyx",
            "sizes": {"z": 5},
        }
    )
    assert shard_factors(small) == (409, 5)  # 40 KiB per t: 409 t per 16 MiB shard
    none = small.model_copy(update={"shards": "none"})
    assert shard_factors(none) == (1, 1)


def test_tiny_frames_cap_shards_and_ring_slots(tmp_path):
    # a 1×1 float32 frame is 4 bytes: 16 MiB of them would be 4 Mi inner chunks (a 64 MiB
    # index per open shard); the cap keeps it at AUTO_SHARD_MAX_INNER, and parsing fast
    from acqwriter.plan.resources import RING_MAX_FRAMES
    from acqwriter.plan.sharding import AUTO_SHARD_MAX_INNER

    tiny = StreamSpec.parse({"out": tmp_path / "t", "shape": (1, 1), "dtype": "float32"})
    assert shard_factors(tiny) == (AUTO_SHARD_MAX_INNER,)
    tiled = StreamSpec.parse(
        {
            "out": tmp_path / "u",
            "shape": (64, 64),
            "dtype": "uint8",
            "dims": "tczyx",
            "sizes": {"c": 3, "z": 4},
            "chunks": {"y": 32, "x": 32},
        }
    )
    # 1 KiB chunks, 4 tiles and 12 (c, z) groups per t: 341 t = 16 368 inner chunks
    assert shard_factors(tiled) == (341, 3, 4)
    out = tmp_path / "tiny.ome.zarr"
    frames = [np.full((1, 1), i, np.float32) for i in range(50)]
    with open_stream({"out": out, "shape": (1, 1), "dtype": "float32"}) as stream:
        assert stream.slots.capacity == RING_MAX_FRAMES  # not 512 MiB / 4 B = 134 M slots
        for frame in frames:
            stream.append(frame)
    np.testing.assert_array_equal(read_zarr(out), np.stack(frames))
    np.testing.assert_array_equal(read_tensorstore(out), np.stack(frames))


def test_pyramid_and_info_on_sharded_level0(tmp_path):
    from acqwriter.post.info import dataset_info

    out = tmp_path / "p.ome.zarr"
    frames = _frames((128, 96), 12)
    _write(out, frames, shards={"t": 4}, pyramid={"enabled": True, "levels": 2})
    check_dataset(out)
    level1 = read_zarr(out, 1)
    assert level1.shape == (12, 64, 48)
    ref = np.stack(frames).astype(np.uint32).reshape(12, 64, 2, 48, 2).sum(axis=(2, 4))
    np.testing.assert_array_equal(level1, ((ref + 2) // 4).astype(np.uint16))
    info = dataset_info(out)
    assert info["levels"][0]["chunks"] == [1, 128, 96]
    assert info["levels"][0]["shards"] == [4, 128, 96]
    assert info["codec"].startswith("blosc lz4")


def test_extent_only_covers_finished_shards(tmp_path):
    out = tmp_path / "e.ome.zarr"
    frames = _frames((64, 64), 10)
    stream = open_stream(
        {
            "out": out,
            "shape": (64, 64),
            "dtype": "uint16",
            "shards": {"t": 4},
            "commit_interval_s": 0.01,
        }
    )
    for f in frames[:6]:
        stream.append(f)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        extent = json.loads((out / "0" / "zarr.json").read_text())["shape"][0]
        if extent >= 4:
            break
        time.sleep(0.01)
    assert extent == 4  # frames 4-5 sit in an unfinished shard: outside the extent
    data = read_zarr(out)
    assert [read_stamp(f) for f in data] == [0, 1, 2, 3]
    for f in frames[6:]:
        stream.append(f)
    stream.close()
    np.testing.assert_array_equal(read_zarr(out), np.stack(frames))


def test_skipped_frames_inside_a_shard_read_as_fill_and_are_flagged(tmp_path):
    out = tmp_path / "d.ome.zarr"
    frames = _frames((32, 32), 8)
    stream = open_stream({"out": out, "shape": (32, 32), "dtype": "uint16", "shards": {"t": 4}})
    for i in range(8):
        if i in (2, 5):
            stream.skip(1, reason="camera")
        else:
            stream.append(frames[i])
    stream.close()
    data = read_zarr(out)
    np.testing.assert_array_equal(read_tensorstore(out), data)
    records = frame_records(out)
    for i in range(8):
        if i in (2, 5):
            assert records[i]["dropped"] and not data[i].any()
        else:
            np.testing.assert_array_equal(data[i], frames[i])


def test_torn_shard_index_ends_the_recovered_extent(tmp_path):
    out = tmp_path / "t.ome.zarr"
    frames = _frames((48, 40), 12)
    _write(out, frames, shards={"t": 4})
    meta = json.loads((out / "0" / "zarr.json").read_text())
    meta["shape"][0] = 0  # as if the crash came before any extent rewrite
    (out / "0" / "zarr.json").write_text(json.dumps(meta))
    root = json.loads((out / "zarr.json").read_text())
    root["attributes"]["acqwriter"]["state"] = "acquiring"  # the writer never finished
    (out / "zarr.json").write_text(json.dumps(root))
    torn = out / "0" / "c" / "2" / "0" / "0"  # frames 8-11: its index cut off
    torn.write_bytes(torn.read_bytes()[:-10])
    account = recover(out)
    assert account["rows"] == 8
    check_dataset(out)
    np.testing.assert_array_equal(read_zarr(out), np.stack(frames[:8]))
    assert not torn.exists()


def test_shard_write_error_fails_cleanly_with_valid_dataset(tmp_path, monkeypatch):

    class FailingSegments(StoreWrapper):
        """A real store whose shard segment writes fail after the first ``ok``."""

        ok = 3

        def open_shard(self, key):
            return FailingSink(super().open_shard(key))

    class FailingSink(ShardSink):
        """A real shard sink whose segment writes fail after the first ``ok``."""

        def __init__(self, inner):
            self.inner = inner

        def write(self, segment, n, offset):
            if FailingSegments.ok <= 0:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            FailingSegments.ok -= 1
            return self.inner.write(segment, n, offset)

        def seal(self, end, tail):
            self.inner.seal(end, tail)

        def finish(self, end):
            self.inner.finish(end)

        def abandon(self):
            self.inner.abandon()

    out = tmp_path / "f.ome.zarr"
    frames = _frames((64, 64), 5)
    stream = open_stream(
        {"out": out, "shape": (64, 64), "dtype": "uint16", "shards": {"t": 2}, "threads": 1},
        store=FailingSegments(local_store(out)),
    )
    with pytest.raises(StreamError, match="No space left"):
        for i in range(200):
            stream.append(frames[i % 5])
            time.sleep(0.002)
    summary = stream.close()
    assert summary.state == "failed" and "No space left" in summary.error
    check_dataset(out)
    data = read_zarr(out)
    assert data.shape[0] == summary.frames_written == 6  # three finished shards of two
    for i in range(6):
        np.testing.assert_array_equal(data[i], frames[i % 5])


@pytest.mark.parametrize(
    ("shards", "field"),
    [
        ({"y": 64}, "shards.y"),
        ({"q": 2}, "shards.q"),
        ({"t": 3}, "shards.t"),  # chunks.t is 2: not a multiple
        ("sometimes", "shards"),
    ],
)
def test_bad_shard_specs_name_the_field(tmp_path, shards, field):
    with pytest.raises(SpecError, match=field.replace(".", r"\.")):
        StreamSpec.parse(
            {
                "out": tmp_path / "x",
                "shape": (64, 64),
                "dtype": "uint16",
                "chunks": {"t": 2},
                "shards": shards,
            }
        )
    assert not (tmp_path / "x").exists()


def test_index_codec_roundtrip_and_torn_detection():
    entries = np.array([[0, 10], [EMPTY, EMPTY], [4096, 7]], dtype="<u8")
    blob = encode_index(entries)
    assert len(blob) == index_nbytes(3)
    np.testing.assert_array_equal(decode_index(blob, 3), entries)
    assert decode_index(blob[:-1], 3) is None
    flipped = bytes([blob[0] ^ 1]) + blob[1:]
    assert decode_index(flipped, 3) is None


@pytest.mark.parametrize("io", ["auto", "buffered"])
def test_many_segments_written_concurrently_read_back_exact(tmp_path, monkeypatch, io):
    """Tiny staging segments: every shard is written as many segments, swapped out under
    the lock and written by several threads at once, in any order (positional writes)."""
    import acqwriter.engine.shards as shards

    monkeypatch.setattr(shards, "SEGMENT_BYTES", 8192)
    out = tmp_path / "s.ome.zarr"
    frames = _frames((128, 96), 70)
    summary = _write(out, frames, shards={"t": 16}, threads=4, codec="none", io=io)
    assert summary.state == "complete" and summary.frames_written == 70
    expected = np.stack(frames)
    np.testing.assert_array_equal(read_zarr(out), expected)
    np.testing.assert_array_equal(read_tensorstore(out), expected)
    assert len(_shard_files(out)) == 5  # 70 frames in shards of 16
    check_dataset(out)


def test_a_shard_gives_its_segment_back_once_even_when_finished_and_abandoned(tmp_path):
    from acqwriter.engine.shards import SegmentPool, ShardWriter

    store = create_local(tmp_path / "p.ome.zarr", overwrite=False, sync="none")
    (tmp_path / "p.ome.zarr" / "0").mkdir()
    pool = SegmentPool(keep=4)
    shard = ShardWriter(store, "0/c/0/0/0", n_inner=2, expected=2, pool=pool)
    shard.put(0, memoryview(b"abc"))
    shard.finish()
    shard.abandon()  # a failure path may abandon a shard that was finished
    taken = [pool.take() for _ in range(4)]  # everything pooled, and then some
    assert len({id(buf) for buf in taken}) == 4  # never one buffer handed out twice


def test_a_shard_counts_what_it_still_has_to_write_for_the_free_space_check(tmp_path):
    """The low-space stop adds these to the ring's frames: bytes packed but not on disk
    plus the index, and for a seal the whole copy; nothing once finished."""
    from acqwriter.engine.shards import SegmentPool, ShardWriter
    from acqwriter.format.zarr_v3 import index_nbytes
    from acqwriter.plan.sharding import SEGMENT_BYTES

    store = create_local(tmp_path / "q.ome.zarr", overwrite=False, sync="none")
    (tmp_path / "q.ome.zarr" / "0").mkdir()
    shard = ShardWriter(store, "0/c/0/0/0", n_inner=4, expected=4, pool=SegmentPool(keep=2))
    assert shard.unwritten_bytes() == shard.seal_bytes() == index_nbytes(4)
    shard.put(0, memoryview(b"x" * 1000))
    assert shard.unwritten_bytes() == shard.seal_bytes() == 1000 + index_nbytes(4)
    shard.put(1, memoryview(b"y" * SEGMENT_BYTES))  # fills the segment: 1000 B go to disk
    assert shard.unwritten_bytes() == SEGMENT_BYTES + index_nbytes(4)
    assert shard.seal_bytes() >= 1000 + SEGMENT_BYTES + index_nbytes(4)  # the copy: all so far
    shard.finish()
    assert shard.unwritten_bytes() == shard.seal_bytes() == 0


def _extent(out) -> int:
    return json.loads((out / "0" / "zarr.json").read_text())["shape"][0]


def _wait_extent(out, rows, timeout=10.0) -> int:
    deadline = time.monotonic() + timeout
    while _extent(out) < rows and time.monotonic() < deadline:
        time.sleep(0.02)
    return _extent(out)


def _wait_written(stream, n, timeout=5.0) -> int:
    """``progress()["frames_written"]`` once it reaches ``n`` (or the timeout): the
    committer rewrites ``zarr.json`` first and updates its counters right after, so a
    reader polling the file can see the new extent a moment before ``progress()`` does."""
    deadline = time.monotonic() + timeout
    while stream.progress()["frames_written"] < n and time.monotonic() < deadline:
        time.sleep(0.01)
    return stream.progress()["frames_written"]


def test_a_slow_stream_sealed_into_its_unfinished_t_shard_is_readable_in_time(tmp_path):
    """64×64 frames go 2 048 to an automatic t-shard; at a slow rate the frames so far
    enter the dataset within shard_seal_s by sealing the unfinished shard."""
    out = tmp_path / "slow.ome.zarr"
    bank = FrameBank((64, 64), "uint16", size=3, seed=31)
    spec = {"out": out, "shape": (64, 64), "dtype": "uint16", "shard_seal_s": 0.1}
    stream = open_stream(spec)
    assert stream.layout.shard_shape == (2048, 64, 64)
    for i in range(10):
        stream.append(bank.frame(i), metadata={"i": i})
    t0 = time.monotonic()
    assert _wait_extent(out, 10) == 10
    assert time.monotonic() - t0 < 2.0  # seal 0.1 s + commit interval, with slack
    # a reader in the middle of the stream: valid, bit-exact, both readers
    check_dataset(out)
    mid = read_zarr(out)
    np.testing.assert_array_equal(read_tensorstore(out), mid)
    for i, frame in enumerate(mid):
        np.testing.assert_array_equal(frame, bank.frame(i))
    assert [r["metadata"]["i"] for r in frame_records(out)] == list(range(10))
    assert _shard_files(out) == [out / "0" / "c" / "0" / "0" / "0"]  # published at its key
    # progress and the live summary count what readers already see, not finished shards
    assert _wait_written(stream, 10) == 10
    assert stream.summary.frames_written == 10
    # the shard keeps growing: later frames are republished, the earlier ones kept
    for i in range(10, 25):
        stream.append(bank.frame(i))
    assert _wait_extent(out, 25) == 25
    np.testing.assert_array_equal(read_zarr(out)[24], bank.frame(24))
    stream.skip(2)  # frames 25 and 26 lost by the camera: in the extent, not written
    for i in range(27, 30):
        stream.append(bank.frame(i))
    assert _wait_extent(out, 30) == 30
    assert _wait_written(stream, 28) == 28
    assert stream.summary.frames_written == 28
    summary = stream.close()
    assert summary.error is None and summary.state == "complete"
    assert summary.frames_written == 28 and summary.dropped_indices == [25, 26]
    data = read_zarr(out)
    assert data.shape == (30, 64, 64)
    assert [read_stamp(f) for f in data[:25]] == list(range(25))
    assert not data[25:27].any()  # fill value where the camera lost frames
    assert [read_stamp(f) for f in data[27:]] == [27, 28, 29]
    assert not list(out.rglob("*.tmp"))  # the shard's temporary file was renamed into place


def test_a_fast_stream_never_seals(tmp_path):
    """A seal copies a shard so far to its key (``write_atomic`` of a chunk key); a fast
    stream only ever publishes finished shards."""
    from stores import StoreWrapper, local_store

    seals = []

    class CountingSeals(StoreWrapper):
        def write_atomic(self, key, data):
            if "/c/" in key:
                seals.append(key)
            super().write_atomic(key, data)

    out = tmp_path / "fast.ome.zarr"
    frames = _frames((64, 64), 3000)
    _write(out, frames, shards={"t": 256}, store=CountingSeals(local_store(out)))
    assert seals == []
    # the count sees seals: a slow stream's shard is sealed while it waits
    slow = tmp_path / "slow.ome.zarr"
    spec = {"out": slow, "shape": (64, 64), "dtype": "uint16", "shards": {"t": 256}}
    spec |= {"shard_seal_s": 0.05, "commit_interval_s": 0.01, "pyramid": {"enabled": False}}
    with open_stream(spec, store=CountingSeals(local_store(slow))) as stream:
        for i, frame in enumerate(frames[:3]):
            stream.append(frame)
            deadline = time.monotonic() + 30
            while len(seals) <= i and time.monotonic() < deadline:
                time.sleep(0.01)
    assert seals and set(seals) == {"0/c/0/0/0"}
    np.testing.assert_array_equal(read_zarr(out), np.stack(frames))
    assert len(_shard_files(out)) == 12  # 3 000 / 256, the last one partial


def test_writer_threads_buffers_for_big_sharded_chunks_come_out_of_the_ring(tmp_path):
    """Big chunks into shards are compressed by writer threads that each hold a staging
    chunk and a compressed scratch buffer: ring_bytes pays for them (the ring gets fewer
    slots), so ring_bytes + 300 MB still bounds the RSS (2048² frames, 16 MiB t-shards:
    836–950 MB with a 512 MiB ring before). Pipelined (unsharded) big chunks and small
    chunks keep the whole ring."""
    from acqwriter.plan.resources import Resources
    from acqwriter.spec.model import StreamSpec

    frame_bytes = 2048 * 2048 * 2
    base = {"out": tmp_path / "big.ome.zarr", "shape": (2048, 2048), "dtype": "uint16"}
    base["chunks"] = {"y": 2048, "x": 2048}  # one frame per chunk
    sharded = StreamSpec.parse({**base, "shards": {"t": 2}, "threads": 6})
    assert Resources.of(sharded).thread_buffer_bytes == 6 * 2 * frame_bytes
    assert Resources.of(sharded).ring_frames == (512 << 20) // frame_bytes - 12 == 52
    plain = StreamSpec.parse({**base, "threads": 6})
    assert Resources.of(plain).thread_buffer_bytes == 0 and Resources.of(plain).ring_frames == 64
    small = StreamSpec.parse({**base, "shape": (512, 512), "chunks": {}, "shards": {"t": 8}})
    assert Resources.of(small).thread_buffer_bytes == 0
    assert Resources.of(small).ring_frames == (512 << 20) // (512 * 512 * 2)
    # a ring too small for the threads' buffers keeps what one block needs
    tiny = StreamSpec.parse({**base, "shards": {"t": 2}, "ring_bytes": 64 << 20})
    from acqwriter.plan.layout import FrameLayout

    assert Resources.of(tiny).ring_frames == FrameLayout(tiny).min_ring_frames >= 1


def test_staging_of_shards_open_together_comes_out_of_the_ring(tmp_path):
    """t-shards of a t × c × z stack keep every shard of a time point open, each with a
    staging segment: that memory is taken from ring_bytes (the ring gets fewer slots), so
    ring_bytes still bounds what is in flight. Shards that close in order change nothing."""
    from acqwriter.plan.layout import FrameLayout
    from acqwriter.plan.resources import Resources
    from acqwriter.plan.sharding import SEGMENT_BYTES
    from acqwriter.spec.model import StreamSpec

    shape = (256, 256)  # 128 KiB frames
    frame_bytes = 256 * 256 * 2
    ring = 80 << 20
    stack = {
        "out": tmp_path / "stack.ome.zarr",
        "shape": shape,
        "dtype": "uint16",
        "dims": "tczyx",
        "sizes": {"c": 2, "z": 5},
        "shards": {"t": 4},
        "ring_bytes": ring,
        "pyramid": {"enabled": False},
    }
    spec = StreamSpec.parse(stack)
    layout = FrameLayout(spec)
    assert layout.shards.open_at_once() == 10  # 2 channels × 5 planes
    assert Resources.of(spec).ring_frames == (ring - 9 * SEGMENT_BYTES) // frame_bytes == 64
    in_order = StreamSpec.parse({**stack, "shards": {"z": 5}})  # one shard open at a time
    assert FrameLayout(in_order).shards.open_at_once() == 1
    assert Resources.of(in_order).ring_frames == ring // frame_bytes
    plain_t = StreamSpec.parse({**stack, "dims": "tyx", "sizes": {}})  # t-shards, no c/z
    assert Resources.of(plain_t).ring_frames == ring // frame_bytes

    bank = FrameBank(shape, "uint16", size=3, seed=9)
    frames = [bank.frame(i) for i in range(4 * 10 * 3)]  # three shards along t
    with open_stream(stack) as stream:
        for frame in frames:
            stream.append(frame)
    assert stream.summary.ring_capacity_frames == 64
    assert stream.summary.frames_written == len(frames)
    np.testing.assert_array_equal(read_zarr(stack["out"]).reshape(-1, *shape), np.stack(frames))
    check_dataset(stack["out"])
