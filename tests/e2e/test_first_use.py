"""What a first-time user meets: honest metadata, clear refusals, phases, and the states
a dataset is left in. Each test drives the real CLI, stream or daemon."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

from acqwriter import open_stream
from acqwriter.acquisition import AcquisitionReport
from acqwriter.format.summary import Summary
from acqwriter.simulators import FrameBank
from daemon_helpers import EventRecorder
from helpers import check_dataset, frame_records, read_zarr, run_cli


@pytest.fixture
def acqwriter(tmp_path):
    def run(*args):
        return run_cli(*args, cwd=tmp_path)

    return run


def _root(out: Path) -> dict:
    return json.loads((out / "zarr.json").read_text())["attributes"]


def _one_line_error(run) -> str:
    """The error's first line; no traceback, no usage dump before it."""
    assert "Traceback" not in run.stderr, run.stderr
    assert not run.stderr.startswith("usage:"), run.stderr
    return run.stderr.splitlines()[0]


# -- data that says something untrue ------------------------------------------------------
@pytest.mark.parametrize(
    ("options", "field", "says"),
    [
        (["--dims", "tczyx", "--sizes", "c=2,z=3"], "channels", "name the 2 channels"),
        (["--channel", "GFP", "--channel", "mCherry"], "channels", "not a configuration"),
        (["--dims", "zyx"], "dims", "time series"),
    ],
)
def test_what_the_hardware_cannot_do_is_refused(tmp_path, acqwriter, options, field, says):
    out = tmp_path / "r.ome.zarr"
    run = acqwriter("acquire", "--camera", "sim", "--shape", "32x32", "--frames", "20", "--out",
                    str(out), *options)  # fmt: skip
    assert run.returncode == 2
    line = _one_line_error(run)
    assert line.startswith(f"acqwriter acquire: {field}:") or f" {field}:" in line
    assert says in line
    assert not out.exists()


@pytest.mark.parametrize(
    ("options", "shape", "axes"),
    [
        (["--dims", "tzyx", "--sizes", "z=3", "--z-step", "0.5"], (2, 3, 32, 32), "tzyx"),
        (["--channel", "DAPI", "--channel", "FITC"], (2, 2, 32, 32), "tcyx"),
        (["--time-increment", "0.05"], (2, 32, 32), "tyx"),
    ],
)
def test_channels_z_and_intervals_run_an_mda(tmp_path, acqwriter, options, shape, axes):
    """What a camera stream cannot do, an MDA does: the channels are switched, the focus
    moved, the interval waited, and the dataset says what happened."""
    out = tmp_path / "m.ome.zarr"
    run = acqwriter("acquire", "--camera", "sim", "--shape", "32x32", "--timepoints", "2",
                    "--out", str(out), "--json", *options)  # fmt: skip
    assert run.returncode == 0, run.stderr
    data = read_zarr(out)
    assert data.shape == shape
    attrs = check_dataset(out)
    ms = attrs["ome"]["multiscales"][0]
    assert "".join(a["name"] for a in ms["axes"]) == axes
    records = frame_records(out)
    if "z" in axes:
        assert ms["datasets"][0]["coordinateTransformations"][0]["scale"][1] == 0.5
        zs = [r["metadata"]["z_um"] for r in records[:3]]
        assert zs[1] - zs[0] == pytest.approx(0.5) and zs[2] - zs[1] == pytest.approx(0.5)
    if "c" in axes:
        assert [c["label"] for c in attrs["ome"]["omero"]["channels"]] == ["DAPI", "FITC"]
        assert [r["metadata"]["channel"] for r in records] == ["DAPI", "FITC"] * 2
    if options[0] == "--time-increment":
        assert ms["axes"][0].get("unit") == "second"
        # what happened over the run: the span between the time points' first frames,
        # as the engine's clock took them, over the intervals between them
        runner = [r["metadata"]["runner_time_ms"] for r in records]
        span = (runner[-1] - runner[0]) / 1000 / (len(runner) - 1)
        scale = ms["datasets"][0]["coordinateTransformations"][0]["scale"][0]
        assert scale == pytest.approx(span, rel=1e-6)


