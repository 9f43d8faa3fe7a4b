"""acqwriter as the pymmcore-plus MDA sink, with the DemoCamera configuration: every
frame lands where its event's index says, in the image of its position, with the
sequence's channels, z and stage positions; plates, grids, ragged plans and cancelled
runs included."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import useq

from acqwriter.mda import MDAWriter
from helpers import check_dataset, frame_records, read_zarr, validate_ngff


@pytest.fixture(scope="module")
def mmc():
    from pymmcore_plus import CMMCorePlus

    core = CMMCorePlus()
    core.loadSystemConfiguration()
    core.setProperty("Camera", "Mode", "Noise")  # frames differ: placement is checked
    yield core
    core.reset()


class Capture:
    """Keeps a copy of every frame by (position, event index), on the acquisition thread."""

    def __init__(self, mmc):
        self.frames: dict[tuple, np.ndarray] = {}
        self.events = []
        mmc.mda.events.frameReady.connect(self.frameReady)
        self._mmc = mmc

    def frameReady(self, img, event, meta):
        index = {str(getattr(k, "value", k)): int(v) for k, v in event.index.items()}
        self.frames[tuple(sorted(index.items()))] = np.array(img, copy=True)
        self.events.append((index, meta))

    def close(self):
        self._mmc.mda.events.frameReady.disconnect(self.frameReady)


def _run(mmc, seq, out: Path, **options):
    capture = Capture(mmc)
    writer = MDAWriter(out, core=mmc, **options)
    try:
        mmc.run_mda(seq, output=writer, block=True)
    finally:
        writer.detach()
        capture.close()
    return writer, capture


def _images(out: Path) -> dict[str, Path]:
    attrs = json.loads((out / "zarr.json").read_text())["attributes"]["acqwriter"]
    if "images" in attrs:
        return {k: out / p for k, p in attrs["images"].items()}
    return {"": out}


def _check_placement(out: Path, capture: Capture) -> int:
    """Every captured frame is in its image at its index; returns the frames checked."""
    check_dataset(out)
    checked = 0
    images = _images(out)
    for image_root in images.values():
        data = read_zarr(image_root)
        dims = [
            a["name"]
            for a in json.loads((image_root / "zarr.json").read_text())["attributes"]["ome"][
                "multiscales"
            ][0]["axes"]
        ][:-2]
        for record in frame_records(image_root):
            if record["dropped"]:
                continue
            index = record["metadata"]["event_index"]
            where = tuple(index.get(a, 0) for a in dims)
            np.testing.assert_array_equal(data[where], capture.frames[tuple(sorted(index.items()))])
            checked += 1
    return checked


@pytest.mark.parametrize("order", ["tpgcz", "tpgzc", "ptcz"])
def test_positions_channels_and_z_land_where_their_events_say(mmc, tmp_path, order):
    seq = useq.MDASequence(
        axis_order=order,
        time_plan={"interval": 0, "loops": 2},
        stage_positions=[{"x": 0, "y": 0, "name": "left"}, {"x": 500, "y": 20, "name": "right"}],
        channels=["DAPI", "FITC"],
        z_plan={"range": 2, "step": 1},
    )
    out = tmp_path / f"{order}.ome.zarr"
    writer, capture = _run(mmc, seq, out)
    assert writer.summary.ok and writer.summary.frames_written == 24
    validate_ngff(json.loads((out / "zarr.json").read_text())["attributes"], "bf2raw")
    assert _check_placement(out, capture) == 24
    images = _images(out)
    assert set(images) == {"left", "right"}
    for key, x in (("left", 0.0), ("right", 500.0)):
        attrs = json.loads((images[key] / "zarr.json").read_text())["attributes"]
        ms = attrs["ome"]["multiscales"][0]
        assert [a["name"] for a in ms["axes"]] == ["t", "c", "z", "y", "x"]
        assert ms["datasets"][0]["coordinateTransformations"][1]["translation"][-1] == x
        assert ms["datasets"][0]["coordinateTransformations"][0]["scale"][2] == 1.0  # z step
        assert [c["label"] for c in attrs["ome"]["omero"]["channels"]] == ["DAPI", "FITC"]
        for record in frame_records(images[key]):
            z = record["metadata"]["event_index"]["z"]
            assert record["metadata"]["z_um"] == pytest.approx(z - 1.0, abs=0.01)  # read back
    root = json.loads((out / "zarr.json").read_text())["attributes"]["acqwriter"]
    repeated = useq.MDASequence.model_validate(root["mda"]["mda_sequence"])
    assert repeated.sizes == seq.sizes  # the acquisition can be repeated from the dataset


def test_a_ragged_plan_and_a_channel_without_stack(mmc, tmp_path):
    seq = useq.MDASequence(
        stage_positions=[
            {"x": 0, "y": 0, "name": "a"},
            {"x": 100, "y": 0, "name": "b", "sequence": {"z_plan": {"range": 4, "step": 1}}},
        ],
        channels=["DAPI", {"config": "FITC", "do_stack": False}],
        z_plan={"range": 2, "step": 1},
    )
    out = tmp_path / "ragged.ome.zarr"
    writer, capture = _run(mmc, seq, out)
    images = _images(out)
    shapes = {k: read_zarr(p).shape for k, p in images.items()}
    # b's own sequence takes 5 planes of its first channel (useq: the sub-sequence's plan)
    assert shapes["a"][:3] == (1, 2, 3) and shapes["b"][:3] == (1, 1, 5)
    assert _check_placement(out, capture) == len(capture.frames)
    summary = writer.summary
    assert summary.frames_written == len(capture.frames)
    # FITC without a stack: its middle plane only; the others are flagged missing
    assert summary.images["a"].frames_missing == 2 and summary.images["b"].frames_missing == 0
    missing = [r for r in frame_records(images["a"]) if r["dropped"]]
    assert [r["index"] for r in missing] == [3, 5]  # (c 1, z 0) and (c 1, z 2)
    assert summary.state == "complete"


def test_autofocus_events_are_run_and_every_frame_is_placed(mmc, tmp_path):
    """Hardware-autofocus events (before each position and time point) acquire no frame:
    they take no place in the images, and every frame still lands at its index with the
    z read back after the autofocus and the stack's move."""
    seq = useq.MDASequence(
        axis_order="tpcz",
        time_plan={"interval": 0, "loops": 2},
        stage_positions=[
            {"x": 0, "y": 0, "z": 10, "name": "a"},
            {"x": 300, "y": 0, "z": 20, "name": "b"},
        ],
        channels=["DAPI"],
        z_plan={"range": 2, "step": 1},
        autofocus_plan={
            "autofocus_device_name": "Z",
            "autofocus_motor_offset": 5,
            "axes": ("t", "p"),
        },
    )
    assert sum(e.action.type == "hardware_autofocus" for e in seq) == 4
    out = tmp_path / "af.ome.zarr"
    writer, capture = _run(mmc, seq, out)
    summary = writer.summary
    assert summary.ok and summary.frames_written == 12 and summary.frames_dropped == 0
    assert _check_placement(out, capture) == 12
    images = _images(out)
    for key, z0 in (("a", 10.0), ("b", 20.0)):
        assert read_zarr(images[key]).shape[:3] == (2, 1, 3)
        for record in frame_records(images[key]):
            z = record["metadata"]["event_index"]["z"]
            assert record["metadata"]["z_um"] == pytest.approx(z0 + z - 1.0, abs=0.01)


