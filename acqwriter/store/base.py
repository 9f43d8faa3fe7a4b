"""The store interface: every byte acqwriter puts in a dataset goes through a :class:`Store`.

A store holds objects under keys (``"0/zarr.json"``, ``"0/c/3/0/0"``) and knows nothing
of files, descriptors or paths; the engine, the shard writer and the offline tools only
ever call these methods, so a store on another medium (memory, an object store)
implements them and nothing else changes. Kinds of write, with their guarantees:

* **chunks** (:meth:`Store.write_chunk_from`): written once, straight to their key. A
  chunk is only *referenced* once the array's extent covers it, and the extent grows
  only after the chunk is written, so a torn chunk after a crash lies outside it.
* **shards** (:meth:`Store.open_shard`): a :class:`ShardSink` takes a shard's segments
  at their offsets and, on ``finish``, publishes the whole shard at its key in one step
  (a file renamed over it, a multipart upload completed), so the key never holds a torn
  shard. A *seal* publishes a valid copy of the shard so far while it still grows; the
  sink supplies the bytes it holds, so no store reads back a shard in progress. Where
  the medium takes a shard front to back (``parts_in_order``: a multipart upload), the
  sink streams it as it comes and holds only the segments that arrive ahead of a gap.
* **documents** (:meth:`Store.write_atomic`): ``zarr.json`` documents are replaced
  atomically: a reader, or a crash, sees the old or the new one, never half of one.
* **lines** (:meth:`Store.append_lines`): per-frame metadata grows by whole lines; an append
  that fails part-way is cut back to its last whole line (:class:`PartialAppend`).

Capabilities are flags, as in zarr-python's stores: ``supports_direct_io`` (chunk
writes bypass a cache; segments are then padded to :attr:`Store.write_alignment`),
``supports_locking`` (one writer per dataset, across processes) and
``supports_reserve`` (room set aside for the last metadata writes of a full disk) and
``supports_cheap_ranges`` (a small ranged read costs no round trip to a server: readers
of whole datasets fetch shards whole where it is false). A store without them still
works; the guarantee each gives is then weaker, as the flag says.

Durability follows ``sync``: ``"always"`` makes each chunk and document durable before
it counts, ``"close"`` makes everything durable once at :meth:`Store.flush`, ``"none"``
leaves it to the medium.
"""

from __future__ import annotations

import errno
import threading
from abc import ABC, abstractmethod
from typing import Any

from acqwriter.store.buffers import address_of, private_memory

__all__ = [
    "FINAL_RESERVE_NAME",
    "RESERVE_NAME",
    "PartialAppend",
    "ShardSink",
    "StorageError",
    "Store",
    "in_progress_key",
]

RESERVE_NAME = ".acqwriter.reserve"  # freed at a failure: the final extent and metadata
FINAL_RESERVE_NAME = ".acqwriter.reserve-final"  # freed only for the root's final state


def in_progress_key(key: str) -> str:
    """Where a store that renames (a filesystem) grows the shard to be published at
    ``key``: a hidden name beside it (``0/c/0/.3.shard.tmp``), which ``recover`` removes."""
    head, _, name = key.rpartition("/")
    return f"{head}/.{name}.shard.tmp" if head else f".{name}.shard.tmp"


class StorageError(OSError):
    """A write to the dataset failed; the message names the key and the reason."""


class PartialAppend(StorageError):
    """An append failed after ``lines`` whole lines were written (and kept)."""

    def __init__(self, cause: OSError, key: str, lines: int) -> None:
        super().__init__(
            cause.errno or errno.EIO, f"cannot append to {key!r}: {cause.strerror or cause}"
        )
        self.lines = lines


