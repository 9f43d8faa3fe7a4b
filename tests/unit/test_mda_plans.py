"""MDAs a pymmcore-plus user runs every day, on the DemoCamera configuration: well plates
of one or several points per well, grids placed as the camera saw them, channels the
core lacks refused before anything moves, an engine that fails recorded as failed, a
writer that cannot go on stopping the run, and other handlers that raise."""

from __future__ import annotations

import json

import numpy as np
import pytest
import useq
import zarr

from acqwriter.mda import MDAWriter
from acqwriter.mda.sequence import MAX_TIMEPOINTS, parse_sequence
from acqwriter.store.memory import MemoryStore
from acqwriter.validation import SpecError
from helpers import check_dataset, frame_records, read_zarr


@pytest.fixture(scope="module")
def mmc():
    from pymmcore_plus import CMMCorePlus

    core = CMMCorePlus()
    core.loadSystemConfiguration()
    core.setProperty("Camera", "Mode", "Noise")
    core.setROI(0, 0, 64, 64)
    yield core
    core.reset()


class Counter:
    """Counts the frames the engine delivered (connected after the writer); with
    ``cancel_after``, cancels the run once that many came."""

    def __init__(self, mmc, cancel_after: int | None = None):
        self.count = 0
        self._mmc = mmc
        self._cancel_after = cancel_after
        mmc.mda.events.frameReady.connect(self.frameReady)

    def frameReady(self, img, event, meta):
        self.count += 1
        if self.count == self._cancel_after:
            self._mmc.mda.cancel()

    def close(self):
        self._mmc.mda.events.frameReady.disconnect(self.frameReady)


def _record(mmc, seq, out, *, cancel_after=None, **options):
    """Run ``seq`` on ``mmc`` into ``out`` with an MDAWriter given the core; returns the
    writer and the frames the engine delivered."""
    writer = MDAWriter(out, core=mmc, **options)
    counter = Counter(mmc, cancel_after)
    try:
        mmc.run_mda(seq, output=writer, block=True)
    finally:
        writer.detach()
        counter.close()
    return writer, counter.count


def _small(rows: int, columns: int, name: str) -> useq.WellPlate:
    """A plate of ``rows`` × ``columns`` wells 100 µm apart: the demo XY stage takes
    seconds per centimetre, and the mapping does not depend on the spacing."""
    return useq.WellPlate(
        rows=rows, columns=columns, well_spacing=(0.1, 0.1), well_size=(0.05, 0.05), name=name
    )


def _root(out):
    return json.loads((out / "zarr.json").read_text())["attributes"]


@pytest.mark.parametrize("points", [None, 2])
def test_a_well_plate_of_one_or_more_points_per_well_is_a_full_plate(mmc, tmp_path, points):
    plate = _small(8, 12, "96-well")
    plan = {"plate": plate, "a1_center_xy": (0, 0), "selected_wells": ([1, 3], [2, 6])}
    if points:
        plan["well_points_plan"] = useq.GridRowsColumns(rows=points, columns=1, fov_width=0.01)
    seq = useq.MDASequence(stage_positions=useq.WellPlatePlan(**plan), channels=["DAPI"])
    out = tmp_path / "plate.ome.zarr"
    writer, _ = _record(mmc, seq, out)
    fields = points or 1
    assert writer.summary is not None and writer.summary.state == "complete"
    assert writer.summary.frames_written == 2 * fields
    attrs = _root(out)
    plate = attrs["ome"]["plate"]
    assert [r["name"] for r in plate["rows"]] == list("ABCDEFGH")
    assert [c["name"] for c in plate["columns"]] == [str(i) for i in range(1, 13)]
    assert plate["name"] == "96-well"
    wells = {w["path"]: (w["rowIndex"], w["columnIndex"]) for w in plate["wells"]}
    assert wells == {"B/3": (1, 2), "D/7": (3, 6)}
    assert sorted(attrs["acqwriter"]["images"]) == sorted(
        f"{w}/{f}" for w in ("B/3", "D/7") for f in range(fields)
    )
    # rows are groups: zarr-python walks the whole plate
    for row in ("B", "D"):
        assert json.loads((out / row / "zarr.json").read_text())["node_type"] == "group"
    group = zarr.open_group(out, mode="r")
    arrays = [name for name, node in group.members(max_depth=None) if isinstance(node, zarr.Array)]
    assert f"D/7/{fields - 1}/0" in arrays
    check_dataset(out / "B" / "3" / "0")


