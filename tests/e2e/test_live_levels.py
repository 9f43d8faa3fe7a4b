"""Live pyramid levels under real failures and from every entry point: SIGKILL at random
moments with three live levels, then ``recover``; a full disk (a size-limited tmpfs); a
pymmcore-plus MDA of positions with ``pyramid="live"``; the CLI's ``--pyramid`` and the
daemon's ``configure``."""

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
import useq
import zarr

from acqwriter.mda import MDAWriter
from acqwriter.post.downsample import downsample
from acqwriter.post.recover import recover
from acqwriter.simulators import FrameBank, read_stamp
from daemon_helpers import EventRecorder
from helpers import check_dataset, frame_records, read_zarr, run_cli

HERE = Path(__file__).resolve().parents[1]  # tests/: helper scripts
SHAPE = (48, 40)


def _assert_levels_exact(out: Path, bank: FrameBank, levels: int, dropped=()) -> list[int]:
    """Every level lists only rows on disk, each the real frame's level (each level the
    mean of the one above, the builders' rule; a dropped frame's rows are the fill
    value); returns each level's extent."""
    attrs = check_dataset(out, growing=True)
    datasets = attrs["ome"]["multiscales"][0]["datasets"]
    assert [d["path"] for d in datasets] == [str(k) for k in range(levels)]
    data = [read_zarr(out, k) for k in range(levels)]
    rows = max(level.shape[0] for level in data)
    expected = np.stack([bank.frame(t) for t in range(rows)]) if rows else None
    for k, level in enumerate(data):
        if k:
            expected = downsample(expected, (1, 2, 2), "mean")
        if not level.shape[0]:
            continue
        want = expected[: level.shape[0]].copy()
        for t in dropped:
            if t < len(want):
                want[t] = 0
        np.testing.assert_array_equal(level, want, err_msg=f"level {k}")
    extents = [level.shape[0] for level in data]
    assert all(e >= extents[0] for e in extents)  # a lower level never lacks level 0's rows
    return extents