def test_stream_time_scale_is_the_measured_frame_interval(tmp_path, acqwriter):
    out = tmp_path / "t.ome.zarr"
    run = acqwriter("acquire", "--camera", "sim", "--shape", "32x32", "--fps", "50",
                    "--frames", "30", "--out", str(out), "--json")  # fmt: skip
    assert run.returncode == 0, run.stderr
    attrs = check_dataset(out)
    axes = attrs["ome"]["multiscales"][0]["axes"]
    scale = attrs["ome"]["multiscales"][0]["datasets"][0]["coordinateTransformations"][0]
    assert axes[0] == {"name": "t", "type": "time", "unit": "second"}
    assert 0.014 < scale["scale"][0] < 0.03  # 1/50 s, measured
    report = json.loads(run.stdout)
    assert report["summary"]["time_increment_s"] == pytest.approx(scale["scale"][0])
    assert attrs["acqwriter"]["spec"]["time_increment"] is None


def test_python_stream_without_time_increment_is_not_labelled_one_second(tmp_path):
    out = tmp_path / "p.ome.zarr"
    with open_stream({"out": out, "shape": (16, 16), "dtype": "uint16"}) as stream:
        for i in range(4):
            stream.append(np.full((16, 16), i, np.uint16))
            time.sleep(0.05)
    attrs = check_dataset(out)
    t_scale = attrs["ome"]["multiscales"][0]["datasets"][0]["coordinateTransformations"][0]
    assert 0.04 < t_scale["scale"][0] < 0.5
    # a single time point: no interval was measured, so no unit is claimed
    single = tmp_path / "one.ome.zarr"
    with open_stream({"out": single, "shape": (16, 16), "dtype": "uint16"}) as stream:
        stream.append(np.zeros((16, 16), np.uint16))
    axes = check_dataset(single)["ome"]["multiscales"][0]["axes"]
    assert axes[0] == {"name": "t", "type": "time"}


def test_timepoints_and_sizes_t_set_the_length(tmp_path, acqwriter):
    out = tmp_path / "tp.ome.zarr"
    run = acqwriter("acquire", "--camera", "sim", "--shape", "32x32", "--timepoints", "7",
                    "--out", str(out), "--json")  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert read_zarr(out).shape == (7, 32, 32)
    out2 = tmp_path / "st.ome.zarr"
    run = acqwriter("acquire", "--camera", "sim", "--shape", "32x32", "--sizes", "t=5",
                    "--out", str(out2), "--json")  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["summary"]["frames_written"] == 5
    assert read_zarr(out2).shape == (5, 32, 32)
    run = acqwriter("acquire", "--camera", "sim", "--shape", "32x32", "--sizes", "t=5",
                    "--frames", "6", "--out", str(tmp_path / "bad.ome.zarr"))  # fmt: skip
    assert run.returncode == 2
    assert _one_line_error(run).startswith("acqwriter acquire: invalid spec: frames: 6 disagrees")


def test_missing_frames_not_asked_for_make_the_acquisition_incomplete():
    summary = Summary(path="x", state="complete", frames_written=15, frames_missing=5)
    report = AcquisitionReport(summary, frames_requested=15, frames_delivered=15)
    assert not report.ok
    assert "last time point is incomplete: 5 frame(s) missing" in report.reason()
    asked = AcquisitionReport(summary, 15, 15, allow_partial=True)
    assert asked.ok and asked.reason() is None
    stopped = AcquisitionReport(summary, 15, 15, stopped=True)
    assert stopped.ok


def test_partial_time_points_are_refused_unless_asked():
    from acqwriter.acquisition.spec import AcquisitionSpec
    from acqwriter.spec.model import SpecError

    # frames per time point comes from the non-time axes; a camera stream has one
    spec = AcquisitionSpec.parse(
        {"out": "x.ome.zarr", "dims": "tczyx", "sizes": {"c": 1, "z": 1}, "frames": 3}
    )
    assert spec.frames_per_timepoint == 1
    with pytest.raises(SpecError, match=r"timepoints: 3 disagrees with sizes\.t = 4"):
        AcquisitionSpec.parse({"out": "x.ome.zarr", "sizes": {"t": 4}, "timepoints": 3})