def _z_axis(image_root: Path) -> tuple[dict, float]:
    ms = json.loads((image_root / "zarr.json").read_text())["attributes"]["ome"]["multiscales"][0]
    names = [a["name"] for a in ms["axes"]]
    z = names.index("z")
    return ms["axes"][z], ms["datasets"][0]["coordinateTransformations"][0]["scale"][z]


def test_the_z_scale_is_each_images_real_plane_spacing(mmc, tmp_path):
    """The z scale is the spacing of the planes each image's events name: a position's
    own z plan gives its own step, a list of evenly spaced positions its spacing, and
    uneven positions make z a plane index with no unit (never a step nothing moved)."""
    seq = useq.MDASequence(
        stage_positions=[
            {"x": 0, "y": 0, "z": 10, "name": "plan"},
            {
                "x": 100,
                "y": 0,
                "z": 10,
                "name": "own",
                "sequence": {"z_plan": {"range": 1, "step": 0.5}},
            },
            {"x": 200, "y": 0, "name": "listed", "sequence": {"z_plan": {"relative": [0, 2.5, 5]}}},
            {"x": 300, "y": 0, "name": "uneven", "sequence": {"z_plan": {"absolute": [1, 2, 4]}}},
        ],
        z_plan={"range": 4, "step": 2},
    )
    out = tmp_path / "z.ome.zarr"
    writer, capture = _run(mmc, seq, out)
    assert writer.summary.ok
    assert _check_placement(out, capture) == len(capture.frames) == 12
    images = _images(out)
    expected = {"plan": 2.0, "own": 0.5, "listed": 2.5}
    for key, step in expected.items():
        axis, scale = _z_axis(images[key])
        assert (axis.get("unit"), scale) == ("micrometer", step), key
    axis, scale = _z_axis(images["uneven"])
    assert "unit" not in axis and scale == 1.0
    zs = [r["metadata"]["z_um"] for r in frame_records(images["uneven"])]
    assert zs == pytest.approx([1.0, 2.0, 4.0], abs=0.01)  # the real planes, per frame
    validate_ngff(json.loads((out / "zarr.json").read_text())["attributes"], "bf2raw")
    check_dataset(out)


