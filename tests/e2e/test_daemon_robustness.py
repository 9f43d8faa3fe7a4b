"""Hostile input and security for the daemon, over real sockets against a real process."""

from __future__ import annotations

import json
import random
import threading
import time

import numpy as np
import psutil
import pytest
import zmq

from acqwriter.control import Client, ControlError
from acqwriter.simulators import FrameBank, read_stamp
from daemon_helpers import Daemon, free_port
from helpers import check_dataset, read_zarr, run_cli


def raw_request(endpoint: str, frames: list[bytes], *, req: bool = False, timeout_ms: int = 5000):
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.REQ if req else zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    try:
        sock.send_multipart(frames)
        if not sock.poll(timeout_ms):
            return None
        return json.loads(sock.recv_multipart()[-1])
    finally:
        sock.close()


@pytest.mark.parametrize(
    ("frames", "code", "text"),
    [
        ([b"{not json"], "bad_json", "not UTF-8 JSON"),
        ([b"\xff\xfe\x00garbage"], "bad_json", "not UTF-8 JSON"),
        ([b"[1, 2, 3]"], "bad_request", "expected a JSON object, got list"),
        ([b'"ping"'], "bad_request", "got str"),
        ([b"{}"], "bad_request", "command: required field is missing"),
        ([b'{"id": 7, "command": 5}'], "bad_request", "command"),
        ([b'{"id": 7, "command": "ping", "params": []}'], "bad_request", "params"),
        ([b'{"id": 7, "command": "ping", "extra": 1}'], "bad_request", "extra"),
        ([b'{"id": 7, "command": "fly"}'], "unknown_command", "unknown 'fly'"),
        ([b'{"id": 7, "command": "ping", "params": {"x": 1}}'], "invalid_params", "x"),
        ([b'{"id": 7, "command": "stop", "params": {"wait": "soon"}}'], "invalid_params", "wait"),
        ([b"a", b"b"], "bad_request", "expected one payload frame, got 2"),
        (
            [b'{"id": 7, "command": "ping", "pad": "' + b"x" * (2 << 20) + b'"}'],
            "too_large",
            "exceeds",
        ),
        ([b"[" * 100000], "bad_json", "not UTF-8 JSON"),
    ],
)
def test_malformed_requests_get_clear_errors(daemon, frames, code, text):
    reply = raw_request(daemon.local_control, frames)
    assert reply is not None, "every malformed request gets an answer"
    assert reply["ok"] is False and reply["error"]["code"] == code, reply
    assert text in reply["error"]["message"], reply
    if b'"id": 7' in frames[0] and code not in ("bad_json", "too_large"):
        assert reply["id"] == 7


def test_req_socket_framing_works(daemon):
    reply = raw_request(daemon.local_control, [b'{"id": "a", "command": "ping"}'], req=True)
    assert reply == {"id": "a", "ok": True, "result": {"pong": True, "state": "idle"}}


def test_wire_limit_drops_huge_messages_without_harm(daemon):
    huge = b"x" * (20 << 20)  # beyond ZMQ_MAXMSGSIZE: the connection is dropped, no reply
    assert raw_request(daemon.local_control, [huge], timeout_ms=1500) is None
    with daemon.client() as c:
        assert c.ping()["pong"] is True


def _garbage(rng: random.Random, i: int) -> list[bytes]:
    kind = i % 10
    if kind == 0:
        return [bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 200)))]
    if kind == 1:
        return [json.dumps(rng.choice([1, "x", None, [], 3.5, True])).encode()]
    if kind == 2:
        return [
            json.dumps({"id": i, "command": rng.choice(["", "x" * 80, "Start", "ping "])}).encode()
        ]
    if kind == 3:
        return [
            json.dumps(
                {
                    "id": i,
                    "command": "configure",
                    "params": {"frames": rng.choice([-1, "a", None, 1e9])},
                }
            ).encode()
        ]
    if kind == 4:
        return [
            json.dumps(
                {"id": i, "command": rng.choice(["start", "configure"]), "params": {}}
            ).encode()
        ]
    if kind == 5:
        return [json.dumps({"id": [i, {"deep": "id"}], "command": "status"}).encode()]
    if kind == 6:
        return [b'{"id": 1, "command": "ping", "params": {"a": ' * 50]
    if kind == 7:
        return [b"x", b"y", b"z"]
    if kind == 8:
        return [json.dumps({"id": i, "command": "stop", "params": {"timeout_s": -5}}).encode()]
    return [json.dumps({"command": "devices", "params": {"camera": 12}}).encode()]


