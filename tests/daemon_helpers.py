"""Start a real ``acqwriter serve`` process on free loopback ports for a test."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import zmq

from acqwriter.control import Client, ControlError


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Daemon:
    """A daemon subprocess plus endpoints; ``client()`` makes connected clients."""

    def __init__(self, workdir: Path, *extra: str, host: str = "127.0.0.1") -> None:
        self._args = (workdir, extra, host)
        self._retries = 0
        self._start(workdir, extra, host)

    def _start(self, workdir: Path, extra: tuple[str, ...], host: str) -> None:
        self.control_port, self.events_port = free_port(), free_port()
        self.control = f"tcp://{host}:{self.control_port}"
        self.events = f"tcp://{host}:{self.events_port}"
        self.local_control = f"tcp://127.0.0.1:{self.control_port}"
        self.local_events = f"tcp://127.0.0.1:{self.events_port}"
        exe = Path(sys.executable).parent / "acqwriter"
        self.proc = subprocess.Popen(
            [
                str(exe),
                "serve",
                "--control",
                self.control,
                "--events",
                self.events,
                "--progress-interval",
                "0.1",
                *extra,
            ],
            cwd=workdir,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )

    def client(self, **kw: Any) -> Client:
        return Client(self.local_control, self.local_events, **kw)

    def wait_ready(self, timeout: float = 30.0, **client_kw: Any) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.client(timeout_s=0.5, **client_kw) as c:
                while time.monotonic() < deadline:
                    if self.proc.poll() is not None:
                        err = self.proc.stderr.read()
                        if "Address already in use" in err and self._retries < 3:
                            # another process took the free port between the probe and
                            # the bind: start again on new ports, with a new client
                            self._retries += 1
                            self._start(*self._args)
                            break
                        raise RuntimeError(f"daemon exited: {err}")
                    try:
                        c.ping()
                        return
                    except TimeoutError:
                        continue
        raise RuntimeError("daemon did not answer ping")

    def stop(self, timeout: float = 60.0) -> int:
        if self.proc.poll() is None:
            try:
                with self.client(timeout_s=5) as c:
                    c.shutdown(abort=True)
            except (TimeoutError, ControlError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


class EventRecorder:
    """Subscribes before the action starts and records every event in a thread."""

    def __init__(self, endpoint: str) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []
        self._ctx = zmq.Context()
        self._sub = self._ctx.socket(zmq.SUB)
        self._sub.setsockopt(zmq.SUBSCRIBE, b"")
        self._sub.setsockopt(zmq.LINGER, 0)
        self._sub.connect(endpoint)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        time.sleep(0.3)  # PUB/SUB: let the subscription reach the server (slow joiner)

    def _run(self) -> None:
        while not self._stop.is_set():
            if self._sub.poll(50):
                topic, payload = self._sub.recv_multipart()
                self.events.append((topic.decode(), json.loads(payload)))

    def wait_for(self, topic: str, timeout: float = 60.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for t, event in list(self.events):
                if t == topic:
                    return event
            time.sleep(0.02)
        raise TimeoutError(f"no {topic!r} event; got {[t for t, _ in self.events]}")

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self._sub.close()
        self._ctx.term()
