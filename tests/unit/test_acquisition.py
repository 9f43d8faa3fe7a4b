"""Camera → writer end to end, on real cores: Python simulator and Micro-Manager DemoCamera."""

from __future__ import annotations

import numpy as np

from acqwriter import open_stream
from acqwriter.acquisition import open_microscope, run_acquisition
from acqwriter.acquisition.spec import AcquisitionSpec
from acqwriter.devices import CameraFrame, LostFrames
from acqwriter.simulators import FrameBank, SimFaults, read_stamp
from helpers import check_dataset, frame_records, read_tensorstore, read_zarr


def test_sim_camera_to_dataset_every_pixel(tmp_path, collect_cores):
    scope = open_microscope("sim", shape=(256, 200), dtype="uint16", seed=9)
    collect_cores.append(scope)
    scope.xy_stage.move(10.0, 20.0)
    scope.z_stage.move(3.5)
    out = tmp_path / "sim.ome.zarr"
    spec = AcquisitionSpec.parse(
        {"out": str(out), "frames": 60, "exposure_ms": 1.0, "chunks": {"t": 4, "y": 128, "x": 128}}
    )
    progress = []
    report = run_acquisition(scope, spec, on_progress=progress.append)
    assert report.ok, report.reason()
    assert report.summary.frames_written == 60 and report.frames_delivered == 60
    assert progress and progress[-1]["frames_written"] == 60
    check_dataset(out)
    bank = FrameBank((256, 200), "uint16", seed=9)
    for data in (read_zarr(out), read_tensorstore(out)):
        assert data.shape == (60, 256, 200)
        for i, frame in enumerate(data):
            assert read_stamp(frame) == i
            np.testing.assert_array_equal(frame, bank.frame(i))
    records = frame_records(out)
    assert [r["index"] for r in records] == list(range(60))
    md = records[7]["metadata"]
    assert md["camera"] == "Camera" and md["camera_frame_number"] == 7 and md["image_number"] == 7
    assert (md["x_um"], md["y_um"], md["z_um"]) == (10.0, 20.0, 3.5)
    assert md["exposure_ms"] == 1.0 and md["elapsed_ms"] >= 0
    scale = check_dataset(out)["ome"]["multiscales"][0]["datasets"][0]["coordinateTransformations"][
        0
    ]
    assert scale["scale"][-1] == 0.65  # pixel size taken from the core's calibration


def test_camera_gaps_land_as_flagged_drops(tmp_path, collect_cores):
    scope = open_microscope("sim", shape=(64, 64), seed=2)
    collect_cores.append(scope)
    scope.py_devices["Camera"].faults = SimFaults(skip={5, 6, 20})
    out = tmp_path / "gaps.ome.zarr"
    report = run_acquisition(scope, AcquisitionSpec.parse({"out": str(out), "frames": 30}))
    assert not report.ok
    assert report.lost_camera_frames == [5, 6, 20]
    assert report.summary.dropped_indices == [5, 6, 20]
    assert "3 frame(s) dropped" in report.reason()
    data = read_zarr(out)
    bank = FrameBank((64, 64), "uint16", seed=2)
    for i, frame in enumerate(data):
        if i in (5, 6, 20):
            assert not frame.any()
        else:
            np.testing.assert_array_equal(frame, bank.frame(i))
    flagged = [r["index"] for r in frame_records(out) if r["dropped"]]
    assert flagged == [5, 6, 20]


def test_camera_that_stops_delivering_ends_cleanly(tmp_path, collect_cores):
    scope = open_microscope("sim", shape=(32, 32), seed=2)
    collect_cores.append(scope)
    scope.py_devices["Camera"].faults = SimFaults(stop_after=12)
    out = tmp_path / "stop.ome.zarr"
    spec = AcquisitionSpec.parse({"out": str(out), "frames": 40, "frame_timeout_s": 0.5})
    report = run_acquisition(scope, spec)
    assert not report.ok and "delivered no frame" in report.reason()
    assert report.summary.frames_written == 12 and report.summary.state == "complete"
    check_dataset(out)
    assert read_zarr(out).shape == (12, 32, 32)


def test_duration_mode(tmp_path, collect_cores):
    scope = open_microscope("sim", shape=(32, 32), fps=100)
    collect_cores.append(scope)
    out = tmp_path / "dur.ome.zarr"
    report = run_acquisition(scope, AcquisitionSpec.parse({"out": str(out), "duration": "0.5s"}))
    assert report.ok, report.reason()
    n = report.summary.frames_written
    assert 10 <= n <= 60
    assert [read_stamp(f) for f in read_zarr(out)] == list(range(n))


def test_demo_camera_pixels_match_what_the_camera_produced(tmp_path, collect_cores):
    scope = open_microscope("demo")
    collect_cores.append(scope)
    cam = scope.camera
    cam.exposure_ms = 1
    out = tmp_path / "demo.ome.zarr"
    produced = []
    with open_stream(
        {"out": out, "shape": cam.shape, "dtype": cam.dtype.name, "threads": 2}
    ) as stream:
        for event in cam.sequence(20):
            assert not isinstance(event, LostFrames)
            if isinstance(event, CameraFrame):
                produced.append(np.array(event.image, copy=True))
                stream.append(event.image, {"image_number": event.number})
    assert stream.summary.ok and len(produced) == 20
    check_dataset(out)
    expected = np.stack(produced)
    np.testing.assert_array_equal(read_zarr(out), expected)
    np.testing.assert_array_equal(read_tensorstore(out), expected)


def test_demo_camera_through_run_acquisition(tmp_path, collect_cores):
    scope = open_microscope("demo")
    collect_cores.append(scope)
    out = tmp_path / "demo2.ome.zarr"
    spec = AcquisitionSpec.parse(
        {"camera": "demo", "out": str(out), "frames": 12, "exposure_ms": 1, "roi": [0, 0, 256, 128]}
    )
    report = run_acquisition(scope, spec)
    assert report.ok, report.reason()
    assert read_zarr(out).shape == (12, 128, 256)
    assert [r["metadata"]["image_number"] for r in frame_records(out)] == list(range(12))
