"""Collections and plates after acquisition: info, pyramid and recover work on every
image, the CLI's ``--positions`` writes one image per position, and a plate killed at
any moment is valid with only real or flagged frames, and recoverable."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

from acqwriter.post.recover import recover
from acqwriter.simulators import FrameBank
from helpers import KILLS, check_dataset, frame_records, read_zarr, run_cli, validate_ngff

HERE = Path(__file__).resolve().parents[1]  # tests/: helper scripts


def _plate_frames_ok(out: Path, seed: int) -> dict[str, int]:
    """Every image valid; every frame inside its extent is the frame given there, or
    flagged; returns each image's extent (time points)."""
    sys.path.insert(0, str(HERE))
    from plate_writer import KEYS, SHAPE

    extents = {}
    validate_ngff(json.loads((out / "zarr.json").read_text())["attributes"], "plate")
    for k, key in enumerate(KEYS):
        image = out / key
        check_dataset(image)
        data = read_zarr(image)
        records = frame_records(image)
        bank = FrameBank(SHAPE, "uint16", size=3, seed=seed + k)
        for t in range(data.shape[0]):
            for c in range(2):
                i = t * 2 + c
                if records[i]["dropped"]:
                    assert not data[t, c].any()
                    continue
                np.testing.assert_array_equal(data[t, c], bank.frame(i))
        extents[key] = data.shape[0]
    return extents


@pytest.mark.slow
def test_a_plate_killed_at_random_moments_is_valid_and_recovers(tmp_path):
    """:data:`KILLS` kills, two writers at a time (the machine has two cores)."""
    from concurrent.futures import ThreadPoolExecutor

    delays = [random.Random(20261201 + k).uniform(0.0, 0.6) for k in range(KILLS)]

    def kill(k: int) -> int:
        out = tmp_path / f"plate{k}.ome.zarr"
        proc = subprocess.Popen(
            [sys.executable, str(HERE / "plate_writer.py"), str(out), str(k)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(delays[k])
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        before = _plate_frames_ok(out, k)
        account = recover(out)
        assert not account["nothing_to_recover"]
        after = _plate_frames_ok(out, k)
        assert all(after[key] >= before[key] for key in before)
        root = json.loads((out / "zarr.json").read_text())["attributes"]["acqwriter"]
        assert root["state"] == "recovered"
        for key in after:
            attrs = json.loads((out / key / "zarr.json").read_text())["attributes"]
            assert attrs["acqwriter"]["state"] == "recovered"
        assert recover(out)["nothing_to_recover"]
        assert not list(out.rglob(".*.tmp"))
        return sum(after.values())

    with ThreadPoolExecutor(max_workers=2) as pool:
        extents = list(pool.map(kill, range(KILLS)))
    assert len(set(extents)) >= 5 and max(extents) > 8


def test_cli_tools_on_a_collection(tmp_path):
    out = tmp_path / "pos.ome.zarr"
    result = run_cli(
        "acquire",
        "--camera",
        "sim",
        "--shape",
        "64x64",
        "--timepoints",
        "3",
        "--positions",
        "3",
        "--out",
        str(out),
        "--json",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] and report["summary"]["frames_written"] == 9
    assert set(report["summary"]["images"]) == {"p0", "p1", "p2"}
    root = json.loads((out / "zarr.json").read_text())["attributes"]
    validate_ngff(root, "bf2raw")
    xs = []
    for path in ("0", "1", "2"):
        check_dataset(out / path)
        assert read_zarr(out / path).shape == (3, 64, 64)
        ms = json.loads((out / path / "zarr.json").read_text())["attributes"]["ome"]
        xs.append(
            ms["multiscales"][0]["datasets"][0]["coordinateTransformations"][1]["translation"][-1]
        )
        records = frame_records(out / path)
        assert {r["metadata"]["x_um"] for r in records} == {xs[-1]}  # read back at the place
    assert xs[0] < xs[1] < xs[2]  # one field of view apart along x
    info = run_cli("info", str(out), "--json", cwd=tmp_path)
    assert info.returncode == 0, info.stderr
    described = json.loads(info.stdout)
    assert described["layout"] == "collection"
    assert {k: v["shape"] for k, v in described["images"].items()} == {
        "p0": [3, 64, 64],
        "p1": [3, 64, 64],
        "p2": [3, 64, 64],
    }
    text = run_cli("info", str(out), cwd=tmp_path).stdout
    assert "collection of 3 images" in text and "p2: 2" in text
    pyramid = run_cli("pyramid", str(out), cwd=tmp_path)
    assert pyramid.returncode == 0, pyramid.stderr
    again = run_cli("recover", str(out), cwd=tmp_path)
    assert again.returncode == 0 and "nothing to recover" in again.stdout


def test_a_96_well_plate_stays_within_the_memory_bound(tmp_path):
    """96 wells × 4 fields of 512² frames, one ring of 256 MiB: the RSS stays within the
    ring + 300 MB and the open file descriptors stay few."""
    script = f"""
import resource, psutil, acqwriter
from acqwriter.simulators import FrameBank
keys = [f"{{r}}/{{c}}/{{f}}" for r in "ABCDEFGH" for c in range(1, 13) for f in range(4)]
image = {{"shape": (512, 512), "dtype": "uint16", "sizes": {{"t": 3}}}}
bank = FrameBank((512, 512), "uint16", size=8, seed=1)
frames = [bank.frame(i) for i in range(8)]
proc = psutil.Process()
base = proc.memory_info().rss
fds = 0
spec = {{"out": "{tmp_path / "plate.ome.zarr"}", "layout": "plate", "ring_bytes": 256 << 20,
        "images": {{k: image for k in keys}}}}
with acqwriter.open_dataset(spec) as ds:
    for t in range(3):
        for i, key in enumerate(keys):
            ds.append(frames[(i + t) % 8], image=key)
            fds = max(fds, proc.num_fds())
assert ds.summary.ok and ds.summary.frames_written == 3 * 384, ds.summary.describe()
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(base, peak, fds)
"""
    # cwd: away from the source tree, whose acqwriter/ is not the installed package
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=tmp_path
    )
    assert out.returncode == 0, out.stderr
    base, peak, fds = map(int, out.stdout.split())
    assert peak - base < (256 << 20) + 300e6, (
        f"peak RSS {peak / 1e6:.0f} MB over a base of {base / 1e6:.0f}"
    )
    assert fds < 64
    check_dataset(tmp_path / "plate.ome.zarr" / "H/12/3")
    assert psutil.Process().num_fds() < 1000
