"""Real failures: full disk (a size-limited tmpfs), low space, I/O errors, a removed output
directory, revoked permissions, slow disks, two writers on one path."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from stores import SinkWrapper, StoreWrapper, local_store

from acqwriter import SpecError, StreamError, open_stream
from acqwriter.simulators import FrameBank, read_stamp
from helpers import (
    check_dataset,
    frame_records,
    peak_rss_during,
    read_tensorstore,
    read_zarr,
    run_cli,
)

HERE = Path(__file__).resolve().parents[1]  # tests/: helper scripts


@pytest.fixture
def small_fs(mount_tmpfs):
    """A 24 MiB tmpfs mounted for the test."""
    return mount_tmpfs("24m")


def assert_exact_extent(out: Path, shape, seed: int, bank_size: int | None = None) -> int:
    check_dataset(out)
    data = read_zarr(out)
    np.testing.assert_array_equal(read_tensorstore(out), data)
    bank = FrameBank(shape, "uint16", size=bank_size, seed=seed)
    records = frame_records(out)
    for i, frame in enumerate(data):
        if records[i]["dropped"]:
            continue
        assert read_stamp(frame) == i  # never a silent fill value inside the extent
        np.testing.assert_array_equal(frame, bank.frame(i))
    return data.shape[0]


def test_disk_full_stops_with_clear_error_and_valid_dataset(small_fs, tmp_path):
    out = small_fs / "full.ome.zarr"
    spec = tmp_path / "spec.json"
    spec.write_text(
        json.dumps(
            {
                "camera": "sim",
                "shape": [256, 256],
                "frames": 3000,
                "codec": "none",
                "out": str(out),
                "disk_check": False,
                "min_free_bytes": 0,
                "seed": 5,
                "chunks": {"t": 2},
            }
        )
    )
    run = run_cli("acquire", "--spec", str(spec), "--json", cwd=tmp_path, timeout=300)
    assert run.returncode == 1, run.stderr
    assert "No space left on device" in run.stderr
    report = json.loads(run.stdout)
    summary = report["summary"]
    assert summary["state"] == "failed" and "No space left on device" in summary["error"]
    n = assert_exact_extent(out, (256, 256), seed=5)
    assert n == summary["frames_written"] > 0
    root = json.loads((out / "zarr.json").read_text())["attributes"]["acqwriter"]
    assert root["state"] == "failed"  # the final metadata was written (the reserve)
    assert not (out / ".acqwriter.reserve").exists()


class HeldBack:
    """Timing only (the real code runs): ``hold()`` is called where a writer thread would
    proceed, and waits there until ``stream`` has failed (a later shard filled the disk),
    so the out-of-order failure seen under load happens every time."""

    def __init__(self) -> None:
        self.stream = None
        self.held = 0

    def hold(self) -> None:
        self.held += 1
        deadline = time.monotonic() + 60
        while self.stream is None or self.stream.error is None:
            if time.monotonic() > deadline:
                return
            time.sleep(0.005)


def _fill_small_fs_with_shards(small_fs, seed, *, store=None, encoder=None):
    """256² uint16 frames, no compression, chunks of 2 frames: automatic shards along t of
    128 frames (16 MiB), so the 24 MiB disk holds one shard and fills in the second.
    ``store``: wraps the dataset's store (called with it); ``encoder``: as open_stream."""
    out = small_fs / "salvage.ome.zarr"
    bank = FrameBank((256, 256), "uint16", size=8, seed=seed)
    stream = open_stream(
        {
            "out": out,
            "shape": (256, 256),
            "dtype": "uint16",
            "codec": "none",
            "chunks": {"t": 2},
            "disk_check": False,
            "min_free_bytes": 0,
            "pyramid": {"enabled": False},
        },
        store=None if store is None else store(local_store(out)),
        encoder=encoder,
    )
    assert stream.layout.shard_factors[0] == 64
    return out, bank, stream


def _append_until_failed(stream, bank) -> int:
    """Append until the stream refuses (the ring may hold all 1 000 frames first: then
    wait for the writer to fail); frames appended."""
    for i in range(1000):
        try:
            stream.append(bank.frame(i))
        except StreamError as exc:
            assert "No space left on device" in str(exc)
            break
    deadline = time.monotonic() + 60
    while stream.error is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert "No space left on device" in str(stream.error)
    return stream.frames_appended


