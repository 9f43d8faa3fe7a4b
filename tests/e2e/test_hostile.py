"""What a hostile tester tries: the offline tools killed or raced, a disk filled by
per-frame metadata, non-JSON numbers, hostile spec files and requests, absurd resource
settings, and the idle daemon's memory. Each test causes the real condition."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import zmq

from acqwriter import open_stream
from acqwriter.engine.stream import StreamError
from acqwriter.spec.model import SpecError, StreamSpec
from daemon_helpers import Daemon
from helpers import KILLS, check_dataset, read_zarr, run_cli

EXE = Path(sys.executable).parent / "acqwriter"


@pytest.fixture(scope="module")
def tried():
    """Counts of what the hostile tests tried, written to $HOSTILE_REPORT (JSON) for
    benchmarks/hostile.py to print."""
    counts: dict[str, int] = {}
    yield counts
    report = os.environ.get("HOSTILE_REPORT")
    if report:
        Path(report).write_text(json.dumps(counts))


def strict_json(text: str | bytes) -> object:
    """Parse as a strict parser would: NaN, Infinity and duplicate keys are errors."""

    def refuse(name: str) -> None:
        raise ValueError(f"{name} is not JSON")

    def pairs(items: list[tuple[str, object]]) -> dict:
        keys = [k for k, _ in items]
        assert len(keys) == len(set(keys)), f"duplicate keys {keys}"
        return dict(items)

    return json.loads(text, parse_constant=refuse, object_pairs_hook=pairs)


def assert_all_strict_json(out: Path) -> None:
    for path in out.rglob("*"):
        if path.name == "zarr.json":
            strict_json(path.read_text())
        elif path.suffix == ".jsonl":
            for line in path.read_text().splitlines():
                strict_json(line)


def _dataset(out: Path, frames: int = 24, shape=(128, 128)) -> None:
    with open_stream(
        {
            "disk_check": False,
            "min_free_bytes": 0,
            "out": out,
            "shape": shape,
            "dtype": "uint16",
            "chunks": {"y": 32, "x": 32},
            "shards": "none",
            "time_increment": 1.0,
            "pyramid": {"levels": 3},
        }
    ) as stream:
        for i in range(frames):
            stream.append(np.full(shape, i, np.uint16) + np.arange(shape[1], dtype=np.uint16))


def _state(out: Path) -> str:
    return json.loads((out / "zarr.json").read_text())["attributes"]["acqwriter"]["state"]


def _listed_levels(out: Path) -> list[str]:
    attrs = json.loads((out / "zarr.json").read_text())["attributes"]
    return [d["path"] for d in attrs["ome"]["multiscales"][0]["datasets"]]


# -- 1. the offline tools, killed at random moments ----------------------------------------
def _timed_run(args: list[str], cwd: Path) -> float:
    t0 = time.monotonic()
    subprocess.run([str(EXE), *args, "--quiet"], cwd=cwd, check=True)
    return time.monotonic() - t0


def _kill_at(args: list[str], cwd: Path, after_s: float) -> float | None:
    """Run ``acqwriter ARGS`` and SIGKILL it ``after_s`` in; None if it was killed, else
    the seconds it took to finish on its own."""
    t0 = time.monotonic()
    proc = subprocess.Popen([str(EXE), *args, "--quiet"], cwd=cwd)
    try:
        proc.wait(after_s)
        return time.monotonic() - t0
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        return None


class _killed_runs:
    """``for k, out in _killed_runs(command, ...)``: prepare a fresh dataset ``out`` with
    ``prepare(out)``, run ``acqwriter command out`` and SIGKILL it at a random moment of
    its usual ``took`` seconds, until :data:`KILLS` runs were killed while running (at
    most three times as many runs); ``kills`` and ``runs`` count them. A run that ends
    before its kill shortens ``took`` to its own time: the first, timed run pays cold
    caches that later runs do not, and a busy machine changes the pace."""

    def __init__(self, command: str, cwd: Path, took: float, prepare, *, seed: int) -> None:
        self.command, self.cwd, self.took, self.prepare = command, cwd, took, prepare
        self.rng = random.Random(seed)
        self.kills = self.runs = 0

    def __iter__(self):
        while self.kills < KILLS and self.runs < 3 * KILLS:
            self.runs += 1
            out = self.cwd / f"{self.command}{self.runs}.ome.zarr"
            self.prepare(out)
            after = self.rng.uniform(0.3, 1.0) * self.took
            finished = _kill_at([self.command, str(out)], self.cwd, after)
            if finished is None:
                self.kills += 1
            else:
                self.took = min(self.took, finished)
            yield self.runs, out


def _crash(template: Path, out: Path, extent: int) -> None:
    """``out``: ``template`` as its writer left it when SIGKILLed with ``extent`` rows
    committed (root still acquiring, level 0 only, chunks beyond the extent)."""
    shutil.copytree(template, out)
    for level in _listed_levels(template)[1:]:
        shutil.rmtree(out / level)
    root = json.loads((out / "zarr.json").read_text())
    root["attributes"]["acqwriter"]["state"] = "acquiring"
    multiscale = root["attributes"]["ome"]["multiscales"][0]
    multiscale["datasets"] = multiscale["datasets"][:1]
    (out / "zarr.json").write_text(json.dumps(root))
    meta0 = json.loads((out / "0" / "zarr.json").read_text())
    meta0["shape"][0] = extent
    (out / "0" / "zarr.json").write_text(json.dumps(meta0))


@pytest.mark.slow
def test_pyramid_killed_at_random_moments_leaves_an_honest_dataset(tmp_path, tried):
    template = tmp_path / "template.ome.zarr"
    _dataset(template)
    probe = tmp_path / "probe.ome.zarr"
    shutil.copytree(template, probe)
    took = _timed_run(["pyramid", str(probe)], tmp_path)
    runs = _killed_runs(
        "pyramid", tmp_path, took, lambda out: shutil.copytree(template, out), seed=7
    )
    for k, out in runs:
        check_dataset(out)
        assert _state(out) == "complete"  # the state it had: only true things are said
        for path in _listed_levels(out):  # every listed level is whole
            assert (out / path / "zarr.json").exists()
        np.testing.assert_array_equal(read_zarr(out), read_zarr(template))
        if k % 5 == 0:  # and a second run finishes it
            assert run_cli("pyramid", str(out), "--quiet", cwd=tmp_path).returncode == 0
            assert _listed_levels(out) == _listed_levels(template)
            np.testing.assert_array_equal(read_zarr(out, 1), read_zarr(template, 1))
        shutil.rmtree(out)
    tried["pyramid runs SIGKILLed"] = runs.kills
    tried["pyramid runs that finished first"] = runs.runs - runs.kills
    assert runs.kills == KILLS


@pytest.mark.slow
def test_recover_killed_at_random_moments_can_be_run_again(tmp_path, tried):
    template = tmp_path / "template.ome.zarr"
    _dataset(template)
    probe = tmp_path / "probe.ome.zarr"
    _crash(template, probe, extent=10)
    took = _timed_run(["recover", str(probe)], tmp_path)
    runs = _killed_runs(
        "recover", tmp_path, took, lambda out: _crash(template, out, extent=10), seed=11
    )
    for k, out in runs:
        check_dataset(out)
        state = _state(out)
        assert state in ("acquiring", "recovering", "recovered")
        if state == "recovered":  # only said once everything it claims is on disk
            assert len(_listed_levels(out)) == len(_listed_levels(template))
            assert not list(out.glob(".acqwriter.reserve*"))
        extent = json.loads((out / "0" / "zarr.json").read_text())["shape"][0]
        assert extent in (10, 24)
        np.testing.assert_array_equal(read_zarr(out), read_zarr(template)[:extent])
        if k % 4 == 0 or state != "recovered":  # a second run finishes it
            run = run_cli("recover", str(out), "--quiet", cwd=tmp_path)
            assert run.returncode == 0, run.stderr
            assert _state(out) == "recovered"
            np.testing.assert_array_equal(read_zarr(out), read_zarr(template))
        shutil.rmtree(out)
    tried["recover runs SIGKILLed"] = runs.kills
    tried["recover runs that finished first"] = runs.runs - runs.kills
    assert runs.kills == KILLS


# -- 2. a disk filled by per-frame metadata ------------------------------------------------
@pytest.fixture
def tiny_fs(mount_tmpfs):
    """A 40 MiB tmpfs mounted for the test."""
    return mount_tmpfs("40m")


def test_disk_filled_by_metadata_keeps_every_promise(tiny_fs, tried):
    out = tiny_fs / "m.ome.zarr"
    stream = open_stream(
        {
            "out": out,
            "shape": (64, 64),
            "dtype": "uint16",
            "min_free_bytes": 0,
            "disk_check": False,
            "commit_interval_s": 0.02,
        }
    )
    rng = np.random.default_rng(0)
    appended = 0
    with pytest.raises(StreamError):
        for i in range(2000):
            blob = "x" * int(rng.integers(20_000, 200_000))
            stream.append(np.full((64, 64), i, np.uint16), metadata={"i": i, "blob": blob})
            appended += 1
            time.sleep(0.002)
    summary = stream.close()
    assert summary.state == "failed" and "No space left" in summary.error
    root = json.loads((out / "zarr.json").read_text())["attributes"]
    assert root["acqwriter"]["state"] == "failed"  # the final state was written
    assert root["acqwriter"]["summary"]["error"] == summary.error
    lines = (out / "0" / "frame_metadata.jsonl").read_bytes()
    assert lines.endswith(b"\n")  # never torn
    records = [strict_json(line) for line in lines.splitlines()]
    assert [r["index"] for r in records] == list(range(len(records)))
    extent = json.loads((out / "0" / "zarr.json").read_text())["shape"][0]
    assert extent == summary.frames_written == len(records)  # chunks and metadata both
    data = read_zarr(out)
    assert [int(f[0, 0]) for f in data] == list(range(extent))
    assert 0 < extent < appended
    tried["frames with 20-200 kB metadata into a 40 MiB tmpfs"] = appended
    check_dataset(out)
    # recover on the full disk: a clear error, or nothing to recover; never a traceback
    run = run_cli("recover", str(out), cwd=tiny_fs)
    assert "Traceback" not in run.stderr
    assert run.returncode == 0 and "nothing to recover" in run.stdout


def test_recover_on_a_full_disk_gives_a_clear_error(tiny_fs):
    out = tiny_fs / "c.ome.zarr"
    _dataset(out, frames=8, shape=(64, 64))
    root = json.loads((out / "zarr.json").read_text())
    root["attributes"]["acqwriter"]["state"] = "acquiring"
    (out / "zarr.json").write_text(json.dumps(root))
    filler = tiny_fs / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    for size in (1 << 20, 4096, 1):  # fill what is left, to the last byte
        try:
            while True:
                os.write(fd, b"\0" * size)
        except OSError:
            pass
    os.close(fd)
    run = run_cli("recover", str(out), cwd=tiny_fs)
    assert run.returncode == 1
    assert "Traceback" not in run.stderr
    assert "cannot finish recovering" in run.stderr and "No space left" in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1
    check_dataset(out)
    filler.unlink()
    run = run_cli("recover", str(out), cwd=tiny_fs)
    assert run.returncode == 0, run.stderr
    assert _state(out) == "recovered"


# -- 3. NaN and infinities -----------------------------------------------------------------
def test_non_finite_numbers_become_null_and_files_stay_strict_json(tmp_path):
    out = tmp_path / "n.ome.zarr"
    with open_stream({"out": out, "shape": (16, 16), "dtype": "uint16"}) as stream:
        stream.append(
            np.zeros((16, 16), np.uint16),
            metadata={"a": float("nan"), "b": [float("inf"), -float("inf")], "c": np.float32(1)},
        )
        stream.skip(1, metadata={"z": float("nan")})
    assert_all_strict_json(out)
    first = strict_json((out / "0" / "frame_metadata.jsonl").read_text().splitlines()[0])
    assert first["metadata"] == {"a": None, "b": [None, None], "c": 1.0}


def test_daemon_refuses_non_json_numbers_and_huge_ids(daemon, tried):
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(daemon.local_control)
    try:
        cases = [
            (b'{"id": NaN, "command": "ping"}', "bad_json", "NaN is not JSON"),
            (b'{"id": 1, "command": "ping", "params": {"x": Infinity}}', "bad_json", "Infinity"),
            (b'{"id": ' + b"9" * 5000 + b', "command": "ping"}', "bad_request", "id: an integer"),
            (
                b'{"id": 2, "command": "configure", "params": {"frames": 1' + b"0" * 300 + b"}}",
                "bad_request",
                "params.frames: input was not a valid JSON value",
            ),
            (b'{"id": 1, "command": "ping", "command": "status"}', "bad_json", "duplicate key"),
        ]
        for payload, code, text in cases:
            sock.send(payload)
            assert sock.poll(10_000)
            raw = sock.recv()
            reply = strict_json(raw)
            assert reply["ok"] is False and reply["error"]["code"] == code, reply
            assert text in reply["error"]["message"]
            tried["hostile requests"] = tried.get("hostile requests", 0) + 1
    finally:
        sock.close()


# -- 4, 5. hostile spec files --------------------------------------------------------------
def _bomb(levels: int) -> str:
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]")
    return "\n".join(lines) + "\ncamera: sim\nframes: 3\nout: x.ome.zarr\n"


def test_yaml_alias_bomb_is_refused_at_once(tmp_path, tried):
    spec = tmp_path / "bomb.yaml"
    spec.write_text(_bomb(10))  # 9^10 values expanded: ~3.5 billion
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [str(EXE), "acquire", "--spec", str(spec)],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    peak = 0
    while proc.poll() is None:
        try:
            peak = max(peak, psutil.Process(proc.pid).memory_info().rss)
        except psutil.NoSuchProcess:
            break
        time.sleep(0.01)
    _, err = proc.communicate()
    assert proc.returncode == 2
    assert time.monotonic() - t0 < 10  # the interpreter's start included; the check is ms
    assert peak < 300 << 20
    assert "more than 100000 values once its YAML aliases are expanded" in err
    assert len(err.strip().splitlines()) == 1
    tried["hostile spec files"] = tried.get("hostile spec files", 0) + 1


def test_oversized_and_misencoded_spec_files(tmp_path, tried):
    big = tmp_path / "big.json"
    big.write_text('{"out": "x.ome.zarr", "pad": "' + "x" * (2 << 20) + '"}')
    run = run_cli("acquire", "--spec", str(big), cwd=tmp_path)
    assert run.returncode == 2 and "larger than 1048576 bytes" in run.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(b"camera: sim\nout: \xff\xfe.ome.zarr\nframes: 3\n")
    for args in (("acquire", "--spec", str(bad)), ("ctl", "--timeout", "1", "configure", str(bad))):
        run = run_cli(*args, cwd=tmp_path)
        assert run.returncode == 2, run.stderr
        assert "Traceback" not in run.stderr
        assert f"'{bad}': not UTF-8 text: byte 0xff at offset 17" in run.stderr
    dup = tmp_path / "dup.json"
    dup.write_text('{"out": "x.ome.zarr", "frames": 3, "frames": 5}')
    run = run_cli("acquire", "--spec", str(dup), cwd=tmp_path)
    assert run.returncode == 2 and "duplicate key 'frames'" in run.stderr
    tried["hostile spec files"] = tried.get("hostile spec files", 0) + 4


def test_many_bad_fields_make_a_bounded_message():
    data = {"out": "x.ome.zarr", "shape": [8, 8], "dtype": "uint16"}
    data["chunks"] = {f"q{i}": 1 for i in range(500)}
    data["sizes"] = {f"w{i}": 0 for i in range(500)}
    with pytest.raises(SpecError) as info:
        StreamSpec.parse(data)
    assert len(str(info.value).splitlines()) <= 22
    assert "more" in str(info.value)


# -- 6. hostile requests to the daemon -----------------------------------------------------
def test_daemon_hostile_paths_are_invalid_params(daemon, tried):
    from acqwriter.control import ControlError

    with daemon.client() as c:
        for out, text in (
            ("bad\0name.ome.zarr", "NUL"),
            ("n" * 300 + ".ome.zarr", "at most 255"),
        ):
            with pytest.raises(ControlError) as info:
                c.configure(camera="sim", shape=[16, 16], frames=3, out=out)
            assert info.value.code == "invalid_params", info.value
            assert info.value.message.startswith("out:") and text in info.value.message
            tried["hostile requests"] = tried.get("hostile requests", 0) + 1
        assert c.status()["state"] == "idle"


# -- 7, 8. byte orders and resource bounds -------------------------------------------------
def test_big_endian_dtype_and_frames_are_stored_as_the_metadata_says(tmp_path):
    out = tmp_path / "be.ome.zarr"
    frames = [np.arange(64, dtype=">u2").reshape(8, 8) * (i + 1) for i in range(3)]
    with open_stream({"out": out, "shape": (8, 8), "dtype": ">u2"}) as stream:
        for frame in frames:
            stream.append(frame)
        stream.append(frames[0].astype("<u2"))
    meta = json.loads((out / "0" / "zarr.json").read_text())
    assert meta["data_type"] == "uint16"
    data = read_zarr(out)
    for i, frame in enumerate([*frames, frames[0]]):
        np.testing.assert_array_equal(data[i], frame.astype("<u2"))


@pytest.mark.parametrize(
    ("field", "value", "text"),
    [
        ("threads", 1_000_000, "threads: Input should be less than or equal to 64"),
        ("threads", 0, "threads: Input should be greater than 0"),
        ("ring_bytes", 1e30, "ring_bytes: Input should be a valid integer"),
        ("ring_bytes", 1 << 50, "ring_bytes: Input should be less than or equal to"),
        ("commit_interval_s", 1e-9, "commit_interval_s: Input should be greater than or equal"),
        ("shard_seal_s", 1e9, "shard_seal_s: Input should be less than or equal to 3600"),
        ("shape", [True, True], "shape.0: Input should be a valid integer"),
    ],
)
def test_resource_fields_are_bounded(field, value, text, tried):
    data = {"out": "x.ome.zarr", "shape": [16, 16], "dtype": "uint16", field: value}
    t0 = time.monotonic()
    with pytest.raises(SpecError) as info:
        StreamSpec.parse(data)
    assert time.monotonic() - t0 < 1
    assert text in str(info.value)
    tried["out-of-range resource settings"] = tried.get("out-of-range resource settings", 0) + 1


# -- 9. the idle daemon's memory -----------------------------------------------------------
def test_idle_daemon_holds_no_ring(tmp_path, tried):
    d = Daemon(tmp_path, "--root", str(tmp_path))
    try:
        d.wait_ready()
        proc = psutil.Process(d.proc.pid)
        with d.client(timeout_s=60) as c:
            c.configure(camera="sim", shape=[2048, 2048], frames=30, out="w.ome.zarr",
                        ring_bytes=128 << 20)  # fmt: skip  # sized for the test
            configured = proc.memory_info().rss
            for k in range(10):
                c.configure(
                    camera="sim",
                    shape=[2048, 2048],
                    frames=30,
                    ring_bytes=128 << 20,
                    out=f"cycle{k}.ome.zarr",
                    pyramid={"enabled": False},
                )
                c.start()
                c.stop(wait=True, timeout_s=120)
            idle = proc.memory_info().rss
            t0 = time.monotonic()
            from acqwriter.control import ControlError

            with pytest.raises(ControlError) as info:
                c.configure(camera="sim", shape=[64, 64], frames=3, out="b.ome.zarr",
                            ring_bytes=10**30)  # fmt: skip
            assert time.monotonic() - t0 < 2
            assert info.value.code == "invalid_params" and "ring_bytes" in info.value.message
        assert configured < 300 << 20, configured  # the 512 MiB ring is not backed
        # ten 240 MB acquisitions leave nothing behind: no ring, no camera buffer
        assert idle < configured + (50 << 20), (configured, idle)
        tried["daemon configure/start/stop cycles, RSS measured"] = 10
    finally:
        assert d.stop() == 0


# -- smaller ones --------------------------------------------------------------------------
def test_stop_right_after_start_says_why_it_is_short(daemon):
    with daemon.client() as c:
        c.configure(camera="sim", shape=[32, 32], frames=100000, fps=20, out="s.ome.zarr")
        c.start()
        report = c.stop(wait=True, timeout_s=60)
    assert report["stopped"] is True
    assert report["reason"].startswith("stopped on request after ")
    assert "of 100000 frames" in report["reason"]


def test_configure_refuses_what_start_would_refuse_for_disk(daemon):
    from acqwriter.control import ControlError

    with daemon.client() as c, pytest.raises(ControlError) as info:
        c.configure(camera="sim", shape=[32, 32], frames=10, out="d.ome.zarr",
                    min_free_bytes=1 << 60)  # fmt: skip
    assert info.value.code == "invalid_params"
    assert "not enough free space" in info.value.message


_RACER = """
import sys, time, acqwriter, numpy as np
from acqwriter.spec.model import SpecError
t = float(sys.argv[2])
while time.time() < t:
    pass
