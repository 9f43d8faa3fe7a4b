"""A reader in another process, reading while the writer writes, always sees a valid dataset."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from acqwriter import open_stream
from acqwriter.simulators import FrameBank

TESTS = Path(__file__).resolve().parents[1]  # tests/: the reader script


@pytest.mark.parametrize("shards", ["none", "auto"])
def test_reader_during_acquisition_sees_valid_growing_dataset(tmp_path, shards):
    """``auto`` packs the frames into shards along t; the reader sees them grow through
    the sealed, republished shard."""
    out = tmp_path / "live.ome.zarr"
    shape = (64, 96)
    bank = FrameBank(shape, "uint16", size=3, seed=11)
    spec = {
        "out": out,
        "shape": shape,
        "dtype": "uint16",
        "chunks": {"t": 3, "y": 32, "x": 32},
        "commit_interval_s": 0.02,
        "shards": shards,
        "shard_seal_s": 0.05,
        "pyramid": {"enabled": False},
    }
    env = {**os.environ, "PYTHONPATH": str(TESTS)}
    stream = open_stream(spec)
    reader = subprocess.Popen(
        [
            sys.executable,
            str(Path(__file__).resolve().parents[1] / "live_reader.py"),
            str(out),
            *map(str, shape),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    # the reader's own pace sets the test's: each burst of frames waits until the reader
    # has read the extent that covers it (a busy machine only makes it take longer)
    assert "ready" in _until(reader, lambda line: line == "ready")
    n, burst = 150, 30
    for start in range(0, n, burst):
        for i in range(start, start + burst):
            stream.append(bank.frame(i))
            time.sleep(0.002)
        _until(reader, lambda line, end=start + burst: line == f"extent {end}")
    summary = stream.close()
    stdout, stderr = reader.communicate(timeout=60)
    assert reader.returncode == 0, stderr
    result = json.loads(stdout.strip().splitlines()[-1])
    assert result["failures"] == []
    extents = result["extents"]
    assert extents == sorted(extents) and extents[-1] == n == summary.frames_written
    assert len(extents) >= 5, extents  # it really watched the array grow
    assert {30, 60, 90, 120, 150} <= set(extents)
    assert all(e % 3 == 0 for e in extents[:-1])  # only whole chunks of 3 frames commit


def _until(reader: subprocess.Popen, wanted) -> str:
    """Lines of the reader's output up to and including the first ``wanted`` accepts."""
    read = []
    for line in iter(reader.stdout.readline, ""):
        read.append(line.strip())
        if wanted(line.strip()):
            return "\n".join(read)
    raise AssertionError(f"the reader ended first: {read[-5:]} {reader.stderr.read()[-2000:]}")
