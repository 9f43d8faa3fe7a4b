"""Defects a user and a hostile tester met in plates, pyramids and the offline tools,
each caused for real: a 2048² quick start with its pyramid, plate metadata and keys,
roots naming paths out of their dataset, lone surrogates, a writer killed before its
first document, and the small API holes."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
import zarr

import acqwriter
from acqwriter.engine.errors import FrameError
from acqwriter.simulators import FrameBank
from acqwriter.store.local import LOCK_NAME
from acqwriter.validation import SpecError
from helpers import check_dataset, run_cli


def _root(out):
    return json.loads((out / "zarr.json").read_text())["attributes"]


def test_a_whole_frame_chunk_still_gets_the_levels_a_viewer_needs(tmp_path):
    out = tmp_path / "big.ome.zarr"
    bank = FrameBank((2048, 2048), "uint16", size=2)
    with acqwriter.open_stream({"out": out, "shape": (2048, 2048), "dtype": "uint16"}) as s:
        for i in range(3):
            s.append(bank.frame(i))
    attrs = check_dataset(out)
    datasets = attrs["ome"]["multiscales"][0]["datasets"]
    assert [d["path"] for d in datasets] == ["0", "1", "2", "3"]  # 2048 → 256
    shapes = [json.loads((out / p / "zarr.json").read_text())["shape"] for p in "0123"]
    assert [s[-1] for s in shapes] == [2048, 1024, 512, 256]
    assert s.summary.pyramid_levels == 4 and s.summary.pyramid_note is None
    assert "2x mean" in attrs["ome"]["multiscales"][0]["metadata"]["description"]


def test_an_image_without_lower_levels_says_why(tmp_path):
    out = tmp_path / "small.ome.zarr"
    with acqwriter.open_stream({"out": out, "shape": (200, 100), "dtype": "uint16"}) as s:
        s.append(np.ones((200, 100), np.uint16))
    assert s.summary.pyramid_levels == 1
    assert "at most 256 pixels" in s.summary.pyramid_note
    assert "256 pixels" in s.summary.describe()
    attrs = check_dataset(out)
    assert attrs["ome"]["multiscales"][0]["metadata"]["description"].startswith("a single level")
    info = run_cli("info", str(out), cwd=tmp_path)
    assert info.returncode == 0 and "no lower level" in info.stdout
    rebuilt = run_cli("pyramid", str(out), cwd=tmp_path)
    assert rebuilt.returncode == 0 and "no lower level" in rebuilt.stdout


def _plate(out, **plate):
    spec = {
        "out": out,
        "layout": "plate",
        "images": {k: {"shape": (16, 16), "dtype": "uint16"} for k in ("B/3/0", "D/7/0")},
    }
    if plate:
        spec["plate"] = plate
    with acqwriter.open_dataset(spec) as ds:
        for key in ("B/3/0", "D/7/0"):
            ds.append(np.ones((16, 16), np.uint16), image=key)


def test_a_plate_lists_the_physical_plate_and_its_row_groups(tmp_path):
    out = tmp_path / "p.ome.zarr"
    _plate(out, name="screen-17", rows=8, columns=12)
    plate = _root(out)["ome"]["plate"]
    assert plate["name"] == "screen-17"
    assert len(plate["rows"]) == 8 and plate["rows"][1] == {"name": "B"}
    assert len(plate["columns"]) == 12 and plate["columns"][6] == {"name": "7"}
    wells = {w["path"]: (w["rowIndex"], w["columnIndex"]) for w in plate["wells"]}
    assert wells == {"B/3": (1, 2), "D/7": (3, 6)}
    group = zarr.open_group(out, mode="r")
    assert group["B"]["3"]["0"]["0"].shape == (1, 16, 16)
    names = [n for n, _ in group.members(max_depth=None)]
    assert "D/7/0/0" in names


def test_a_well_outside_the_named_plate_is_refused(tmp_path):
    with pytest.raises(SpecError, match=r"images\.D/7/0: row 'D' is not a row of the plate"):
        _plate(tmp_path / "q.ome.zarr", rows=3, columns=12)
    assert not (tmp_path / "q.ome.zarr").exists()


@pytest.mark.parametrize("key", ["A/1/0\n", "A/1/0\r", "A/1/0/", "A/1\n/0"])
def test_a_plate_key_is_matched_whole(tmp_path, key):
    with pytest.raises(SpecError, match="plate key"):
        acqwriter.open_dataset(
            {
                "out": tmp_path / "k.ome.zarr",
                "layout": "plate",
                "images": {key: {"shape": (8, 8), "dtype": "uint16"}},
            }
        )
    assert not (tmp_path / "k.ome.zarr").exists()


def _collection(out):
    spec = {
        "out": out,
        "layout": "collection",
        "images": {k: {"shape": (16, 16), "dtype": "uint16"} for k in ("a", "b")},
    }
    with acqwriter.open_dataset(spec) as ds:
        for key in ("a", "b"):
            ds.append(np.ones((16, 16), np.uint16), image=key)


@pytest.mark.parametrize("path", ["../victim.ome.zarr", "/tmp", "0/../../victim.ome.zarr"])
def test_tools_never_follow_a_root_out_of_its_dataset(tmp_path, path):
    victim = tmp_path / "victim.ome.zarr"
    _collection(victim)
    before = {p: p.read_bytes() for p in victim.rglob("*") if p.is_file()}
    out = tmp_path / "evil.ome.zarr"
    _collection(out)
    doc = json.loads((out / "zarr.json").read_text())
    doc["attributes"]["acqwriter"]["images"]["b"] = path
    doc["attributes"]["acqwriter"]["state"] = "acquiring"
    (out / "zarr.json").write_text(json.dumps(doc))
    for command in ("recover", "info", "pyramid"):
        run = run_cli(command, str(out), cwd=tmp_path)
        assert run.returncode == 2, (command, run.stdout, run.stderr)
        assert "Traceback" not in run.stderr
        assert "out of the dataset" in run.stderr or "inside the dataset" in run.stderr
    after = {p: p.read_bytes() for p in victim.rglob("*") if p.is_file()}
    assert after == before


def test_a_folder_killed_before_its_first_document_is_recognised(tmp_path):
    out = tmp_path / "k.ome.zarr"
    out.mkdir()
    (out / LOCK_NAME).write_text("")
    run = run_cli("recover", str(out), cwd=tmp_path)
    assert run.returncode == 2 and "died before writing its first document" in run.stderr
    with acqwriter.open_stream(
        {"out": out, "overwrite": True, "shape": (8, 8), "dtype": "uint16"}
    ) as s:
        s.append(np.zeros((8, 8), np.uint16))
    check_dataset(out)


def test_a_folder_of_other_files_is_still_never_deleted(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep")
    with pytest.raises(SpecError, match="not a Zarr dataset"):
        acqwriter.open_stream({"out": out, "overwrite": True, "shape": (8, 8), "dtype": "uint16"})
    assert (out / "notes.txt").read_text() == "keep"


def test_lone_surrogates_are_refused_before_anything_is_created(tmp_path):
    out = tmp_path / "s.ome.zarr"
    for images in (
        {"a\ud800": {"shape": (8, 8), "dtype": "uint16"}},
        {"a": {"shape": (8, 8), "dtype": "uint16", "name": "x\udc00"}},
        {"a": {"shape": (8, 8), "dtype": "uint16", "channels": [{"name": "\ud800"}]}},
    ):
        with pytest.raises(SpecError, match="lone surrogate"):
            acqwriter.open_dataset({"out": out, "layout": "collection", "images": images})
        assert not out.exists()


def test_text_with_a_lone_surrogate_never_reaches_a_document(tmp_path):
    out = tmp_path / "t.ome.zarr"
    with acqwriter.open_stream({"out": out, "shape": (8, 8), "dtype": "uint16"}) as s:
        with pytest.raises(FrameError, match="reason"):
            s.skip(reason="\ud800")
        s.append(np.zeros((8, 8), np.uint16), metadata={"note": "bad \udcff text"})
    for path in out.rglob("*"):
        if path.is_file() and (path.name.endswith(".json") or path.suffix == ".jsonl"):
            text = path.read_bytes().decode("utf-8")
            for line in text.splitlines() if path.suffix == ".jsonl" else [text]:
                json.loads(line)
            assert "\\ud" not in text.lower()


def test_skip_of_several_frames_and_index_checks(tmp_path):
    spec = {
        "out": tmp_path / "i.ome.zarr",
        "layout": "collection",
        "images": {"a": {"shape": (8, 8), "dtype": "uint16", "dims": "tczyx",
                         "sizes": {"t": 2, "c": 2, "z": 2}}},
    }  # fmt: skip
    with acqwriter.open_dataset(spec) as ds:
        ds.append(np.zeros((8, 8), np.uint16), image="a", index={"t": 0, "c": 0, "z": 0})
        ds.append(np.zeros((8, 8), np.uint16), image="a", index={"t": 0, "c": 0, "z": 1})
        assert ds.skip(5, image="a") == [2, 3, 4, 5, 6]
        with pytest.raises(FrameError, match="room for 1 more"):
            ds.skip(2, image="a")
        with pytest.raises(FrameError, match="index: expected a mapping"):
            ds.append(np.zeros((8, 8), np.uint16), image="a", index=[0, 0, 0])
    assert ds.summary.frames_dropped == 5 and ds.summary.frames_missing == 1


@pytest.mark.parametrize("t", [3_000_000, 10**18, 2**63])
def test_an_absurd_index_is_refused_in_one_line(tmp_path, t):
    out = tmp_path / "far.ome.zarr"
    spec = {"out": out, "layout": "image",
            "images": {"a": {"shape": (8, 8), "dtype": "uint16"}}}  # fmt: skip
    with acqwriter.open_dataset(spec) as ds:
        ds.append(np.zeros((8, 8), np.uint16), index={"t": 0})
        with pytest.raises(FrameError) as info:
            ds.append(np.zeros((8, 8), np.uint16), index={"t": t})
        assert "\n" not in str(info.value) and "index.t" in str(info.value)
    assert ds.summary.frames_written == 1 and ds.summary.frames_missing == 0
    assert os.path.getsize(out / "zarr.json") < 100_000


def test_one_palette_for_the_cli_and_the_mda(tmp_path):
    out = tmp_path / "c.ome.zarr"
    run = run_cli("acquire", "--camera", "sim", "--shape", "32x32", "--timepoints", "1",
                  "--channel", "DAPI", "--channel", "FITC", "--out", str(out), "--quiet",
                  cwd=tmp_path)  # fmt: skip
    assert run.returncode == 0, run.stderr
    colors = [c["color"] for c in _root(out)["ome"]["omero"]["channels"]]
    assert colors == ["0000FF", "00FF00"]
    shutil.rmtree(out)


def test_a_collection_opens_in_ome_zarr_py_and_napari_ome_zarr(tmp_path):
    from pathlib import Path

    from napari_ome_zarr import napari_get_reader
    from ome_types import from_xml
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader
    from ome_zarr.utils import find_multiscales

    out = tmp_path / "col.ome.zarr"
    images = {
        key: {
            "shape": (32, 48),
            "dtype": "uint16",
            "dims": "tczyx",
            "sizes": {"c": 2, "z": 3},
            "z_step": 0.5,
            "pixel_size": 0.25,
            "channels": [{"name": "DAPI"}, {"name": "FITC"}],
            "translation": {"x": 100.0 * i, "y": -50.0},
        }
        for i, key in enumerate(("left", "right"))
    }
    with acqwriter.open_dataset({"out": out, "layout": "collection", "images": images}) as ds:
        for t in range(2):
            for key in images:
                for c in range(2):
                    for z in range(3):
                        frame = np.full((32, 48), 10 * t + c + z, np.uint16)
                        ds.append(frame, image=key, index={"t": t, "c": c, "z": z})
    ome = from_xml((out / "OME" / "METADATA.ome.xml").read_text())
    assert [im.name for im in ome.images] == ["left", "right"]
    pixels = ome.images[1].pixels
    assert (pixels.size_x, pixels.size_y, pixels.size_z, pixels.size_c, pixels.size_t) == (
        48, 32, 3, 2, 2,
    )  # fmt: skip
    assert pixels.physical_size_x == 0.25 and pixels.physical_size_z == 0.5
    assert [ch.name for ch in pixels.channels] == ["DAPI", "FITC"]
    assert ome.images[1].stage_label.x == 100.0
    found = find_multiscales(Path(out))
    assert [(Path(p).name, name) for p, name, _ in found] == [("0", "left"), ("1", "right")]
    nodes = list(Reader(parse_url(str(found[1][0])))())
    assert np.asarray(nodes[0].data[0])[1, 1, 2].max() == 13
    reader = napari_get_reader(str(out))
    layers = reader(str(out))
    assert len(layers) == 2
    assert np.asarray(layers[1][0][0]).shape == (2, 2, 3, 32, 48)


def test_missing_frames_are_ranges_in_the_documents(tmp_path):
    out = tmp_path / "gap.ome.zarr"
    images = {"a": {"shape": (8, 8), "dtype": "uint16", "dims": "tczyx",
                    "sizes": {"c": 2, "z": 5}}}  # fmt: skip
    with acqwriter.open_dataset({"out": out, "layout": "image", "images": images}) as ds:
        ds.append(np.zeros((8, 8), np.uint16), index={"t": 0})
        ds.append(np.zeros((8, 8), np.uint16), index={"t": 99_999, "c": 1, "z": 4})
    summary = ds.summary
    assert summary.frames_missing == 999_998
    assert summary.missing_ranges == [(1, 999_999)]
    assert summary.missing_indices[:3] == [1, 2, 3] and len(summary.missing_indices) == 10_000
    stored = _root(out)["acqwriter"]["summary"]
    assert stored["missing_ranges"] == [[1, 999_999]]
    assert os.path.getsize(out / "zarr.json") < 1_000_000
