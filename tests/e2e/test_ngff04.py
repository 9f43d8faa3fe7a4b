"""OME-NGFF 0.4 on Zarr v2, for the tools that cannot read 0.5: images, collections and
plates valid against the official 0.4 schemas, every pixel read back by zarr-python,
tensorstore's ``zarr`` driver and ome-zarr-py, shards refused, and the same guarantees
after a kill or a full disk."""

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

import acqwriter
from acqwriter import SpecError
from acqwriter.post.recover import recover
from acqwriter.simulators import FrameBank, read_stamp
from helpers import KILLS, check_dataset, frame_records, read_tensorstore, read_zarr, run_cli

HERE = Path(__file__).resolve().parents[1]  # tests/: helper scripts


def _ome_zarr_read(path: Path) -> tuple[list[np.ndarray], dict]:
    """The levels and the metadata (axes, scales) as ome-zarr-py's reader gives them."""
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    node = next(iter(Reader(parse_url(str(path)))()))
    return [np.asarray(level) for level in node.data], node.metadata


@pytest.mark.parametrize("codec", ["lz4", "zstd", "none", "blosc-zstd"])
def test_an_image_in_0_4_reads_back_everywhere(tmp_path, codec):
    out = tmp_path / "img.ome.zarr"
    bank = FrameBank((96, 80), "uint16", size=4, seed=3)
    frames = [bank.frame(i) for i in range(12)]
    spec = {
        "out": out,
        "shape": (96, 80),
        "dtype": "uint16",
        "dims": "tzyx",
        "sizes": {"z": 3},
        "chunks": {"z": 3, "y": 64, "x": 64},
        "codec": codec,
        "ngff_version": "0.4",
        "pixel_size": 0.5,
        "pyramid": {"levels": 2},
    }
    with acqwriter.open_stream(spec) as stream:
        for frame in frames:
            stream.append(frame, metadata={"n": 1})
    assert stream.summary.ok and stream.summary.pyramid_levels == 2
    assert not (out / "zarr.json").exists() and (out / ".zgroup").exists()
    attrs = check_dataset(out)
    ms = attrs["multiscales"][0]
    assert [a["name"] for a in ms["axes"]] == ["t", "z", "y", "x"]
    assert ms["datasets"][0]["coordinateTransformations"][0]["scale"][-2:] == [0.5, 0.5]
    expected = np.stack(frames).reshape(4, 3, 96, 80)
    for read in (read_zarr, read_tensorstore):
        np.testing.assert_array_equal(read(out), expected)
    levels, metadata = _ome_zarr_read(out)
    assert len(levels) == 2
    np.testing.assert_array_equal(levels[0], expected)
    assert levels[1].shape == (4, 3, 48, 40)
    assert [a["name"] for a in metadata["axes"]] == ["t", "z", "y", "x"]
    scales = [level[0]["scale"] for level in metadata["coordinateTransformations"]]
    assert [s[-2:] for s in scales] == [[0.5, 0.5], [1.0, 1.0]]
    assert [r["metadata"]["n"] for r in frame_records(out)] == [1] * 12


def test_collections_and_plates_in_0_4(tmp_path):
    image = {"shape": (32, 32), "dtype": "uint16", "sizes": {"t": 2}, "translation": {"x": 5.0}}
    frame = np.arange(32 * 32, dtype=np.uint16).reshape(32, 32)
    for layout, keys in (("collection", ["left", "right"]), ("plate", ["A/1/0", "B/2/0"])):
        out = tmp_path / f"{layout}.ome.zarr"
        spec = {
            "out": out,
            "layout": layout,
            "ngff_version": "0.4",
            "images": {k: image for k in keys},
        }
        with acqwriter.open_dataset(spec) as ds:
            for t in range(2):
                for key in keys:
                    ds.append(frame + t, image=key)
        assert ds.summary.ok
        attrs = check_dataset(out)
        for path in attrs["acqwriter"]["images"].values():
            data = read_tensorstore(out / path)
            np.testing.assert_array_equal(data, np.stack([frame, frame + 1]))
            ms = json.loads((out / path / ".zattrs").read_text())["multiscales"][0]
            assert ms["datasets"][0]["coordinateTransformations"][1]["translation"][-1] == 5.0
        if layout == "plate":
            assert attrs["plate"]["version"] == "0.4"
            assert {w["path"] for w in attrs["plate"]["wells"]} == {"A/1", "B/2"}
        info = run_cli("info", str(out), "--json", cwd=tmp_path)
        assert info.returncode == 0 and json.loads(info.stdout)["layout"] == layout


