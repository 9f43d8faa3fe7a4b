"""The viewer window, for real: ``acqwriter view`` and ``acqwriter ctl view`` in their own
processes under Xvfb (Mesa's software OpenGL), screenshots of the X screen taken with
ImageMagick while a writer runs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zarr

pytest.importorskip("ndv")
pytest.importorskip("qtpy")
if shutil.which("Xvfb") is None or shutil.which("import") is None:
    pytest.skip(
        "Xvfb and ImageMagick's import are needed (.ci/run installs them)",
        allow_module_level=True,
    )

# Frames of one grey level each (1000 × (t + 1)), shown through the window the spec gives
# (0-40000): the canvas's grey level says which time point the window shows.
# With a fourth argument the writer holds after that many frames until a line comes on stdin.
WRITER = """
import sys, time, numpy as np, acqwriter
out, frames, fps = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
hold = int(sys.argv[4]) if len(sys.argv) > 4 else -1
spec = {"out": out, "shape": (64, 64), "dtype": "uint16", "dims": "tcyx",
        "channels": [{"name": "grey", "color": "FFFFFF", "window": [0, 40000]}],
        "commit_interval_s": 0.05, "shard_seal_s": 0.05, "pyramid": {"enabled": False}}
with acqwriter.open_stream(spec) as stream:
    for t in range(frames):
        if t == hold:
            print("held", flush=True)
            sys.stdin.readline()
        stream.append(np.full((64, 64), 1000 * (t + 1), np.uint16))
        print(t, flush=True)
        time.sleep(1 / fps)
