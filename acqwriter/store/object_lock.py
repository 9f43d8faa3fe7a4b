"""The writer lock of a dataset in an object store: an object that says who holds it.

A filesystem lock (``flock``) dies with its process; an object does not, so the lock
object carries what is needed to tell a live holder from a dead one:

* it is created only if absent (a conditional PUT, ``If-None-Match: *``): of two
  writers starting on one prefix, one wins and the other is refused;
* it holds JSON naming its holder (host, process id and that process's start time) and
  is rewritten every :data:`HEARTBEAT_S` seconds, conditionally on its ETag
  (``If-Match``), while the writer lives;
* a lock is *stale* when its holder is a process of this host that no longer exists
  (a writer killed on the acquisition computer: found at once), or when it has not
  been rewritten for :data:`STALE_AFTER_S` seconds (a holder on another host, which
  cannot be asked, or a process that lives on, such as the daemon, whose writer
  stopped); a stale lock is taken over, again conditionally on its ETag, so of two
  tools taking it over one wins;
* a writer that cannot delete its lock at close (the store unreachable) keeps trying
  in the background for :data:`STALE_AFTER_S` seconds;
* a writer whose heartbeat finds the lock taken over stops writing (every later write
  fails with the reason): two writers never write one prefix.

Limits (``docs/guarantees.md``): the age is judged by this host's clock against the
server's ``Last-Modified``; a clock more than ``STALE_AFTER_S`` off misjudges a lock of
another host.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import threading
import time
from typing import Any

import psutil

__all__ = ["HEARTBEAT_S", "LOCK_NAME", "STALE_AFTER_S", "ObjectLock", "live_holder"]

LOCK_NAME = ".acqwriter.lock"
HEARTBEAT_S = 10.0  # the holder rewrites the lock this often
STALE_AFTER_S = 120.0  # a lock not rewritten for this long is a dead holder's


class ObjectLock:
    """The lock object of one dataset (see the module docstring). ``store``: the obstore
    store rooted at the dataset; ``where``: its URL, for messages."""

    def __init__(self, store: Any, where: str) -> None:
        self._store = store
        self._where = where
        self._etag: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.lost: str | None = None  # why this writer no longer holds the lock

    @property
    def held(self) -> bool:
        return self._etag is not None

    def take(self) -> None:
        """Become the holder, taking over a stale lock; FileExistsError naming a live
        holder."""
        import obstore

        try:
            self._etag = obstore.put(self._store, LOCK_NAME, _body(), mode="create")["e_tag"]
        except Exception as exc:
            if not _is_conflict(exc):
                raise
            self._take_over()
        self._stop.clear()
        self._thread = threading.Thread(target=self._beat, name="acqwriter-lock", daemon=True)
        self._thread.start()

    def _take_over(self) -> None:
        import obstore

        try:
            found = obstore.get(self._store, LOCK_NAME)
            meta, data = found.meta, bytes(found.bytes())
        except FileNotFoundError:  # released meanwhile
            self._etag = obstore.put(self._store, LOCK_NAME, _body(), mode="create")["e_tag"]
            return
        holder = _holder(data)
        age = time.time() - meta["last_modified"].timestamp()
        alive = _alive(holder, age)
        if alive:
            raise FileExistsError(errno.EEXIST, f"{self._where}: another writer holds it ({alive})")
        try:
            self._etag = obstore.put(
                self._store, LOCK_NAME, _body(), mode={"e_tag": meta["e_tag"]}
            )["e_tag"]
        except Exception as exc:
            if _is_conflict(exc):
                raise FileExistsError(
                    errno.EEXIST, f"{self._where}: another writer took its stale lock first"
                ) from None
            raise

    def _beat(self) -> None:
        import obstore

        while not self._stop.wait(HEARTBEAT_S):
            try:
                self._etag = obstore.put(
                    self._store, LOCK_NAME, _body(), mode={"e_tag": self._etag}
                )["e_tag"]
            except Exception as exc:
                if _is_conflict(exc) or isinstance(exc, FileNotFoundError):
                    self.lost = f"{self._where}: its writer lock was taken over; writing stopped"
                    return
                # unreachable for now: the writes say so; the next beat tries again

    def release(self) -> None:
        """Stop the heartbeat and delete the lock if it is still this writer's."""

        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        etag, self._etag = self._etag, None
        if etag is None or self.lost:
            return
        if not _delete_if(self._store, etag):  # the store is unreachable: keep trying
            threading.Thread(
                target=_delete_later, args=(self._store, etag), name="acqwriter-unlock", daemon=True
            ).start()


def _delete_if(store: Any, etag: str) -> bool:
    """Delete the lock if it still has ``etag`` (this writer's); False when the store
    could not be asked."""
    import obstore

    try:
        if obstore.head(store, LOCK_NAME)["e_tag"] == etag:
            obstore.delete(store, LOCK_NAME)
    except FileNotFoundError:
        pass
    except Exception:
        return False
    return True


def _delete_later(store: Any, etag: str) -> None:
    """Retry deleting a lock the store refused at close, for :data:`STALE_AFTER_S`
    (after that its silence makes it stale anyway)."""
    deadline = time.monotonic() + STALE_AFTER_S
    while time.monotonic() < deadline:
        time.sleep(2.0)
        if _delete_if(store, etag):
            return


def live_holder(store: Any) -> str:
    """Who holds the lock of the dataset in ``store`` (an obstore store), when that
    holder may be alive; "" when the lock is absent or its holder is dead."""
    import obstore

    try:
        found = obstore.get(store, LOCK_NAME)
        meta, data = found.meta, bytes(found.bytes())
    except FileNotFoundError:
        return ""
    return _alive(_holder(data), time.time() - meta["last_modified"].timestamp())


def _body() -> bytes:
    me = psutil.Process()
    return json.dumps(
        {
            "writer": "acqwriter",
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "process_started": me.create_time(),
            "heartbeat_s": HEARTBEAT_S,
        }
    ).encode()


def _holder(data: bytes) -> dict[str, Any]:
    try:
        holder = json.loads(data)
    except ValueError:
        return {}
    return holder if isinstance(holder, dict) else {}


def _alive(holder: dict[str, Any], age: float) -> str:
    """Who holds the lock, when that holder may be alive ("" when it is dead)."""
    who = f"process {holder.get('pid')} on {holder.get('host')!r}" if holder else "unknown"
    if holder.get("host") == socket.gethostname() and isinstance(holder.get("pid"), int):
        try:
            started = psutil.Process(holder["pid"]).create_time()
        except (psutil.NoSuchProcess, ValueError):
            return ""
        except psutil.AccessDenied:
            started = float(holder.get("process_started", 0.0))
        if abs(started - float(holder.get("process_started", started))) >= 1.0:
            return ""  # the pid was reused: the holder is dead
        if age >= STALE_AFTER_S:
            return ""  # the process lives on (a daemon) but its writer stopped beating
        return f"{who}, running"
    if age < STALE_AFTER_S:
        return f"{who}, last heard {age:.0f} s ago"
    return ""


def _is_conflict(exc: Exception) -> bool:
    """A conditional PUT refused: the object exists (create) or changed (update)."""
    name = type(exc).__name__
    text = str(exc).lower()
    return name in ("AlreadyExistsError", "PreconditionError") or (
        "already exists" in text or "precondition" in text
    )
