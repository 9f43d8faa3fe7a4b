"""A store on a local (or mounted) filesystem: a dataset is a directory of files.

:class:`LocalStore` implements :class:`acqwriter.store.base.Store` with what a
filesystem offers: chunks written with O_DIRECT where the filesystem accepts it
(bypassing the page cache, whose write-back otherwise caps the rate), documents
replaced with a temporary file and ``os.replace``, an ``flock`` as the writer lock,
preallocated files as the space reserve, ``syncfs`` to make a stream durable at
close, and directory fsyncs with ``sync="always"``.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import mmap
import os
import shutil
import threading
from pathlib import Path
from typing import Any

from acqwriter.store.base import (
    FINAL_RESERVE_NAME,
    RESERVE_NAME,
    PartialAppend,
    ShardSink,
    StorageError,
    Store,
    in_progress_key,
)
from acqwriter.store.buffers import DIRECT_ALIGN, private_memory
from acqwriter.store.folders import (
    LOCK_NAME,
    missing_parents,
    nearest_existing,
    never_written,
    try_lock,
    writer_alive,
)

__all__ = [
    "FINAL_RESERVE_NAME",
    "LOCK_NAME",
    "RESERVE_NAME",
    "LocalStore",
    "StorageError",
    "missing_parents",
    "never_written",
    "writer_alive",
]


def _load_syncfs():
    # Python has no os.syncfs; libc's syncfs(2) flushes one filesystem instead of all
    # of them (os.sync), which matters on a shared acquisition PC. Linux only.
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        libc = ctypes.CDLL(name, use_errno=True)
        return libc.syncfs
    except (OSError, AttributeError):
        return None


_SYNCFS = _load_syncfs()


class LocalStore(Store):
    """A dataset in a local directory (see the module docstring)."""

    supports_direct_io = True
    supports_locking = True
    supports_reserve = True

    @staticmethod
    def free_bytes_at(path: str | os.PathLike[str]) -> tuple[Path, int]:
        """The nearest existing folder at or above ``path`` and its free bytes (a
        dataset's free space before its directory exists)."""
        where = nearest_existing(Path(path).resolve())
        return where, shutil.disk_usage(where).free

    def __init__(self, root: str | os.PathLike[str], *, sync: str = "close") -> None:
        super().__init__(sync=sync)
        self.root = Path(root)
        self._dirs: set[Path] = set()
        self._dirs_lock = threading.Lock()
        self._tmp_counter = 0
        self._lock_fd: int | None = None

    @property
    def location(self) -> str:
        return str(self.root)

    @property
    def write_alignment(self) -> int:
        return DIRECT_ALIGN if self.direct else 1

    # -- direct I/O ---------------------------------------------------------------------
    def enable_direct_io(self, mode: str) -> bool:
        """``"direct"``: chunk files are written with O_DIRECT (bypassing the page cache,
        whose write-back capped buffered writes at a fraction of the disk's bandwidth
        here); ``"auto"``: the same where the filesystem accepts O_DIRECT (not tmpfs),
        buffered otherwise; ``"buffered"``: never. Returns whether direct I/O is on."""
        if mode == "buffered" or not hasattr(os, "O_DIRECT"):
            if mode == "direct":
                raise StorageError(errno.EINVAL, "io: direct I/O is not available on this OS")
            return False
        probe = self.root / ".acqwriter.direct-probe"
        try:
            fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_DIRECT, 0o644)
            try:
                buf, _ = self.scratch(DIRECT_ALIGN)
                os.write(fd, memoryview(buf)[:DIRECT_ALIGN])
            finally:
                os.close(fd)
            self.direct = True
        except OSError as exc:
            if mode == "direct":
                raise StorageError(
                    exc.errno or errno.EINVAL,
                    f"io: this filesystem does not accept direct I/O ({exc.strerror or exc})",
                ) from exc
            self.direct = False
        finally:
            with contextlib.suppress(OSError):
                probe.unlink()
        return self.direct

    def _write_direct_aligned(self, path: Path, aligned: memoryview, n: int) -> int:
        """Write the first ``n`` bytes of page-aligned ``aligned`` (``n`` rounded up to the
        alignment is readable in it) with O_DIRECT; the padding is truncated away, so it
        is never zeroed."""
        padded = -(-n // DIRECT_ALIGN) * DIRECT_ALIGN
        aligned = aligned[:padded]
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_DIRECT, 0o644)
        try:
            written = 0
            while written < padded:
                written += os.write(fd, aligned[written:])
            os.ftruncate(fd, n)  # drop the alignment padding: the file is exactly the chunk
            if self.sync == "always":
                os.fsync(fd)
        finally:
            os.close(fd)
        return n

    # -- lock and reserve ---------------------------------------------------------------
    def take_lock(self) -> None:
        """Hold the writer lock of an existing dataset (a tool that rewrites it: pyramid,
        recover), or raise :class:`FileExistsError` naming the live writer's lock."""
        fd = try_lock(self.root / LOCK_NAME)
        if fd is None:
            raise FileExistsError(
                f"{str(self.root)!r} is being written by another process (it holds the "
                "writer lock); wait for it to finish or stop it first"
            )
        self._lock_fd = fd

    def release_lock(self) -> None:
        """Let other writers open this path (the lock also dies with the process)."""
        if self._lock_fd is not None:
            with contextlib.suppress(OSError):
                (self.root / LOCK_NAME).unlink()
            os.close(self._lock_fd)
            self._lock_fd = None

    def reserve(self, nbytes: int, name: str = RESERVE_NAME) -> None:
        """Set aside ``nbytes`` of disk (a real, allocated file) for the metadata writes
        that must still succeed when the disk fills up; :meth:`free_reserve` gives it back."""
        path = self.root / name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            try:
                os.posix_fallocate(fd, 0, nbytes)
            except OSError:  # filesystems without fallocate: write real bytes
                os.write(fd, b"\0" * nbytes)
        finally:
            os.close(fd)

    def free_reserve(self, name: str = RESERVE_NAME) -> None:
        with contextlib.suppress(OSError):
            (self.root / name).unlink()

    def free_bytes(self) -> int:
        return shutil.disk_usage(self.root).free

    def _ensure_dir(self, directory: Path) -> None:
        if directory in self._dirs:
            return
        if not self.root.is_dir():  # never silently recreate a dataset that was removed
            raise FileNotFoundError(errno.ENOENT, f"dataset directory {self.root} was removed")
        directory.mkdir(parents=True, exist_ok=True)
        with self._dirs_lock:
            self._dirs.add(directory)

    def _write_file(self, path: Path, data: bytes | memoryview, flags: int) -> int:
        """Write all of ``data`` to ``path`` (fsync when sync='always'); bytes written."""
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | flags, 0o644)
        try:
            view = memoryview(data).cast("B")
            written = 0
            while written < len(view):  # os.write may write less than asked
                written += os.write(fd, view[written:])
            if self.sync == "always":
                os.fsync(fd)
        finally:
            os.close(fd)
        return written

    def write_chunk_from(self, key: str, n: int, buf: Any = None) -> int:
        """Write the first ``n`` bytes of ``buf`` (page-aligned, e.g. from
        :func:`private_memory`; default this thread's :meth:`scratch` buffer) as chunk
        ``key`` (the zero-copy twin of :meth:`write_chunk`)."""
        path = self.root / key
        if buf is None:
            buf, _ = self.scratch(n)
        try:
            self._ensure_dir(path.parent)
            if self.direct:
                return self._write_direct_aligned(path, memoryview(buf), n)
            return self._write_file(path, memoryview(buf)[:n], os.O_TRUNC)
        except OSError as exc:
            with contextlib.suppress(OSError):
                path.unlink()  # no torn chunk left behind (it is outside the extent anyway)
            raise StorageError(
                exc.errno or errno.EIO, f"cannot write chunk {key!r}: {exc.strerror or exc}"
            ) from exc

    # -- shards -----------------------------------------------------------------------------
    def open_shard(self, key: str) -> ShardSink:
        """A new shard file, grown under a hidden name beside ``key`` (O_DIRECT when
        direct I/O is on) and renamed over it when finished."""
        tmp = in_progress_key(key)
        path = self.root / tmp
        try:
            self._ensure_dir(path.parent)
            flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | (os.O_DIRECT if self.direct else 0)
            fd = os.open(path, flags, 0o644)
        except OSError as exc:
            raise StorageError(
                exc.errno or errno.EIO, f"cannot write shard {key!r}: {exc.strerror or exc}"
            ) from exc
        from acqwriter.store.shard_files import ShardFile

        return ShardFile(self, key, tmp, fd)

    def _publish(self, tmp_key: str, key: str) -> None:
        """Rename ``tmp_key`` over ``key`` atomically (a finished shard replacing its
        sealed snapshot): readers see the old file or the new one, never a torn one."""
        try:
            os.replace(self.root / tmp_key, self.root / key)
            if self.sync == "always":
                self._fsync_dir((self.root / key).parent)
        except OSError as exc:
            raise StorageError(
                exc.errno or errno.EIO, f"cannot publish {key!r}: {exc.strerror or exc}"
            ) from exc

    def read_range(self, key: str, offset: int, n: int) -> bytes:
        """``n`` bytes of ``key`` from ``offset`` (through the page cache)."""
        if n == 0:
            return b""  # the file may not exist yet
        fd = os.open(self.root / key, os.O_RDONLY)
        try:
            out = bytearray()
            while len(out) < n:
                part = os.pread(fd, n - len(out), offset + len(out))
                if not part:
                    raise StorageError(errno.EIO, f"{key!r}: shorter than {offset + n} bytes")
                out += part
            return bytes(out)
        finally:
            os.close(fd)

    def write_atomic(self, key: str, data: bytes) -> None:
        """Replace ``key`` atomically with ``data`` (temp file + rename)."""
        path = self.root / key
        with self._dirs_lock:
            self._tmp_counter += 1
            tmp = path.with_name(f".{path.name}.{os.getpid()}.{self._tmp_counter}.tmp")
        try:
            self._ensure_dir(path.parent)
            self._write_file(tmp, data, os.O_TRUNC)
            os.replace(tmp, path)
            if self.sync == "always":
                self._fsync_dir(path.parent)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise StorageError(
                exc.errno or errno.EIO, f"cannot write {key!r}: {exc.strerror or exc}"
            ) from exc

    def append_lines(self, key: str, data: bytes) -> None:
        """Append ``data``, whole lines (per-frame metadata), to ``key``. A write that
        fails part-way (a full disk) is cut back to the last whole line, so the file
        never holds a torn line that later appends would bury in its middle; the
        :class:`PartialAppend` raised says how many lines did make it."""
        try:
            fd = os.open(self.root / key, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        except OSError as exc:
            raise PartialAppend(exc, key, 0) from exc
        try:
            before = os.fstat(fd).st_size
            view = memoryview(data).cast("B")
            written = 0
            try:
                while written < len(view):
                    written += os.write(fd, view[written:])
                if self.sync == "always":
                    os.fsync(fd)
            except OSError as exc:
                whole = bytes(view[:written]).rfind(b"\n") + 1
                with contextlib.suppress(OSError):  # shrinking needs no free space
                    os.ftruncate(fd, before + whole)
                    if self.sync == "always":
                        os.fsync(fd)
                raise PartialAppend(exc, key, bytes(view[:whole]).count(b"\n")) from exc
        finally:
            os.close(fd)

    def remove(self, key: str) -> None:
        """Delete the object ``key`` (a temporary shard given up); absent is fine."""
        with contextlib.suppress(FileNotFoundError):
            (self.root / key).unlink()

    def list_dir(self, key: str = "") -> list[str]:
        """The names directly under ``key`` (the dataset's root by default)."""
        folder = self.root / key if key else self.root
        try:
            return sorted(p.name for p in folder.iterdir())
        except FileNotFoundError:
            return []

    def remove_tree(self, key: str) -> None:
        """Delete ``key`` and everything under it (a pyramid level being rebuilt)."""
        shutil.rmtree(self.root / key, ignore_errors=True)
        with self._dirs_lock:
            self._dirs = {d for d in self._dirs if not d.is_relative_to(self.root / key)}

    def read_bytes(self, key: str) -> bytes:
        return (self.root / key).read_bytes()

    def read_into(self, key: str, buf: mmap.mmap | bytearray | None) -> memoryview:
        """The bytes of ``key`` read into ``buf``, or into a new buffer when ``buf`` is
        None or too small (``result.obj`` is the buffer to pass next time): a reader of
        many chunks reuses one buffer instead of faulting in fresh pages for each.

        With direct I/O on (:meth:`enable_direct_io`) the file is read with O_DIRECT
        into page-aligned memory: chunks written with O_DIRECT are not in the page
        cache, and reading them through it costs a page-cache fill and a copy per byte,
        kernel CPU that the pyramid's decoding and compressing need."""
        path = self.root / key
        fd = -1
        if self.direct:
            with contextlib.suppress(OSError):
                fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
        direct = fd >= 0
        if not direct:
            fd = os.open(path, os.O_RDONLY)
        try:
            size = os.fstat(fd).st_size
            room = -(-size // DIRECT_ALIGN) * DIRECT_ALIGN if direct else size
            if buf is None or len(buf) < room or (direct and not isinstance(buf, mmap.mmap)):
                buf = private_memory(max(room, DIRECT_ALIGN)) if direct else bytearray(size)
            view = memoryview(buf)
            done = 0
            while done < size:
                # O_DIRECT: whole aligned blocks; the last one comes back short at EOF
                n = os.readv(fd, [view[done:room]])
                if n == 0:
                    break
                done += n
            return view[: min(done, size)]
        finally:
            os.close(fd)

    def size(self, key: str) -> int:
        return (self.root / key).stat().st_size

    def walk(self, key: str = "") -> list[str]:
        base = self.root / key if key else self.root
        if base.is_file():
            return [key]
        return sorted(
            os.path.relpath(os.path.join(folder, name), self.root).replace(os.sep, "/")
            for folder, _, files in os.walk(base)
            for name in files
        )

    def tree_bytes(self, key: str) -> int:
        total = 0
        for folder, _, files in os.walk(self.root / key):
            total += sum(os.stat(os.path.join(folder, name)).st_size for name in files)
        return total

    def flush(self) -> None:
        """Make everything written so far durable (used at close when sync != 'none')."""
        if self.sync == "none":
            return
        fd = os.open(self.root, os.O_RDONLY)
        try:
            if _SYNCFS is None or _SYNCFS(fd) != 0:
                os.sync()
        finally:
            os.close(fd)

    @staticmethod
    def _fsync_dir(directory: Path) -> None:
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