def test_disk_full_in_a_later_shard_keeps_the_finished_front_shard(small_fs, tmp_path, monkeypatch):
    # The front shard (frames 0-127) has every chunk but is finished only after a later
    # shard has filled the disk: its last segment and index then need room the later
    # shards took. The writer frees those (they cannot enter the extent before it) and
    # finishes the front shard: 128 frames, not 0 (seen 1 run in 4 under load).
    gate = HeldBack()
    data_end = 128 * 256 * 256 * 2  # the front shard's 16 MiB of frames; its index after

    class FinishHeldBack(SinkWrapper):
        def write(self, segment, n, offset):
            # the write that ends past the frames' bytes carries the index: the finish,
            # held until a later shard has filled the disk (under load the front shard's
            # own last segment may meet the full disk first: its finish then comes in
            # the salvage at close, after the failure, and is not held)
            if offset + n > data_end:
                gate.hold()
            return super().write(segment, n, offset)

    class FrontShardHeld(StoreWrapper):
        def open_shard(self, key):
            sink = super().open_shard(key)
            front = key == "0/c/0/0/0"  # the front shard
            return FinishHeldBack(sink) if front else sink

    out, bank, stream = _fill_small_fs_with_shards(small_fs, seed=11, store=FrontShardHeld)
    gate.stream = stream
    appended = _append_until_failed(stream, bank)
    summary = stream.close()
    assert gate.held >= 1  # a retry of the finish in the salvage is not held again
    assert summary.state == "failed" and "No space left on device" in summary.error
    assert appended > 128
    assert summary.frames_written == 128
    assert assert_exact_extent(out, (256, 256), seed=11, bank_size=8) == 128
    later = [p for p in (out / "0" / "c").rglob("*") if p.is_file() and p.parts[-3] != "0"]
    assert later == []  # the later shards' files were freed
    assert not list(out.rglob("*.tmp"))
    root = json.loads((out / "zarr.json").read_text())["attributes"]["acqwriter"]
    assert root["state"] == "failed" and root["summary"]["frames_written"] == 128


def test_disk_full_salvages_the_front_shards_leading_whole_rows(small_fs, tmp_path, monkeypatch):
    # The chunk of frames 100-101 is still queued when a later shard fills the disk; the
    # stream has failed, so it is never written. The front shard's other chunks are on
    # disk or in memory: it is finished with that chunk empty, and the extent covers its
    # leading whole rows (frames 0-99), every one real data.
    from acqwriter.codec.blosc import IntoEncoder

    gate = HeldBack()

    class HeldAtFrame100(IntoEncoder):
        def encode_into(self, data, *args):
            if read_stamp(data[0]) == 100:  # the chunk of frames 100-101
                gate.hold()  # queued until a later shard has filled the disk
                # the stream has failed: a queued chunk is not written (as the engine
                # does with one it has not started); the first error stays the stream's
                raise RuntimeError("not compressed: the stream has failed")
            return super().encode_into(data, *args)

    out, bank, stream = _fill_small_fs_with_shards(small_fs, seed=12, encoder=HeldAtFrame100)
    gate.stream = stream
    _append_until_failed(stream, bank)
    summary = stream.close()
    assert gate.held == 1
    assert summary.state == "failed"
    assert summary.frames_written == 100
    assert assert_exact_extent(out, (256, 256), seed=12, bank_size=8) == 100
    assert [r["index"] for r in frame_records(out)] == list(range(100))
    assert not list(out.rglob("*.tmp"))


def test_low_space_watermark_stops_cleanly_before_full(small_fs, tmp_path):
    out = small_fs / "low.ome.zarr"
    spec = tmp_path / "spec.json"
    spec.write_text(
        json.dumps(
            {
                "camera": "sim",
                "shape": [256, 256],
                "frames": 3000,
                "codec": "none",
                "out": str(out),
                "disk_check": False,
                "min_free_bytes": 10 << 20,
                "seed": 6,
            }
        )
    )
    run = run_cli("acquire", "--spec", str(spec), "--json", cwd=tmp_path, timeout=300)
    assert run.returncode == 1
    summary = json.loads(run.stdout)["summary"]
    assert "disk space low" in summary["error"] and summary["state"] == "complete"
    assert summary["frames_written"] == summary["frames_received"] > 0  # nothing lost
    assert assert_exact_extent(out, (256, 256), seed=6) == summary["frames_written"]
    assert shutil.disk_usage(small_fs).free > 4 << 20  # stopped before the disk was full