def test_exception_inside_the_stream_leaves_it_aborted(tmp_path):
    out = tmp_path / "a.ome.zarr"
    boom = RuntimeError("stage lost")
    with (
        pytest.raises(RuntimeError) as info,
        open_stream({"out": out, "shape": (32, 32), "dtype": "uint16"}) as stream,
    ):
        for i in range(6):
            stream.append(np.full((32, 32), i, np.uint16))
        raise boom
    assert info.value is boom  # propagates unchanged
    attrs = check_dataset(out)
    assert attrs["acqwriter"]["state"] == "aborted"
    summary = attrs["acqwriter"]["summary"]
    assert summary["state"] == "aborted" and summary["error"] == "RuntimeError: stage lost"
    assert summary["frames_written"] == 6
    np.testing.assert_array_equal(read_zarr(out)[:, 0, 0], np.arange(6))
    assert len(attrs["ome"]["multiscales"][0]["datasets"]) == 1  # no pyramid
    assert stream.summary.state == "aborted"
    # a finished, aborted dataset has nothing to recover and info says it as it is
    run = run_cli("recover", str(out), cwd=tmp_path)
    assert run.returncode == 0 and "nothing to recover" in run.stdout
    assert "state aborted" in run_cli("info", str(out), cwd=tmp_path).stdout


def test_display_windows_come_from_the_data(tmp_path):
    out = tmp_path / "w.ome.zarr"
    bank = FrameBank((64, 64), "uint16", seed=2)
    spec = {
        "out": out,
        "shape": (64, 64),
        "dtype": "uint16",
        "dims": "tcyx",
        "sizes": {"c": 2},
        "channels": [{"name": "dim"}, {"name": "bright", "color": "FF0000"}],
    }
    with open_stream(spec) as stream:
        for i in range(10):
            frame = bank.frame(i) // 8  # channel 0 dim
            stream.append(frame if i % 2 == 0 else frame * 4 + 1000)
    channels = check_dataset(out)["ome"]["omero"]["channels"]
    data = read_zarr(out)
    for c, channel in enumerate(channels):
        window = channel["window"]
        values = data[:, c]
        assert window["min"] == 0 and window["max"] == 65535
        assert values.min() <= window["start"] < window["end"] <= values.max()
        assert window["end"] - window["start"] < 0.5 * 65535
    assert channels[1]["window"]["start"] > channels[0]["window"]["end"] / 2
    assert [c["label"] for c in channels] == ["dim", "bright"]


def test_cli_channel_sets_name_colour_and_window(tmp_path, acqwriter):
    out = tmp_path / "c.ome.zarr"
    run = acqwriter("acquire", "--camera", "sim", "--shape", "32x32", "--frames", "4",
                    "--channel", "GFP:00FF00:100-2000", "--out", str(out))  # fmt: skip
    assert run.returncode == 0, run.stderr
    attrs = check_dataset(out)
    assert attrs["ome"]["multiscales"][0]["axes"][1]["name"] == "c"
    (channel,) = attrs["ome"]["omero"]["channels"]
    assert channel["label"] == "GFP" and channel["color"] == "00FF00"
    assert (channel["window"]["start"], channel["window"]["end"]) == (100.0, 2000.0)
    bad = acqwriter("acquire", "--camera", "sim", "--frames", "4", "--channel", "GFP:00FF00:x",
                    "--out", str(tmp_path / "b.ome.zarr"))  # fmt: skip
    assert bad.returncode == 2 and "START-END" in _one_line_error(bad)


def test_url_out_is_refused_and_missing_folders_are_created(tmp_path, acqwriter):
    run = acqwriter("acquire", "--camera", "sim", "--shape", "32x32", "--frames", "3",
                    "--out", "gs://bucket/x.ome.zarr")  # fmt: skip
    assert run.returncode == 2
    assert "'gs' URLs are not supported" in _one_line_error(run)
    assert not (tmp_path / "gs:").exists()
    out = tmp_path / "new" / "deeper" / "x.ome.zarr"
    run = acqwriter("acquire", "--camera", "sim", "--shape", "32x32", "--frames", "3",
                    "--out", str(out), "--json")  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert f"created folder {tmp_path / 'new'}" in run.stderr
    assert json.loads(run.stdout)["summary"]["created_folders"] == [
        str(tmp_path / "new"),
        str(tmp_path / "new" / "deeper"),
    ]
    check_dataset(out)