"""
# no icon fetched from outside this machine: the viewer's requests go to a closed port
OFFLINE = {"HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9"}


@pytest.fixture
def display():
    """A fresh Xvfb screen; its DISPLAY."""
    read, write = os.pipe()
    xvfb = subprocess.Popen(
        ["Xvfb", "-displayfd", str(write), "-screen", "0", "1280x1024x24", "-nolisten", "tcp"],
        pass_fds=(write,),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.close(write)
    with os.fdopen(read) as f:
        number = f.readline().strip()
    yield f":{number}"
    xvfb.terminate()
    xvfb.wait(timeout=10)


def _env(display: str) -> dict[str, str]:
    return {**os.environ, "DISPLAY": display, "QT_QPA_PLATFORM": "xcb", **OFFLINE}


def _screenshot(display: str, path: Path) -> np.ndarray:
    subprocess.run(
        ["import", "-display", display, "-window", "root", str(path)], check=True, timeout=30
    )
    from PIL import Image

    return np.asarray(Image.open(path).convert("L"))


def _canvas(shot: np.ndarray) -> np.ndarray:
    """The middle of the viewer's canvas (the window sits at the screen's corner)."""
    return shot[330:410, 410:490]


def _wait_for_window(display: str, tmp_path: Path, viewer: subprocess.Popen) -> np.ndarray:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert viewer.poll() is None, viewer.stderr.read() if viewer.stderr else ""
        shot = _screenshot(display, tmp_path / "wait.png")
        if shot.std() > 5:  # something is drawn
            return shot
        time.sleep(0.5)
    raise AssertionError("no window appeared")


def _shown(display: str, path: Path) -> int:
    """The time point the window shows: grey = 255 × 1000 (t + 1) / 40000."""
    canvas = _canvas(_screenshot(display, path))
    assert canvas.std() < 3, "the frame is one grey level"
    return round(float(canvas.mean()) * 40 / 255) - 1


def _until_shown(display: str, path: Path, wanted, viewer: subprocess.Popen) -> int:
    """Screenshots until the window shows a time point ``wanted`` accepts (a slow, busy
    machine only makes it take longer); that time point."""
    deadline = time.monotonic() + 90
    while True:
        assert viewer.poll() is None, viewer.stderr.read() if viewer.stderr else ""
        t = _shown(display, path)
        if wanted(t) or time.monotonic() > deadline:
            return t
        time.sleep(0.3)


def test_view_follows_a_growing_dataset_and_closing_it_changes_nothing(tmp_path, display):
    out = tmp_path / "grow.ome.zarr"
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(out), "36", "3", "12"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )
    assert writer.stdout.readline().strip() == "0"  # the dataset exists
    viewer = subprocess.Popen(
        [sys.executable, "-m", "acqwriter", "view", str(out), "--interval", "0.1"],
        env=_env(display),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )
    try:
        _wait_for_window(display, tmp_path, viewer)
        while writer.stdout.readline().strip() != "held":
            pass
        # the writer holds after 12 frames: the window comes to show the newest, frame 11
        assert _until_shown(display, tmp_path / "a.png", lambda t: t == 11, viewer) == 11
        writer.stdin.write("go\n")
        writer.stdin.flush()
        # the dataset grows again: the window moves on, and only to frames on disk
        t = _until_shown(display, tmp_path / "b.png", lambda t: t > 11, viewer)
        on_disk = zarr.open_group(out, mode="r")["0"].shape[0]
        assert 11 < t <= on_disk - 1, (t, on_disk)
    finally:
        viewer.terminate()  # closing the window mid-acquisition
        viewer.wait(timeout=30)
    writer.wait(timeout=60)
    assert writer.returncode == 0, writer.stderr.read()
    data = zarr.open_group(out, mode="r")["0"][:]
    assert data.shape[0] == 36  # every frame written: the window changed nothing
    assert [int(f.max()) for f in data[:, 0]] == [1000 * (t + 1) for t in range(36)]
    # on a finished dataset the window reads and never writes: not a byte changes
    before = _files(out)
    viewer = subprocess.Popen(
        [sys.executable, "-m", "acqwriter", "view", str(out)],
        env=_env(display),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        cwd=tmp_path,
    )
    try:
        _wait_for_window(display, tmp_path, viewer)
    finally:
        viewer.terminate()
        viewer.wait(timeout=30)
    assert _files(out) == before


def _files(root: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in root.rglob("*")
        if p.is_file()
    }


def test_a_dataset_whose_writer_was_killed_says_so(tmp_path):
    from acqwriter.viewer.follow import open_image

    out = tmp_path / "killed.ome.zarr"
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(out), "1000", "50"],
        stdout=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )
    writer.stdout.readline()
    deadline = time.monotonic() + 30
    while open_image(out).shape[0] == 0 and time.monotonic() < deadline:
        time.sleep(0.1)  # a shard along t is sealed once it has waited shard_seal_s
    assert open_image(out).writer_state() == "acquiring"
    writer.kill()
    writer.wait(timeout=30)
    image = open_image(out)
    assert image.writer_state() == "gone"
    assert image.shape[0] >= 1  # what reached the disk is shown
    np.testing.assert_array_equal(image[0, 0], np.full((64, 64), 1000, np.uint16))


def test_view_names_what_is_wrong_in_one_line(tmp_path):
    run = subprocess.run(
        [sys.executable, "-m", "acqwriter", "view", str(tmp_path / "none.ome.zarr")],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **OFFLINE},
    )
    assert run.returncode == 2
    assert run.stderr.strip().count("\n") == 0 and "not a Zarr dataset" in run.stderr


def test_ctl_view_shows_what_the_daemon_writes(tmp_path, display, daemon):
    with daemon.client() as client:
        client.configure(
            camera="sim", shape=[128, 128], dtype="uint16", frames=300, fps=20,
            out="live.ome.zarr", seed=5, commit_interval_s=0.05,
        )  # fmt: skip
        client.start()
        viewer = subprocess.Popen(
            [
                sys.executable, "-m", "acqwriter", "ctl", "--control", daemon.local_control,
                "--events", daemon.local_events, "--timeout", "30", "view",
            ],
            env=_env(display),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=tmp_path,
        )  # fmt: skip
        try:
            _wait_for_window(display, tmp_path, viewer)
            first = second = _canvas(_screenshot(display, tmp_path / "a.png"))
            deadline = time.monotonic() + 60  # a busy machine only makes it take longer
            while time.monotonic() < deadline:
                if first.std() > 1 and _moved(first, second):
                    break
                time.sleep(0.5)
                first, second = second, _canvas(_screenshot(display, tmp_path / "b.png"))
        finally:
            viewer.terminate()
            viewer.wait(timeout=30)
        assert first.std() > 1 and second.std() > 1  # camera frames, not a blank canvas
        assert _moved(first, second)  # it moved on
        assert client.status()["state"] in ("acquiring", "finalizing", "idle")
        client.abort()


def _moved(first: np.ndarray, second: np.ndarray) -> bool:
    return bool(np.abs(first.astype(int) - second.astype(int)).mean() > 0.5)


# ndv.ArrayViewer(writer.view()) in the acquisition's own process, pymmcore-plus's
# engine on the DemoCamera: channels, z and two positions. The GUI thread tells the
# viewer when the view's coords_changed said the image grew (as pymmcore-gui does).
MDA_VIEWER = """
import json, sys, threading
import ndv
from pymmcore_plus import CMMCorePlus
from qtpy import QtCore, QtWidgets
from useq import MDASequence
from acqwriter.mda import MDAWriter

