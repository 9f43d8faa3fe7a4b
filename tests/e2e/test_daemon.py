"""The daemon over real ZeroMQ sockets, in a real process: acquisition, events, state machine."""

from __future__ import annotations

import json
import signal
import time

import numpy as np
import pytest

from acqwriter.control import ControlError
from acqwriter.simulators import FrameBank, read_stamp
from daemon_helpers import Daemon, EventRecorder
from helpers import check_dataset, read_zarr, run_cli


def sim_params(out, **kw):
    return {
        "camera": "sim",
        "shape": [96, 128],
        "dtype": "uint16",
        "frames": 40,
        "fps": 200,
        "codec": "lz4",
        "out": str(out),
        "chunks": {"t": 4},
        "seed": 3,
        **kw,
    }


def test_full_acquisition_through_the_socket(daemon, tmp_path):
    recorder = EventRecorder(daemon.local_events)
    try:
        with daemon.client() as c:
            assert c.version()["protocol"] == 1
            assert c.status()["state"] == "idle"
            configured = c.configure(**sim_params("run.ome.zarr"))
            assert configured["state"] == "configured"
            assert configured["devices"]["camera"]["shape"] == [96, 128]
            assert configured["spec"]["out"] == str(tmp_path / "run.ome.zarr")  # under --root
            assert c.start()["state"] == "acquiring"
            summary_event = recorder.wait_for("summary")
            status = c.status()
            assert status["state"] == "idle"
            assert status["last_summary"]["frames_written"] == 40
    finally:
        recorder.close()
    assert summary_event["ok"] is True and summary_event["summary"]["frames_written"] == 40
    states = [e["state"] for t, e in recorder.events if t == "state"]
    assert states[:4] == ["configured", "acquiring", "finalizing", "idle"]
    progress = [e for t, e in recorder.events if t == "progress"]
    assert progress, "progress events are published while acquiring"
    for key in (
        "frames_written",
        "mb_per_s",
        "ring_occupancy",
        "frames_dropped",
        "disk_free_bytes",
    ):
        assert key in progress[-1]
    seqs = [e["seq"] for _, e in recorder.events]
    assert seqs == sorted(seqs)
    out = tmp_path / "run.ome.zarr"
    check_dataset(out)
    bank = FrameBank((96, 128), "uint16", seed=3)
    data = read_zarr(out)
    assert [read_stamp(f) for f in data] == list(range(40))
    np.testing.assert_array_equal(data, np.stack([bank.frame(i) for i in range(40)]))


def test_stop_wait_finishes_and_reports(daemon, tmp_path):
    with daemon.client() as c:
        c.configure(**sim_params("long.ome.zarr", frames=100000, fps=100))
        c.start()
        time.sleep(0.8)
        report = c.stop(wait=True, timeout_s=60)
        assert report["ok"] is True and report["stopped"] is True
        written = report["summary"]["frames_written"]
        assert written > 10
        assert c.status()["state"] == "idle"
    data = read_zarr(tmp_path / "long.ome.zarr")
    assert data.shape[0] == written
    assert [read_stamp(f) for f in data] == list(range(written))


def test_abort_stops_now_and_leaves_a_valid_dataset(daemon, tmp_path):
    with daemon.client() as c:
        c.configure(
            **sim_params(
                "ab.ome.zarr", frames=100000, fps=100, shape=[256, 256], chunks={"y": 64, "x": 64}
            )
        )
        c.start()
        time.sleep(0.5)
        assert c.abort()["aborting"] is True
        deadline = time.monotonic() + 30
        while c.status()["state"] != "idle" and time.monotonic() < deadline:
            time.sleep(0.05)
        status = c.status()
        assert status["last_report"]["reason"] == "aborted"
    out = tmp_path / "ab.ome.zarr"
    attrs = check_dataset(out)
    assert len(attrs["ome"]["multiscales"][0]["datasets"]) == 1  # abort skips the pyramid
    n = read_zarr(out).shape[0]
    assert n == status["last_summary"]["frames_written"] > 0