def test_preflight_refuses_what_cannot_fit(small_fs, tmp_path):
    out = small_fs / "big.ome.zarr"
    run = run_cli(
        "acquire", "--shape", "256x256", "--frames", "3000", "--out", str(out), cwd=tmp_path
    )
    assert run.returncode == 2
    assert "not enough free space" in run.stderr and "disk_check" in run.stderr
    assert not out.exists()


def test_disk_full_in_the_daemon_gives_an_error_event(small_fs, tmp_path):
    from daemon_helpers import Daemon, EventRecorder

    d = Daemon(tmp_path, "--root", str(small_fs))
    d.wait_ready()
    recorder = EventRecorder(d.local_events)
    try:
        with d.client() as c:
            c.configure(
                camera="sim",
                shape=[256, 256],
                frames=3000,
                codec="none",
                out="d.ome.zarr",
                disk_check=False,
                min_free_bytes=0,
                seed=7,
            )
            c.start()
            error = recorder.wait_for("error", timeout=120)
            assert "No space left on device" in error["message"]
            deadline = time.monotonic() + 30
            while c.status()["state"] != "error" and time.monotonic() < deadline:
                time.sleep(0.05)
            assert c.status()["state"] == "error"
    finally:
        recorder.close()
        assert d.stop() == 0
    assert_exact_extent(small_fs / "d.ome.zarr", (256, 256), seed=7)


class FaultyStore(StoreWrapper):
    """A real store with an injected fault: chunk writes after the first ``ok`` fail."""

    ok = 5
    err = errno.EIO

    def write_chunk_from(self, key, n, buf=None):
        if key.startswith("0/c/"):
            if FaultyStore.ok <= 0:
                raise OSError(FaultyStore.err, os.strerror(FaultyStore.err))
            FaultyStore.ok -= 1
        return super().write_chunk_from(key, n, buf)


@pytest.mark.parametrize("err", [errno.EIO, errno.ENOSPC, errno.EROFS])
def test_injected_io_errors(tmp_path, monkeypatch, err):

    FaultyStore.ok, FaultyStore.err = 6, err
    out = tmp_path / "eio.ome.zarr"
    bank = FrameBank((64, 64), "uint16", size=3, seed=8)
    stream = open_stream(
        {
            "out": out,
            "shape": (64, 64),
            "dtype": "uint16",
            "threads": 1,
            "chunks": {"t": 2},
            "shards": "none",  # the fault is injected into chunk-file writes
        },
        store=FaultyStore(local_store(out)),
    )
    with pytest.raises(StreamError, match=os.strerror(err)):
        for i in range(500):
            stream.append(bank.frame(i))
            time.sleep(0.001)
    summary = stream.close()
    assert summary.state == "failed" and os.strerror(err) in summary.error
    assert summary.frames_written == 12
    assert assert_exact_extent(out, (64, 64), seed=8, bank_size=3) == 12


def test_output_directory_removed_mid_run(tmp_path):
    out = tmp_path / "gone.ome.zarr"
    bank = FrameBank((64, 64), "uint16", size=3, seed=9)
    stream = open_stream({"out": out, "shape": (64, 64), "dtype": "uint16", "chunks": {"t": 2}})
    for i in range(10):
        stream.append(bank.frame(i))
    time.sleep(0.3)
    shutil.rmtree(out)
    with pytest.raises(StreamError, match=r"No such file or directory|was removed"):
        for i in range(10, 2000):
            stream.append(bank.frame(i))
            time.sleep(0.002)
    summary = stream.close()
    assert summary.state == "failed" and summary.error
    assert not out.exists()  # never silently recreated as a broken dataset