app = QtWidgets.QApplication([])
core = CMMCorePlus()
core.loadSystemConfiguration()
core.setProperty("Camera", "Mode", "Noise")
seq = MDASequence(time_plan={"interval": 0.3, "loops": 4}, channels=["DAPI", "FITC"],
                  z_plan={"range": 2, "step": 1}, stage_positions=[(0, 0, 0), (5, 5, 0)],
                  axis_order="tpcz")
writer = MDAWriter(sys.argv[1], core=core)
view = writer.view(image="p1")
viewer = ndv.ArrayViewer(view)
viewer.show()
changed, seen = threading.Event(), []
view.coords_changed.connect(changed.set)

def follow():
    if changed.is_set():
        changed.clear()
        viewer.data = view  # the wrapper reads the view's new shape
        seen.append(dict(viewer.data_wrapper.sizes()))
    if writer.summary is not None and not changed.is_set():  # the dataset is closed
        timer.stop()
        app.quit()

timer = QtCore.QTimer()
timer.timeout.connect(follow)
timer.start(50)
thread = core.run_mda(seq)
app.exec()
thread.join()
writer.detach()
# Qt's signals (a QApplication exists) would queue the writer's slots to this thread:
# the writer connects directly, so frames are taken, and the dataset closed, on the
# acquisition thread; the summary is there without this thread's event loop
second = MDAWriter(sys.argv[1] + ".again", core=core)
core.run_mda(seq).join()
closed_off_gui = second.summary is not None and second.summary.frames_written == 48
second.detach()
print(json.dumps({"seen": seen, "shape": list(view.shape), "closed_off_gui": closed_off_gui}))
"""


def test_ndv_follows_an_mda_in_the_writers_process(tmp_path, display):
    out = tmp_path / "mda.ome.zarr"
    run = subprocess.run(
        [sys.executable, "-c", MDA_VIEWER, str(out)],
        env=_env(display),
        capture_output=True,
        text=True,
        timeout=180,
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    sizes = [s["t"] for s in result["seen"]]
    assert sizes == sorted(sizes) and sizes[-1] == 4 and len(set(sizes)) >= 2  # it grew
    assert result["seen"][-1] == {"t": 4, "c": 2, "z": 3, "y": 512, "x": 512}
    assert result["shape"] == [4, 2, 3, 512, 512]
    assert result["closed_off_gui"]  # the second run, no GUI event processed meanwhile
    data = zarr.open_group(out, mode="r")["1"]["0"][:]
    assert data.shape == (4, 2, 3, 512, 512) and data[-1].any()
