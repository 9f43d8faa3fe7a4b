"""Pyramid builds on a Dask distributed cluster (real worker processes, a real
scheduler): the same bytes as the single-machine builder for every kind of dataset, a
worker killed mid-build, the client killed mid-build then resumed, a remote scheduler
killed mid-build then resumed on a new cluster, a live writer refused, and a bucket."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import acqwriter
from acqwriter.post import build_pyramid
from acqwriter.post.cluster import BUILD_LOG
from acqwriter.post.downsample import downsample
from helpers import check_dataset, read_zarr, run_cli

distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def client():
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
        ) as cluster,
        distributed.Client(cluster) as c,
    ):
        yield c


def _frames(n: int, shape, dtype, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    data = rng.poisson(300, (n, *shape)).astype("float64")
    data[:, : shape[0] // 3, : shape[1] // 4] += 2000  # a bright region
    return data.astype(dtype)


def _files(root: Path) -> dict[str, str]:
    """Every file of a dataset by content (level 0 is the same in both copies; the
    levels' arrays and chunks and the groups' documents are what the builds wrote)."""
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file() and not path.name.startswith(".")
    }


def _dataset(tmp_path: Path, name: str, spec: dict, frames) -> Path:
    out = tmp_path / f"{name}.ome.zarr"
    if "images" in spec:
        with acqwriter.open_dataset({**spec, "out": out}) as ds:
            for key, stack in frames.items():
                for frame in stack:
                    ds.append(frame, image=key)
    else:
        with acqwriter.open_stream({**spec, "out": out}) as stream:
            for frame in frames:
                stream.append(frame)
    return out


CASES = {
    "uint16-mean-odd-sharded-0.5": (
        {"shape": (301, 457), "dtype": "uint16", "chunks": {"t": 1, "y": 64, "x": 64},
         "shards": "auto"},
        lambda: _frames(5, (301, 457), "uint16"),
    ),
    "uint8-nearest-z-0.4": (
        {"shape": (200, 260), "dtype": "uint8", "dims": "zyx", "sizes": {"z": 9},
         "chunks": {"z": 2, "y": 64, "x": 64}, "ngff_version": "0.4",
         "pyramid": {"method": "nearest", "downsample_z": True}},
        lambda: _frames(9, (200, 260), "uint8", 1),
    ),
    "float32-tczyx-0.6": (
        {"shape": (150, 170), "dtype": "float32", "dims": "tczyx", "sizes": {"c": 2, "z": 3},
         "chunks": {"y": 64, "x": 64}, "ngff_version": "0.6"},
        lambda: _frames(12, (150, 170), "float32", 2),
    ),
    "odd-chunks-0.6": (
        {"shape": (260, 300), "dtype": "uint16", "chunks": {"t": 1, "y": 33, "x": 47},
         "ngff_version": "0.6"},
        lambda: _frames(3, (260, 300), "uint16", 3),
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", list(CASES))
def test_the_cluster_makes_the_bytes_of_the_single_machine_builder(client, tmp_path, case):
    spec, frames = CASES[case]
    out = _dataset(
        tmp_path, "a", {**spec, "pyramid": {**spec.get("pyramid", {}), "when": "none"}}, frames()
    )
    twin = tmp_path / "b.ome.zarr"
    shutil.copytree(out, twin)
    local = build_pyramid(out, levels=3)
    remote = build_pyramid(twin, levels=3, client=client, task_bytes=1)  # one chunk a task
    assert [lv.path for lv in local] == [lv.path for lv in remote] == ["0", "1", "2"]
    assert _files(out) == _files(twin) and len(_files(out)) > 3
    assert not (twin / BUILD_LOG).exists()
    check_dataset(twin)


@pytest.mark.parametrize("layout", ["collection", "plate"])
def test_collections_and_plates_build_every_image(client, tmp_path, layout):
    keys = ["p0", "p1"] if layout == "collection" else ["A/1/0", "B/2/0"]
    image = {"shape": (140, 180), "dtype": "uint16", "chunks": {"t": 1, "y": 64, "x": 64},
             "pyramid": {"when": "none"}}  # fmt: skip
    spec = {"layout": layout, "ngff_version": "0.6", "images": {k: image for k in keys}}
    frames = {k: _frames(2, (140, 180), "uint16", i) for i, k in enumerate(keys)}
    out = _dataset(tmp_path, "a", spec, frames)
    twin = tmp_path / "b.ome.zarr"
    shutil.copytree(out, twin)
    build_pyramid(out, levels=2, method="nearest")
    build_pyramid(twin, levels=2, method="nearest", client=client)
    assert _files(out) == _files(twin)
    attrs = check_dataset(twin)
    for path in attrs["acqwriter"]["images"].values():
        image_attrs = json.loads((twin / path / "zarr.json").read_text())["attributes"]
        assert image_attrs["acqwriter"]["spec"]["pyramid"]["method"] == "nearest"
        np.testing.assert_array_equal(
            read_zarr(twin / path, 1), downsample(read_zarr(twin / path), (1, 2, 2), "nearest")
        )


def _twins(tmp_path: Path, frames: int, **extra) -> tuple[Path, Path]:
    """Two copies of a 512×640 uint16 dataset without levels: the first given its four
    levels by the single-machine builder (the bytes to match), the second for the cluster."""
    spec = {"shape": (512, 640), "dtype": "uint16", "chunks": {"t": 1, "y": 64, "x": 64},
            "pyramid": {"when": "none"}, **extra}  # fmt: skip
    out = _dataset(tmp_path, "a", spec, _frames(frames, (512, 640), "uint16"))
    twin = tmp_path / "b.ome.zarr"
    shutil.copytree(out, twin)
    build_pyramid(out, levels=4)
    return out, twin


def test_a_worker_killed_mid_build_and_the_build_still_completes(tmp_path):
    out, twin = _twins(tmp_path, 12)
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
        ) as cluster,
        distributed.Client(cluster) as c,
    ):
        pids = list(c.run(os.getpid).values())
        result: dict = {}

        def run() -> None:
            try:
                result["levels"] = build_pyramid(twin, levels=4, client=c, task_bytes=1)
            except BaseException as exc:  # reported below
                result["error"] = exc

        builder = threading.Thread(target=run)
        builder.start()
        log = twin / BUILD_LOG
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and builder.is_alive():
            if log.exists() and log.read_text().count("\n") > 20:
                break
            time.sleep(0.01)
        assert builder.is_alive(), "the build ended before a worker could be killed"
        os.kill(pids[0], signal.SIGKILL)  # a worker lost mid-build
        builder.join(300)
    assert "error" not in result, result.get("error")
    assert [lv.path for lv in result["levels"]] == ["0", "1", "2", "3"]
    assert _files(out) == _files(twin)
    check_dataset(twin)


def _cli_build(
    path: Path, cwd: Path, cluster: tuple[str, ...] = ("--workers", "2")
) -> subprocess.Popen:
    """``acqwriter pyramid PATH --levels 4`` on ``cluster``, a chunk a task, in a session
    of its own (a kill of its group takes a local cluster's workers too)."""
    exe = Path(sys.executable).parent / "acqwriter"
    cmd = [str(exe), "pyramid", str(path), *cluster, "--levels", "4", "--task-mb", "0.001",
           "--quiet"]  # fmt: skip
    return subprocess.Popen(
        cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip


def test_the_client_killed_mid_build_leaves_a_valid_dataset_and_resumes(tmp_path):
    out, twin = _twins(tmp_path, 16, ngff_version="0.6")
    proc = _cli_build(twin, tmp_path)
    log = twin / BUILD_LOG
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and proc.poll() is None:
        if log.exists() and log.read_text().count("\n") > 60:
            break
        time.sleep(0.01)
    assert proc.poll() is None, proc.communicate()
    os.killpg(proc.pid, signal.SIGKILL)  # the client, its cluster and its workers
    proc.wait(30)
    done_before = log.read_text().count("\n") - 1
    # valid as the kill left it: only whole levels listed, each equal to the local build
    attrs = check_dataset(twin)
    listed = [d["path"] for d in attrs["ome"]["multiscales"][0]["datasets"]]
    assert listed[0] == "0" and len(listed) < 4
    for level in listed[1:]:
        np.testing.assert_array_equal(read_zarr(twin, int(level)), read_zarr(out, int(level)))
    again = _cli_build(twin, tmp_path)
    stdout, stderr = again.communicate(timeout=300)
    assert again.returncode == 0, stderr
    assert "dask dashboard: http" in stderr
    assert f"resumed: {done_before} task(s)" in stdout
    assert _files(out) == _files(twin)
    assert not log.exists()
    check_dataset(twin)


def test_a_live_writer_is_refused(client, tmp_path):
    out = tmp_path / "live.ome.zarr"
    stream = acqwriter.open_stream({"out": out, "shape": (128, 128), "dtype": "uint16"})
    try:
        stream.append(np.ones((128, 128), np.uint16))
        with pytest.raises(ValueError, match=r"did not finish it|being written"):
            build_pyramid(out, client=client)
    finally:
        stream.close()
    assert build_pyramid(out, levels=2, client=client)[-1].path == "1"


def test_without_dask_the_options_say_what_to_install(tmp_path):
    out = _dataset(
        tmp_path, "a", {"shape": (64, 64), "dtype": "uint8"}, _frames(1, (64, 64), "uint8")
    )
    blocker = tmp_path / "no_dask"
    blocker.mkdir()
    (blocker / "distributed.py").write_text("raise ImportError('not installed here')\n")
    env = {**os.environ, "PYTHONPATH": str(blocker)}
    exe = Path(sys.executable).parent / "acqwriter"
    for option in (["--workers", "2"], ["--scheduler", "tcp://127.0.0.1:9"]):
        run = subprocess.run(
            [str(exe), "pyramid", str(out), *option], capture_output=True, text=True, env=env,
            cwd=tmp_path, timeout=120,
        )  # fmt: skip
        assert run.returncode == 2
        assert run.stderr.strip() == (
            f"acqwriter pyramid: {option[0]}: a Dask cluster build needs dask and "
            "distributed: pip install 'acqwriter[dask]'"
        )
    bad = run_cli("pyramid", str(out), "--levels", "0", cwd=tmp_path)
    assert bad.returncode == 2 and "levels" in bad.stderr and "\n" not in bad.stderr.strip()


def test_a_dataset_on_a_bucket_builds_on_the_cluster(aws_env, tmp_path):
    """Workers open the bucket themselves, from the standard AWS environment they
    inherit (as a facility's workers would have it)."""
    pytest.importorskip("obstore")
    import s3

    run = run_cli(
        "acquire", "--camera", "sim", "--frames", "6", "--shape", "300x280",
        "--out", "s3://lab/cluster.ome.zarr", "--pyramid", "none", cwd=tmp_path,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
        ) as cluster,
        distributed.Client(cluster) as c,
    ):
        levels = build_pyramid("s3://lab/cluster.ome.zarr", levels=3, client=c)
    assert [lv.path for lv in levels] == ["0", "1", "2"]
    group = s3.group(aws_env, "cluster.ome.zarr")
    level0 = group["0"][...]
    np.testing.assert_array_equal(group["1"][...], downsample(level0, (1, 2, 2), "mean"))
    datasets = group.attrs.asdict()["ome"]["multiscales"][0]["datasets"]
    assert [d["path"] for d in datasets] == ["0", "1", "2"]
    assert BUILD_LOG not in s3.keys(aws_env, "cluster.ome.zarr")


def test_a_single_machine_rebuild_drops_a_cut_short_cluster_build_log(tmp_path):
    spec = {"shape": (300, 300), "dtype": "uint16", "pyramid": {"when": "none"}}
    out = _dataset(tmp_path, "a", spec, _frames(2, (300, 300), "uint16"))
    (out / BUILD_LOG).write_text('{"levels": []}\n{"level": 1, "batch": 0}\n')
    assert [lv.path for lv in build_pyramid(out, levels=2)] == ["0", "1"]
    assert not (out / BUILD_LOG).exists()  # its levels are new: no later build resumes it


class _ProcessCluster:
    """A Dask cluster as a facility runs one: ``dask scheduler`` and ``dask worker``
    processes of their own (not this test's), found through a scheduler file."""

    def __init__(self, where: Path, workers: int = 2) -> None:
        bin_dir = Path(sys.executable).parent
        self.file = where / f"scheduler{time.monotonic_ns()}.json"
        self.scheduler = subprocess.Popen(
            [str(bin_dir / "dask"), "scheduler", "--port", "0", "--dashboard-address", ":0",
             "--scheduler-file", str(self.file)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + 120
        while not self.file.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        self.address = json.loads(self.file.read_text())["address"]
        self.workers = subprocess.Popen(
            [str(bin_dir / "dask"), "worker", "--scheduler-file", str(self.file),
             "--nworkers", str(workers), "--nthreads", "1"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        with distributed.Client(self.address, timeout="60s") as c:
            c.wait_for_workers(workers, timeout=120)

    def kill_scheduler(self) -> None:
        os.killpg(self.scheduler.pid, signal.SIGKILL)
        self.scheduler.wait(30)

    def close(self) -> None:
        for proc in (self.workers, self.scheduler):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(30)


def test_the_scheduler_killed_mid_build_then_a_new_cluster_resumes(tmp_path):
    """``--scheduler`` on a cluster of its own processes: the scheduler SIGKILLed
    mid-build stops the build in one line with the dataset valid and its log kept; the
    same command on a new cluster resumes and ends with the local builder's bytes."""
    out, twin = _twins(tmp_path, 16)
    log = twin / BUILD_LOG
    first = _ProcessCluster(tmp_path)
    try:
        proc = _cli_build(twin, tmp_path, ("--scheduler", first.address))
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and proc.poll() is None:
            if log.exists() and log.read_text().count("\n") > 40:
                break
            time.sleep(0.01)
        assert proc.poll() is None, proc.communicate()
        first.kill_scheduler()
        _, stderr = proc.communicate(timeout=120)
    finally:
        first.close()
    assert proc.returncode == 1, stderr
    lines = [line for line in stderr.splitlines() if not line.startswith("dask dashboard")]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    assert f"{twin}: the cluster build stopped (ClusterLost: the scheduler " in lines[0]
    assert "run the same command again to resume" in lines[0]
    done_before = log.read_text().count("\n") - 1
    assert done_before >= 40
    attrs = check_dataset(twin)
    listed = [d["path"] for d in attrs["ome"]["multiscales"][0]["datasets"]]
    assert listed[0] == "0" and len(listed) < 4
    for level in listed[1:]:
        np.testing.assert_array_equal(read_zarr(twin, int(level)), read_zarr(out, int(level)))
    second = _ProcessCluster(tmp_path)
    try:
        again = _cli_build(twin, tmp_path, ("--scheduler", second.address))
        stdout, stderr = again.communicate(timeout=300)
    finally:
        second.close()
    assert again.returncode == 0, stderr
    assert f"resumed: {done_before} task(s)" in stdout
    assert _files(out) == _files(twin)
    assert not log.exists()
    check_dataset(twin)


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--workers", "0"], "argument --workers: expected an integer >= 1, got '0'"),
        (["--threads", "-1"], "argument --threads: expected an integer >= 1, got '-1'"),
        (["--task-mb", "0"], "argument --task-mb: expected MiB > 0, got '0'"),
        (["--task-mb", "inf"], "argument --task-mb: expected MiB > 0, got 'inf'"),
        (["--scheduler", "head"], "--scheduler: expected an address such as tcp://host:8786"),
        (["--scheduler", "http://head:1"], "--scheduler: expected an address such as"),
    ],
)
def test_cluster_options_out_of_range_are_named(tmp_path, option, message):
    spec = {"shape": (64, 64), "dtype": "uint8", "pyramid": {"when": "none"}}
    out = _dataset(tmp_path, "a", spec, _frames(1, (64, 64), "uint8"))
    before = _files(out)
    run = run_cli("pyramid", str(out), *option, cwd=tmp_path)
    assert run.returncode == 2
    assert run.stderr.startswith(f"acqwriter pyramid: {message}"), run.stderr
    assert "Traceback" not in run.stderr
    assert _files(out) == before  # nothing written


def _plate(tmp_path: Path, name: str, wells: int, shape=(140, 180), frames: int = 2) -> Path:
    keys = [f"{'ABCDEFGH'[i // 12]}/{i % 12 + 1}/0" for i in range(wells)]
    image = {"shape": shape, "dtype": "uint16", "chunks": {"t": 1, "y": 64, "x": 64},
             "pyramid": {"when": "none"}}  # fmt: skip
    spec = {"layout": "plate", "images": {k: image for k in keys}}
    stacks = {k: _frames(frames, shape, "uint16", i) for i, k in enumerate(keys)}
    return _dataset(tmp_path, name, spec, stacks)


def test_a_plates_wells_build_side_by_side_with_one_bar_of_every_chunk(tmp_path):
    """Twelve wells of a task or two per level each: built together on the cluster, the
    single-machine bytes, and the CLI's bar counts every level's chunks of every well."""
    out = _plate(tmp_path, "a", 12)
    twin = tmp_path / "b.ome.zarr"
    shutil.copytree(out, twin)
    build_pyramid(out, levels=3)
    exe = Path(sys.executable).parent / "acqwriter"
    run = subprocess.run(
        [str(exe), "pyramid", str(twin), "--workers", "2", "--levels", "3"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert _files(out) == _files(twin)
    check_dataset(twin)
    # per well, chunks of 64 x 64 over 2 time points: level 1 (70 x 90) 2 x 2 x 2, level 2
    # (35 x 45) 2 x 1 x 1
    per_well = 2 * 2 * 2 + 2 * 1 * 1
    bars = [line for line in run.stderr.splitlines() if line.startswith("pyramids of 12")]
    assert bars and f"{12 * per_well}/{12 * per_well} chunks" in bars[-1], run.stderr
    assert run.stdout.count("3 level(s)") == 1  # the last image's levels, once


def test_one_unfinished_well_refuses_the_plate_before_any_is_touched(client, tmp_path):
    out = _plate(tmp_path, "a", 4)
    well = out / "A" / "4" / "0"
    meta = json.loads((well / "zarr.json").read_text())
    meta["attributes"]["acqwriter"]["state"] = "acquiring"
    (well / "zarr.json").write_text(json.dumps(meta))
    before = _files(out)
    with pytest.raises(ValueError, match=r"A/4/0: its writer did not finish it"):
        build_pyramid(out, levels=2, client=client)
    assert _files(out) == before  # no well was rebuilt, none lost its levels


def test_a_plate_cut_short_on_the_cluster_resumes_every_well(tmp_path):
    """The CLI client SIGKILLed while several wells' logs are open: the next run resumes
    every well from its own log and ends with the single-machine bytes."""
    out = _plate(tmp_path, "a", 4, shape=(512, 640), frames=2)
    twin = tmp_path / "b.ome.zarr"
    shutil.copytree(out, twin)
    build_pyramid(out, levels=4)
    proc = _cli_build(twin, tmp_path)
    logs = lambda: list(twin.rglob(BUILD_LOG))  # noqa: E731
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and proc.poll() is None:
        if sum(log.read_text().count("\n") for log in logs()) > 60:
            break
        time.sleep(0.01)
    assert proc.poll() is None, proc.communicate()
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(30)
    assert logs()  # wells were cut short (two at a time here: one per worker thread)
    done_before = sum(log.read_text().count("\n") - 1 for log in logs())
    check_dataset(twin)
    again = _cli_build(twin, tmp_path)
    stdout, stderr = again.communicate(timeout=300)
    assert again.returncode == 0, stderr
    resumed = [int(line.split("resumed: ")[1].split()[0]) for line in stdout.splitlines()
               if "resumed: " in line]  # fmt: skip
    assert sum(resumed) == done_before
    assert _files(out) == _files(twin)
    assert not logs()
    check_dataset(twin)