def _revoke(out: Path, how: str, on: bool) -> None:
    for dirpath, _, _ in os.walk(out):
        if how == "chmod":
            os.chmod(dirpath, 0o555 if on else 0o755)
        else:  # root ignores modes: make the directories immutable instead
            subprocess.run(["chattr", "+i" if on else "-i", dirpath], check=True)


def test_permission_revoked_mid_run(tmp_path):
    """The writer runs as an unprivileged user and loses write permission on the dataset's
    directories mid-run. Where this machine cannot run the interpreter as another user,
    the writer runs as root and the directories are made immutable (chattr +i) instead."""
    base = Path("/tmp") / f"acqwriter-perm-{os.getpid()}"
    base.mkdir(mode=0o777, exist_ok=True)
    base.chmod(0o777)
    out = base / "perm.ome.zarr"
    cmd = [sys.executable, str(HERE / "fault_writer.py"), str(out), "4", "5000"]
    how = "chmod"
    try:
        try:
            if os.geteuid() != 0:
                raise PermissionError("not root")
            proc = subprocess.Popen(
                cmd,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                user=65534,
                group=65534,
                cwd=base,
            )
            ready = proc.stdout.readline().strip() == "ready"
            if not ready:
                proc.wait()
                raise PermissionError(proc.stderr.read()[-200:])
        except PermissionError:
            if shutil.which("chattr") is None or os.geteuid() != 0:
                pytest.skip("neither another user nor chattr is available to revoke access")
            how = "chattr"
            shutil.rmtree(out, ignore_errors=True)
            proc = subprocess.Popen(
                cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=base
            )
            assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
        time.sleep(0.5)
        try:
            _revoke(out, how, True)
        except subprocess.CalledProcessError:
            proc.kill()
            pytest.skip("this filesystem does not support chattr +i")
        try:
            stdout, stderr = proc.communicate(timeout=120)
        finally:
            _revoke(out, how, False)
        result = json.loads(stdout.strip().splitlines()[-1])
        reason = "Permission denied" if how == "chmod" else "Operation not permitted"
        assert reason in (result["append_error"] or ""), (result, stderr)
        assert result["summary"]["state"] == "failed"
        n = assert_exact_extent(out, (64, 64), seed=4, bank_size=3)
        assert n <= result["summary"]["frames_written"]
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_two_writers_on_one_path(tmp_path):
    out = tmp_path / "shared.ome.zarr"
    bank = FrameBank((32, 32), "uint16", size=3, seed=10)
    spec = {"out": out, "shape": (32, 32), "dtype": "uint16"}
    first = open_stream(spec)
    first.append(bank.frame(0))
    for overwrite in (False, True):
        with pytest.raises(SpecError, match="being written by another writer"):
            open_stream({**spec, "overwrite": overwrite})
    first.append(bank.frame(1))
    first.close()
    np.testing.assert_array_equal(read_zarr(out), np.stack([bank.frame(0), bank.frame(1)]))
    # from another process too (the lock is an OS file lock)
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "crash_writer.py"), str(tmp_path / "p.ome.zarr"), "1"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout.readline().strip() == "ready"
        with pytest.raises(SpecError, match="being written by another writer"):
            open_stream({**spec, "out": tmp_path / "p.ome.zarr", "overwrite": True})
    finally:
        proc.kill()
        proc.wait()


class GatedStore(StoreWrapper):
    """A real store whose chunk writes take ``delay`` s each: a disk slower than the camera."""

    delay = 0.02

    def write_chunk_from(self, key, n, buf=None):
        time.sleep(GatedStore.delay)
        return super().write_chunk_from(key, n, buf)


