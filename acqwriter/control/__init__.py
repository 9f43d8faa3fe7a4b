"""Run acqwriter as a daemon driven over ZeroMQ (see README "Daemon and protocol").

* :mod:`~acqwriter.control.protocol` — message shapes, error codes, limits, JSON Schema;
* :mod:`~acqwriter.control.server` — the daemon (ROUTER + PUB, state machine);
* :mod:`~acqwriter.control.client` — :class:`Client` for Python callers;
* :mod:`~acqwriter.control.security` — loopback by default, CURVE otherwise;
* :mod:`~acqwriter.control.session` — one acquisition run on its own thread;
* :mod:`~acqwriter.control.paths` — where a daemon may write (``--root``).

Its command-line front ends (``serve``, ``ctl``, ``keys``) are in :mod:`acqwriter.cli.daemon`.
"""

from acqwriter.control.client import Client
from acqwriter.control.protocol import PROTOCOL_VERSION, ControlError

__all__ = ["PROTOCOL_VERSION", "Client", "ControlError"]