def test_daemon_creates_missing_folders_too(daemon, tmp_path):
    with daemon.client() as c:
        reply = c.configure(camera="sim", shape=[32, 32], frames=5, out="sub/dir/x.ome.zarr")
        assert reply["creates_folders"] == [str(tmp_path / "sub"), str(tmp_path / "sub" / "dir")]
        c.start()
        report = c.stop(wait=True, timeout_s=60)
    assert report["summary"]["created_folders"][0] == str(tmp_path / "sub")
    check_dataset(tmp_path / "sub" / "dir" / "x.ome.zarr")


# -- recover and info ------------------------------------------------------------------------
_WRITER = """
import os, sys, time, numpy as np, acqwriter
stream = acqwriter.open_stream({"out": sys.argv[1], "shape": (32, 32), "dtype": "uint16",
                                "chunks": {"t": 1}, "shards": "none"})
for i in range(5):
    stream.append(np.full((32, 32), i, np.uint16))
while stream.progress()["rows_committed"] < 5:  # all five inside the extent
    time.sleep(0.01)
print("ready", flush=True)
sys.stdin.readline()
"""


def _live_writer(out: Path) -> subprocess.Popen:
    """A writer process holding ``out`` open with 5 frames committed, until killed."""
    return subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(out)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=out.parent,
    )


def test_recover_on_a_complete_dataset_changes_nothing(tmp_path, acqwriter):
    out = tmp_path / "done.ome.zarr"
    with open_stream({"out": out, "shape": (256, 256), "dtype": "uint16",
                      "chunks": {"y": 64, "x": 64}}) as stream:  # fmt: skip
        for i in range(3):
            stream.append(np.full((256, 256), i, np.uint16))
    files = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.rglob("*") if p.is_file()}
    run = acqwriter("recover", str(out))
    assert run.returncode == 0
    assert "nothing to recover" in run.stdout and "state complete" in run.stdout
    after = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.rglob("*") if p.is_file()}
    assert after == files
    assert _root(out)["acqwriter"]["state"] == "complete"


def test_info_tells_a_live_writer_from_a_dead_one(tmp_path, acqwriter):
    out = tmp_path / "live.ome.zarr"
    proc = _live_writer(out)
    try:
        assert proc.stdout.readline().strip() == "ready"
        live = acqwriter("info", str(out))
        assert live.returncode == 0
        assert "state acquiring, being written now" in live.stdout
        assert json.loads(acqwriter("info", str(out), "--json").stdout)["writer"] == "alive"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    dead = acqwriter("info", str(out))
    assert "its writer is gone" in dead.stdout
    assert f"acqwriter recover {out}" in dead.stdout
    assert json.loads(acqwriter("info", str(out), "--json").stdout)["writer"] == "gone"
    assert (out / ".acqwriter.lock").exists()  # info never touches the dataset's files
    run = acqwriter("recover", str(out))
    assert run.returncode == 0 and "recovered 5 frame(s)" in run.stdout
    assert not (out / ".acqwriter.lock").exists()
    assert json.loads(acqwriter("info", str(out), "--json").stdout)["writer"] is None


def test_pyramid_refuses_a_dataset_whose_writer_died(tmp_path, acqwriter):
    out = tmp_path / "d.ome.zarr"
    proc = _live_writer(out)
    assert proc.stdout.readline().strip() == "ready"
    live = acqwriter("pyramid", str(out))
    assert live.returncode == 2 and "writer lock" in _one_line_error(live)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    run = acqwriter("pyramid", str(out))
    assert run.returncode == 2
    assert "run 'acqwriter recover" in _one_line_error(run)
    assert _root(out)["acqwriter"]["state"] == "acquiring"