def test_plate_rows_and_columns_read_back_with_zarr_python_2_layout(mmc, tmp_path):
    seq = useq.MDASequence(
        stage_positions=useq.WellPlatePlan(
            plate=_small(4, 6, "24-well"), a1_center_xy=(0, 0), selected_wells=([0, 2], [1, 1])
        )
    )
    out = tmp_path / "plate04.ome.zarr"
    _record(mmc, seq, out, ngff_version="0.4")
    attrs = json.loads((out / ".zattrs").read_text())
    assert len(attrs["plate"]["rows"]) == 4 and len(attrs["plate"]["columns"]) == 6
    assert (out / "A" / ".zgroup").exists() and (out / "C" / ".zgroup").exists()
    group = zarr.open_group(out, mode="r", zarr_format=2)
    assert group["C/2/0/0"].shape[-2:] == (64, 64)


def test_grid_rows_and_plate_rows_are_placed_as_the_camera_saw_them(mmc, tmp_path):
    # useq: the stage's y grows upwards, so grid row 1 lies at a smaller stage y
    seq = useq.MDASequence(
        grid_plan=useq.GridRowsColumns(rows=2, columns=2, fov_width=64, fov_height=64),
        z_plan={"top": 7, "bottom": 3, "step": 2},
    )
    out = tmp_path / "grid.ome.zarr"
    _record(mmc, seq, out)
    events = list(seq)
    translations = {}
    for key, path in _root(out)["acqwriter"]["images"].items():
        ms = _root(out / path)["ome"]["multiscales"][0]
        axes = [a["name"] for a in ms["axes"]]
        t = ms["datasets"][0]["coordinateTransformations"][1]["translation"]
        translations[key] = dict(zip(axes, t, strict=True))
    by_grid = {}
    for event in events:
        g = event.index["g"]
        by_grid[g] = (event.y_pos, event.x_pos)
    keys = sorted(translations)
    ys = [translations[k]["y"] for k in keys]
    stage_ys = [by_grid[i][0] for i in range(4)]
    # a smaller stage y is further down the image: image y is the stage y negated
    assert ys == [-y for y in stage_ys]
    # absolute z: the first plane's position, not 0
    assert all(t["z"] == pytest.approx(3.0) for t in translations.values())
    assert _root(out)["acqwriter"]["mda"]["stage_to_image"]["assumed"]


def test_a_channel_the_core_lacks_is_refused_before_anything_moves(mmc, tmp_path):
    seq = useq.MDASequence(
        channels=["DAPI"],
        stage_positions=[
            {"x": 0, "y": 0},
            {"x": 5, "y": 5, "sequence": {"channels": ["DAPI", "Nope"]}},
        ],
        time_plan={"interval": 0, "loops": 3},
    )
    out = tmp_path / "nope.ome.zarr"
    writer, delivered = _record(mmc, seq, out)
    assert delivered == 0
    assert writer.summary is None
    assert "stage_positions[1].sequence.channels[1]" in writer.error
    assert "'Nope'" in writer.error and "\n" not in writer.error
    assert not out.exists()


def test_a_relayed_writer_refuses_an_unknown_top_level_channel(tmp_path):
    from pymmcore_plus import CMMCorePlus

    core = CMMCorePlus.instance()  # the core a writer given as output= finds by itself
    if not core.getLoadedDevices() or "Camera" not in core.getLoadedDevices():
        core.loadSystemConfiguration()
    core.setROI(0, 0, 64, 64)
    out = tmp_path / "nope2.ome.zarr"
    writer = MDAWriter(out)
    core.run_mda(useq.MDASequence(channels=["FITC", "Cy9"]), output=writer, block=True)
    assert writer.summary is None and "Cy9" in writer.error
    assert not out.exists()


class FailingEngine:
    """A fault injected into pymmcore-plus's real engine: its third event raises."""

    def __init__(self, mmc):
        from pymmcore_plus.mda import MDAEngine

        class Engine(MDAEngine):
            calls = 0

            def setup_event(self, event):
                Engine.calls += 1
                if Engine.calls == 3:
                    raise RuntimeError("stage controller did not answer")
                super().setup_event(event)

        self.old = mmc.mda.set_engine(Engine(mmc, use_hardware_sequencing=False))
        self.mmc = mmc

    def close(self):
        self.mmc.mda.set_engine(self.old)


