"""The storage layer: every byte acqwriter puts on disk goes through here.

Two kinds of writes exist, with different guarantees:

* **chunks** (``write_chunk``): written once, straight to their final key. A chunk is
  only *referenced* once the array extent covers it, and the extent is only advanced
  after the chunk is written, so a torn chunk after a crash lies outside the extent.
* **metadata** (``write_atomic``): ``zarr.json`` documents and the per-frame metadata
  table are replaced atomically (write a temporary file in the same directory, then
  ``os.replace``), so a reader, or a crash, sees either the old or the new document,
  never half of one.

Durability follows :attr:`StreamSpec.sync`: ``"always"`` fsyncs each chunk before it
counts as durable and each metadata file and its directory on replace; ``"close"``
flushes the whole filesystem once when the stream closes (``syncfs``); ``"none"``
leaves it to the kernel.

Later back ends (direct I/O, object stores) implement the same small interface.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import fcntl
import mmap
import os
import shutil
import threading
from pathlib import Path

__all__ = ["LocalStore", "StorageError"]


DIRECT_ALIGN = 4096  # O_DIRECT alignment that satisfies 512-byte and 4K-sector devices
LOCK_NAME = ".acqwriter.lock"
RESERVE_NAME = ".acqwriter.reserve"  # freed at a failure: the final extent and metadata
FINAL_RESERVE_NAME = ".acqwriter.reserve-final"  # freed only for the root's final state


def private_memory(nbytes: int) -> mmap.mmap:
    """Page-aligned private anonymous memory, as O_DIRECT buffers need. (``mmap(-1, n)``
    alone is *shared* anonymous memory, i.e. shmem, whose page faults cost ~2× more.)"""
    return mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)


def address_of(buf: mmap.mmap) -> int:
    """The address of ``buf``'s first byte (for C calls that write into it)."""
    return ctypes.addressof(ctypes.c_char.from_buffer(buf))