def test_a_grid_and_a_well_plate(mmc, tmp_path):
    grid = useq.MDASequence(
        stage_positions=[{"x": 0, "y": 0, "name": "site"}],
        grid_plan={"rows": 1, "columns": 2, "fov_width": 512, "fov_height": 512},
        channels=["DAPI"],
    )
    out = tmp_path / "grid.ome.zarr"
    _, capture = _run(mmc, grid, out)
    images = _images(out)
    assert len(images) == 2
    xs = sorted(
        json.loads((p / "zarr.json").read_text())["attributes"]["ome"]["multiscales"][0][
            "datasets"
        ][0]["coordinateTransformations"][1]["translation"][-1]
        for p in images.values()
    )
    assert xs[1] - xs[0] == pytest.approx(512, abs=1)
    assert _check_placement(out, capture) == 2
    plate = useq.MDASequence(
        stage_positions=useq.WellPlatePlan(
            plate="96-well",
            a1_center_xy=(0, 0),
            selected_wells=([0, 1], [0, 2]),
            well_points_plan={"fov_width": 100, "fov_height": 100, "num_points": 2},
        ),
        channels=["DAPI"],
    )
    out = tmp_path / "plate.ome.zarr"
    _, capture = _run(mmc, plate, out)
    root = json.loads((out / "zarr.json").read_text())["attributes"]
    validate_ngff(root, "plate")
    assert {w["path"] for w in root["ome"]["plate"]["wells"]} == {"A/1", "B/3"}
    assert set(_images(out)) == {"A/1/0", "A/1/1", "B/3/0", "B/3/1"}
    assert _check_placement(out, capture) == 4