@pytest.mark.parametrize("policy", ["drop", "block"])
def test_slow_disk_memory_stays_within_the_ring(tmp_path, monkeypatch, policy):

    GatedStore.delay = 0.01
    ring = 16 << 20
    shape = (256, 256)  # 128 KiB frames: 2 000 of them are 256 MiB, 16x the ring
    bank = FrameBank(shape, "uint16", size=3, seed=12)
    frames = [bank.frame(i) for i in range(3)]
    out = tmp_path / f"{policy}.ome.zarr"
    result = {}

    def run():
        stream = open_stream(
            {
                "out": out,
                "shape": shape,
                "dtype": "uint16",
                "overflow": policy,
                "ring_bytes": ring,
                "threads": 2,
                "shards": "none",  # GatedStore slows chunk-file writes
                "pyramid": {"enabled": False},
                "disk_check": False,
            },
            store=GatedStore(local_store(out)),
        )
        n = 2000 if policy == "drop" else 400
        for i in range(n):
            stream.append(frames[i % 3])
        result["summary"] = stream.close()

    base, peak = peak_rss_during(run)
    summary = result["summary"]
    assert peak - base <= ring + (40 << 20), (base, peak)
    if policy == "drop":
        assert summary.frames_dropped > 0
        assert summary.frames_written + summary.frames_dropped == 2000
        records = frame_records(out)
        assert [r["index"] for r in records if r["dropped"]] == summary.dropped_indices
        data = read_zarr(out)
        for i in summary.dropped_indices[:50]:
            assert not data[i].any()  # stored as fill, flagged, never mistaken for data
    else:
        assert summary.frames_dropped == 0 and summary.frames_written == 400


def test_block_policy_back_pressure_reaches_the_camera(tmp_path, monkeypatch, collect_cores):
    """A paced camera, a slow disk and a small ring: the camera's circular buffer overflows
    and every lost frame is counted with its index and flagged in the dataset."""
    from acqwriter.acquisition import open_microscope, run_acquisition
    from acqwriter.acquisition.spec import AcquisitionSpec

    GatedStore.delay = 0.03
    scope = open_microscope("sim", shape=(128, 128), fps=200, seed=13)
    collect_cores.append(scope)
    scope.core.setCircularBufferMemoryFootprint(1)
    out = tmp_path / "bp.ome.zarr"
    spec = AcquisitionSpec.parse(
        {
            "out": str(out),
            "frames": 200,
            "ring_bytes": 8 * 128 * 128 * 2,
            "threads": 1,
            "shards": "none",  # GatedStore slows chunk-file writes
            "pyramid": {"enabled": False},
        }
    )
    report = run_acquisition(scope, spec, store=GatedStore(local_store(out)))
    s = report.summary
    assert s.dropped_by_reason.get("buffer_overflow", 0) > 0
    assert s.frames_written + s.frames_dropped == 200
    assert report.lost_camera_frames == s.dropped_indices
    data = read_zarr(out)
    bank = FrameBank((128, 128), "uint16", seed=13)
    dropped = set(s.dropped_indices)
    for i, frame in enumerate(data):
        if i in dropped:
            assert not frame.any()
        else:
            assert read_stamp(frame) == i
            np.testing.assert_array_equal(frame, bank.frame(i))


def _accepts_o_direct(directory: Path) -> bool:
    probe = directory / "probe"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_DIRECT, 0o644)
        os.close(fd)
        return True
    except OSError:
        return False
    finally:
        probe.unlink(missing_ok=True)


def test_direct_io_where_refused_errors_or_falls_back(small_fs):
    """tmpfs refuses O_DIRECT on older kernels (accepted since Linux 6.6): io=direct then
    fails with a clear error and leaves nothing; io=auto falls back to buffered writes."""
    spec = {"shape": (32, 32), "dtype": "uint16", "disk_check": False, "min_free_bytes": 0}
    accepts = _accepts_o_direct(small_fs)
    if accepts:
        with open_stream({**spec, "out": small_fs / "d.ome.zarr", "io": "direct"}) as stream:
            stream.append(np.full((32, 32), 5, np.uint16))
        assert stream.store.direct and read_zarr(small_fs / "d.ome.zarr")[0, 0, 0] == 5
    else:
        with pytest.raises(SpecError, match="io: this filesystem does not accept direct I/O"):
            open_stream({**spec, "out": small_fs / "d.ome.zarr", "io": "direct"})
        assert not (small_fs / "d.ome.zarr").exists()
    with open_stream({**spec, "out": small_fs / "a.ome.zarr", "io": "auto"}) as stream:
        stream.append(np.full((32, 32), 7, np.uint16))
    assert stream.store.direct == accepts
    assert read_zarr(small_fs / "a.ome.zarr")[0, 0, 0] == 7