def _try_lock(path: Path) -> int | None:
    """An exclusive flock on ``path`` (created if needed), or None if another holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def missing_parents(path: str | os.PathLike[str]) -> list[Path]:
    """The folders above ``path`` that do not exist yet, outermost first: a dataset's
    missing parent folders are created (and reported), by the CLI and the daemon alike."""
    missing = []
    parent = Path(path).absolute().parent
    while not parent.exists() and parent != parent.parent:
        missing.append(parent)
        parent = parent.parent
    return missing[::-1]


def writer_alive(root: Path) -> bool:
    """Whether a live process holds the dataset's writer lock (read-only: the lock file
    is neither created nor taken for longer than the probe)."""
    try:
        fd = os.open(Path(root) / LOCK_NAME, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing drops the probe's own lock
    return False


class StorageError(OSError):
    """A write to the dataset failed; the message names the key and the OS reason."""


class PartialAppend(StorageError):
    """An append failed after ``lines`` whole lines were written (and kept)."""

    def __init__(self, cause: OSError, key: str, lines: int) -> None:
        super().__init__(
            cause.errno or errno.EIO, f"cannot append to {key!r}: {cause.strerror or cause}"
        )
        self.lines = lines


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


class LocalStore:
    """A Zarr store rooted at a local directory, with atomic metadata replacement."""

    @classmethod
    def create(cls, root: str | os.PathLike[str], *, overwrite: bool, sync: str) -> LocalStore:
        """A new, empty, locked dataset directory. Replaces an existing *Zarr* directory
        only when ``overwrite`` and no live writer holds it; never deletes a file or a
        non-empty directory that is not Zarr."""
        out = Path(root)
        created = missing_parents(out)
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            # Two writers creating the same path at once (both with overwrite) take
            # turns: the second finds the first's lock, not a half-deleted directory.
            guard = _try_lock(out.parent / f".{out.name}.acqwriter-create")
        except OSError as exc:
            raise StorageError(
                exc.errno or errno.EIO, f"cannot create {str(out)!r}: {exc.strerror or exc}"
            ) from exc
        if guard is None:
            raise FileExistsError(f"{str(out)!r} is being written by another writer (locked)")
        try:
            lock_fd = cls._create_locked(out, overwrite)
        finally:
            with contextlib.suppress(OSError):
                (out.parent / f".{out.name}.acqwriter-create").unlink()
            os.close(guard)
        store = cls(out, sync=sync)
        store._lock_fd = lock_fd
        store.created_folders = [str(p) for p in created]
        return store

    @staticmethod
    def _create_locked(out: Path, overwrite: bool) -> int:
        """The body of :meth:`create`, under its guard: the new directory's lock fd."""
        if (out / LOCK_NAME).exists():
            probe = _try_lock(out / LOCK_NAME)
            if probe is None:
                raise FileExistsError(f"{str(out)!r} is being written by another writer (locked)")
            os.close(probe)
        if out.exists() or out.is_symlink():
            if not overwrite:
                raise FileExistsError(f"{str(out)!r} already exists (set overwrite to replace it)")
            if not out.is_dir() or out.is_symlink():
                raise FileExistsError(
                    f"{str(out)!r} exists and is not a directory; refusing to delete it"
                )
            if any(out.iterdir()) and not (out / "zarr.json").exists():
                raise FileExistsError(
                    f"{str(out)!r} is a non-empty directory that is not a Zarr dataset; "
                    "refusing to delete it even with overwrite"
                )
            shutil.rmtree(out)
        try:
            out.mkdir()
            lock_fd = _try_lock(out / LOCK_NAME)
            if lock_fd is None:
                raise FileExistsError(f"{str(out)!r} is being written by another writer (locked)")
        except FileExistsError:
            raise
        except OSError as exc:
            raise StorageError(
                exc.errno or errno.EIO, f"cannot create {str(out)!r}: {exc.strerror or exc}"
            ) from exc
        return lock_fd

    def __init__(self, root: str | os.PathLike[str], *, sync: str = "close") -> None:
        self.root = Path(root)
        self.sync = sync
        self._dirs: set[Path] = set()
        self._dirs_lock = threading.Lock()
        self._tmp_counter = 0
        self._lock_fd: int | None = None
        self.created_folders: list[str] = []  # parents that create() had to make
        self.direct = False  # chunk writes bypass the page cache (see enable_direct_io)
        self._aligned = threading.local()

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

    def scratch(self, size: int) -> tuple[mmap.mmap, int]:
        """This thread's page-aligned scratch buffer of at least ``size`` bytes (+ padding
        room for O_DIRECT) and its address: encoders compress straight into it and
        :meth:`write_chunk_from` writes it, with no copy in between."""
        need = -(-size // DIRECT_ALIGN) * DIRECT_ALIGN
        buf = getattr(self._aligned, "buf", None)
        if buf is None or len(buf) < need:
            if buf is not None:
                buf.close()
            buf = private_memory(max(need, 1 << 20))
            self._aligned.buf = buf
            self._aligned.address = address_of(buf)
        return buf, self._aligned.address

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
        fd = _try_lock(self.root / LOCK_NAME)
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

    def path(self, key: str) -> Path:
        return self.root / key

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

    def write_chunk(self, key: str, data: bytes | memoryview) -> int:
        """Write a chunk under ``key``; returns bytes written. fsyncs when sync='always'.
        (Copies ``data`` into the scratch buffer: for callers off the hot path, such as
        the pyramid; the stream encodes into the scratch buffer and skips the copy.)"""
        src = memoryview(data).cast("B")
        buf, _ = self.scratch(len(src))
        memoryview(buf)[: len(src)] = src
        return self.write_chunk_from(key, len(src))

    def write_chunk_from(self, key: str, n: int, buf: mmap.mmap | None = None) -> int:
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

    # -- shard files (acqwriter.shards.ShardWriter drives these) -------------------------
    def open_shard(self, key: str) -> int:
        """A new shard file under ``key``, opened for :meth:`write_segment`."""
        path = self.root / key
        try:
            self._ensure_dir(path.parent)
            flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | (os.O_DIRECT if self.direct else 0)
            return os.open(path, flags, 0o644)
        except OSError as exc:
            raise StorageError(
                exc.errno or errno.EIO, f"cannot write shard {key!r}: {exc.strerror or exc}"
            ) from exc

    def write_segment(self, fd: int, segment: mmap.mmap, n: int, offset: int) -> int:
        """Write ``segment[:n]`` at ``offset`` of a shard file; returns how far the file
        position advanced (``n`` padded to the O_DIRECT alignment when direct)."""
        padded = -(-n // DIRECT_ALIGN) * DIRECT_ALIGN if self.direct else n
        # the views are released even on error: a traceback kept with the stream's error
        # would otherwise pin an export of the segment and the pool could not unmap it
        with memoryview(segment) as whole, whole[:padded] as view:
            try:
                written = 0
                while written < padded:
                    with view[written:] as rest:
                        written += os.pwrite(fd, rest, offset + written)
            except OSError as exc:
                raise StorageError(
                    exc.errno or errno.EIO, f"cannot write shard data: {exc.strerror or exc}"
                ) from exc
        return padded

    def finish_shard(self, fd: int, end: int) -> None:
        """Cut a shard file at ``end`` (its index is the last bytes) and close it."""
        try:
            os.ftruncate(fd, end)
            if self.sync == "always":
                os.fsync(fd)
        except OSError as exc:
            raise StorageError(
                exc.errno or errno.EIO, f"cannot finish shard: {exc.strerror or exc}"
            ) from exc
        finally:
            os.close(fd)

    def publish(self, tmp_key: str, key: str) -> None:
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

    def append(self, key: str, data: bytes) -> None:
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

    def exists(self, key: str) -> bool:
        return (self.root / key).exists()

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