def test_state_machine_refuses_illegal_transitions(daemon, tmp_path):
    with daemon.client() as c:
        for command in ("start", "stop", "abort"):
            with pytest.raises(ControlError) as info:
                c.request(command)
            assert info.value.code == "invalid_state" and "idle" in info.value.message
        c.configure(**sim_params("sm.ome.zarr", frames=100000, fps=50))
        c.start()
        with pytest.raises(ControlError, match="invalid_state: not allowed while acquiring"):
            c.start()
        with pytest.raises(ControlError, match="invalid_state"):
            c.configure(**sim_params("other.ome.zarr"))
        assert c.status()["state"] == "acquiring"
        c.stop(wait=True)
        assert c.status()["state"] == "idle"
        with pytest.raises(ControlError, match="invalid_state"):
            c.start()  # a configuration is used once


def test_configure_errors_name_the_field_and_change_nothing(daemon, tmp_path):
    (tmp_path / "taken.ome.zarr").mkdir()
    (tmp_path / "plain.txt").write_text("not a folder")
    with daemon.client() as c:
        cases = [
            ({**sim_params("a.ome.zarr"), "frames": 0}, "invalid_params", "frames"),
            ({**sim_params("a.ome.zarr"), "codec": "lz5"}, "invalid_params", "codec"),
            ({**sim_params("a.ome.zarr"), "frames": "many"}, "invalid_params", "frames"),
            ({**sim_params("a.ome.zarr"), "warp": 9}, "invalid_params", "warp"),
            (
                {**sim_params("a.ome.zarr"), "chunks": {"t": 4, "q": 1}},
                "invalid_params",
                "chunks.q",
            ),
            (  # a ring bigger than the machine's memory (512 GiB of 4096² frames)
                {
                    **sim_params("a.ome.zarr"),
                    "shape": [4096, 4096],
                    "chunks": {},
                    "frames": 10000,
                    "ring_bytes": 1 << 39,
                    "disk_check": False,
                },
                "invalid_params",
                "ring_bytes: the ring needs",
            ),
            (sim_params("taken.ome.zarr"), "path_refused", "already exists"),
            (sim_params("../escape.ome.zarr"), "path_refused", "outside the server's root"),
            (sim_params("/etc/x.ome.zarr"), "path_refused", "outside the server's root"),
            (sim_params("plain.txt/x.ome.zarr"), "path_refused", "not a directory"),
            (
                {**sim_params("a.ome.zarr"), "out": "s3://bucket/x.ome.zarr"},
                "path_refused",
                "object-store URLs are refused",
            ),
            (
                {
                    **sim_params("a.ome.zarr"),
                    "camera": "/nonexistent.cfg",
                    "shape": None,
                    "dtype": None,
                    "fps": None,
                },
                "device_error",
                "neither 'sim'",
            ),
        ]
        for params, code, text in cases:
            with pytest.raises(ControlError) as info:
                c.configure(**params)
            assert info.value.code == code, (params, info.value)
            assert text in info.value.message, info.value.message
            assert c.status()["state"] == "idle"
        assert not (tmp_path / "a.ome.zarr").exists()


def test_devices_describes_camera_and_stages(daemon):
    with daemon.client() as c:
        devices = c.devices()
        camera = devices["cameras"][0]
        assert camera["label"] == "Camera" and camera["dtype"] == "uint16"
        assert "Exposure" in camera["properties"]
        assert devices["xy_stage"] == "XY" and devices["z_stage"] == "Z"
        demo = c.devices(camera="demo")
        assert demo["cameras"][0]["shape"] == [512, 512]
        assert "PixelType" in demo["cameras"][0]["properties"]


def test_schema_describes_every_message(daemon):
    import jsonschema

    with daemon.client() as c:
        schema = c.schema()
        assert set(schema["params"]) == {
            "ping",
            "version",
            "schema",
            "devices",
            "configure",
            "start",
            "stop",
            "abort",
            "status",
            "shutdown",
        }
        assert "frames" in schema["params"]["configure"]["properties"]
        jsonschema.validate({"id": 1, "command": "ping", "params": {}}, schema["request"])
        jsonschema.validate({"id": 1, "ok": True, "result": {"pong": True}}, schema["reply"])
        assert "invalid_state" in schema["error_codes"]


