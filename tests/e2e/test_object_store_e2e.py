"""Writing to object storage from the command line and from a pymmcore-plus MDA, against
a real S3-compatible server on the loopback (moto's server mode), with credentials and
endpoint from the standard AWS environment, as a facility exports them."""

from __future__ import annotations

import json

import numpy as np
import pytest
import s3
import useq

from helpers import run_cli

pytest.importorskip("obstore")


def _read(endpoint: str, prefix: str, path: str) -> np.ndarray:
    return s3.group(endpoint, prefix)[path][...]


def test_acquire_writes_to_a_bucket_from_the_aws_environment(aws_env, tmp_path):
    run = run_cli(
        "acquire", "--camera", "sim", "--frames", "24", "--shape", "300x280",
        "--out", "s3://lab/cli.ome.zarr", "--pyramid", "live", "--json", cwd=tmp_path,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    summary = json.loads(run.stdout)["summary"]
    assert summary["state"] == "complete" and summary["frames_written"] == 24
    assert summary["path"] == "s3://lab/cli.ome.zarr" and summary["pyramid_levels"] == 2
    level0 = _read(aws_env, "cli.ome.zarr", "0")
    assert level0.shape == (24, 300, 280) and level0.any()
    assert not list(tmp_path.iterdir())  # nothing local, not even an "s3:" folder
    again = run_cli(
        "acquire", "--camera", "sim", "--frames", "2", "--out", "s3://lab/cli.ome.zarr",
        cwd=tmp_path,
    )  # fmt: skip
    assert again.returncode == 2 and "already exists (set overwrite" in again.stderr
    info = run_cli("info", "s3://lab/cli.ome.zarr", "--json", cwd=tmp_path)
    assert info.returncode == 0, info.stderr
    described = json.loads(info.stdout)
    assert described["path"] == "s3://lab/cli.ome.zarr" and described["state"] == "complete"
    assert described["shape"] == [24, 300, 280] and len(described["levels"]) == 2
    assert described["frames_recorded"] == 24 and described["writer"] is None
    assert 0 < described["stored_bytes"] <= described["raw_bytes"] * 1.1
    recover = run_cli("recover", "s3://lab/cli.ome.zarr", cwd=tmp_path)
    assert recover.returncode == 0, recover.stderr
    assert "nothing to recover: its writer finished it (state complete)" in recover.stdout
    # the levels again, from level 0 on the bucket: the same values as written live
    live = _read(aws_env, "cli.ome.zarr", "1")
    rebuilt = run_cli("pyramid", "s3://lab/cli.ome.zarr", "--quiet", cwd=tmp_path)
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert "s3://lab/cli.ome.zarr: 2 level(s)" in rebuilt.stdout
    np.testing.assert_array_equal(_read(aws_env, "cli.ome.zarr", "1"), live)
    assert not list(tmp_path.iterdir())


def test_a_missing_bucket_is_found_before_the_first_frame(aws_env, tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKID-7D1A")  # moto takes any key
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "Se-c3E0")
    run = run_cli(
        "acquire", "--camera", "sim", "--frames", "5", "--out", "s3://nothing/run.ome.zarr",
        cwd=tmp_path,
    )  # fmt: skip
    assert run.returncode == 2
    line = run.stderr.strip().splitlines()[0]
    assert "cannot reach s3://nothing/run.ome.zarr" in line and "NoSuchBucket" in line
    assert "AKID-7D1A" not in run.stderr and "Se-c3E0" not in run.stderr  # no credential


def test_an_mda_of_positions_writes_to_a_bucket(aws_env):
    from pymmcore_plus import CMMCorePlus

    from acqwriter.mda import MDAWriter

    core = CMMCorePlus()
    core.loadSystemConfiguration()
    core.setProperty("Camera", "Mode", "Noise")
    core.setROI(0, 0, 64, 48)
    seq = useq.MDASequence(
        time_plan={"interval": 0, "loops": 2},
        channels=["DAPI", "FITC"],
        stage_positions=[(0, 0, 0), (5, 5, 0)],
    )
    writer = MDAWriter("s3://lab/mda.ome.zarr", core=core)
    try:
        core.run_mda(seq, block=True)
    finally:
        writer.detach()
        core.reset()
    assert writer.summary is not None and writer.summary.state == "complete"
    assert writer.summary.frames_written == 8
    for image in ("0", "1"):
        data = _read(aws_env, "mda.ome.zarr", f"{image}/0")
        assert data.shape == (2, 2, 48, 64) and data.all(axis=(2, 3)).all()


def test_the_daemon_writes_under_its_object_root_only(aws_env, tmp_path):
    from acqwriter.control.protocol import ControlError
    from daemon_helpers import Daemon, EventRecorder

    daemon = Daemon(tmp_path, "--root", str(tmp_path), "--object-root", "s3://lab/daemon")
    daemon.wait_ready()
    try:
        recorder = EventRecorder(daemon.local_events)
        try:
            with daemon.client() as client:
                with pytest.raises(ControlError) as refused:
                    client.configure(camera="sim", frames=5, out="s3://lab/elsewhere/x.ome.zarr")
                assert refused.value.code == "path_refused"
                assert "outside the server's object root s3://lab/daemon" in str(refused.value)
                configured = client.configure(
                    camera="sim", shape=[64, 80], frames=12, fps=200,
                    out="s3://lab/daemon/run.ome.zarr",
                    storage_options={"secret_access_key": "test"},
                )  # fmt: skip
                assert configured["spec"]["out"] == "s3://lab/daemon/run.ome.zarr"
                assert "storage_options" not in json.dumps(configured)  # never echoed
                client.start()
                summary = recorder.wait_for("summary")["summary"]
        finally:
            recorder.close()
    finally:
        assert daemon.stop() == 0
    assert summary["state"] == "complete" and summary["frames_written"] == 12
    assert _read(aws_env, "daemon/run.ome.zarr", "0").shape == (12, 64, 80)


def test_06_positions_on_a_bucket_are_a_scene(aws_env, tmp_path):
    from helpers import validate_ngff

    run = run_cli(
        "acquire", "--camera", "sim", "--positions", "3", "--timepoints", "2",
        "--shape", "64x80", "--ngff", "0.6", "--out", "s3://lab/tiles6.ome.zarr", "--json",
        cwd=tmp_path,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    root = s3.group(aws_env, "tiles6.ome.zarr").attrs.asdict()
    validate_ngff(root, "scene", "0.6")
    validate_ngff(root, "bf2raw", "0.6")
    paths = root["acqwriter"]["images"]
    assert [t["input"]["path"] for t in root["ome"]["scene"]["coordinateTransformations"]] == [
        paths[key] for key in paths
    ]
    for path in paths.values():
        image = s3.group(aws_env, f"tiles6.ome.zarr/{path}").attrs.asdict()
        validate_ngff(image, "strict_image", "0.6")
        assert image["acqwriter"]["stage"]["read_back"] is True
        assert _read(aws_env, f"tiles6.ome.zarr/{path}", "0").shape == (2, 64, 80)
    info = run_cli("info", "s3://lab/tiles6.ome.zarr", "--json", cwd=tmp_path)
    assert info.returncode == 0, info.stderr
    assert json.loads(info.stdout)["ome_version"] == "0.6"
