"""SIGKILL the writing process at random moments; the dataset must always be valid and exact.

Each kill leaves a dataset that validates against the OME-NGFF 0.5 schema, opens in
zarr-python and tensorstore, and whose every frame inside the recorded extent is
bit-exact (stamp and pixels). ``acqwriter recover`` then finishes it, idempotently.
More kills: ``python benchmarks/crash_soak.py --kills 500``.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from acqwriter.post.downsample import downsample
from acqwriter.post.recover import RecoverError, recover
from acqwriter.simulators import FrameBank, read_stamp
from helpers import KILLS, check_dataset, read_tensorstore, read_zarr, run_cli

HERE = Path(__file__).resolve().parents[1]  # tests/: helper scripts
SHAPE = (48, 40)


def start_writer(
    out: Path, seed: int, sync: str = "close", shards: str = "none"
) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "crash_writer.py"), str(out), str(seed), sync, shards],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    line = proc.stdout.readline()
    assert line.strip() == "ready", proc.stderr.read()
    return proc


def assert_exact(out: Path, seed: int) -> int:
    """Valid dataset whose frames inside the extent are exactly the writer's; returns extent."""
    check_dataset(out)
    bank = FrameBank(SHAPE, "uint16", size=3, seed=seed)
    data = read_zarr(out)
    np.testing.assert_array_equal(read_tensorstore(out), data)
    for i, frame in enumerate(data):
        assert read_stamp(frame) == i, f"frame {i} carries stamp {read_stamp(frame)}"
        np.testing.assert_array_equal(frame, bank.frame(i))
    return data.shape[0]


def kill_and_check(
    tmp_path: Path, k: int, rng: random.Random, sync: str = "close", shards: str = "none"
):
    out = tmp_path / f"kill{k}.ome.zarr"
    proc = start_writer(out, seed=k, sync=sync, shards=shards)
    time.sleep(rng.uniform(0.0, 0.5))
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    assert proc.returncode == -signal.SIGKILL
    extent = assert_exact(out, k)
    records = [
        json.loads(x) for x in (out / "0" / "frame_metadata.jsonl").read_bytes().split(b"\n")[:-1]
    ]
    assert len(records) >= extent  # metadata lines precede the extent
    return out, extent


@pytest.mark.slow
@pytest.mark.parametrize("shards", ["none", "auto"])
def test_sigkill_at_random_moments_then_recover(tmp_path, shards):
    """``auto``: 48×40 frames go 2 000+ to a shard along t, so everything the extent
    covers mid-stream was published by sealing the unfinished shard."""
    rng = random.Random(20261124)
    extents = []
    for k in range(KILLS):
        out, extent = kill_and_check(tmp_path, k, rng, shards=shards)
        account = recover(out)
        recovered = assert_exact(out, k)
        assert recovered == account["rows"] >= extent
        attrs = check_dataset(out)
        assert attrs["acqwriter"]["state"] == "recovered"
        if recovered:
            assert len(attrs["ome"]["multiscales"][0]["datasets"]) == 2
            level1 = read_zarr(out, 1)
            np.testing.assert_array_equal(level1, downsample(read_zarr(out), (1, 2, 2), "mean"))
        # idempotent: a second run finds nothing to recover and changes nothing
        before = (out / "zarr.json").read_bytes()
        again = recover(out)
        assert again["nothing_to_recover"] and again["state"] == "recovered"
        assert (out / "zarr.json").read_bytes() == before
        assert assert_exact(out, k) == recovered
        assert not list(out.rglob(".*.tmp")) and not (out / ".acqwriter.reserve").exists()
        extents.append(recovered)
    # the kills landed at different moments, including mid-stream
    assert len(set(extents)) >= KILLS // 2 and max(extents) > 30


def test_sigkill_with_fsync_always(tmp_path):
    rng = random.Random(7)
    for k in range(3):
        out, _ = kill_and_check(tmp_path, 100 + k, rng, sync="always")
        recover(out)
        assert_exact(out, 100 + k)


def test_recover_cli_and_refusals(tmp_path):
    rng = random.Random(3)
    out, _ = kill_and_check(tmp_path, 50, rng)
    run = run_cli("recover", str(out), "--json", "--verify", "all", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    account = json.loads(run.stdout)
    assert account["rows"] == assert_exact(out, 50)
    assert run_cli("recover", str(out), cwd=tmp_path).returncode == 0

    missing = run_cli("recover", str(tmp_path / "nothing"), cwd=tmp_path)
    assert missing.returncode == 2 and "no zarr.json" in missing.stderr
    foreign = tmp_path / "foreign.zarr"
    foreign.mkdir()
    (foreign / "zarr.json").write_text(
        json.dumps({"zarr_format": 3, "node_type": "group", "attributes": {}})
    )
    run = run_cli("recover", str(foreign), cwd=tmp_path)
    assert run.returncode == 2 and "not written by acqwriter" in run.stderr
    corrupt = tmp_path / "corrupt.zarr"
    corrupt.mkdir()
    (corrupt / "zarr.json").write_text("{torn")
    run = run_cli("recover", str(corrupt), cwd=tmp_path)
    assert run.returncode == 2 and "corrupt" in run.stderr


def test_recover_refuses_a_live_writer(tmp_path):
    out = tmp_path / "live.ome.zarr"
    proc = start_writer(out, seed=1)
    try:
        with pytest.raises(RecoverError, match="live writer holds the lock"):
            recover(out)
    finally:
        proc.kill()
        proc.wait()


def test_torn_metadata_line_is_cut(tmp_path):
    rng = random.Random(11)
    out, _ = kill_and_check(tmp_path, 60, rng)
    with open(out / "0" / "frame_metadata.jsonl", "ab") as fh:
        fh.write(b'{"index": 99999, "recei')  # a write cut by the crash
    account = recover(out)
    assert account["metadata_was_torn"] is True
    n = assert_exact(out, 60)
    lines = (out / "0" / "frame_metadata.jsonl").read_bytes().split(b"\n")
    assert lines[-1] == b"" and len(lines) - 1 == n


def test_torn_chunk_ends_the_recovered_extent(tmp_path):
    """Metadata proves 30 frames but a chunk of block 4 (frames 12-14) is torn: recovery
    keeps blocks 0-3 (12 frames) and deletes everything from block 4 on."""
    out = tmp_path / "torn.ome.zarr"
    proc = start_writer(out, seed=61)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if json.loads((out / "0" / "zarr.json").read_text())["shape"][0] >= 30:
            break
        time.sleep(0.01)
    proc.kill()
    proc.wait()
    meta = json.loads((out / "0" / "zarr.json").read_text())
    meta["shape"][0] = 0  # as if the crash came before any extent rewrite
    (out / "0" / "zarr.json").write_text(json.dumps(meta))
    chunk = out / "0" / "c" / "4" / "1" / "0"
    chunk.write_bytes(chunk.read_bytes()[:10])
    account = recover(out)
    assert account["rows_before"] == 0 and account["rows"] == 12
    assert assert_exact(out, 61) == 12
    assert not (out / "0" / "c" / "4").exists()
    assert len((out / "0" / "frame_metadata.jsonl").read_bytes().split(b"\n")) - 1 == 12