# -- phases after the acquisition ------------------------------------------------------------
def test_close_reports_flushing_then_each_pyramid_level(tmp_path):
    out = tmp_path / "ph.ome.zarr"
    snapshots: list[dict] = []
    stream = open_stream(
        {
            "out": out,
            "shape": (512, 512),
            "dtype": "uint16",
            "chunks": {"y": 64, "x": 64},
            "pyramid": {"levels": 4},
        }
    )
    bank = FrameBank((512, 512), "uint16", seed=1)
    for i in range(40):
        stream.append(bank.frame(i))
    assert stream.progress()["phase"] == "acquiring"
    summary = stream.close(on_progress=snapshots.append, progress_interval_s=0.001)
    phases = [s["phase"] for s in snapshots]
    assert phases[-1] == "done"
    order = [p for i, p in enumerate(phases) if i == 0 or phases[i - 1] != p]
    assert order[0] == "flushing" and order[-2:] == ["pyramid", "done"]
    levels = {s["pyramid_level"] for s in snapshots if s["phase"] == "pyramid"} - {0}
    assert levels == set(range(1, summary.pyramid_levels))  # 512 → 256 → 128 → 64
    last = [s for s in snapshots if s["pyramid_level"] == summary.pyramid_levels - 1][-1]
    assert last["pyramid_chunks_done"] == last["pyramid_chunks_total"] == 40


def test_daemon_events_show_the_phases(daemon, tmp_path):
    recorder = EventRecorder(daemon.local_events)
    try:
        with daemon.client() as c:
            c.configure(camera="sim", shape=[1024, 1024], frames=60, out="ev.ome.zarr",
                        chunks={"y": 256, "x": 256},
                        ring_bytes=64 << 20)  # fmt: skip  # the test's ring, not the machine's
            c.start()
            recorder.wait_for("summary")
    finally:
        recorder.close()
    phases = [e.get("phase") for t, e in recorder.events if t == "progress"]
    order = [p for i, p in enumerate(phases) if i == 0 or phases[i - 1] != p]
    assert order[0] == "acquiring" and order[-1] == "done"
    assert "flushing" in order and "pyramid" in order  # every phase is published
    pyramid = [e for t, e in recorder.events if t == "progress" and e.get("phase") == "pyramid"]
    levels = {e["pyramid_level"] for e in pyramid} - {0}  # 0: the phase began, no level yet
    assert levels == set(range(1, pyramid[-1]["pyramid_levels"] + 1))  # each one published


def test_ctl_stop_after_the_acquisition_ended_gives_its_summary(daemon, tmp_path):
    with daemon.client() as c:
        c.configure(camera="sim", shape=[32, 32], frames=5, out="ended.ome.zarr")
        c.start()
        deadline = time.monotonic() + 60
        while c.status()["state"] != "idle" and time.monotonic() < deadline:
            time.sleep(0.05)
        report = c.stop(wait=True, timeout_s=10)
        assert report["ok"] is True and report["summary"]["frames_written"] == 5
    run = run_cli(
        "ctl", "--control", daemon.local_control, "--events", daemon.local_events, "stop",
        cwd=tmp_path,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "frames       received 5, written 5" in run.stdout


# -- the command line ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "expected", "absent"),
    [
        (["--codec", "lz5"], "did you mean 'lz4'?", "(got 'lz5')"),
        (["--overflow", "blok"], "did you mean 'block'?", None),
        (["--frmes", "5"], "did you mean '--frames'?", None),
        (
            ["--pyramid", "mean"],
            "invalid choice: 'mean' (choose from 'live', 'close', 'none')",
            None,
        ),
        (["--out", ""], "expected a path", "overwrite"),
        (["--camera", "demo", "--fps", "5"], "use exposure_ms", "roi"),
    ],
)
def test_cli_errors_are_one_line_and_point_the_way(tmp_path, acqwriter, args, expected, absent):
    base = ["acquire", "--frames", "3", "--out", str(tmp_path / "e.ome.zarr")]
    run = acqwriter(*base, *args)
    assert run.returncode == 2
    line = _one_line_error(run)
    assert expected in line
    if absent:
        assert absent not in line
    assert len(run.stderr.splitlines()) <= 2
    assert not (tmp_path / "e.ome.zarr").exists()


