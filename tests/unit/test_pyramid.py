"""Pyramid levels: values against an independent numpy reference, metadata, rebuild."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from acqwriter import open_stream
from acqwriter.post.downsample import downsample
from acqwriter.simulators import FrameBank
from helpers import check_dataset, read_tensorstore, read_zarr, run_cli


def reference_mean_2x(plane: np.ndarray) -> np.ndarray:
    """Loop-based reference: mean of each 2×2 block clipped at odd edges, round half up."""
    h, w = plane.shape
    out = np.empty((math.ceil(h / 2), math.ceil(w / 2)), plane.dtype)
    for i in range(out.shape[0]):
        for j in range(out.shape[1]):
            block = plane[2 * i : 2 * i + 2, 2 * j : 2 * j + 2].astype(np.int64)
            n = block.size
            out[i, j] = (int(block.sum()) * 2 + n) // (2 * n)  # floor(mean + 0.5)
    return out


def test_downsample_rounding_rules():
    data = np.array([[1, 2, 5], [2, 2, 6], [9, 9, 7]], np.uint16)
    # blocks: [1,2,2,2]=7/4=1.75→2 ; [5,6]=5.5→6 ; [9,9]=9 ; [7]=7
    np.testing.assert_array_equal(downsample(data, (2, 2), "mean"), [[2, 6], [9, 7]])
    np.testing.assert_array_equal(downsample(data, (2, 2), "nearest"), [[1, 5], [9, 7]])
    half = np.array([[1, 2]], np.uint8)  # 1.5 rounds half up to 2
    np.testing.assert_array_equal(downsample(half, (1, 2), "mean"), [[2]])
    floats = np.array([[1.0, 2.0]], np.float32)
    np.testing.assert_allclose(downsample(floats, (1, 2), "mean"), [[1.5]])


@pytest.mark.parametrize("method", ["mean", "nearest"])
def test_levels_match_numpy_reference(tmp_path, method):
    out = tmp_path / "p.ome.zarr"
    shape = (150, 133)  # odd width: edge blocks are clipped
    bank = FrameBank(shape, "uint16", size=2, seed=3)
    frames = [bank.frame(i) for i in range(5)]
    spec = {
        "out": out,
        "shape": shape,
        "dtype": "uint16",
        "chunks": {"t": 2, "y": 32, "x": 32},
        "pyramid": {"method": method, "levels": 4},
        "pixel_size": 0.5,
        "time_increment": 1.0,
    }
    with open_stream(spec) as stream:
        for frame in frames:
            stream.append(frame)
    attrs = check_dataset(out)
    datasets = attrs["ome"]["multiscales"][0]["datasets"]
    # 150x133 → 75x67 → 38x34 → 19x17: the 4 levels asked for
    assert [d["path"] for d in datasets] == ["0", "1", "2", "3"]
    assert [d["coordinateTransformations"][0]["scale"] for d in datasets] == [
        [1.0, 0.5, 0.5],
        [1.0, 1.0, 1.0],
        [1.0, 2.0, 2.0],
        [1.0, 4.0, 4.0],
    ]
    assert stream.summary.pyramid_levels == 4
    previous = np.stack(frames)
    for level in range(1, 4):
        if method == "mean":
            expected = np.stack([reference_mean_2x(p) for p in previous])
        else:
            expected = previous[:, ::2, ::2]
        got = read_zarr(out, level)
        np.testing.assert_array_equal(got, expected)
        np.testing.assert_array_equal(read_tensorstore(out, level), expected)
        meta = json.loads((out / str(level) / "zarr.json").read_text())
        codecs0 = json.loads((out / "0" / "zarr.json").read_text())["codecs"]
        if codecs0[0]["name"] == "sharding_indexed":  # level 0 sharded along t: same chunks
            codecs0 = codecs0[0]["configuration"]["codecs"]
        assert meta["codecs"] == codecs0
        previous = expected


def test_downsample_z_and_fixed_level_count(tmp_path):
    out = tmp_path / "z.ome.zarr"
    shape = (64, 64)
    bank = FrameBank(shape, "uint8", size=2, seed=4)
    frames = [bank.frame(i) for i in range(2 * 5)]
    spec = {
        "out": out,
        "shape": shape,
        "dtype": "uint8",
        "dims": "tzyx",
        "sizes": {"z": 5},
        "chunks": {"y": 64, "x": 64},
        "z_step": 2.0,
        "time_increment": 1.0,
        "pyramid": {"levels": 3, "downsample_z": True, "method": "nearest"},
    }
    with open_stream(spec) as stream:
        for frame in frames:
            stream.append(frame)
    attrs = check_dataset(out)
    datasets = attrs["ome"]["multiscales"][0]["datasets"]
    assert len(datasets) == 3
    assert datasets[2]["coordinateTransformations"][0]["scale"] == [1.0, 8.0, 4.0, 4.0]
    full = np.stack(frames).reshape(2, 5, *shape)
    np.testing.assert_array_equal(read_zarr(out, 1), full[:, ::2, ::2, ::2])
    np.testing.assert_array_equal(read_zarr(out, 2), full[:, ::4, ::4, ::4])


def test_pyramid_cli_rebuild_is_idempotent(tmp_path):
    out = tmp_path / "r.ome.zarr"
    bank = FrameBank((80, 80), "uint16", size=2)
    spec = {
        "out": out,
        "shape": (80, 80),
        "dtype": "uint16",
        "chunks": {"y": 32, "x": 32},
        "pyramid": {"enabled": False, "levels": 3},
    }
    with open_stream(spec) as stream:
        for i in range(3):
            stream.append(bank.frame(i))
    assert len(check_dataset(out)["ome"]["multiscales"][0]["datasets"]) == 1
    for _ in range(2):
        run = run_cli("pyramid", str(out), cwd=tmp_path)
        assert run.returncode == 0, run.stderr
        assert "3 level(s)" in run.stdout
        datasets = check_dataset(out)["ome"]["multiscales"][0]["datasets"]
        assert [d["path"] for d in datasets] == ["0", "1", "2"]
        np.testing.assert_array_equal(
            read_zarr(out, 1), np.stack([reference_mean_2x(f) for f in read_zarr(out)])
        )
    bad = run_cli("pyramid", str(tmp_path / "nope"), cwd=tmp_path)
    assert bad.returncode == 2 and "not a Zarr dataset" in bad.stderr


def test_odd_chunks_read_the_region_and_match_the_reference(tmp_path):
    """Chunks of odd size put 2x2 blocks across two chunks: those levels are built from
    the assembled region, and must equal the reference just the same."""
    out = tmp_path / "odd.ome.zarr"
    shape = (70, 61)
    bank = FrameBank(shape, "uint16", size=2, seed=5)
    frames = [bank.frame(i) for i in range(3)]
    spec = {
        "out": out,
        "shape": shape,
        "dtype": "uint16",
        "chunks": {"y": 31, "x": 17},
        "pyramid": {"levels": 3},
    }
    with open_stream(spec) as stream:
        for frame in frames:
            stream.append(frame)
    check_dataset(out)
    level1 = read_zarr(out, 1)
    for t, frame in enumerate(frames):
        np.testing.assert_array_equal(level1[t], reference_mean_2x(frame))
