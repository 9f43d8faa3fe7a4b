"""The dataset plan: decided before anything is wired, shown to the user, and what the
writer then does; the rules that have one home (what may be overwritten, metadata as
JSON, the stored version)."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
import zarr

import acqwriter
from acqwriter import jsonio
from acqwriter.plan.dataset import DatasetPlan
from acqwriter.spec.dataset import DatasetSpec
from acqwriter.spec.model import StreamSpec


def _frame(shape, seed=0):
    rng = np.random.default_rng(seed)
    return rng.poisson(100, shape).astype(np.uint16)


def test_a_stream_writes_what_its_plan_says(tmp_path):
    spec = {"out": tmp_path / "s.ome.zarr", "shape": (600, 520), "dtype": "uint16"}
    spec |= {"sizes": {"t": 6}, "ring_bytes": 64 << 20}
    with acqwriter.open_stream(spec) as stream:
        plan = stream.plan
        assert isinstance(plan, DatasetPlan)
        assert stream.slots.capacity == plan.slots.frames
        assert plan.memory()["frame_slots"] == stream.slots.capacity * 600 * 520 * 2
        for i in range(6):
            stream.append(_frame((600, 520), i))
    (image,) = plan.images.values()
    assert [level.shape for level in image.levels] == [(6, 600, 520), (6, 300, 260), (6, 150, 130)]
    group = zarr.open_group(tmp_path / "s.ome.zarr", mode="r")
    for level in image.levels:
        array = group[str(level.index)]
        assert array.shape == level.shape and array.chunks == level.chunks
    text = plan.describe()
    assert "level 1: (6, 300, 260)" in text and "frame slots" in text


def test_a_plate_is_laid_out_as_planned(tmp_path):
    images = {
        key: {"shape": (32, 48), "dtype": "uint16", "sizes": {"t": 2}}
        for key in ("B/3/0", "B/3/1", "C/10/0")
    }
    spec = {"out": tmp_path / "p.ome.zarr", "layout": "plate", "images": images}
    spec["plate"] = {"rows": 8, "columns": 12}
    with acqwriter.open_dataset(spec) as ds:
        plan = ds.plan
        for key in images:
            for t in range(2):
                ds.append(_frame((32, 48), t), image=key, index={"t": t})
    assert {k: i.path for k, i in plan.images.items()} == {k: k for k in images}
    root = json.loads((tmp_path / "p.ome.zarr" / "zarr.json").read_text())["attributes"]
    assert root["ome"]["plate"] == plan.plate
    assert root["acqwriter"]["images"] == {k: k for k in images}
    assert len(plan.plate["rows"]) == 8 and len(plan.plate["columns"]) == 12
    assert ds.slots.capacity == plan.slots.frames


def test_the_plan_is_computed_without_touching_the_disk(tmp_path):
    spec = DatasetSpec.parse(
        {
            "out": tmp_path / "never.ome.zarr",
            "images": {f"p{i}": {"shape": (64, 64), "dtype": "uint8"} for i in range(3)},
        }
    )
    plan = DatasetPlan.of(spec)
    assert not (tmp_path / "never.ome.zarr").exists()
    assert [i.path for i in plan.images.values()] == ["0", "1", "2"]
    # images of many: automatic shards never span the first axis (staging outside the bound)
    for image in plan.images.values():
        assert image.layout.shard_factors[0] == 1
    data = plan.to_dict()
    assert json.loads(jsonio.dumps(data)) == data  # strict JSON
    assert data["slots"]["frames"] == plan.slots.frames
    assert data["disk"]["need_bytes"] > 0


def test_a_long_list_of_images_is_shown_short(tmp_path):
    images = {f"p{i}": {"shape": (16, 16), "dtype": "uint8", "sizes": {"t": 1}} for i in range(40)}
    plan = DatasetPlan.of(DatasetSpec.parse({"out": tmp_path / "x.ome.zarr", "images": images}))
    text = plan.describe()
    assert "… 30 more image(s)" in text and "p9 at 9/" in text and "p10 at" not in text


def test_the_hardware_layer_loads_no_outer_layer(tmp_path):
    """``import acqwriter.devices`` in a fresh interpreter loads no MDA code, no
    simulator and no acquisition runner. (The package ``acqwriter`` itself, imported
    first, brings the writer's public API; that ``devices`` modules import no writer
    module is the layering test's check.)"""
    code = (
        "import json, sys, acqwriter.devices\n"
        "outer = ('acqwriter.mda', 'acqwriter.simulators', 'acqwriter.acquisition')\n"
        "print(json.dumps([m for m in sys.modules if m.startswith(outer)]))\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        cwd=tmp_path,  # the installed package, not a source tree in the working folder
    )
    assert json.loads(run.stdout) == []


def test_configure_may_replace_a_zarr_v2_dataset(tmp_path):
    """The daemon follows the rule ``acquire --overwrite`` follows: a 0.4 (Zarr v2)
    dataset may be replaced, a folder that is not Zarr may not."""
    from acqwriter.acquisition.spec import AcquisitionSpec
    from acqwriter.control.paths import check_out
    from acqwriter.control.protocol import ControlError

    old = tmp_path / "old.ome.zarr"
    with acqwriter.open_stream(
        {"out": old, "shape": (16, 16), "dtype": "uint8", "ngff_version": "0.4"}
    ) as stream:
        stream.append(np.ones((16, 16), np.uint8))
    assert (old / ".zgroup").exists() and not (old / "zarr.json").exists()
    spec = AcquisitionSpec.parse({"out": str(old), "frames": 2, "overwrite": True})
    assert check_out(tmp_path, spec) == old
    other = tmp_path / "notes"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    with pytest.raises(ControlError, match="not a Zarr dataset"):
        check_out(
            tmp_path, AcquisitionSpec.parse({"out": str(other), "frames": 2, "overwrite": True})
        )
    assert (other / "keep.txt").read_text() == "mine"


def test_metadata_becomes_json_by_one_rule():
    value = {
        "n": np.int64(3),
        "f": np.float32(1.5),
        "nan": float("nan"),
        "t": (1, 2),
        "a": np.arange(3),
        "big": np.zeros(100),
        1: "key",
    }
    out = jsonio.jsonable(value)
    assert out["n"] == 3 and out["f"] == 1.5 and out["nan"] is None
    assert out["t"] == [1, 2] and out["a"] == [0, 1, 2] and isinstance(out["big"], str)
    assert out["1"] == "key"
    assert json.loads(jsonio.dumps(out)) == out


def test_the_stored_version_is_read_from_the_files(tmp_path):
    from acqwriter.format.versions import stored_version

    def reader(out):
        def read(key):
            return (out / key).read_bytes()  # FileNotFoundError when absent

        return read

    for version in ("0.4", "0.5", "0.6"):
        out = tmp_path / f"v{version}.ome.zarr"
        spec = {"out": out, "shape": (8, 8), "dtype": "uint8", "ngff_version": version}
        with acqwriter.open_stream(spec) as stream:
            stream.append(np.zeros((8, 8), np.uint8))
        assert stored_version(reader(out)) == version
    with pytest.raises(FileNotFoundError):
        stored_version(reader(tmp_path / "nothing"))


def test_plan_levels_follow_the_pyramid_settings(tmp_path):
    base = {"out": tmp_path / "l.ome.zarr", "shape": (2048, 2048), "dtype": "uint16"}
    auto = DatasetPlan.of_stream(StreamSpec.parse(base)).images["image"]
    assert [lv.shape[-1] for lv in auto.levels] == [2048, 1024, 512, 256]
    none = DatasetPlan.of_stream(StreamSpec.parse({**base, "pyramid": {"enabled": False}}))
    (image,) = none.images.values()
    assert len(image.levels) == 1 and "no pyramid asked" in image.no_pyramid
    odd = StreamSpec.parse({**base, "shape": (301, 517), "pyramid": {"levels": 3}})
    shapes = [lv.shape for lv in DatasetPlan.of_stream(odd).images["image"].levels]
    assert shapes == [(None, 301, 517), (None, 151, 259), (None, 76, 130)]
    assert all(math.prod(s[1:]) > 0 for s in shapes)


def test_an_added_image_must_fit_the_slots_in_use(tmp_path):
    """Images added as their frames come are checked against the slots the dataset
    uses; one that does not fit is refused and the dataset keeps what it had."""
    image = {"shape": (32, 32), "dtype": "uint16", "sizes": {"t": 2}}
    spec = {"out": tmp_path / "a.ome.zarr", "images": {"p0": image}}
    with acqwriter.open_dataset(spec, more_images=True) as ds:
        ds.add_image("p1", image)
        with pytest.raises(acqwriter.SpecError, match=r"images\.p2: its frames do not fit"):
            ds.add_image("p2", {**image, "shape": (64, 64)})
        assert list(ds.plan.images) == list(ds.images) == ["p0", "p1"]
        for key in ("p0", "p1"):
            for t in range(2):
                ds.append(np.zeros((32, 32), np.uint16), image=key, index={"t": t})
    assert ds.summary.ok
