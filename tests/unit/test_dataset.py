"""Many images in one dataset: collections and plates, frames placed by coordinates in
any order, each image read back exact and the hierarchy valid against the official
OME-NGFF 0.5 schemas."""

from __future__ import annotations

import itertools
import json
import time
from pathlib import Path

import numpy as np
import pytest

import acqwriter
from acqwriter import FrameError, SpecError, StreamError
from acqwriter.simulators import FrameBank
from acqwriter.store.memory import MemoryStore
from helpers import check_dataset, frame_records, read_tensorstore, read_zarr, validate_ngff


def _attrs(path: Path) -> dict:
    return json.loads((path / "zarr.json").read_text())["attributes"]


def _frame(bank: FrameBank, key: int, dtype: str = "uint16", shape=(64, 48)) -> np.ndarray:
    frame = bank.frame(key % bank.size)[: shape[0], : shape[1]]
    return frame.astype(dtype) if frame.dtype != np.dtype(dtype) else frame.copy()


ORDERS = {
    # (t, c, z) in the order the microscope produces them
    "tcz": lambda T, C, Z: itertools.product(range(T), range(C), range(Z)),
    "c-outer": lambda T, C, Z: ((t, c, z) for c in range(C) for t in range(T) for z in range(Z)),
    "z-outer": lambda T, C, Z: ((t, c, z) for z in range(Z) for t in range(T) for c in range(C)),
    "reversed": lambda T, C, Z: reversed(list(itertools.product(range(T), range(C), range(Z)))),
}


@pytest.mark.parametrize("order", list(ORDERS))
@pytest.mark.parametrize(
    "chunks", [{}, {"z": 3, "y": 32, "x": 32}], ids=["frame-chunks", "z-chunks"]
)
def test_a_collection_in_any_order_reads_back_exact(tmp_path, order, chunks):
    """Two positions interleaved frame by frame, one of them with more z planes (a ragged
    plan), frames in the microscope's order; every pixel of every image reads back."""
    bank = FrameBank((64, 48), "uint16", size=16, seed=5)
    sizes = {"left": (2, 2, 3), "right": (2, 2, 6)}
    images = {
        key: {
            "shape": (64, 48),
            "dtype": "uint16",
            "dims": "tczyx",
            "sizes": {"t": T, "c": C, "z": Z},
            "chunks": chunks,
            "translation": {"y": 100.0 * i, "x": -50.0},
        }
        for i, (key, (T, C, Z)) in enumerate(sizes.items())
    }
    out = tmp_path / "positions.ome.zarr"
    expected = {key: np.zeros((T, C, Z, 64, 48), np.uint16) for key, (T, C, Z) in sizes.items()}
    plans = {key: list(ORDERS[order](*dims)) for key, dims in sizes.items()}
    with acqwriter.open_dataset({"out": out, "layout": "collection", "images": images}) as ds:
        for step in range(max(len(p) for p in plans.values())):
            for key, plan in plans.items():  # positions interleaved
                if step < len(plan):
                    t, c, z = plan[step]
                    frame = _frame(bank, hash((key, t, c, z)))
                    ds.append(frame, image=key, index={"t": t, "c": c, "z": z}, metadata={"z": z})
                    expected[key][t, c, z] = frame
    summary = ds.summary
    assert summary.ok and summary.frames_written == 12 + 24
    assert set(summary.images) == {"left", "right"}
    root = _attrs(out)
    validate_ngff(root, "bf2raw")
    assert root["acqwriter"]["images"] == {"left": "0", "right": "1"}
    validate_ngff(_attrs(out / "OME"), "ome")
    assert _attrs(out / "OME")["ome"]["series"] == ["0", "1"]
    for key, path in root["acqwriter"]["images"].items():
        image = out / path
        check_dataset(image)
        for read in (read_zarr, read_tensorstore):
            np.testing.assert_array_equal(read(image), expected[key])
        ms = _attrs(image)["ome"]["multiscales"][0]
        assert ms["name"] == key
        translation = ms["datasets"][0]["coordinateTransformations"][1]["translation"]
        assert translation[-2:] == [100.0 * int(path), -50.0]
        codecs = json.loads((image / "0" / "zarr.json").read_text())["codecs"]
        assert codecs[0]["name"] == "sharding_indexed"  # small chunks: packed into shards
        records = frame_records(image)
        assert [r["index"] for r in records] == list(range(len(records)))
        Z = sizes[key][2]
        assert [r["metadata"]["z"] for r in records] == [i % Z for i in range(len(records))]


