"""The acqwriter command in real subprocesses: exit status, summaries, spec files, info."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from acqwriter import jsonio
from acqwriter.plan.dataset import DatasetPlan
from acqwriter.simulators import FrameBank, read_stamp
from acqwriter.spec.model import StreamSpec
from helpers import check_dataset, read_zarr, run_cli


@pytest.fixture
def acqwriter(tmp_path):
    def run(*args):
        return run_cli(*args, cwd=tmp_path)

    return run


def test_acquire_sim_json_summary_and_exit_zero(tmp_path, acqwriter):
    out = tmp_path / "demo.ome.zarr"
    run = acqwriter(
        "acquire",
        "--camera",
        "sim",
        "--shape",
        "128x96",
        "--dtype",
        "uint16",
        "--frames",
        "25",
        "--codec",
        "lz4",
        "--chunks",
        "5x64x64",
        "--out",
        str(out),
        "--json",
    )
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert report["ok"] is True and report["reason"] is None
    s = report["summary"]
    assert s["frames_written"] == 25 and s["frames_dropped"] == 0 and s["shape"] == [25, 128, 96]
    assert s["compression_ratio"] > 1.2
    check_dataset(out)
    data = read_zarr(out)
    bank = FrameBank((128, 96), "uint16")
    assert [read_stamp(f) for f in data] == list(range(25))
    np.testing.assert_array_equal(data[24], bank.frame(24))
    meta = json.loads((out / "0" / "zarr.json").read_text())
    # small chunks go into shards along t (spec: shards auto); the chunks asked for are
    # the shard's inner chunks
    assert meta["codecs"][0]["name"] == "sharding_indexed"
    assert meta["codecs"][0]["configuration"]["chunk_shape"] == [5, 64, 64]


def test_acquire_human_summary_with_spec_file_and_overrides(tmp_path, acqwriter):
    spec = tmp_path / "spec.yaml"
    out = tmp_path / "s.ome.zarr"
    spec.write_text(
        f"camera: sim\nshape: [64, 64]\ndtype: uint8\nframes: 12\nout: {out}\n"
        "dims: tzyx\nsizes: {z: 1}\n"
        "codec: {name: blosc, cname: zstd, shuffle: bitshuffle, level: 1}\n"
    )
    run = acqwriter("acquire", "--spec", str(spec), "--frames", "8")
    assert run.returncode == 0, run.stderr
    assert "frames       received 8, written 8, dropped 0" in run.stdout
    assert read_zarr(out).shape == (8, 1, 64, 64)
    info = acqwriter("info", str(out), "--json")
    assert info.returncode == 0, info.stderr
    data = json.loads(info.stdout)
    assert data["codec"] == "blosc zstd level 1 bitshuffle"
    assert data["blosc_blocksize"] == 1 << 20  # "auto" for zstd
    assert (
        data["shape"] == [8, 1, 64, 64]
        and data["frames_dropped"] == 0
        and data["state"] == "complete"
    )
    text = acqwriter("info", str(out)).stdout
    assert "shape     (8, 1, 64, 64) tzyx uint8" in text
    # the block size from the command line, over the spec file's codec
    out2 = tmp_path / "s2.ome.zarr"
    run = acqwriter(
        "acquire", "--spec", str(spec), "--out", str(out2), "--blocksize", "0", "--quiet"
    )
    assert run.returncode == 0, run.stderr
    data = json.loads(acqwriter("info", str(out2), "--json").stdout)
    assert data["codec"] == "blosc zstd level 1 bitshuffle" and data["blosc_blocksize"] == 0
    assert "codec     blosc zstd level 1 bitshuffle (1024 KiB blocks)" in text


def test_camera_drops_give_nonzero_exit_with_reason(tmp_path, acqwriter):
    spec = tmp_path / "faulty.json"
    out = tmp_path / "f.ome.zarr"
    spec.write_text(
        json.dumps(
            {
                "camera": "sim",
                "shape": [32, 32],
                "frames": 10,
                "out": str(out),
                "sim_faults": {"skip": [2, 7]},
            }
        )
    )
    run = acqwriter("acquire", "--spec", str(spec), "--json")
    assert run.returncode == 1
    assert "incomplete: 2 frame(s) dropped" in run.stderr
    report = json.loads(run.stdout)
    assert report["summary"]["dropped_indices"] == [2, 7] and report["lost_camera_frames"] == [2, 7]
    info = json.loads(acqwriter("info", str(out), "--json").stdout)
    assert info["frames_dropped"] == 2 and info["dropped_indices"] == [2, 7]


def test_invalid_input_exits_2_naming_the_field(tmp_path, acqwriter):
    out = tmp_path / "x.ome.zarr"
    run = acqwriter("acquire", "--frames", "0", "--out", str(out))
    assert run.returncode == 2 and "frames" in run.stderr and "greater than 0" in run.stderr
    run = acqwriter("acquire", "--frames", "3", "--codec", "lz5", "--out", str(out))
    assert run.returncode == 2 and "codec" in run.stderr
    run = acqwriter("acquire", "--frames", "3", "--blocksize", "big", "--out", str(out))
    assert run.returncode == 2 and "--blocksize: expected 'auto' or a whole number" in run.stderr
    run = acqwriter("acquire", "--frames", "3", "--blocksize", "64", "--out", str(out))
    assert run.returncode == 2 and "codec.blocksize" in run.stderr and "from 128" in run.stderr
    run = acqwriter(
        "acquire", "--frames", "3", "--codec", "zstd", "--blocksize", "4096", "--out", str(out)
    )
    assert run.returncode == 2 and "blocksize: applies to blosc only" in run.stderr
    run = acqwriter("acquire", "--frames", "3")
    assert run.returncode == 2 and "out: required" in run.stderr
    run = acqwriter(
        "acquire", "--camera", str(tmp_path / "none.cfg"), "--frames", "3", "--out", str(out)
    )
    assert run.returncode == 2 and "neither 'sim', 'demo' nor an existing" in run.stderr
    run = acqwriter("acquire", "--shape", "12", "--frames", "3", "--out", str(out))
    assert run.returncode == 2 and "HEIGHTxWIDTH" in run.stderr
    assert not out.exists()
    ok = acqwriter("acquire", "--shape", "16x16", "--frames", "2", "--out", str(out), "--quiet")
    assert ok.returncode == 0, ok.stderr
    again = acqwriter("acquire", "--shape", "16x16", "--frames", "2", "--out", str(out), "--quiet")
    assert again.returncode == 2 and "already exists" in again.stderr
    assert read_zarr(out).shape == (2, 16, 16)  # the refused run did not touch it


def test_acquire_demo_camera(tmp_path, acqwriter):
    out = tmp_path / "d.ome.zarr"
    run = acqwriter(
        "acquire",
        "--camera",
        "demo",
        "--frames",
        "10",
        "--exposure",
        "1",
        "--out",
        str(out),
        "--json",
    )
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["summary"]["frames_written"] == 10
    check_dataset(out)


def test_duration_and_progress_bar(tmp_path, acqwriter):
    out = tmp_path / "p.ome.zarr"
    run = acqwriter(
        "acquire", "--shape", "64x64", "--fps", "50", "--duration", "0.6s", "--out", str(out)
    )
    assert run.returncode == 0, run.stderr
    assert "MB/s" in run.stderr and "ring" in run.stderr and "drops" in run.stderr
    n = read_zarr(out).shape[0]
    assert 10 <= n <= 40
    assert Path(out / "0" / "frame_metadata.jsonl").read_text().count("\n") == n


def test_acquire_plan_prints_and_writes_nothing(tmp_path):
    out = tmp_path / "run.ome.zarr"
    args = ["acquire", "--camera", "sim", "--shape", "512x512", "--frames", "40"]
    args += ["--out", str(out)]
    shown = run_cli(*args, "--plan", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert "level 1: (grows, 256, 256)" in shown.stdout and "frame slots" in shown.stdout
    as_json = run_cli(*args, "--plan", "--json", cwd=tmp_path)
    assert as_json.returncode == 0, as_json.stderr
    data = jsonio.loads(as_json.stdout)
    expected = DatasetPlan.of_stream(
        StreamSpec.parse({"out": out, "shape": (512, 512), "dtype": "uint16"})
    )
    assert data["slots"]["frames"] == expected.slots.frames
    assert data["images"][0]["levels"][1]["shape"] == [None, 256, 256]
    assert not out.exists()


def test_acquire_plan_of_positions_lists_each_image(tmp_path):
    out = tmp_path / "pos.ome.zarr"
    shown = run_cli(
        "acquire", "--camera", "sim", "--shape", "64x64", "--frames", "2", "--positions", "3",
        "--out", str(out), "--plan", "--json", cwd=tmp_path,
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    data = jsonio.loads(shown.stdout)
    assert data["layout"] == "collection"
    assert [i["key"] for i in data["images"]] == ["p0", "p1", "p2"]
    assert not out.exists()
