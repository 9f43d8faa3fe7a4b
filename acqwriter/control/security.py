"""Who may talk to the daemon: loopback by default, CURVE everywhere else.

* An endpoint is *local* when it is ``ipc://``/``inproc://`` or TCP on a loopback address
  (127.0.0.0/8, ::1, localhost). The daemon binds local endpoints by default.
* Binding anything else requires ZeroMQ CURVE: the server's secret key and a directory
  of authorised client public keys (``acqwriter keys`` makes key pairs, as ZeroMQ
  certificate files). Without them the daemon refuses to start and says why. With them,
  a ZAP authenticator accepts only listed client keys: an unknown client's handshake
  fails, so it never gets an answer and changes nothing.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

__all__ = ["CurveServer", "apply_client_curve", "create_keypair", "is_local_endpoint"]


def is_local_endpoint(endpoint: str) -> bool:
    scheme, _, rest = endpoint.partition("://")
    if scheme in ("ipc", "inproc"):
        return True
    if scheme != "tcp":
        return False
    host = urlsplit(f"//{rest}").hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        try:  # an interface or host name: local only if it resolves to loopback only
            infos = socket.getaddrinfo(host, None)
        except OSError:
            return False
        return bool(infos) and all(ipaddress.ip_address(i[4][0]).is_loopback for i in infos)


def create_keypair(directory: str | Path, name: str) -> tuple[Path, Path]:
    """Write ``name.key`` (public) and ``name.key_secret`` into ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    public, secret = zmq.auth.create_certificates(str(directory), name)
    Path(secret).chmod(0o600)
    return Path(public), Path(secret)


@dataclass
class CurveServer:
    """Server-side CURVE: our secret key and the directory of allowed client keys."""

    secret_key_file: Path
    clients_dir: Path
    _auth: ThreadAuthenticator | None = None

    def start(self, context: zmq.Context[Any]) -> None:
        if not self.secret_key_file.is_file():
            raise ValueError(f"--curve-secret: {self.secret_key_file} is not a key file")
        if not self.clients_dir.is_dir() or not any(self.clients_dir.glob("*.key")):
            raise ValueError(
                f"--curve-clients: {self.clients_dir} holds no client public keys (*.key)"
            )
        self._auth = ThreadAuthenticator(context)
        self._auth.start()
        self._auth.configure_curve(domain="*", location=str(self.clients_dir))

    def apply(self, sock: zmq.Socket[Any]) -> None:
        public, secret = zmq.auth.load_certificate(str(self.secret_key_file))
        if secret is None:
            raise ValueError(f"--curve-secret: {self.secret_key_file} holds no secret key")
        sock.curve_secretkey = secret
        sock.curve_publickey = public
        sock.curve_server = True

    def stop(self) -> None:
        if self._auth is not None:
            self._auth.stop()
            self._auth = None


def apply_client_curve(sock: zmq.Socket[Any], secret_key_file: Path, server_key_file: Path) -> None:
    public, secret = zmq.auth.load_certificate(str(secret_key_file))
    if secret is None:
        raise ValueError(f"{secret_key_file} holds no secret key")
    server_public, _ = zmq.auth.load_certificate(str(server_key_file))
    sock.curve_secretkey = secret
    sock.curve_publickey = public
    sock.curve_serverkey = server_public