@pytest.mark.parametrize("shards", ["none", "auto"])
def test_sigkill_with_three_live_levels_then_recover(tmp_path, shards):
    rng = random.Random(20261207)
    extents = []
    for k in range(6):
        out = tmp_path / f"kill{k}.ome.zarr"
        proc = subprocess.Popen(
            [
                sys.executable, str(HERE / "crash_writer.py"), str(out), str(k), "close",
                shards, "0.5", "live:4",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
        time.sleep(rng.uniform(0.05, 0.6))
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        bank = FrameBank(SHAPE, "uint16", size=3, seed=k)
        killed = _assert_levels_exact(out, bank, 4)
        for i, frame in enumerate(read_zarr(out)):
            assert read_stamp(frame) == i
        account = recover(out)
        attrs = check_dataset(out)
        assert attrs["acqwriter"]["state"] == "recovered"
        rows = account["rows"]
        assert rows >= killed[0]
        if rows:  # recover completes every level from level 0
            recovered = _assert_levels_exact(out, bank, 4)
            assert recovered == [rows] * 4
        extents.append(killed[0])
    assert len(set(extents)) >= 3  # the kills landed at different moments


def test_a_full_disk_stops_with_every_levels_extent_exact(mount_tmpfs, tmp_path):
    small_fs = mount_tmpfs("24m")
    out = small_fs / "full.ome.zarr"
    spec = tmp_path / "spec.json"
    spec.write_text(
        json.dumps(
            {
                "camera": "sim",
                "shape": [256, 256],
                "frames": 3000,
                "codec": "none",
                "out": str(out),
                "disk_check": False,
                "min_free_bytes": 0,
                "seed": 5,
                "chunks": {"t": 2},
                "pyramid": {"when": "live", "levels": 3},
            }
        )
    )
    run = run_cli("acquire", "--spec", str(spec), "--json", cwd=tmp_path, timeout=300)
    assert run.returncode == 1, run.stderr
    assert "No space left on device" in run.stderr
    summary = json.loads(run.stdout)["summary"]
    assert summary["state"] == "failed"
    bank = FrameBank((256, 256), "uint16", seed=5)
    dropped = {r["index"] for r in frame_records(out) if r["dropped"]}
    listed = summary["pyramid_levels"]
    extents = _assert_levels_exact(out, bank, listed, dropped)
    assert extents[0] == summary["frames_written"] + len(dropped) > 0
    # a level listed holds every row of level 0; one the full disk cut short is not
    # listed, and the summary says so and how to build it
    assert extents == [extents[0]] * listed
    if listed < 3:
        assert f"levels {listed}-2 not listed" in summary["pyramid_note"]
        assert "acqwriter pyramid" in summary["pyramid_note"]
        assert not (out / str(listed)).exists()
    root = json.loads((out / "zarr.json").read_text())["attributes"]["acqwriter"]
    assert root["state"] == "failed"


@pytest.fixture(scope="module")
def mmc():
    from pymmcore_plus import CMMCorePlus

    core = CMMCorePlus()
    core.loadSystemConfiguration()
    core.setProperty("Camera", "Mode", "Noise")
    core.setROI(0, 0, 300, 260)
    yield core
    core.reset()


def test_an_mda_of_positions_writes_live_levels(mmc, tmp_path):
    seq = useq.MDASequence(
        time_plan={"interval": 0, "loops": 3},
        channels=["DAPI", "FITC"],
        stage_positions=[(0, 0, 0), (5, 5, 0)],
        axis_order="tpc",
    )
    out = tmp_path / "mda.ome.zarr"
    writer = MDAWriter(out, core=mmc, pyramid="live")  # as a pymmcore-plus user writes it
    try:
        mmc.run_mda(seq, block=True)
    finally:
        writer.detach()
    assert writer.summary is not None and writer.summary.state == "complete"
    check_dataset(out)
    for image in ("0", "1"):
        group = zarr.open_group(out / image, mode="r")
        names = [d["path"] for d in group.attrs["ome"]["multiscales"][0]["datasets"]]
        assert names == ["0", "1"]  # auto: 300 x 260 → 150 x 130
        level0 = group["0"][...]
        assert level0.shape == (3, 2, 260, 300) and level0.any()
        expected = level0
        for name in ("1",):
            expected = downsample(expected, (1, 1, 2, 2), "mean")
            np.testing.assert_array_equal(group[name][...], expected)
    summary = writer.summary.images  # type: ignore[union-attr]
    assert all(s.pyramid_levels == 2 and s.pyramid_duration_s == 0 for s in summary.values())


def test_cli_pyramid_live_close_none(tmp_path):
    levels = {}
    for when in ("live", "close", "none"):
        run = run_cli(
            "acquire", "--camera", "sim", "--frames", "30", "--shape", "600x520", "--out",
            f"{when}.ome.zarr", "--pyramid", when, "--json", cwd=tmp_path,
        )  # fmt: skip
        assert run.returncode == 0, run.stderr
        summary = json.loads(run.stdout)["summary"]
        levels[when] = summary["pyramid_levels"]
        built = summary["pyramid_duration_s"]
        assert (built > 0) == (when == "close")  # live: nothing left to build at close
    assert levels == {"live": 3, "close": 3, "none": 1}
    for k in range(3):
        np.testing.assert_array_equal(
            read_zarr(tmp_path / "live.ome.zarr", k), read_zarr(tmp_path / "close.ome.zarr", k)
        )
    bad = run_cli(
        "acquire", "--camera", "sim", "--frames", "3", "--out", "x.ome.zarr", "--pyramid",
        "live", "--no-pyramid", cwd=tmp_path,
    )  # fmt: skip
    assert bad.returncode == 2 and "--no-pyramid contradicts --pyramid live" in bad.stderr
    assert not (tmp_path / "x.ome.zarr").exists()


def test_the_daemon_writes_live_levels_and_reports_them(daemon, tmp_path):
    recorder = EventRecorder(daemon.local_events)
    try:
        with daemon.client() as client:
            client.configure(
                camera="sim", shape=[300, 280], dtype="uint16", frames=60, fps=100,
                out="d.ome.zarr", seed=3, pyramid={"when": "live", "levels": 3},
            )  # fmt: skip
            client.start()
            summary = recorder.wait_for("summary")["summary"]
    finally:
        recorder.close()
    assert summary["state"] == "complete" and summary["pyramid_levels"] == 3
    assert summary["pyramid_duration_s"] == 0.0
    progress = [e for t, e in recorder.events if t == "progress"]
    levels = [e["pyramid_level_frames"] for e in progress]
    assert levels and all(len(counts) == 3 for counts in levels)  # every level, as it grows
    assert levels[-1] == [60, 60, 60]
    out = tmp_path / "d.ome.zarr"
    check_dataset(out)
    level0 = read_zarr(out)
    np.testing.assert_array_equal(read_zarr(out, 1), downsample(level0, (1, 2, 2), "mean"))
