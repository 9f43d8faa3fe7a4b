"""OME-NGFF 0.6: images with named coordinate systems, collections as scenes placed by
the stage, plates, MDA grids, a reader during acquisition and after SIGKILL + recover;
every output valid against the 0.6 schemas and read back by ngff-zarr (pixel-exact,
with the transformations written)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import acqwriter
from acqwriter.post.downsample import downsample
from acqwriter.post.recover import recover
from acqwriter.simulators import FrameBank
from helpers import check_dataset, read_zarr, run_cli

nz = pytest.importorskip("ngff_zarr")
HERE = Path(__file__).resolve().parents[1]


def _attrs(path: Path) -> dict:
    return json.loads((path / "zarr.json").read_text())["attributes"]


def _apply(transform: dict, point: list[float]) -> np.ndarray:
    """A scene or placement transformation applied to a point (physical → world)."""
    p = np.asarray(point, float)
    if transform["type"] == "translation":
        return p + np.asarray(transform["translation"])
    if transform["type"] == "affine":
        m = np.asarray(transform["affine"], float)
        return m[:, :-1] @ p + m[:, -1]
    assert transform["type"] == "identity"
    return p


def _cells(shape, seed: int, dtype="uint16") -> np.ndarray:
    """Background, bright discs and Poisson noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    lam = np.full(shape, 100.0)
    for _ in range(6):
        cy, cx = rng.uniform(0, shape[0]), rng.uniform(0, shape[1])
        lam[(yy - cy) ** 2 + (xx - cx) ** 2 < 40] += 800
    return rng.poisson(lam).astype(dtype)


def test_an_image_names_its_coordinate_systems_and_reads_back_in_ngff_zarr(tmp_path):
    out = tmp_path / "img.ome.zarr"
    shape = (96, 128)
    spec = {
        "out": out,
        "shape": shape,
        "dtype": "uint16",
        "dims": "tczyx",
        "sizes": {"t": 2, "c": 2, "z": 3},
        "chunks": {"y": 32, "x": 32},
        "pixel_size": 0.4,
        "z_step": 1.5,
        "time_increment": 2.0,
        "ngff_version": "0.6",
        "channels": [{"name": "DAPI"}, {"name": "GFP"}],
        "pyramid": {"levels": 2},
    }
    frames = [_cells(shape, i) for i in range(12)]
    with acqwriter.open_stream(spec) as stream:
        for frame in frames:
            stream.append(frame)
    attrs = check_dataset(out)
    ome = attrs["ome"]
    assert ome["version"] == "0.6" and len(ome["omero"]["channels"]) == 2
    ms = ome["multiscales"][0]
    (physical,) = ms["coordinateSystems"]  # no stage position: nothing to place
    assert physical["name"] == "physical"
    assert [a.get("unit") for a in physical["axes"]] == [
        "second",
        None,
        "micrometer",
        "micrometer",
        "micrometer",
    ]
    assert len(ms["datasets"]) == 2
    level1 = ms["datasets"][1]["coordinateTransformations"][0]
    assert level1["type"] == "sequence"
    assert level1["transformations"][0]["scale"] == [2.0, 1.0, 1.5, 0.8, 0.8]
    assert level1["transformations"][1]["translation"] == [0.0, 0.0, 0.0, 0.2, 0.2]
    # ngff-zarr, validating: the data pixel-exact, the scales and offsets as written
    read = nz.from_ome_zarr(str(out), validate=True)
    data = np.asarray(read.images[0].data)
    assert data.shape == (2, 2, 3, 96, 128)
    np.testing.assert_array_equal(data.reshape(12, *shape), np.stack(frames))
    assert read.images[0].scale == {"t": 2.0, "c": 1.0, "z": 1.5, "y": 0.4, "x": 0.4}
    assert read.images[1].scale["x"] == pytest.approx(0.8)
    assert read.images[1].translation["x"] == pytest.approx(0.2)
    np.testing.assert_array_equal(
        np.asarray(read.images[1].data), downsample(read_zarr(out), (1, 1, 1, 2, 2), "mean")
    )
    info = run_cli("info", str(out), "--json", cwd=tmp_path)
    assert info.returncode == 0, info.stderr
    assert json.loads(info.stdout)["ome_version"] == "0.6"