def test_a_cancelled_sequence_is_kept_with_its_missing_frames_flagged(mmc, tmp_path):
    seq = useq.MDASequence(time_plan={"interval": 0, "loops": 50}, channels=["DAPI", "FITC"])
    out = tmp_path / "cancel.ome.zarr"
    capture = Capture(mmc)
    writer = MDAWriter(out, core=mmc)
    seen = []

    def cancel_after(img, event, meta):
        seen.append(1)
        if len(seen) == 15:
            mmc.mda.cancel()

    mmc.mda.events.frameReady.connect(cancel_after)
    try:
        mmc.run_mda(seq, output=writer, block=True)
    finally:
        mmc.mda.events.frameReady.disconnect(cancel_after)
        writer.detach()
        capture.close()
    summary = writer.summary
    assert summary.state == "aborted" and "cancel" in summary.error
    assert summary.frames_written == len(capture.frames) < 100
    assert _check_placement(out, capture) == len(capture.frames)
    data = read_zarr(out)
    records = frame_records(out)
    assert all(r["drop_reason"] == "missing" for r in records if r["dropped"])
    assert data.shape[0] == -(-len(capture.frames) // 2)


def test_the_writer_and_the_default_sink_agree_pixel_for_pixel(global_core, tmp_path):
    """The same run written by pymmcore-plus's default ome-writers sink and by
    ``MDAWriter`` (as a plain ``output=`` handler, so it meets the global core) reads
    back equal, position by position, plane by plane (noise frames: a misplaced plane
    would differ)."""
    import zarr

    mmc = global_core

    seq = useq.MDASequence(
        stage_positions=[{"x": 0, "y": 0, "name": "left"}, {"x": 300, "y": 0, "name": "right"}],
        channels=["DAPI", "FITC"],
        z_plan={"range": 2, "step": 1},
        time_plan={"interval": 0, "loops": 2},
    )
    out = tmp_path / "ours.ome.zarr"
    theirs = tmp_path / "theirs.ome.zarr"
    writer = MDAWriter(out)
    mmc.run_mda(seq, output=[writer, str(theirs)], block=True)
    assert writer.summary.ok and writer.summary.frames_written == 24
    group = zarr.open_group(str(theirs), mode="r")
    images = _images(out)
    assert set(images) == {"left", "right"}
    for name, root in images.items():
        ours = read_zarr(root)
        assert ours.shape == (2, 2, 3, 512, 512)
        np.testing.assert_array_equal(np.asarray(group[name]["0"][...]), ours)
        assert (
            len({ours[t, c, z].tobytes() for t in range(2) for c in range(2) for z in range(3)})
            == 12
        )


@pytest.fixture
def global_core(mmc, monkeypatch):
    """``mmc`` as pymmcore-plus's global core (what ``CMMCorePlus.instance()`` returns),
    as it is in a session with one core; other test modules may have made another."""
    import weakref

    from pymmcore_plus.core import _mmcore_plus

    monkeypatch.setattr(_mmcore_plus, "_instance", weakref.ref(mmc))
    return mmc


class Lag:
    """How many frames the camera has delivered that the writer has not taken yet, seen
    on the acquisition thread at each frame (connected before the writer)."""

    def __init__(self, mmc, writer):
        self.delivered = 0
        self.most = 0
        self._writer = writer
        self._mmc = mmc
        mmc.mda.events.frameReady.connect(self.frameReady)

    def frameReady(self, img, event, meta):
        dataset = self._writer.dataset
        taken = dataset.progress()["frames_received"] if dataset is not None else 0
        self.most = max(self.most, self.delivered - taken)
        self.delivered += 1

    def close(self):
        self._mmc.mda.events.frameReady.disconnect(self.frameReady)


@pytest.mark.parametrize(
    ("overflow", "connect"),
    [("block", "core"), ("drop", "core"), ("block", "output"), ("drop", "output")],
)
def test_a_slow_disk_holds_the_acquisition_back_or_counts_drops(
    global_core, tmp_path, overflow, connect
):
    """Frames reach the ring on the acquisition thread, whether the writer is given the
    core or only passed as ``output=``: with a disk slower than the camera, ``block``
    holds the acquisition (the camera is never more than a few frames ahead of the
    writer, memory stays within the ring) and ``drop`` drops frames, each counted and
    flagged."""
    import time

    from stores import StoreWrapper, local_store

    from helpers import peak_rss_during

    mmc = global_core

    class SlowDisk(StoreWrapper):
        def write_chunk_from(self, key, n, buf=None):
            time.sleep(0.06)  # the demo camera delivers a frame every ~25 ms
            return super().write_chunk_from(key, n, buf)

    out = tmp_path / f"{overflow}.ome.zarr"
    ring = 16 * 512 * 512 * 2
    seq = useq.MDASequence(time_plan={"interval": 0, "loops": 80})
    exposure = mmc.getExposure()
    mmc.setExposure(0)
    writer = MDAWriter(
        out,
        core=mmc if connect == "core" else None,
        store=SlowDisk(local_store(out)),
        ring_bytes=ring,
        overflow=overflow,
        shards="none",
        threads=1,
        pyramid={"enabled": False},
    )
    lag = Lag(mmc, writer)
    output = writer if connect == "output" else None
    try:
        base, peak = peak_rss_during(lambda: mmc.run_mda(seq, output=output, block=True))
    finally:
        lag.close()
        writer.detach()
        mmc.setExposure(exposure)
    summary = writer.summary
    assert summary.frames_written + summary.frames_dropped == 80
    assert peak - base < ring + 300e6
    # a writer fed only by the relay fell 15 frames behind here
    assert lag.most <= 4, lag.most
    if overflow == "block":
        assert summary.frames_dropped == 0 and summary.ok
    else:
        assert summary.frames_dropped > 0
        records = frame_records(out)
        assert sum(r["dropped"] for r in records) == summary.frames_dropped
        assert not read_zarr(out)[summary.dropped_indices[0]].any()


def test_an_output_writer_on_another_core_gets_every_frame_relayed(mmc, tmp_path, monkeypatch):
    """When the core running the sequence is not pymmcore-plus's global one, and the
    global one runs a sequence of its own meanwhile, the writer leaves the global core
    at its first foreign frame: its frames come through the relay, each written once
    where its event says, and none of the global core's frames is taken."""
    import time
    import weakref

    from pymmcore_plus import CMMCorePlus
    from pymmcore_plus.core import _mmcore_plus

    other = CMMCorePlus()
    other.loadSystemConfiguration()
    other.setProperty("Camera", "Mode", "Noise")
    monkeypatch.setattr(_mmcore_plus, "_instance", weakref.ref(mmc))
    foreign = []

    def count(*_args):
        foreign.append(1)

    mmc.mda.events.frameReady.connect(count)
    seq = useq.MDASequence(channels=["DAPI", "FITC"], z_plan={"range": 2, "step": 1})
    # the global core runs the same plan over and over as another sequence: its frames
    # carry the very indices ours do, so any it gave the writer would land in our images
    theirs = useq.MDASequence(channels=["DAPI", "FITC"], z_plan={"range": 2, "step": 1})
    mmc.run_mda(list(theirs) * 400)  # in a thread
    out = tmp_path / "other.ome.zarr"
    capture = Capture(other)
    writer = MDAWriter(out)
    try:
        deadline = time.monotonic() + 10
        while not foreign and time.monotonic() < deadline:
            time.sleep(0.01)
        during = len(foreign)
        other.run_mda(seq, output=writer, block=True)
        during = len(foreign) - during
    finally:
        mmc.mda.cancel()
        deadline = time.monotonic() + 10
        while mmc.mda.is_running() and time.monotonic() < deadline:
            time.sleep(0.01)
        mmc.mda.events.frameReady.disconnect(count)
        capture.close()
        other.reset()
    assert during > 0  # the global core delivered frames while ours ran
    deadline = time.monotonic() + 30  # the relay thread may still hold sequenceFinished
    while writer.summary is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert writer.summary is not None, writer.error
    assert writer.summary.ok and writer.summary.frames_written == 6
    assert writer.summary.frames_dropped == 0
    assert _check_placement(out, capture) == 6


@pytest.mark.parametrize("asynchronous", [False, True], ids=["direct", "relayed"])
def test_a_writer_connected_by_hand_writes_each_frame_once(global_core, tmp_path, asynchronous):
    """Connected to ``mmc.mda.events`` by hand (pymmcore-plus's
    ``mda_listeners_connected``, on the acquisition thread or through its relay) next to
    another handler, the writer writes each frame once, where its event says."""
    from pymmcore_plus.mda import mda_listeners_connected

    mmc = global_core
    seq = useq.MDASequence(
        time_plan={"interval": 0, "loops": 2},
        channels=["DAPI", "FITC"],
        z_plan={"range": 2, "step": 1},
    )
    out = tmp_path / "by-hand.ome.zarr"
    capture = Capture(mmc)
    writer = MDAWriter(out)
    others = []

    class Other:
        def frameReady(self, img, event, meta):
            others.append(event.index)

    try:
        with mda_listeners_connected(
            writer, Other(), mda_events=mmc.mda.events, asynchronous=asynchronous
        ):
            mmc.mda.run(seq)
    finally:
        capture.close()
    assert len(others) == 12
    assert writer.summary.ok and writer.summary.frames_written == 12
    assert _check_placement(out, capture) == 12


def test_an_output_writer_joined_mid_run_writes_each_frame_once(global_core, tmp_path):
    """Passed as ``output=`` only, the writer joins the running core: the frames queued
    before that arrive relayed, later ones twice; each lands once, where its event says."""
    mmc = global_core
    seq = useq.MDASequence(
        axis_order="tpcz",
        time_plan={"interval": 0, "loops": 3},
        stage_positions=[{"x": 0, "y": 0, "name": "a"}, {"x": 300, "y": 0, "name": "b"}],
        channels=["DAPI", "FITC"],
        z_plan={"range": 2, "step": 1},
    )
    out = tmp_path / "joined.ome.zarr"
    capture = Capture(mmc)
    writer = MDAWriter(out)
    try:
        mmc.run_mda(seq, output=writer, block=True)
    finally:
        capture.close()
    assert writer.summary.ok and writer.summary.frames_written == 36
    assert writer.summary.frames_dropped == 0
    assert _check_placement(out, capture) == 36


SEQUENCE_YAML = """\
time_plan: {interval: 0, loops: 2}
channels: [DAPI, FITC]
z_plan: {range: 2, step: 1}
stage_positions:
  - {x: 0, y: 0, name: left}
  - {x: 500, y: 0, name: right}
"""


@pytest.mark.parametrize("camera", ["demo", "sim"])
def test_acquire_runs_a_sequence_file(tmp_path, camera):
    from helpers import run_cli

    (tmp_path / "seq.yaml").write_text(SEQUENCE_YAML)
    out = tmp_path / "run.ome.zarr"
    args = ["acquire", "--camera", camera, "--sequence", "seq.yaml", "--out", str(out), "--json"]
    if camera == "sim":
        args += ["--shape", "64x64"]
    run = run_cli(*args, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert report["ok"] and report["summary"]["frames_written"] == 24
    images = _images(out)
    assert set(images) == {"left", "right"}
    check_dataset(out)
    for image in images.values():
        assert read_zarr(image).shape[:3] == (2, 2, 3)
        labels = json.loads((image / "zarr.json").read_text())["attributes"]["ome"]["omero"]
        assert [c["label"] for c in labels["channels"]] == ["DAPI", "FITC"]
    refused = run_cli(*args, "--frames", "5", "--overwrite", cwd=tmp_path)
    assert refused.returncode == 2 and "frames: the sequence says it" in refused.stderr


def test_the_daemon_runs_a_sequence(daemon, tmp_path):
    from daemon_helpers import EventRecorder

    recorder = EventRecorder(daemon.local_events)
    try:
        with daemon.client() as c:
            sequence = {"channels": ["DAPI", "FITC"], "time_plan": {"interval": 0, "loops": 3}}
            c.configure(camera="sim", shape=[64, 64], out="seq.ome.zarr", sequence=sequence)
            c.start()
            summary = recorder.wait_for("summary")
    finally:
        recorder.close()
    assert summary["ok"] is True and summary["summary"]["frames_written"] == 6
    out = tmp_path / "seq.ome.zarr"
    check_dataset(out)
    assert read_zarr(out).shape == (3, 2, 64, 64)


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"ring": 1 << 26}, "ring: not an MDAWriter option (did you mean 'ring_bytes'?)"),
        ({"tread": 2}, "tread: not an MDAWriter option (did you mean 'threads'?)"),
        ({"codec": "lz5"}, "codec: expected one of"),
        ({"overflow": "bloc"}, "overflow: Input should be 'block' or 'drop'"),
        ({"chunks": {"q": 3}}, "chunks.q: axis 'q' is not in dims"),
        ({"ring_bytes": -5}, "ring_bytes: Input should be greater than 0"),
        ({"channels": ["DAPI"]}, "channels.0: Input should be a valid dictionary"),
        ({"channels": [{"name": "DAPI", "color": "zz"}]}, "channels.0.color: expected 6 hex"),
    ],
)
def test_bad_options_are_refused_when_the_writer_is_made(tmp_path, options, expected):
    """Refused at construction, in one line naming the option: raised when a relayed
    sequence starts, the error would only be logged while the acquisition went on."""
    from acqwriter import SpecError

    out = tmp_path / "x.ome.zarr"
    with pytest.raises(SpecError) as refused:
        MDAWriter(out, **options)
    assert expected in str(refused.value) and "\n" not in str(refused.value)
    assert not out.exists()