def test_images_of_different_shapes_and_dtypes_share_one_ring(tmp_path):
    out = tmp_path / "mixed.ome.zarr"
    images = {
        "big": {"shape": (64, 64), "dtype": "uint16", "sizes": {"t": 4}},
        "small": {"shape": (16, 24), "dtype": "uint8", "sizes": {"t": 4}},
        "float": {"shape": (8, 8), "dtype": "float32", "sizes": {"t": 4}},
    }
    rng = np.random.default_rng(3)
    data = {
        "big": rng.integers(0, 4000, (4, 64, 64)).astype(np.uint16),
        "small": rng.integers(0, 255, (4, 16, 24)).astype(np.uint8),
        "float": rng.random((4, 8, 8)).astype(np.float32),
    }
    spec = {"out": out, "layout": "collection", "images": images, "ring_bytes": 8 * 64 * 64 * 2}
    with acqwriter.open_dataset(spec) as ds:
        for t in range(4):
            for key in images:
                ds.append(data[key][t], image=key)
    assert ds.summary.ok
    for i, key in enumerate(images):
        np.testing.assert_array_equal(read_zarr(out / str(i)), data[key])
        check_dataset(out / str(i))


def test_a_plate_validates_and_reads_back(tmp_path):
    out = tmp_path / "screen.ome.zarr"
    bank = FrameBank((32, 32), "uint16", size=8, seed=2)
    keys = ["A/1/0", "A/1/1", "B/3/0", "A/10/0", "A/2/0"]
    image = {"shape": (32, 32), "dtype": "uint16", "sizes": {"t": 2}}
    spec = {
        "out": out,
        "layout": "plate",
        "plate": {"name": "screen-17"},
        "images": {k: image for k in keys},
    }
    with acqwriter.open_dataset(spec) as ds:
        for t in range(2):
            for i, key in enumerate(keys):
                ds.append(bank.frame(i + t), image=key, index={"t": t})
    assert ds.summary.ok and ds.summary.frames_written == 10
    root = _attrs(out)
    validate_ngff(root, "plate")
    validate_ngff(root, "strict_plate")
    plate = root["ome"]["plate"]
    assert plate["name"] == "screen-17" and plate["field_count"] == 2
    assert [c["name"] for c in plate["columns"]] == ["1", "2", "3", "10"]
    assert [r["name"] for r in plate["rows"]] == ["A", "B"]
    assert {w["path"] for w in plate["wells"]} == {"A/1", "A/2", "A/10", "B/3"}
    for well in ("A/1", "B/3"):
        validate_ngff(_attrs(out / well), "well")
        validate_ngff(_attrs(out / well), "strict_well")
    assert [i["path"] for i in _attrs(out / "A/1")["ome"]["well"]["images"]] == ["0", "1"]
    for i, key in enumerate(keys):
        check_dataset(out / key)
        expected = np.stack([bank.frame(i), bank.frame(i + 1)])
        np.testing.assert_array_equal(read_tensorstore(out / key), expected)
    import yaozarrs

    yaozarrs.validate_zarr_store(str(out))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"images": {"A/1": {"shape": (8, 8), "dtype": "uint8"}}},
            "images.A/1: expected a plate key",
        ),
        ({"images": {"A/1/0/x": {"shape": (8, 8), "dtype": "uint8"}}}, "images.A/1/0/x"),
        (
            {"images": {"A/1/0": {"shape": (8, 8), "dtype": "uint8", "sizes": {"q": 2}}}},
            "images.A/1/0.sizes.q",
        ),
        ({"images": {"A/1/0": {"shape": (8, 8), "dtype": "int64"}}}, "images.A/1/0.dtype"),
        ({"shape": (8, 8)}, "shape: a field of each image"),
        ({"images": {}}, "images"),
    ],
)
def test_bad_dataset_specs_name_the_field(tmp_path, change, message):
    spec = {
        "out": tmp_path / "bad.ome.zarr",
        "layout": "plate",
        "images": {"A/1/0": {"shape": (8, 8), "dtype": "uint8"}},
        **change,
    }
    with pytest.raises(SpecError, match=message.replace(".", r"\.")) as info:
        acqwriter.open_dataset(spec)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "bad.ome.zarr").exists()