def test_info_into_a_closed_pipe_is_not_an_error(tmp_path):
    out = tmp_path / "pipe.ome.zarr"
    with open_stream({"out": out, "shape": (16, 16), "dtype": "uint16"}) as stream:
        for _ in range(3000):  # enough per-frame records for a long --json
            stream.append(np.zeros((16, 16), np.uint16))
    exe = Path(sys.executable).parent / "acqwriter"
    run = subprocess.run(
        f"'{exe}' info --json '{out}' | head -1",
        shell=True,
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert run.stdout == "{\n"
    assert run.stderr == ""


def test_quiet_prints_nothing_on_success(tmp_path, acqwriter):
    run = acqwriter("acquire", "--camera", "sim", "--shape", "32x32", "--frames", "3",
                    "--out", str(tmp_path / "q.ome.zarr"), "--quiet")  # fmt: skip
    assert run.returncode == 0 and run.stdout == "" and run.stderr == ""


# -- per-frame metadata where Zarr readers do not trip over it ------------------------------------
def test_zarr_listing_has_no_warning_and_old_datasets_still_read(tmp_path, acqwriter):
    import zarr

    from acqwriter.post.info import read_frame_metadata

    out = tmp_path / "m.ome.zarr"
    with open_stream({"out": out, "shape": (16, 16), "dtype": "uint16"}) as stream:
        stream.append(np.zeros((16, 16), np.uint16), metadata={"i": 0})
        stream.skip(1, reason="camera")
        stream.append(np.zeros((16, 16), np.uint16), metadata={"i": 2})
    assert (out / "0" / "frame_metadata.jsonl").exists()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        members = dict(zarr.open_group(out, mode="r").members(max_depth=None))
    assert set(members) == {"0"}
    assert [r["index"] for r in frame_records(out)] == [0, 1, 2]
    # a dataset written with the metadata at the root keeps being read from there
    (out / "0" / "frame_metadata.jsonl").rename(out / "frame_metadata.jsonl")
    root = json.loads((out / "zarr.json").read_text())
    root["attributes"]["acqwriter"]["frame_metadata"] = "frame_metadata.jsonl"
    (out / "zarr.json").write_text(json.dumps(root))
    assert [r["index"] for r in read_frame_metadata(out)] == [0, 1, 2]
    info = json.loads(acqwriter("info", str(out), "--json").stdout)
    assert info["frames_dropped"] == 1 and info["dropped_indices"] == [1]
    run = acqwriter("pyramid", str(out))
    assert run.returncode == 0, run.stderr
    assert _root(out)["acqwriter"]["frame_metadata"] == "frame_metadata.jsonl"


def test_pyramid_and_recover_commands_show_their_levels(tmp_path, acqwriter):
    out = tmp_path / "lv.ome.zarr"
    with open_stream(
        {
            "out": out,
            "shape": (256, 256),
            "dtype": "uint16",
            "chunks": {"y": 64, "x": 64},
            "pyramid": {"levels": 3},
        }
    ) as stream:
        for i in range(4):
            stream.append(np.full((256, 256), i, np.uint16))
    run = acqwriter("pyramid", str(out))
    assert run.returncode == 0, run.stderr
    assert "pyramid 1/2" in run.stderr and "pyramid 2/2" in run.stderr
    assert "4/4 chunks" in run.stderr  # level 2: 64x64, one chunk per frame
    assert _root(out)["acqwriter"]["state"] == "complete"
    quiet = acqwriter("pyramid", str(out), "--quiet")
    assert quiet.returncode == 0 and quiet.stderr == ""


def test_time_scale_follows_when_frames_were_taken(tmp_path):
    out = tmp_path / "taken.ome.zarr"
    with open_stream({"out": out, "shape": (8, 8), "dtype": "uint16"}) as stream:
        for i in range(4):  # arriving at once, taken 2.5 s apart
            stream.append(np.zeros((8, 8), np.uint16), taken_s=100.0 + 2.5 * i)
    datasets = check_dataset(out)["ome"]["multiscales"][0]["datasets"]
    assert datasets[0]["coordinateTransformations"][0]["scale"][0] == pytest.approx(2.5)


def test_capture_times_from_part_of_the_frames_are_not_mixed_with_arrival(tmp_path):
    out = tmp_path / "mixed.ome.zarr"
    with open_stream({"out": out, "shape": (8, 8), "dtype": "uint16"}) as stream:
        stream.append(np.zeros((8, 8), np.uint16), taken_s=5000.0)  # another clock
        for _ in range(3):
            time.sleep(0.05)
            stream.append(np.zeros((8, 8), np.uint16))  # no capture time: arrival
    datasets = check_dataset(out)["ome"]["multiscales"][0]["datasets"]
    assert 0.04 < datasets[0]["coordinateTransformations"][0]["scale"][0] < 0.5