def test_an_existing_dataset_or_a_url_is_refused_when_the_writer_is_made(tmp_path):
    from acqwriter import SpecError

    out = tmp_path / "kept.ome.zarr"
    out.mkdir()
    (out / "zarr.json").write_text("{}")
    with pytest.raises(SpecError, match="already exists \\(set overwrite to replace it\\)"):
        MDAWriter(out)
    assert (out / "zarr.json").read_text() == "{}"
    with pytest.raises(SpecError, match="out: 'gs' URLs are not supported"):
        MDAWriter("gs://bucket/run.ome.zarr")
    with pytest.raises(SpecError, match="out: expected s3://bucket/PREFIX"):
        MDAWriter("s3://bucket")


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
@pytest.mark.parametrize("connect", ["core", "output"])
def test_a_dataset_that_cannot_be_opened_stops_the_acquisition(global_core, tmp_path, connect):
    """A path taken between the writer's making and the run: the acquisition stops at
    once instead of running with nothing written, and what is there is not touched."""
    mmc = global_core
    out = tmp_path / "taken.ome.zarr"
    writer = MDAWriter(out, core=mmc if connect == "core" else None)
    out.mkdir()
    (out / "zarr.json").write_text("{}")
    delivered = []

    def count(*_args):
        delivered.append(1)

    mmc.mda.events.frameReady.connect(count)
    seq = useq.MDASequence(time_plan={"interval": 0, "loops": 50})
    try:
        mmc.run_mda(seq, output=writer if connect == "output" else None, block=True)
    finally:
        mmc.mda.events.frameReady.disconnect(count)
        writer.detach()
    assert len(delivered) <= 3
    assert writer.summary is None and writer.dataset is None
    assert (out / "zarr.json").read_text() == "{}" and len(list(out.iterdir())) == 1