def test_a_frame_given_twice_or_outside_the_sizes_is_refused(tmp_path):
    out = tmp_path / "refuse.ome.zarr"
    images = {"p": {"shape": (8, 8), "dtype": "uint8", "dims": "tczyx", "sizes": {"c": 2, "z": 3}}}
    frame = np.ones((8, 8), np.uint8)
    with acqwriter.open_dataset({"out": out, "images": images}) as ds:
        ds.append(frame, image="p", index={"t": 0, "c": 1, "z": 2})
        cases = [
            ({"t": 0, "c": 1, "z": 2}, "already has the frame"),
            ({"t": 0, "c": 2}, r"index\.c: expected 0\.\.1 for image 'p', got 2"),
            ({"t": -1}, r"index\.t: expected 0 or more"),
            ({"q": 0}, r"index\.q: image 'p' has no axis 'q'"),
            ({"z": 1.5}, r"index\.z: expected an integer"),
        ]
        for index, message in cases:
            with pytest.raises(FrameError, match=message):
                ds.append(frame, image="p", index=index)
        with pytest.raises(FrameError, match="image: no image 'q'"):
            ds.append(frame, image="q")
        with pytest.raises(FrameError, match=r"frame\.shape"):
            ds.append(np.ones((4, 4), np.uint8), image="p", index={"t": 0})
        assert ds.summary.frames_received == 1  # nothing of the refused frames was taken
    data = read_zarr(out / "0")
    assert data.shape == (1, 2, 3, 8, 8) and data[0, 1, 2].all() and data.sum() == 64


def test_an_incomplete_time_point_is_kept_with_its_missing_frames_flagged(tmp_path):
    out = tmp_path / "partial.ome.zarr"
    images = {"p": {"shape": (8, 8), "dtype": "uint8", "dims": "tzyx", "sizes": {"z": 3}}}
    with acqwriter.open_dataset({"out": out, "images": images}) as ds:
        for z in range(3):
            ds.append(np.full((8, 8), z + 1, np.uint8), image="p", index={"t": 0, "z": z})
        ds.append(np.full((8, 8), 9, np.uint8), image="p", index={"t": 2, "z": 1})  # t=1 never
        ds.skip(image="p", index={"t": 2, "z": 0}, reason="camera")
    s = ds.summary.images["p"]
    assert s.shape == [3, 3, 8, 8] and s.frames_written == 4
    assert s.missing_indices == [3, 4, 5, 8] and s.dropped_indices == [6]
    data = read_zarr(out / "0")
    assert data[0, :, 0, 0].tolist() == [1, 2, 3] and data[2, 1, 0, 0] == 9
    assert not data[1].any() and not data[2, 0].any() and not data[2, 2].any()
    records = frame_records(out / "0")
    assert [r.get("drop_reason") for r in records] == [None] * 3 + ["missing"] * 3 + [
        "camera",
        None,
        "missing",
    ]