def test_shards_are_refused_in_0_4(tmp_path):
    spec = {"out": tmp_path / "s.ome.zarr", "shape": (8, 8), "dtype": "uint8"}
    with pytest.raises(SpecError, match=r"shards: OME-NGFF 0\.4 is stored in Zarr v2"):
        acqwriter.open_stream({**spec, "ngff_version": "0.4", "shards": {"t": 4}})
    # the automatic choice simply writes one file per chunk
    with acqwriter.open_stream({**spec, "ngff_version": "0.4"}) as stream:
        for _ in range(40):
            stream.append(np.ones((8, 8), np.uint8))
    assert len(list((tmp_path / "s.ome.zarr" / "0").glob("*/0/0"))) == 40
    (tmp_path / "spec.json").write_text(json.dumps({"shards": {"t": 2}}))
    run = run_cli(
        "acquire", "--camera", "sim", "--shape", "32x32", "--frames", "4", "--ngff", "0.4",
        "--spec", "spec.json", "--out", str(tmp_path / "c.ome.zarr"), cwd=tmp_path,
    )  # fmt: skip
    assert run.returncode == 2 and "shards: OME-NGFF 0.4" in run.stderr


@pytest.mark.slow
def test_0_4_killed_at_random_moments_is_valid_and_recovers(tmp_path):
    """:data:`KILLS` kills, two writers at a time (the machine has two cores)."""
    from concurrent.futures import ThreadPoolExecutor

    delays = [random.Random(4 + k).uniform(0.0, 0.5) for k in range(KILLS)]

    def kill(k: int) -> int:
        out = tmp_path / f"kill{k}.ome.zarr"
        proc = subprocess.Popen(
            [sys.executable, str(HERE / "crash_writer.py"), str(out), str(k), "close", "none",
             "0.4"],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(delays[k])
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        before = _exact(out, k)
        account = recover(out)
        after = _exact(out, k)
        assert after == account["rows"] >= before
        assert json.loads((out / ".zattrs").read_text())["acqwriter"]["state"] == "recovered"
        assert recover(out)["nothing_to_recover"]
        return after

    with ThreadPoolExecutor(max_workers=2) as pool:
        extents = list(pool.map(kill, range(KILLS)))
    assert len(set(extents)) >= 5 and max(extents) > 30


def _exact(out: Path, seed: int) -> int:
    check_dataset(out)
    data = read_zarr(out)
    bank = FrameBank((48, 40), "uint16", size=3, seed=seed)
    for i, frame in enumerate(data):
        assert read_stamp(frame) == i
        np.testing.assert_array_equal(frame, bank.frame(i))
    return data.shape[0]


def test_a_full_disk_in_0_4_stops_with_a_valid_dataset(mount_tmpfs):
    out = mount_tmpfs("24m") / "full.ome.zarr"
    spec = {
        "out": out,
        "shape": (256, 256),
        "dtype": "uint16",
        "codec": "none",
        "ngff_version": "0.4",
        "disk_check": False,
        "min_free_bytes": 0,
    }
    bank = FrameBank((256, 256), "uint16", size=3, seed=5)
    stream = acqwriter.open_stream(spec)
    with pytest.raises(acqwriter.StreamError):
        for i in range(3000):
            stream.append(bank.frame(i))
    summary = stream.close()
    assert summary.state == "failed" and "No space left" in summary.error
    check_dataset(out)
    data = read_zarr(out)
    assert data.shape[0] == summary.frames_written > 0
    for i, frame in enumerate(data):
        np.testing.assert_array_equal(frame, bank.frame(i))