def test_chunks_along_an_axis_an_image_lacks_do_not_apply_to_it(mmc, tmp_path):
    seq = useq.MDASequence(time_plan={"interval": 0, "loops": 4}, channels=["DAPI"])
    out = tmp_path / "no-z.ome.zarr"
    writer, capture = _run(mmc, seq, out, chunks={"z": 4, "t": 2})
    assert writer.summary.ok and writer.summary.frames_written == 4
    import zarr

    assert zarr.open_array(str(out / "0"), mode="r").chunks[:2] == (2, 1)
    assert _check_placement(out, capture) == 4


def test_events_the_engine_skips_are_flagged_missing(mmc, tmp_path):
    """An engine's ``SkipEvent`` (pymmcore-plus's skip: no frame for that event) leaves
    its place flagged ``missing``, never filled with something that was not acquired;
    every other frame lands where its event says."""
    from pymmcore_plus.mda import MDAEngine, SkipEvent

    class SkippingEngine(MDAEngine):
        def setup_event(self, event):
            if event.index.get("z") == 1 and event.index.get("p") == 1:
                raise SkipEvent(reason="out of range")
            super().setup_event(event)

    seq = useq.MDASequence(
        stage_positions=[{"x": 0, "y": 0, "name": "a"}, {"x": 200, "y": 0, "name": "b"}],
        channels=["DAPI"],
        z_plan={"range": 2, "step": 1},
    )
    default = mmc.mda.engine
    mmc.mda.set_engine(SkippingEngine(mmc))
    try:
        out = tmp_path / "skip.ome.zarr"
        writer, capture = _run(mmc, seq, out)
    finally:
        mmc.mda.set_engine(default)
    summary = writer.summary
    assert summary.frames_written == 5 and summary.images["b"].frames_missing == 1
    assert _check_placement(out, capture) == 5
    images = _images(out)
    missing = [r for r in frame_records(images["b"]) if r["dropped"]]
    assert [(r["index"], r["drop_reason"]) for r in missing] == [(1, "missing")]
    assert not read_zarr(images["b"])[0, 0, 1].any()


def test_a_hardware_sequenced_z_stack(mmc, tmp_path):
    """With the demo Z stage sequenceable, pymmcore-plus runs each z stack as one
    hardware sequence: every frame is flagged hardware-triggered and lands at its plane;
    no z is read back for it (none is claimed), the plane the event asked for is kept."""
    mmc.setProperty("Z", "UseSequences", "Yes")
    try:
        seq = useq.MDASequence(
            time_plan={"interval": 0, "loops": 3}, z_plan={"range": 4, "step": 1}
        )
        out = tmp_path / "hw.ome.zarr"
        writer, capture = _run(mmc, seq, out)
    finally:
        mmc.setProperty("Z", "UseSequences", "No")
    assert writer.summary.ok and writer.summary.frames_written == 15
    assert _check_placement(out, capture) == 15
    records = frame_records(out)
    assert all(r["metadata"]["hardware_triggered"] for r in records)
    for r in records:
        z = r["metadata"]["event_index"]["z"]
        assert r["metadata"]["z_um"] is None
        assert r["metadata"]["target_um"]["z"] == pytest.approx(z - 2.0)
    axis, scale = _z_axis(out)
    assert (axis["unit"], scale) == ("micrometer", 1.0)