class ShardSink(ABC):
    """One shard being written, published at its key only when it is whole (see
    :meth:`Store.open_shard`).

    Call order: :meth:`write` any number of times, from several threads, at distinct
    offsets, with :meth:`seal` between writes as often as wanted (never concurrently
    with another seal, a finish or an abandon); then :meth:`finish` once (the shard is
    then at its key) or :meth:`abandon` (what was written goes; a sealed copy stays).

    ``parts_in_order``: the medium takes the shard front to back (a multipart upload);
    segments that arrive ahead of a gap wait in memory until it is filled."""

    parts_in_order: bool = False

    @abstractmethod
    def write(self, segment: Any, n: int, offset: int) -> int:
        """Write ``segment[:n]`` at ``offset``; returns how far the shard grew (``n``
        padded to the store's :attr:`Store.write_alignment`)."""

    @abstractmethod
    def finish(self, end: int) -> None:
        """Cut the shard at ``end`` (its index is the last bytes), make it durable as
        ``sync`` asks and publish it at its key in one step (readers see the sealed copy
        or the whole shard, never a torn one); no write follows."""

    @abstractmethod
    def seal(self, end: int, tail: bytes) -> None:
        """Publish at the key, in one step, the bytes written so far up to ``end``
        followed by ``tail`` (the chunks not yet written and an index): a valid shard
        of what arrived so far. Writes go on after it."""

    @abstractmethod
    def abandon(self) -> None:
        """Give up the shard: its temporary object is removed."""