def test_an_engine_failure_is_recorded_as_a_failure(mmc, tmp_path):
    seq = useq.MDASequence(time_plan={"interval": 0, "loops": 6})
    out = tmp_path / "engine.ome.zarr"
    fault = FailingEngine(mmc)
    writer = MDAWriter(out, core=mmc)
    try:
        with pytest.raises(RuntimeError, match="did not answer"):
            mmc.mda.run(seq, output=writer)  # on this thread: the engine's error is raised
    finally:
        writer.detach()
        fault.close()
    summary = writer.summary
    assert summary.state == "aborted"
    assert "MDA engine failed" in summary.error and "did not answer" in summary.error
    assert summary.frames_written == 2
    assert summary.frames_missing == 0 or summary.frames_missing == len(summary.missing_indices)
    assert _root(out)["acqwriter"]["state"] == "aborted"


def test_a_writer_that_stopped_cancels_the_run_and_counts_what_came(mmc, tmp_path):
    seq = useq.MDASequence(time_plan={"interval": 0, "loops": 400})
    store = MemoryStore(capacity=600_000)  # a disk that fills part-way through
    out = tmp_path / "full.ome.zarr"
    writer, delivered = _record(mmc, seq, out, store=store, shards="none", disk_check=False)
    summary = writer.summary
    assert summary.state in ("failed", "aborted")
    assert "no space" in summary.error or "disk" in summary.error
    assert delivered < 400  # the run was cancelled
    after = summary.dropped_by_reason.get("writer stopped", 0)
    assert after >= 1
    # every delivered frame is on disk or counted
    assert summary.frames_received == delivered
    assert "no longer written" in writer.error


def test_a_handler_that_raises_costs_the_writer_no_frame(mmc, tmp_path):
    def raising(img, event, meta):
        raise ValueError("a buggy plugin")

    out = tmp_path / "raise.ome.zarr"
    seq = useq.MDASequence(time_plan={"interval": 0, "loops": 20})
    mmc.mda.events.frameReady.connect(raising)  # connected before the writer
    try:
        writer, _ = _record(mmc, seq, out)
    finally:
        mmc.mda.events.frameReady.disconnect(raising)
    assert writer.summary.frames_written == 20
    assert writer.summary.frames_missing == 0
    assert not any(r["dropped"] for r in frame_records(out))
    assert np.asarray(read_zarr(out)).shape[0] == 20


@pytest.mark.parametrize(
    ("given", "field", "words"),
    [
        ({"time_plan": {"interval": 0, "loops": 10**9}}, "sequence.time_plan", "at most"),
        ({"time_plans": {"interval": 1, "loops": 3}}, "sequence.time_plans", "time_plan"),
        ({"stage_positions": [{"x": float("inf"), "y": 0}]}, "stage_positions[0].x", "finite"),
        ({"z_plan": {"range": float("nan"), "step": 1}}, "sequence.z_plan", ""),
        ({"channels": [{"config": "DAPI", "exposur": 3}]}, "channels[0].exposur", "exposure"),
    ],
)
def test_a_sequence_that_cannot_be_run_fails_in_one_line(given, field, words):
    with pytest.raises(SpecError) as info:
        parse_sequence(given)
    message = str(info.value)
    assert "\n" not in message
    assert field in message and words in message


def test_a_long_time_plan_is_planned_without_expanding_it():
    from acqwriter.mda.mapping import plan_sequence

    seq = parse_sequence({"time_plan": {"interval": 0, "loops": MAX_TIMEPOINTS}})
    plan = plan_sequence(seq)
    assert plan.images[next(iter(plan.images))].sizes["t"] == MAX_TIMEPOINTS
    assert plan.events == MAX_TIMEPOINTS


def test_positions_beyond_any_event_count_get_their_image():
    from acqwriter.mda.mapping import plan_sequence

    seq = useq.MDASequence(
        time_plan={"interval": 0, "loops": 50_000},
        stage_positions=[{"x": i, "y": 0, "name": f"s{i}"} for i in range(6)],
    )
    plan = plan_sequence(seq)
    assert sorted(plan.images) == [f"s{i}" for i in range(6)]
    assert all(p.sizes["t"] == 50_000 for p in plan.images.values())