def test_sigterm_finishes_the_running_acquisition(tmp_path):
    d = Daemon(tmp_path, "--root", str(tmp_path))
    d.wait_ready()
    with d.client() as c:
        c.configure(**sim_params("sig.ome.zarr", frames=100000, fps=100))
        c.start()
        time.sleep(0.6)
    d.proc.send_signal(signal.SIGTERM)
    assert d.proc.wait(60) == 0
    out = tmp_path / "sig.ome.zarr"
    attrs = check_dataset(out)
    assert attrs["acqwriter"]["state"] == "complete"
    n = read_zarr(out).shape[0]
    assert n == attrs["acqwriter"]["summary"]["frames_written"] > 5


def test_shutdown_command_exits_cleanly(tmp_path):
    d = Daemon(tmp_path)
    d.wait_ready()
    with d.client() as c:
        assert c.shutdown()["shutting_down"] is True
    assert d.proc.wait(30) == 0


def test_ctl_command_line(daemon, tmp_path):
    ctl = ["ctl", "--control", daemon.local_control, "--events", daemon.local_events]
    spec = tmp_path / "spec.yaml"
    spec.write_text("camera: sim\nshape: [64, 64]\nframes: 30\nfps: 100\nout: cli.ome.zarr\n")
    run = run_cli(*ctl, "ping", cwd=tmp_path)
    assert run.returncode == 0 and json.loads(run.stdout)["pong"] is True
    run = run_cli(*ctl, "configure", str(spec), "--frames", "25", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    # what will be acquired, concisely: where, images, axes and sizes, frames, bytes
    lines = run.stdout.splitlines()
    assert lines[0].startswith("configured: 1 image(s) (image) -> ")
    assert lines[0].endswith("cli.ome.zarr")
    assert "25 frames of 64x64 uint16, 0.2 MB uncompressed" in lines[1]
    assert len(lines) <= 5
    whole = run_cli(*ctl, "configure", str(spec), "--frames", "25", "--json", cwd=tmp_path)
    reply = json.loads(whole.stdout)
    assert reply["spec"]["frames"] == 25 and reply["acquires"]["frames"] == 25
    run = run_cli(*ctl, "start", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    watch = run_cli(*ctl, "watch", cwd=tmp_path)
    assert watch.returncode == 0, watch.stderr
    assert "written 25, dropped 0" in watch.stdout
    status = json.loads(run_cli(*ctl, "status", cwd=tmp_path).stdout)
    assert status["state"] == "idle" and status["last_summary"]["frames_written"] == 25
    bad = run_cli(*ctl, "start", cwd=tmp_path)
    assert bad.returncode == 1 and "invalid_state" in bad.stderr
    bad = run_cli(*ctl, "configure", "--frames", "3", cwd=tmp_path)
    assert bad.returncode == 2 and "out: required" in bad.stderr
    dead = run_cli(
        "ctl", "--control", "tcp://127.0.0.1:1", "--timeout", "0.5", "ping", cwd=tmp_path
    )
    assert dead.returncode == 3 and "no reply" in dead.stderr


def test_ctl_watch_after_the_acquisition_ended_reports_it(daemon, tmp_path):
    # A short acquisition can end before `watch` subscribes (its summary event is then
    # never delivered to it): watch must report the finished acquisition, not wait forever.
    ctl = ["ctl", "--control", daemon.local_control, "--events", daemon.local_events]
    with daemon.client() as c:
        c.configure(**sim_params("ended.ome.zarr", frames=7))
        c.start()
        deadline = time.monotonic() + 60
        while c.status()["state"] != "idle" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert c.status()["state"] == "idle"
    watch = run_cli(*ctl, "watch", cwd=tmp_path, timeout=30)
    assert watch.returncode == 0, watch.stderr
    assert "written 7, dropped 0" in watch.stdout
    as_json = run_cli(*ctl, "watch", "--json", cwd=tmp_path, timeout=30)
    assert as_json.returncode == 0, as_json.stderr
    report = json.loads(as_json.stdout.strip().splitlines()[-1])
    assert report["ok"] is True and report["summary"]["frames_written"] == 7


def test_drops_warn_and_camera_failure_ends_in_error_state(daemon, tmp_path):
    recorder = EventRecorder(daemon.local_events)
    try:
        with daemon.client() as c:
            c.configure(**sim_params("drops.ome.zarr", sim_faults={"skip": [3, 4]}))
            c.start()
            summary = recorder.wait_for("summary")
            assert summary["ok"] is False and summary["summary"]["dropped_indices"] == [3, 4]
            warnings = [e for t, e in recorder.events if t == "warning"]
            assert any(w["kind"] == "dropped_frames" for w in warnings), warnings
            assert c.status()["state"] == "idle"

            recorder.events.clear()
            c.configure(
                **sim_params("dead.ome.zarr", frame_timeout_s=0.5, sim_faults={"stop_after": 6})
            )
            c.start()
            error = recorder.wait_for("error")
            assert "delivered no frame" in error["message"]
            deadline = time.monotonic() + 10
            while c.status()["state"] != "error" and time.monotonic() < deadline:
                time.sleep(0.05)
            status = c.status()
            assert status["state"] == "error" and "delivered no frame" in status["error"]
            with pytest.raises(ControlError, match="invalid_state"):
                c.start()
            c.configure(**sim_params("again.ome.zarr"))  # configure leaves the error state
            assert c.status()["state"] == "configured" and c.status()["error"] is None
    finally:
        recorder.close()
    assert read_zarr(tmp_path / "dead.ome.zarr").shape[0] == 6
    check_dataset(tmp_path / "dead.ome.zarr")


def test_ctl_stop_prints_the_summary(daemon, tmp_path):
    ctl = ["ctl", "--control", daemon.local_control, "--events", daemon.local_events]
    run = run_cli(
        *ctl,
        "configure",
        "--camera",
        "sim",
        "--shape",
        "32x32",
        "--frames",
        "100000",
        "--fps",
        "100",
        "--out",
        "stopme.ome.zarr",
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr
    assert run_cli(*ctl, "start", cwd=tmp_path).returncode == 0
    time.sleep(0.5)
    stop = run_cli(*ctl, "stop", cwd=tmp_path)
    assert stop.returncode == 0, stop.stderr
    assert "state        complete" in stop.stdout and "dropped 0" in stop.stdout


def test_the_daemon_writes_stage_positions_as_a_collection(daemon, tmp_path):
    """``configure`` takes the same positions as ``acquire``: each visited position is
    its own image, placed where the stage was, and progress is reported per image."""
    recorder = EventRecorder(daemon.local_events)
    try:
        with daemon.client() as c:
            positions = [{"name": "left", "x": 0, "y": 0}, {"name": "right", "x": 500, "y": 0}]
            params = sim_params("pos.ome.zarr", frames=8, stage_positions=positions)
            c.configure(**params)
            c.start()
            summary_event = recorder.wait_for("summary")
    finally:
        recorder.close()
    assert summary_event["ok"] is True
    assert summary_event["summary"]["frames_written"] == 16
    assert set(summary_event["summary"]["images"]) == {"left", "right"}
    # progress per position: every progress event says what each image holds
    progress = [e for topic, e in recorder.events if topic == "progress"]
    assert progress and all(set(e["images"]) == {"left", "right"} for e in progress)
    assert progress[-1]["images"] == {"left": 8, "right": 8}
    out = tmp_path / "pos.ome.zarr"
    root = json.loads((out / "zarr.json").read_text())["attributes"]
    assert root["acqwriter"]["images"] == {"left": "0", "right": "1"}
    for path, x in (("0", 0.0), ("1", 500.0)):
        attrs = check_dataset(out / path)
        transforms = attrs["ome"]["multiscales"][0]["datasets"][0]["coordinateTransformations"]
        assert transforms[1]["translation"][-1] == x
        assert read_zarr(out / path).shape == (8, 96, 128)