class Store(ABC):
    """A dataset's objects by key (see the module docstring)."""

    supports_direct_io: bool = False
    supports_locking: bool = False
    supports_reserve: bool = False
    supports_cheap_ranges: bool = True  # a small ranged read costs little (no round trip)

    def __init__(self, *, sync: str = "close") -> None:
        self.sync = sync
        self.direct = False  # chunk writes bypass a cache (enable_direct_io)
        self.created_folders: list[str] = []  # parents made for the dataset (local stores)
        self._aligned = threading.local()

    # -- what it is ---------------------------------------------------------------------
    @property
    @abstractmethod
    def location(self) -> str:
        """Where the dataset is, for messages (a path, a URL)."""

    @property
    def write_alignment(self) -> int:
        """Offsets and lengths of shard segments are multiples of this (direct I/O)."""
        return 1

    def enable_direct_io(self, mode: str) -> bool:
        """``"direct"``: chunk writes must bypass the cache (an error if they cannot);
        ``"auto"``: where possible; ``"buffered"``: never. Returns whether they do."""
        if mode == "direct":
            raise StorageError(errno.EINVAL, f"io: {type(self).__name__} has no direct I/O")
        return False

    # -- buffers ------------------------------------------------------------------------
    def scratch(self, size: int) -> tuple[Any, int]:
        """This thread's page-aligned scratch buffer of at least ``size`` bytes and its
        address: encoders compress straight into it and :meth:`write_chunk_from`
        writes it, with no copy in between."""
        need = -(-size // 4096) * 4096
        buf = getattr(self._aligned, "buf", None)
        if buf is None or len(buf) < need:
            if buf is not None:
                buf.close()
            buf = private_memory(max(need, 1 << 20))
            self._aligned.buf = buf
            self._aligned.address = address_of(buf)
        return buf, self._aligned.address

    # -- writes -------------------------------------------------------------------------
    def write_chunk(self, key: str, data: bytes | memoryview) -> int:
        """Write a chunk from any buffer (copied into the scratch buffer: for callers
        off the hot path); returns the bytes written."""
        src = memoryview(data).cast("B")
        buf, _ = self.scratch(len(src))
        memoryview(buf)[: len(src)] = src
        return self.write_chunk_from(key, len(src))

    @abstractmethod
    def write_chunk_from(self, key: str, n: int, buf: Any = None) -> int:
        """Write the first ``n`` bytes of ``buf`` (page-aligned; default this thread's
        :meth:`scratch` buffer) as chunk ``key``; returns ``n``. A failed write leaves
        no object at ``key``."""

    @abstractmethod
    def open_shard(self, key: str) -> ShardSink:
        """A new shard to be published at ``key`` (where it grows until then is the
        store's business: a temporary file, a multipart upload)."""

    @abstractmethod
    def write_atomic(self, key: str, data: bytes) -> None:
        """Replace ``key`` with ``data`` in one step."""

    @abstractmethod
    def append_lines(self, key: str, data: bytes) -> None:
        """Append whole lines; raise :class:`PartialAppend` saying how many made it."""

    def truncate_lines(self, key: str, nbytes: int) -> None:
        """Keep the first ``nbytes`` of a line log (a cut at a line end), as one step
        or as steps each of which leaves a prefix of the log."""
        self.write_atomic(key, self.read_lines(key)[:nbytes])

    def remove_lines(self, key: str) -> None:
        """Delete a line log whole; absent is fine. A store that keeps a log in several
        objects removes them all: one left behind would be read as part of the next
        log written at ``key``."""
        self.remove(key)

    def abort_uploads(self) -> int:
        """Discard uploads a dead writer left unfinished (they hold no object but
        cost room); how many. No-op where writes cannot be left half-done."""
        return 0

    @abstractmethod
    def remove(self, key: str) -> None:
        """Delete ``key``; absent is fine."""

    @abstractmethod
    def remove_tree(self, key: str) -> None:
        """Delete ``key`` and every key under ``key + "/"``."""

    # -- reads --------------------------------------------------------------------------
    @abstractmethod
    def read_bytes(self, key: str) -> bytes:
        """The object ``key`` (FileNotFoundError when absent)."""

    @abstractmethod
    def read_range(self, key: str, offset: int, n: int) -> bytes:
        """``n`` bytes of ``key`` from ``offset``."""

    @abstractmethod
    def size(self, key: str) -> int:
        """The length of ``key`` (FileNotFoundError when absent)."""

    def read_lines(self, key: str) -> bytes:
        """A line log (:meth:`append_lines`) whole (FileNotFoundError when absent)."""
        return self.read_bytes(key)

    def read_into(self, key: str, buf: Any = None) -> memoryview:
        """The bytes of ``key``, in ``buf`` when it is big enough (``result.obj`` is the
        buffer to pass next time): a reader of many chunks reuses one buffer."""
        data = self.read_bytes(key)
        if buf is None or len(buf) < len(data):
            buf = bytearray(len(data))
        view = memoryview(buf)
        view[: len(data)] = data
        return view[: len(data)]

    @abstractmethod
    def list_dir(self, key: str = "") -> list[str]:
        """The names directly under ``key`` (the root by default), sorted."""

    def walk(self, key: str = "") -> list[str]:
        """Every object's key under ``key`` (the whole dataset by default), sorted."""
        out: list[str] = []
        for name in self.list_dir(key):
            child = f"{key}/{name}" if key else name
            try:
                self.size(child)
                out.append(child)
            except (FileNotFoundError, IsADirectoryError):
                out += self.walk(child)
        return sorted(out)

    def tree_bytes(self, key: str) -> int:
        """The bytes stored under ``key`` (every object below it)."""
        total = 0
        for name in self.list_dir(key):
            child = f"{key}/{name}" if key else name
            try:
                total += self.size(child)
            except (FileNotFoundError, IsADirectoryError):
                total += self.tree_bytes(child)
        return total

    def exists(self, key: str) -> bool:
        try:
            self.size(key)
        except FileNotFoundError:
            return False
        return True

    # -- space, lock, durability ----------------------------------------------------------
    @abstractmethod
    def free_bytes(self) -> int:
        """Room left for the dataset."""

    def reserve(self, nbytes: int, name: str = RESERVE_NAME) -> None:
        """Set aside ``nbytes`` under ``name`` for writes that must still succeed when
        the medium is full; :meth:`free_reserve` gives it back (no-op without
        ``supports_reserve``)."""
        return None  # capability absent: nothing to do

    def free_reserve(self, name: str = RESERVE_NAME) -> None:
        """Give back a reserve (absent is fine)."""
        return None  # capability absent: nothing to do

    def take_lock(self) -> None:
        """Become the dataset's one writer, or raise FileExistsError (no-op without
        ``supports_locking``)."""
        return None  # capability absent: nothing to do

    def release_lock(self) -> None:
        """Let other writers in."""
        return None  # capability absent: nothing to do

    def flush(self) -> None:
        """Make everything written so far durable (with ``sync`` other than ``none``)."""
        return None  # capability absent: nothing to do