def test_a_list_of_events_is_written_as_its_frames_come(mmc, tmp_path):
    events = [
        useq.MDAEvent(index={"t": t, "p": p}, x_pos=10.0 * p, y_pos=0.0, pos_name=f"s{p}")
        for t in range(3)
        for p in range(2)
    ]
    events.append(useq.MDAEvent(index={"t": 0, "p": 2}, x_pos=50.0, y_pos=5.0))
    out = tmp_path / "events.ome.zarr"
    writer, delivered = _record(mmc, events, out)
    summary = writer.summary
    assert summary is not None and summary.state == "complete", writer.error
    assert delivered == 7 and summary.frames_written == 7
    images = _root(out)["acqwriter"]["images"]
    assert sorted(images) == ["p2", "s0", "s1"]
    s1 = out / images["s1"]
    assert read_zarr(s1).shape == (3, 64, 64)
    records = frame_records(s1)
    assert [r["metadata"]["event_index"] for r in records] == [{"t": t, "p": 1} for t in range(3)]
    check_dataset(s1)
    assert (out / "OME" / "METADATA.ome.xml").exists()


def test_the_daemon_weighs_checks_and_stops_a_sequence(daemon, tmp_path):
    import time

    from acqwriter.control.client import ControlError
    from daemon_helpers import EventRecorder

    with daemon.client() as c:
        # what start would fail on is refused at configure, with the reason
        huge = {"time_plan": {"interval": 0, "loops": 10**9}}
        with pytest.raises(ControlError) as refused:
            c.configure(camera="sim", shape=[64, 64], out="h.ome.zarr", sequence=huge)
        assert "time_plan" in refused.value.message and "\n" not in refused.value.message
        disk = {"time_plan": {"interval": 0, "loops": 900_000}}
        with pytest.raises(ControlError) as full:
            c.configure(camera="sim", shape=[2048, 2048], out="d.ome.zarr", sequence=disk)
        assert "not enough free space" in full.value.message
        with pytest.raises(ControlError) as channel:
            c.configure(camera="sim", shape=[64, 64], out="c.ome.zarr",
                        sequence={"channels": ["DAPI", "Nope"]})  # fmt: skip
        assert "Nope" in channel.value.message
    recorder = EventRecorder(daemon.local_events)
    try:
        with daemon.client() as c:
            slow = {"time_plan": {"interval": 0.05, "loops": 400}}
            c.configure(camera="sim", shape=[300, 300], out="s.ome.zarr", sequence=slow)
            c.start()
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:  # some frames are on disk: then stop
                if (c.status().get("progress") or {}).get("frames_written", 0) >= 3:
                    break
                time.sleep(0.05)
            report = c.stop(wait=True)
    finally:
        recorder.close()
    summary = report["summary"]
    assert summary["state"] == "complete" and 0 < summary["frames_written"] < 400
    assert summary["pyramid_levels"] == 2  # stop finishes the dataset, pyramid included
    attrs = json.loads((tmp_path / "s.ome.zarr" / "zarr.json").read_text())["attributes"]
    assert [d["path"] for d in attrs["ome"]["multiscales"][0]["datasets"]] == ["0", "1"]


def test_a_big_grid_makes_its_images_as_their_frames_come(mmc, tmp_path):
    """A 20 x 20 grid is not 400 images before its first frame; cancelled after 10
    frames, the dataset holds the images that were reached, every one valid."""
    seq = useq.MDASequence(
        grid_plan=useq.GridRowsColumns(rows=20, columns=20, fov_width=1, fov_height=1)
    )
    out = tmp_path / "grid.ome.zarr"
    writer, delivered = _record(mmc, seq, out, cancel_after=10)
    summary = writer.summary
    assert summary.state == "aborted" and summary.frames_written == delivered >= 10
    images = _root(out)["acqwriter"]["images"]
    assert len(images) == delivered < 400  # one field per frame: one image per frame
    for path in images.values():
        check_dataset(out / path)
    assert len(_root(out / "OME")["ome"]["series"]) == delivered


def test_a_whole_run_lists_every_planned_image(mmc, tmp_path):
    seq = useq.MDASequence(
        grid_plan=useq.GridRowsColumns(rows=2, columns=3, fov_width=1, fov_height=1)
    )
    out = tmp_path / "all.ome.zarr"
    writer, _ = _record(mmc, seq, out)
    assert writer.summary.state == "complete" and writer.summary.frames_written == 6
    assert len(_root(out)["acqwriter"]["images"]) == 6