def test_fuzz_during_acquisition_leaves_it_undisturbed(daemon, tmp_path):
    shape = (64, 64)
    n_frames = 250
    with daemon.client(timeout_s=10) as c:
        c.configure(
            camera="sim",
            shape=list(shape),
            frames=n_frames,
            fps=60,
            out="fuzz.ome.zarr",
            seed=4,
            chunks={"t": 5},
        )
        c.start()
        server = psutil.Process(daemon.proc.pid)
        rss_before = server.memory_info().rss
        answered = 0
        rng = random.Random(1234)
        ctx = zmq.Context.instance()

        def blast(worker: int, count: int) -> None:
            nonlocal answered
            sock = ctx.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            sock.connect(daemon.local_control)
            local = random.Random(worker)
            for i in range(count):
                sock.send_multipart(_garbage(local, i))
                if sock.poll(5000):
                    sock.recv_multipart()
                    answered += 1
            sock.close()

        threads = [threading.Thread(target=blast, args=(w, 300)) for w in range(4)]
        for t in threads:
            t.start()
        # clients that vanish mid-request: send, close without reading
        for i in range(100):
            s = ctx.socket(zmq.DEALER)
            s.setsockopt(zmq.LINGER, 0)
            s.connect(daemon.local_control)
            s.send_multipart(_garbage(rng, i))
            s.close()
        for t in threads:
            t.join()
        assert answered >= 1150  # every request from a listening client was answered
        assert c.status()["state"] in ("acquiring", "finalizing", "idle")
        deadline = time.monotonic() + 60
        while c.status()["state"] != "idle" and time.monotonic() < deadline:
            time.sleep(0.1)
        status = c.status()
        rss_after = server.memory_info().rss
    report = status["last_report"]
    assert report["ok"] is True, report
    assert report["summary"]["frames_written"] == n_frames
    assert rss_after - rss_before < 100 * 2**20, (rss_before, rss_after)
    out = tmp_path / "fuzz.ome.zarr"
    check_dataset(out)
    data = read_zarr(out)
    bank = FrameBank(shape, "uint16", seed=4)
    assert [read_stamp(f) for f in data] == list(range(n_frames))
    np.testing.assert_array_equal(data, np.stack([bank.frame(i) for i in range(n_frames)]))


def test_many_clients_at_once(daemon):
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            with daemon.client(timeout_s=10) as c:
                for _ in range(20):
                    assert c.ping()["pong"] is True
                    assert c.status()["state"] == "idle"
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_non_loopback_bind_without_keys_is_refused(tmp_path):
    port = free_port()
    run = run_cli(
        "serve",
        "--control",
        f"tcp://0.0.0.0:{port}",
        "--events",
        f"tcp://127.0.0.1:{free_port()}",
        cwd=tmp_path,
        timeout=60,
    )
    assert run.returncode == 2
    assert "refusing to start" in run.stderr and "requires CURVE" in run.stderr


def test_curve_only_listed_clients_get_answers(tmp_path):
    keys = tmp_path / "keys"
    clients = tmp_path / "clients"
    for name in ("server", "good", "bad"):
        assert run_cli("keys", str(keys), "--name", name, cwd=tmp_path).returncode == 0
    clients.mkdir()
    (clients / "good.key").write_text((keys / "good.key").read_text())
    d = Daemon(
        tmp_path,
        "--curve-secret",
        str(keys / "server.key_secret"),
        "--curve-clients",
        str(clients),
        "--root",
        str(tmp_path),
        host="0.0.0.0",
    )
    try:
        good = {"curve_secret": keys / "good.key_secret", "curve_server": keys / "server.key"}
        d.wait_ready(**good)
        bad = Client(
            d.local_control,
            d.local_events,
            timeout_s=1.5,
            curve_secret=keys / "bad.key_secret",
            curve_server=keys / "server.key",
        )
        with bad:
            with pytest.raises(TimeoutError):
                bad.ping()
            with pytest.raises(TimeoutError):
                params = {"camera": "sim", "shape": [32, 32], "frames": 5, "out": "evil.ome.zarr"}
                bad.request("configure", params, timeout_s=1.5)
        # no keys at all: no answer either
        with Client(d.local_control, timeout_s=1.5) as anonymous, pytest.raises(TimeoutError):
            anonymous.ping()
        with Client(d.local_control, d.local_events, timeout_s=10, **good) as c:
            assert c.status()["state"] == "idle"  # nothing changed
            c.configure(camera="sim", shape=[32, 32], frames=5, out="ok.ome.zarr")
            assert c.status()["state"] == "configured"
        assert not (tmp_path / "evil.ome.zarr").exists()
    finally:
        d.proc.terminate()
        d.proc.wait(30)
    assert d.proc.returncode == 0


def test_stop_with_an_invalid_timeout_is_refused(daemon):
    with daemon.client() as c:
        c.configure(camera="sim", shape=[32, 32], frames=100000, fps=20, out="slow.ome.zarr")
        c.start()
        with pytest.raises(ControlError):
            c.request("stop", {"wait": True, "timeout_s": -1})
        assert c.status()["state"] == "acquiring"
        c.abort()