try:
    s = acqwriter.open_stream({"out": sys.argv[1], "shape": (8, 8), "dtype": "uint16",
                               "overwrite": True, "disk_check": False})
except SpecError as exc:
    print("REFUSED", exc, flush=True)
    sys.exit(0)
print("OPENED", flush=True)
time.sleep(1.0)
s.append(np.zeros((8, 8), np.uint16))
s.close()
"""


def test_overwrite_race_losers_are_told_it_is_locked(tmp_path, tried):
    out = tmp_path / "race.ome.zarr"
    _dataset(out, frames=2, shape=(8, 8))
    for _ in range(3):
        start = time.time() + 1.5
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", _RACER, str(out), str(start)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                cwd=tmp_path,
            )
            for _ in range(4)
        ]
        outputs = [p.communicate(timeout=120) for p in procs]
        opened = [o for o, _ in outputs if o.startswith("OPENED")]
        refused = [o for o, _ in outputs if o.startswith("REFUSED")]
        assert len(opened) + len(refused) == 4, outputs
        assert opened, outputs
        for text in refused:
            assert "being written by another writer (locked)" in text, text
        check_dataset(out)
        tried["writers racing for one path"] = tried.get("writers racing for one path", 0) + 4
    assert not list(tmp_path.glob(".race.ome.zarr.acqwriter-create"))


def test_a_failed_pyramid_leaves_no_partial_level(tiny_fs):
    out = tiny_fs / "pf.ome.zarr"
    with open_stream(
        {
            "out": out,
            "shape": (512, 512),
            "dtype": "uint16",
            "chunks": {"y": 64, "x": 64},
            "codec": "none",
            "pyramid": {"enabled": False},
            "disk_check": False,
            "min_free_bytes": 0,
        }
    ) as stream:
        rng = np.random.default_rng(1)
        for _ in range(60):  # 30 MiB raw, uncompressed: level 1 needs 7.5 MiB more
            stream.append(rng.integers(0, 65535, (512, 512), dtype=np.uint16))
    free = shutil.disk_usage(tiny_fs).free
    (tiny_fs / "filler").write_bytes(b"\0" * max(0, free - (2 << 20)))
    run = run_cli("pyramid", str(out), "--quiet", cwd=tiny_fs)
    assert run.returncode == 1
    assert "cannot write the pyramid" in run.stderr and "Traceback" not in run.stderr
    assert not (out / "1").exists()
    assert _listed_levels(out) == ["0"] and _state(out) == "complete"
    check_dataset(out)
    assert os.path.exists(out / "0" / "zarr.json")