def _tiles(tmp_path: Path, affine, overlap: int = 16):
    """A 2 × 2 grid of 64 × 80 tiles at 0.5 µm, neighbours overlapping by ``overlap``
    pixels, each tile a crop of one sample seen through ``affine``."""
    h, w, px = 64, 80, 0.5
    step_x, step_y = (w - overlap) * px, (h - overlap) * px
    stages = {
        f"r{r}c{c}": (c * step_x, -r * step_y)  # stage y up: row 1 lies below row 0
        for r in range(2)
        for c in range(2)
    }
    images = {
        key: {
            "shape": (h, w),
            "dtype": "uint16",
            "dims": "tyx",
            "pixel_size": px,
            "stage": {"x": x, "y": y, "z": 7.5, "affine": affine},
        }
        for key, (x, y) in stages.items()
    }
    out = tmp_path / "tiles.ome.zarr"
    frames = {key: _cells((h, w), k) for k, key in enumerate(stages)}
    spec = {"out": out, "layout": "collection", "ngff_version": "0.6", "images": images}
    with acqwriter.open_dataset(spec) as ds:
        for key, frame in frames.items():
            ds.append(frame, image=key)
    return out, stages, frames, (h, w, px)


@pytest.mark.parametrize(
    "affine",
    [None, (0.5, 0.0, 0.0, 0.0, 0.5, 0.0), (0.0, 0.5, 0.0, -0.5, 0.0, 0.0)],
    ids=["uncalibrated", "axes-agree", "turned-90"],
)
def test_positions_are_a_scene_placed_by_the_stage_and_the_pixel_affine(tmp_path, affine):
    out, stages, frames, (h, w, px) = _tiles(tmp_path, affine)
    attrs = check_dataset(out)
    scene = attrs["ome"]["scene"]
    world = scene["coordinateSystems"][0]
    assert world["name"] == "world" and [a["name"] for a in world["axes"]] == ["t", "y", "x"]
    paths = attrs["acqwriter"]["images"]
    by_path = {t["input"]["path"]: t for t in scene["coordinateTransformations"]}
    a = affine or (0.5, 0.0, 0.0, 0.0, -0.5, 0.0)  # uncalibrated: stage y up
    if affine == (0.5, 0.0, 0.0, 0.0, 0.5, 0.0):
        assert {t["type"] for t in by_path.values()} == {"translation"}
    for key, (sx, sy) in stages.items():
        transform = by_path[paths[key]]
        # the centre of the field of view is where the stage was
        centre = [0.0, (h - 1) / 2 * px, (w - 1) / 2 * px]
        assert _apply(transform, centre)[1:] == pytest.approx([sy, sx])
        # a pixel lands where the affine sends it: stage = s + A · (pixel - centre)
        j, i = 3, 5
        expect_x = sx + a[0] * (j - (w - 1) / 2) + a[1] * (i - (h - 1) / 2)
        expect_y = sy + a[3] * (j - (w - 1) / 2) + a[4] * (i - (h - 1) / 2)
        assert _apply(transform, [0.0, i * px, j * px])[1:] == pytest.approx([expect_y, expect_x])
        image_attrs = _attrs(out / paths[key])
        assert image_attrs["acqwriter"]["stage"]["x"] == sx
        assert ("assumed" in image_attrs["acqwriter"]["stage"]) == (affine is None)
        # the image's own placement says the same
        (own,) = image_attrs["ome"]["multiscales"][0]["coordinateTransformations"]
        assert own["output"] == {"name": "stage"}
        assert _apply(own, centre) == pytest.approx(_apply(transform, centre))
    # ngff-zarr reads the scene (validating it) and every tile pixel-exact
    read = nz.from_ome_zarr(str(out), kind="scene", validate=True)
    assert sorted(read.images) == sorted(paths.values())
    for transform in read.coordinateTransformations:  # as ngff-zarr parsed them
        written = by_path[transform.input.path]
        assert transform.type == written["type"] and transform.output.name == "world"
        np.testing.assert_allclose(
            np.asarray(getattr(transform, written["type"]), float),
            np.asarray(written[written["type"]], float),
        )
    for key, frame in frames.items():
        np.testing.assert_array_equal(np.asarray(read.images[paths[key]].images[0].data)[0], frame)


def test_neighbouring_tiles_overlap_as_under_the_objective(tmp_path):
    """With the axes agreeing, tile r0c1's first column lands on tile r0c0's column
    ``w - overlap``: the same world point, as the stage moved by that much."""
    overlap = 16
    out, _, _, (h, w, px) = _tiles(tmp_path, (0.5, 0.0, 0.0, 0.0, 0.5, 0.0), overlap)
    attrs = _attrs(out)
    paths = attrs["acqwriter"]["images"]
    by_path = {t["input"]["path"]: t for t in attrs["ome"]["scene"]["coordinateTransformations"]}
    left, right = by_path[paths["r0c0"]], by_path[paths["r0c1"]]
    for i in (0, 17, h - 1):
        a = _apply(left, [0.0, i * px, (w - overlap) * px])
        b = _apply(right, [0.0, i * px, 0.0])
        assert a == pytest.approx(b)


