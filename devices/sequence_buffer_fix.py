"""Make pymmcore-plus' Python-camera circular buffer safe to drain while it overflows,
and give its memory back between sequences.

``UniMMCore`` keeps the frames of Python cameras (our simulators) in a
``SequenceBuffer``. Its ``pop_next`` (pymmcore-plus 0.18.1) takes the oldest slot off the
queue under the buffer's lock but copies the pixels and gives the bytes back
(``_evict_slot``: ``_tail += n; _bytes_in_use -= n``) *after* releasing it. When the
camera overflows the buffer meanwhile, ``_ensure_space`` — under the lock, in the
camera's thread — either evicts the next slot as if it started at ``_tail`` (which
still points at the slot being copied) or, finding no slot queued, resets ``_head``,
``_tail`` and ``_bytes_in_use`` to 0 and writes there, and the late, unlocked eviction
then corrupts the accounting (read from the source, not reproduced: three seconds of a
camera thread overflowing a 1 MiB buffer against a consumer showed no corruption).
Either way a later frame's pixels would land in memory a queued or popped frame still
occupies. What was seen, once, in this project's CI (``test_faults.py``, a 1 MiB buffer
overflowing under a slow disk): index 83 held frame 115's pixels under frame 83's
metadata, so frame-number checks could not see it; this race is its likely cause.

:func:`install` replaces ``SequenceBuffer.pop_next`` with the same steps done under the
lock (the camera waits at most for one frame's copy). Hand-written because no released
pymmcore-plus has the fix; applied only when the class still has the attributes it
relies on, so a changed upstream is left alone (``install`` then returns False).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = ["give_back_memory", "install"]

_REQUIRED = ("_lock", "_slots", "_evict_slot")


def _pop_next_locked(
    self: Any, *, out: np.ndarray | None = None
) -> tuple[np.ndarray, Mapping[str, Any]] | None:
    """``SequenceBuffer.pop_next`` with the copy and the eviction under the lock."""
    with self._lock:
        if not self._slots:
            return None
        slot = self._slots.popleft()
        if out is not None:
            out[:] = slot.array
            arr = out
        else:
            arr = slot.array.copy()
        self._evict_slot(slot)
    return arr, (slot.metadata or {})


def install() -> bool:
    """Patch ``SequenceBuffer.pop_next`` (idempotent); True when it is in place."""
    try:
        from pymmcore_plus.experimental.unicore.core._sequence_buffer import SequenceBuffer
    except ImportError:  # no UniMMCore in this pymmcore-plus: nothing to fix
        return False
    if SequenceBuffer.pop_next is _pop_next_locked:
        return True
    probe = SequenceBuffer(size_mb=1)
    if not all(hasattr(probe, name) for name in _REQUIRED):
        return False
    SequenceBuffer.pop_next = _pop_next_locked  # type: ignore[method-assign]
    return True


_MADV_DONTNEED = 4
_PAGE = 4096


def give_back_memory(core: Any) -> bool:
    """Return the pages of ``core``'s Python-camera circular buffer to the system once
    its sequence has stopped (frames the camera made after the requested ones are
    dropped, as the core's next ``startSequenceAcquisition`` would); True when it did.

    The buffer (256 MiB for our simulated core) is one ``np.empty`` the camera writes
    round and round: every sequence longer than the buffer touches all of it, and the
    pages stayed resident for the life of the process, so an idle daemon held them
    between acquisitions. ``madvise(MADV_DONTNEED)`` drops them (they read as zeros when
    touched again)."""
    import ctypes

    buffer = getattr(core, "_seq_buffer", None)
    pool = getattr(buffer, "_pool", None)
    if not isinstance(pool, np.ndarray) or not hasattr(buffer, "clear"):
        return False
    if core.isSequenceRunning():
        return False  # the camera still writes into it
    buffer.clear()  # frames after the end are never read: the next start clears them too
    with buffer._lock:
        start = -(-pool.ctypes.data // _PAGE) * _PAGE
        end = (pool.ctypes.data + pool.nbytes) // _PAGE * _PAGE
        if end > start:
            madvise = ctypes.CDLL(None, use_errno=True).madvise
            madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
            madvise(start, end - start, _MADV_DONTNEED)
    return True
