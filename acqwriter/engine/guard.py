"""A stream's health: the first failure, a clean stop for low disk space, and the check
that decides it.

:class:`Health` is shared by every part of a stream. The first failure is kept (later
ones are consequences), the abort event wakes a producer waiting for a frame slot, and
the callbacks free what a failing stream must give back at once (the frame slots, the
disk reserve that the final metadata needs). A clean stop (:meth:`Health.stop`) refuses
new frames but finishes everything already received.

:class:`DiskGuard` stops the stream cleanly before the disk is full: after every few
MiB written (and from the committer) it compares the free space with what is still to
be written (frames waiting, bytes packed into open shards) plus ``min_free_bytes``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from acqwriter.store.base import Store

__all__ = ["DiskGuard", "Health"]


class Health:
    """The first failure and the clean stop of one stream (see the module docstring)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.error: BaseException | None = None
        self.stop_reason: str | None = None
        self.abort = threading.Event()
        self._on_fail: list[Callable[[], None]] = []

    def on_fail(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` when the stream fails (at once if it has)."""
        with self._lock:
            self._on_fail.append(callback)
            failed = self.error is not None
        if failed:
            callback()

    def fail(self, exc: BaseException) -> None:
        with self._lock:
            if self.error is None:
                self.error = exc
        self.abort.set()
        with self._lock:
            callbacks = list(self._on_fail)
        for callback in callbacks:
            callback()

    def stop(self, reason: str) -> None:
        """Take no more frames; finish what was received."""
        if self.stop_reason is None:
            self.stop_reason = reason

    @property
    def failed(self) -> bool:
        return self.error is not None

    def describe(self) -> str | None:
        """The error (type and message) or the clean stop's reason, for the summary."""
        if self.error is not None:
            return f"{type(self.error).__name__}: {self.error}"
        return self.stop_reason


class DiskGuard:
    """Stops a stream cleanly while ``min_free_bytes`` are still free."""

    def __init__(
        self, store: Store, min_free_bytes: int, health: Health, pending: Callable[[], int]
    ) -> None:
        self._store = store
        self._min_free = min_free_bytes
        self._health = health
        self._pending = pending  # bytes still to be written (frames waiting, open shards)
        self._lock = threading.Lock()
        self._since_check = 0
        self._since_accepted = 0  # the producer's count (one thread at a time)
        self._every = max(1 << 20, min(min_free_bytes // 8, 64 << 20))

    def accepted(self, nbytes: int) -> None:
        """Count a frame the producer took; check the free space every few MiB of them.
        Writes alone are not enough: a producer faster than the writers fills the frame
        slots between two writes, and frames taken must reach the disk (no silent loss),
        so the stream stops while what it holds still fits above ``min_free_bytes``."""
        if self._min_free == 0:
            return
        self._since_accepted += nbytes
        if self._since_accepted < self._every:
            return
        self._since_accepted = 0
        try:
            self.check()
        except OSError as exc:
            self._health.fail(exc)

    def wrote(self, nbytes: int) -> None:
        """Count ``nbytes`` written; check the free space every few MiB."""
        with self._lock:
            self._since_check += nbytes
            due = self._since_check >= self._every
            if due:
                self._since_check = 0
        if due:
            try:
                self.check()
            except OSError as exc:
                self._health.fail(exc)

    def free_bytes(self) -> int:
        """Free space, 0 when it cannot be read."""
        try:
            return self._store.free_bytes()
        except OSError:
            return 0

    def check(self, extra: int = 0) -> bool:
        """Stop the stream if what is still to be written (plus ``extra``, e.g. a seal's
        copy of its shards) would leave less than ``min_free_bytes`` free. False when
        the stream has stopped for low space (a seal then does not write)."""
        if self._min_free == 0:
            return True
        if self._health.stop_reason is not None:
            return False
        free = self._store.free_bytes()
        pending = self._pending() + extra
        if free - pending < self._min_free:
            self._health.stop(
                f"disk space low: {free / 2**20:.0f} MiB free on {self._store.location} "
                f"({pending / 2**20:.0f} MiB still to write), below min_free_bytes "
                f"{self._min_free / 2**20:.0f} MiB; stopped cleanly"
            )
            return False
        return True