def test_the_cli_acquires_positions_as_a_scene_where_the_stage_read_back(tmp_path):
    out = tmp_path / "tiles.ome.zarr"
    result = run_cli(
        "acquire",
        "--camera",
        "demo",
        "--positions",
        "4",
        "--timepoints",
        "3",
        "--ngff",
        "0.6",
        "--out",
        str(out),
        "--json",
        cwd=tmp_path,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    attrs = check_dataset(out)
    paths = attrs["acqwriter"]["images"]
    assert len(paths) == 4
    xs = []
    for path in paths.values():
        stage = _attrs(out / path)["acqwriter"]["stage"]
        assert stage["read_back"] is True and "assumed" in stage  # the demo is uncalibrated
        xs.append(stage["x"])
        transform = next(
            t
            for t in attrs["ome"]["scene"]["coordinateTransformations"]
            if t["input"]["path"] == path
        )
        centre = [0.0, 255.5, 255.5]  # 512 × 512 at 1 µm
        assert _apply(transform, centre)[2] == pytest.approx(stage["x"])
        assert np.asarray(nz.from_ome_zarr(str(out / path)).images[0].data).shape[0] == 3
    # one field of view (512 µm) apart, as read back
    assert np.diff(sorted(xs)) == pytest.approx([512, 512, 512], abs=1)


def test_a_plate_in_06(tmp_path):
    out = tmp_path / "plate.ome.zarr"
    keys = ["A/1/0", "A/1/1", "B/3/0"]
    image = {"shape": (32, 48), "dtype": "uint16", "dims": "tyx"}
    spec = {
        "out": out,
        "layout": "plate",
        "ngff_version": "0.6",
        "plate": {"rows": 8, "columns": 12},
        "images": {k: {**image, "stage": {"x": 100.0 * i, "y": 0.0}} for i, k in enumerate(keys)},
    }
    frames = {k: _cells((32, 48), i) for i, k in enumerate(keys)}
    with acqwriter.open_dataset(spec) as ds:
        for k, frame in frames.items():
            ds.append(frame, image=k)
    attrs = check_dataset(out)
    assert attrs["ome"]["version"] == "0.6" and "scene" not in attrs["ome"]
    assert len(attrs["ome"]["plate"]["rows"]) == 8
    plate = nz.from_hcs_zarr(str(out), validate=True)
    assert {w.path for w in plate.metadata.wells} == {"A/1", "B/3"}
    for k, frame in frames.items():
        read = nz.from_ome_zarr(str(out / k), validate=True)
        np.testing.assert_array_equal(np.asarray(read.images[0].data)[0], frame)


def test_a_reader_during_acquisition_meets_valid_06(tmp_path):
    images = {
        f"p{k}": {"shape": (40, 56), "dtype": "uint16", "stage": {"x": 30.0 * k, "y": 0.0}}
        for k in range(3)
    }
    out = tmp_path / "live.ome.zarr"
    spec = {
        "out": out,
        "layout": "collection",
        "ngff_version": "0.6",
        "images": images,
        "commit_interval_s": 0.01,
    }
    with acqwriter.open_dataset(spec) as ds:
        for t in range(6):
            for k, key in enumerate(images):
                ds.append(_cells((40, 56), 10 * t + k), image=key)
            attrs = check_dataset(out, growing=True)
            assert attrs["acqwriter"]["state"] == "acquiring"
            nz.from_ome_zarr(str(out), kind="scene", validate=True)
    assert check_dataset(out)["acqwriter"]["state"] == "complete"


@pytest.mark.slow
def test_sigkill_then_recover_leaves_valid_06(tmp_path):
    for k, delay in enumerate((0.3, 0.8)):
        out = tmp_path / f"kill{k}.ome.zarr"
        proc = subprocess.Popen(
            [sys.executable, str(HERE / "plate_writer.py"), str(out), str(k), "0.6", "collection"],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        check_dataset(out, growing=True)  # valid 0.6 as the kill left it
        nz.from_ome_zarr(str(out), kind="scene", validate=True)
        account = recover(out)
        assert not account["nothing_to_recover"]
        attrs = check_dataset(out)
        assert attrs["acqwriter"]["state"] == "recovered"
        paths = attrs["acqwriter"]["images"]
        sys.path.insert(0, str(HERE))
        from plate_writer import KEYS, SHAPE

        for i, key in enumerate(KEYS):
            image = out / paths[key]
            data = read_zarr(image)
            bank = FrameBank(SHAPE, "uint16", size=3, seed=k + i)
            for t in range(data.shape[0]):
                np.testing.assert_array_equal(data[t, 1], bank.frame(t * 2 + 1))
            read = nz.from_ome_zarr(str(image), validate=True)
            np.testing.assert_array_equal(np.asarray(read.images[0].data), data)
            assert _attrs(image)["acqwriter"]["stage"]["x"] == 30.0 * i


def test_an_mda_grid_with_positions_is_a_scene_of_its_fields(tmp_path):
    """A useq grid plan with overlap around two positions: every field an image of
    the scene, placed where the stage read back its first frame was."""
    import useq
    from pymmcore_plus import CMMCorePlus

    from acqwriter.mda import MDAWriter

    core = CMMCorePlus()
    core.loadSystemConfiguration()
    core.setProperty("Camera", "Mode", "Noise")
    seq = useq.MDASequence(
        stage_positions=[{"x": 0, "y": 0, "name": "a"}, {"x": 5000, "y": 200, "name": "b"}],
        grid_plan={"rows": 2, "columns": 2, "fov_width": 512, "fov_height": 512, "overlap": 10},
        channels=["DAPI"],
    )
    out = tmp_path / "grid.ome.zarr"
    read_back: dict[str, tuple[float, float]] = {}

    def first(img, event, meta):
        key = (event.index.get("p", 0), event.index.get("g", 0))
        read_back.setdefault(key, (meta["position"]["x"], meta["position"]["y"]))

    core.mda.events.frameReady.connect(first)
    writer = MDAWriter(out, core=core, ngff_version="0.6")
    try:
        core.run_mda(seq, output=writer, block=True)
    finally:
        writer.detach()
        core.reset()
    attrs = check_dataset(out)
    paths = attrs["acqwriter"]["images"]
    assert len(paths) == 8
    transforms = {t["input"]["path"]: t for t in attrs["ome"]["scene"]["coordinateTransformations"]}
    centres = []
    for path in paths.values():
        stage = _attrs(out / path)["acqwriter"]["stage"]
        assert stage["read_back"] is True
        world = _apply(transforms[path], [0.0, 0.0, 255.5, 255.5])  # c, y, x at 1 µm
        assert world[-1] == pytest.approx(stage["x"]) and world[-2] == pytest.approx(stage["y"])
        centres.append((round(world[-1], 3), round(world[-2], 3)))
        assert np.asarray(nz.from_ome_zarr(str(out / path), validate=True).images[0].data).size
    assert sorted(centres) == sorted(
        (round(x, 3), round(y, 3)) for x, y in read_back.values()
    )  # every field where the stage read back its first frame was
    # neighbours overlap by 10 %: centres 460.8 µm apart along x
    xs = sorted({c[0] for c in centres if c[0] < 2500})
    assert np.diff(xs) == pytest.approx([460.8], abs=1)
    # useq puts grid row 0 at the larger stage y (fields g0, g1; row 1: g2, g3): with the
    # stage's y up (the demo is uncalibrated), row 0 lies below row 1 in a y-down view
    world_y = {
        key: _apply(transforms[path], [0.0, 0.0, 255.5, 255.5])[-2]
        for key, path in paths.items()
        if key.startswith("a")
    }
    row0 = [y for key, y in world_y.items() if key.endswith(("_g0", "_g1"))]
    row1 = [y for key, y in world_y.items() if key.endswith(("_g2", "_g3"))]
    assert len(row0) == len(row1) == 2 and min(row0) > max(row1)
    nz.from_ome_zarr(str(out), kind="scene", validate=True)


def test_live_levels_are_valid_06_while_the_run_goes_on(tmp_path):
    out = tmp_path / "live_levels.ome.zarr"
    spec = {
        "out": out,
        "shape": (128, 160),
        "dtype": "uint16",
        "chunks": {"t": 2, "y": 64, "x": 64},
        "ngff_version": "0.6",
        "pyramid": {"when": "live", "levels": 2},
        "commit_interval_s": 0.01,
    }
    frames = [_cells((128, 160), i) for i in range(8)]
    with acqwriter.open_stream(spec) as stream:
        for i, frame in enumerate(frames):
            stream.append(frame)
            if i % 3 == 2:
                check_dataset(out, growing=True)
                nz.from_ome_zarr(str(out), validate=True)
    attrs = check_dataset(out)
    assert len(attrs["ome"]["multiscales"][0]["datasets"]) == 2
    read = nz.from_ome_zarr(str(out), validate=True)
    np.testing.assert_array_equal(np.asarray(read.images[0].data), np.stack(frames))
    np.testing.assert_array_equal(
        np.asarray(read.images[1].data), downsample(np.stack(frames), (1, 2, 2), "mean")
    )


def test_info_and_a_pyramid_rebuild_keep_the_scene(tmp_path):
    out, stages, frames, _ = _tiles(tmp_path, None)
    before = _attrs(out)["ome"]["scene"]
    info = run_cli("info", str(out), "--json", cwd=tmp_path)
    assert info.returncode == 0, info.stderr
    described = json.loads(info.stdout)
    assert described["ome_version"] == "0.6"
    for key, (x, y) in stages.items():
        stage = described["images"][key]["stage"]
        assert (stage["x"], stage["y"]) == (x, y) and "assumed" in stage
    text = run_cli("info", str(out), cwd=tmp_path)
    assert "stage x 0.00, y 0.00, z 7.50 µm (planned)" in text.stdout
    rebuilt = run_cli("pyramid", str(out), "--quiet", cwd=tmp_path)
    assert rebuilt.returncode == 0, rebuilt.stderr
    attrs = check_dataset(out)
    assert attrs["ome"]["scene"] == before
    paths = attrs["acqwriter"]["images"]
    for key, frame in frames.items():
        image = _attrs(out / paths[key])
        assert image["acqwriter"]["stage"]["x"] == stages[key][0]
        assert image["ome"]["multiscales"][0]["coordinateTransformations"][0]["type"] == "affine"
        np.testing.assert_array_equal(read_zarr(out / paths[key])[0], frame)


def test_the_daemon_writes_06_positions(daemon, tmp_path):
    from daemon_helpers import EventRecorder

    recorder = EventRecorder(daemon.local_events)
    try:
        with daemon.client() as c:
            configured = c.configure(
                camera="sim",
                shape=[64, 80],
                dtype="uint16",
                frames=4,
                positions=2,
                out="pos6.ome.zarr",
                ngff_version="0.6",
            )
            assert configured["spec"]["ngff_version"] == "0.6"
            c.start()
            assert recorder.wait_for("summary")["ok"] is True
    finally:
        recorder.close()
    out = tmp_path / "pos6.ome.zarr"
    attrs = check_dataset(out)
    assert len(attrs["ome"]["scene"]["coordinateTransformations"]) == 2
    nz.from_ome_zarr(str(out), kind="scene", validate=True)


GRID_YAML = """\
z_plan: {range: 2, step: 1}
stage_positions:
  - {x: 100, y: 200, z: 10, name: site}
grid_plan: {rows: 2, columns: 2, fov_width: 41.6, fov_height: 41.6, overlap: 0}
"""


def test_the_cli_writes_a_grid_plan_as_a_scene_with_its_focus(tmp_path):
    """``acquire --sequence grid.yaml --ngff 0.6``: each field an image of the scene;
    the placement's z is the focus of the field's first plane (10 - 1 µm)."""
    from acqwriter.viewer.follow import open_image

    (tmp_path / "grid.yaml").write_text(GRID_YAML)
    out = tmp_path / "grid.ome.zarr"
    run = run_cli(
        "acquire", "--camera", "sim", "--shape", "64x64", "--sequence", "grid.yaml",
        "--ngff", "0.6", "--out", str(out), "--json", cwd=tmp_path, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    attrs = check_dataset(out)
    paths = attrs["acqwriter"]["images"]
    assert len(paths) == 4
    scene = {t["input"]["path"]: t for t in attrs["ome"]["scene"]["coordinateTransformations"]}
    axes = [a["name"] for a in attrs["ome"]["scene"]["coordinateSystems"][0]["axes"]]
    assert axes[-3:] == ["z", "y", "x"]
    centres = []
    for path in paths.values():
        transform = scene[path]
        centre = [0.0] * (len(axes) - 2) + [31.5 * 0.65, 31.5 * 0.65]
        world = _apply(transform, centre)
        assert world[-3] == pytest.approx(9.0, abs=0.05)  # the first plane's focus
        centres.append((round(world[-1], 1), round(world[-2], 1)))
        image = open_image(out, image=next(k for k, p in paths.items() if p == path))
        assert image.dims[-3:] == ("z", "y", "x")
    xs = sorted({x for x, _ in centres})
    ys = sorted({y for _, y in centres})
    assert np.diff(xs) == pytest.approx([41.6], abs=0.1)
    assert np.diff(ys) == pytest.approx([41.6], abs=0.1)
    assert np.mean(xs) == pytest.approx(100, abs=0.1) and np.mean(ys) == pytest.approx(200, abs=0.1)
