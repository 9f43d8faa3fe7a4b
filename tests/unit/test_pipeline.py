"""Big unsharded chunks go through the compress → I/O pipeline (StreamSpec.io_threads):
compressing threads hand encoded chunks, in buffers from a bounded pool, to I/O threads.
These tests check what it writes (bit-exact, both readers, the schema), that memory stays
bounded, and that a failed write stops the stream cleanly with an exact extent."""

from __future__ import annotations

import errno
import os
import threading
import time

import numpy as np
import pytest
from stores import StoreWrapper, local_store

from acqwriter import StreamError, open_stream
from acqwriter.simulators import FrameBank, read_stamp
from helpers import check_dataset, frame_records, read_tensorstore, read_zarr

SHAPE = (1024, 1024)  # 2 MiB uint16 frames: the smallest chunks that are pipelined


def _spec(out, **extra):
    return {
        "out": out,
        "shape": SHAPE,
        "dtype": "uint16",
        "chunks": {"t": 1, "y": SHAPE[0], "x": SHAPE[1]},
        "ring_bytes": 8 << 20,  # 4 frames: the producer outruns the writers, back-pressure
        "pyramid": {"enabled": False},
        "disk_check": False,
        **extra,
    }


@pytest.mark.parametrize("io", ["auto", "buffered"])
def test_pipelined_chunks_read_back_exactly(tmp_path, io):
    out = tmp_path / f"{io}.ome.zarr"
    bank = FrameBank(SHAPE, "uint16", size=4, seed=21)
    before = set(threading.enumerate())
    stream = open_stream(_spec(out, io=io))
    started = [t.name for t in set(threading.enumerate()) - before]
    assert sum(n.startswith("acqwriter-io-") for n in started) == 4  # the pipeline is in use
    for i in range(40):
        stream.append(bank.frame(i), metadata={"i": i})
    summary = stream.close()
    assert summary.ok and summary.frames_written == 40 and summary.frames_dropped == 0
    assert summary.ring_high_water_frames <= 4
    check_dataset(out)
    data = read_zarr(out)
    assert data.shape == (40, *SHAPE)
    np.testing.assert_array_equal(read_tensorstore(out), data)
    for i, frame in enumerate(data):
        assert read_stamp(frame) == i
        np.testing.assert_array_equal(frame, bank.frame(i))
    assert [r["metadata"]["i"] for r in frame_records(out)] == list(range(40))
    # every thread of the stream is gone after close (zarr-python's readers keep theirs)
    time.sleep(0.05)
    assert not [t.name for t in set(threading.enumerate()) - before if "acqwriter" in t.name]


class FailingChunkWrites(StoreWrapper):
    """A real store whose chunk writes fail after the first ``ok`` (an injected fault)."""

    ok = 6
    err = errno.EIO

    def write_chunk_from(self, key, n, buf=None):
        if key.startswith("0/c/"):
            with _lock:
                if FailingChunkWrites.ok <= 0:
                    raise OSError(FailingChunkWrites.err, os.strerror(FailingChunkWrites.err))
                FailingChunkWrites.ok -= 1
        return super().write_chunk_from(key, n, buf)


_lock = threading.Lock()


@pytest.mark.parametrize("err", [errno.EIO, errno.ENOSPC])
def test_a_failed_pipelined_write_stops_cleanly_with_an_exact_extent(tmp_path, monkeypatch, err):

    FailingChunkWrites.ok, FailingChunkWrites.err = 6, err
    out = tmp_path / "fail.ome.zarr"
    bank = FrameBank(SHAPE, "uint16", size=3, seed=22)
    before = set(threading.enumerate())
    stream = open_stream(_spec(out), store=FailingChunkWrites(local_store(out)))
    with pytest.raises(StreamError, match=os.strerror(err)):
        for i in range(400):
            stream.append(bank.frame(i))
    summary = stream.close()
    assert summary.state == "failed" and os.strerror(err) in summary.error
    # the extent covers exactly the chunks that reached the disk, in order
    check_dataset(out)
    data = read_zarr(out)
    assert data.shape[0] == summary.frames_written <= 6
    for i, frame in enumerate(data):
        np.testing.assert_array_equal(frame, bank.frame(i))
    time.sleep(0.05)
    assert not [t.name for t in set(threading.enumerate()) - before if "acqwriter" in t.name]