def test_the_extent_covers_only_whole_time_points(tmp_path):
    """Unbounded t: a time point enters the extent once every frame of it is on disk,
    whatever the order they came in."""
    out = tmp_path / "live.ome.zarr"
    images = {"p": {"shape": (8, 8), "dtype": "uint8", "dims": "tcyx", "sizes": {"c": 2}}}
    spec = {"out": out, "images": images, "commit_interval_s": 0.01}
    ds = acqwriter.open_dataset(spec)
    one = np.ones((8, 8), np.uint8)
    ds.append(one, image="p", index={"t": 1, "c": 0})
    ds.append(one, image="p", index={"t": 1, "c": 1})
    ds.append(one, image="p", index={"t": 0, "c": 1})
    time.sleep(0.3)
    assert json.loads((out / "0" / "0" / "zarr.json").read_text())["shape"][0] == 0
    ds.append(one, image="p", index={"t": 0, "c": 0})
    deadline = time.monotonic() + 5
    while json.loads((out / "0" / "0" / "zarr.json").read_text())["shape"][0] < 2:
        assert time.monotonic() < deadline, "the extent did not cover both time points"
        time.sleep(0.02)
    ds.close()
    assert ds.summary.ok and read_zarr(out / "0").all()


def test_an_order_that_needs_more_slots_than_the_ring_is_refused_not_hung(tmp_path):
    """Chunks of four time points: in C order 25 frames are ever open at once (the ring
    holds them); frames of the next chunk row before this one is whole need more, and a
    producer that waited for a slot would wait for ever."""
    images = {
        "p": {
            "shape": (32, 32),
            "dtype": "uint16",
            "dims": "tzyx",
            "sizes": {"z": 8},
            "chunks": {"t": 4},
        }
    }
    spec = {"out": tmp_path / "tight.ome.zarr", "images": images, "ring_bytes": 25 * 32 * 32 * 2}
    ds = acqwriter.open_dataset(spec)
    frame = np.ones((32, 32), np.uint16)
    order = [(t, z) for t in range(3) for z in range(8)] + [
        (t, z) for t in range(4, 8) for z in range(8)
    ]
    with pytest.raises(StreamError, match="ring_bytes: all 25 frame slots hold frames"):
        for t, z in order:
            ds.append(frame, image="p", index={"t": t, "z": z})
    ds.close()
    assert ds.summary.images["p"].frames_received == 25


def test_a_dataset_runs_in_memory(tmp_path):
    store = MemoryStore()
    images = {k: {"shape": (16, 16), "dtype": "uint16", "sizes": {"t": 3}} for k in ("a", "b")}
    with acqwriter.open_dataset(
        {"out": tmp_path / "m.ome.zarr", "images": images}, store=store
    ) as ds:
        for t in range(3):
            for key in images:
                ds.append(np.full((16, 16), t, np.uint16), image=key)
    assert ds.summary.ok and not (tmp_path / "m.ome.zarr").exists()
    exported = store.to_directory(tmp_path / "exported.ome.zarr")
    validate_ngff(_attrs(exported), "bf2raw")
    for path in ("0", "1"):
        check_dataset(exported / path)
        assert read_zarr(exported / path)[:, 0, 0].tolist() == [0, 1, 2]


def test_the_image_layout_is_todays_dataset(tmp_path):
    out = tmp_path / "one.ome.zarr"
    spec = {"out": out, "layout": "image", "images": {"cam": {"shape": (8, 8), "dtype": "uint8"}}}
    with acqwriter.open_dataset(spec) as ds:
        for i in range(3):
            ds.append(np.full((8, 8), i, np.uint8))
    assert ds.summary.ok and ds.summary.shape == [3, 8, 8]
    check_dataset(out)
    assert read_zarr(out)[:, 0, 0].tolist() == [0, 1, 2]
    with pytest.raises(SpecError, match=r"images: layout .image. holds exactly one image"):
        acqwriter.open_dataset(
            {**spec, "images": {"a": spec["images"]["cam"]} | {"b": spec["images"]["cam"]}}
        )
