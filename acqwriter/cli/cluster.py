"""The Dask cluster ``acqwriter pyramid`` builds on: ``--workers N`` starts a local
cluster of N worker processes for the build's duration; ``--scheduler ADDRESS``
connects to a running one (left running). Without either, no cluster: the
single-machine builder. The dashboard's link is printed, for a facility to watch."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

__all__ = ["Cluster", "open_cluster"]


class Cluster:
    """A client and, for ``--workers``, the local cluster it owns."""

    def __init__(self, client: Any, owned: Any = None) -> None:
        self.client, self._owned = client, owned

    def close(self) -> None:
        self.client.close()
        if self._owned is not None:
            self._owned.close()


def open_cluster(args: argparse.Namespace) -> Cluster | None:
    """The cluster ``args`` ask for, or None; ImportError (what to install), ValueError
    or OSError (the scheduler cannot be reached) in one line otherwise."""
    workers, scheduler = getattr(args, "workers", None), getattr(args, "scheduler", None)
    if workers is None and scheduler is None:
        return None
    if workers is not None and scheduler is not None:
        raise ValueError("--workers and --scheduler: give one of them")
    from acqwriter.post.cluster import need_dask

    option = "--workers" if workers is not None else "--scheduler"
    try:
        distributed = need_dask()
    except ImportError as exc:
        raise ImportError(f"{option}: {exc}") from None
    if workers is not None:
        local = distributed.LocalCluster(
            n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0"
        )
        cluster = Cluster(distributed.Client(local), local)
    else:
        try:
            cluster = Cluster(distributed.Client(scheduler, timeout="20s"))
        except (OSError, TimeoutError) as exc:
            raise OSError(f"--scheduler: cannot reach {scheduler}: {exc}") from None
        except ValueError as exc:  # not an address: "missing port number", a bad scheme
            raise ValueError(
                f"--scheduler: expected an address such as tcp://host:8786, got "
                f"{scheduler!r} ({exc})"
            ) from None
    # distributed logs in this process (client, comms, a local cluster's nannies) as
    # tracebacks when the scheduler or a worker goes; the build says in one line what
    # stopped it (ClusterLost, a task's error), and the dashboard shows the cluster
    # (distributed's configuration gives some of its loggers levels of their own)
    for name in ["distributed", *logging.root.manager.loggerDict]:
        if name.split(".")[0] == "distributed":
            logging.getLogger(name).setLevel(logging.CRITICAL)
    print(f"dask dashboard: {cluster.client.dashboard_link}", file=sys.stderr, flush=True)
    return cluster
