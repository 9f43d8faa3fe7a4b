"""A store in an object store (S3 and S3-compatible: MinIO, Ceph, cloud buckets), through
obstore, the binding of Rust's ``object_store`` that zarr-python's ``ObjectStore`` wraps
(signing, retries with backoff, multipart uploads and the AWS credential chain are its).

How each kind of write of :mod:`acqwriter.store.base` maps onto objects, which are
written whole and never renamed or appended to:

* **chunks** and **documents**: one PUT each. A PUT is atomic (a reader sees the old
  object or the new one), so a document needs no temporary key.
* **shards**: streamed to their key as multipart uploads while they are written (parts
  of at least 5 MiB but the last); the object appears whole when the upload completes,
  so there is no temporary key and no copy (:mod:`acqwriter.store.object_shards` also
  says how a seal works without holding the shard). An upload a killed writer left
  behind holds no object; ``recover`` aborts it.
* **lines**: an object cannot grow, so a line log is a sequence of objects: ``KEY``,
  then ``KEY.1``, ``KEY.2``, … each of whole lines (a new one begins where the last
  would pass :data:`LOG_SEGMENT_BYTES`); an append PUTs the last one again with the new
  lines (a reader sees every line of an append or none). The records are the
  concatenation of the segments in that order (:meth:`ObjectStore.read_lines`); only the
  last segment is held in memory, and an append uploads at most one segment.

Capabilities: no direct I/O, no reserve (a bucket's room is its quota, which S3 does not
tell: :meth:`ObjectStore.free_bytes` is unbounded), and a lock that is an object created
only if absent and kept alive by its writer (:mod:`acqwriter.store.object_lock`).
"""

from __future__ import annotations

import errno
import os
import re
import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from acqwriter.store.base import ShardSink, StorageError, Store
from acqwriter.store.object_lock import LOCK_NAME, ObjectLock

__all__ = ["LOCK_NAME", "ObjectStore"]

# a line log's segment: what an append uploads and the store holds, at most
LOG_SEGMENT_BYTES = 1 << 20
# Transient errors (a dropped connection, a 5xx, a throttled request) are retried with
# exponential backoff for up to a minute before a write fails and stops the stream (the
# ring absorbs the frames meanwhile; ``overflow`` decides when it is full); the retry
# count is high enough that the minute, not the count, ends the retries
RETRY = {
    "max_retries": 100,
    "retry_timeout": timedelta(seconds=60),
    "backoff": {
        "init_backoff": timedelta(milliseconds=100),
        "max_backoff": timedelta(seconds=8),
        "base": 2,
    },
}
# A new dataset's first request (is the bucket there, are the credentials good) gives up
# sooner: nothing is at stake yet and the user is waiting for the acquisition to start
PROBE_RETRY = {**RETRY, "max_retries": 4, "retry_timeout": timedelta(seconds=10)}


class ObjectStore(Store):
    """A dataset under a prefix of a bucket (see the module docstring). ``store``: an
    obstore store rooted at the dataset (``obstore.store.from_url("s3://bucket/run")``);
    ``location``: its URL, for messages (never with credentials)."""

    supports_locking = True
    supports_cheap_ranges = False  # every read is a request to the server

    def __init__(
        self,
        store: Any,
        location: str,
        *,
        sync: str = "close",
        options: dict[str, str] | None = None,
        retry_s: float = 60.0,
    ) -> None:
        super().__init__(sync=sync)
        self._store = store
        self._retry_s = retry_s  # how long a write the client did not retry is retried
        self._location = location
        self._options = dict(options or {})  # for boto3 (abort_uploads); never shown
        self._logs: dict[str, _Log] = {}  # each line log's last segment
        self._logs_lock = threading.Lock()
        self._lock: ObjectLock | None = None  # held while writing (take_lock)

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        sync: str = "close",
        options: dict[str, str] | None = None,
        retry: dict[str, Any] | None = None,
    ) -> ObjectStore:
        """The dataset at ``url`` (``s3://bucket/prefix``). Credentials, region and
        endpoint come from the standard AWS environment variables and config files, and
        from ``options`` (obstore's config keys: ``endpoint``, ``region``,
        ``access_key_id``, …), which win. An ``http://`` endpoint (a server on the lab's
        network) is allowed as such. ``retry_timeout_s`` in ``options`` sets how long
        transient errors are retried before a write fails (default 60)."""
        from obstore.store import from_url

        config = dict(options or {})
        policy = dict(retry or RETRY)
        if "retry_timeout_s" in config:
            policy["retry_timeout"] = timedelta(seconds=_seconds(config.pop("retry_timeout_s")))
        endpoint = config.get("endpoint") or os.environ.get("AWS_ENDPOINT_URL", "")
        client = {"allow_http": True} if endpoint.startswith("http://") else {}
        store = from_url(
            url,
            config=config or None,
            client_options=client or None,
            retry_config=policy,  # type: ignore[arg-type]
        )
        timeout = policy["retry_timeout"].total_seconds()
        return cls(store, url, sync=sync, options=config, retry_s=timeout)

    @property
    def location(self) -> str:
        return self._location

    def _error(self, exc: Exception, what: str, key: str, retried: int = 0) -> OSError:
        where = f"{self._location}/{key}" if key else self._location
        if isinstance(exc, FileNotFoundError) and "NoSuchBucket" not in str(exc):
            return FileNotFoundError(errno.ENOENT, f"{where}: not found")
        return StorageError(errno.EIO, f"cannot {what} {where}: {_reason(exc, retried)}")

    def _put(self, key: str, data: Any, **kw: Any) -> None:
        import obstore

        start, attempt = time.monotonic(), 0
        while True:
            if self._lock is not None and self._lock.lost:  # another writer took over
                raise StorageError(errno.EPERM, self._lock.lost)
            try:
                obstore.put(self._store, key, data, **kw)
                return
            except Exception as exc:
                # A request that failed while being sent on a pooled connection is not
                # retried by the client (it may have reached the server); a whole-object
                # PUT is idempotent, so it is retried here for the same time limit.
                unsent = not kw and _UNSENT.search(str(exc))
                if not unsent or time.monotonic() - start >= self._retry_s:
                    raise self._error(exc, "write", key, attempt) from exc
            attempt += 1
            time.sleep(min(8.0, 0.1 * 2**attempt))

    # -- writes -------------------------------------------------------------------------
    def write_chunk_from(self, key: str, n: int, buf: Any = None) -> int:
        if buf is None:
            buf, _ = self.scratch(n)
        # a copy: obstore keeps an export of a buffer it is given (zero-copy into its
        # request), and this thread's scratch buffer takes the next chunk at once
        self._put(key, bytes(memoryview(buf)[:n]))
        return n

    def open_shard(self, key: str) -> ShardSink:
        from acqwriter.store.object_shards import ObjectShard

        return ObjectShard(self, key)

    def write_atomic(self, key: str, data: bytes) -> None:
        self._put(key, bytes(data))

    def append_lines(self, key: str, data: bytes) -> None:
        with self._logs_lock:
            log = self._logs.get(key)
            if log is None:  # a log this store did not start: continue after its segments
                segments = self._segments(key)
                last = segments[-1] if segments else key
                log = _Log(len(segments[:-1]), bytearray(self._read_or_empty(last)))
                self._logs[key] = log
            if log.data and len(log.data) + len(data) > LOG_SEGMENT_BYTES:
                log.number, log.data = log.number + 1, bytearray()
            name = key if log.number == 0 else f"{key}.{log.number}"
            self._put(name, bytes(log.data) + bytes(data))  # whole lines or none
            log.data += data

    def remove_lines(self, key: str) -> None:
        """Every segment of the log, the last first (each step leaves a prefix)."""
        for name in reversed(self._segments(key)):
            self.remove(name)
        with self._logs_lock:
            self._logs.pop(key, None)  # the next append starts a new log

    def read_lines(self, key: str) -> bytes:
        """A line log whole: its segments, in order (FileNotFoundError when absent)."""
        segments = self._segments(key)
        if not segments:
            raise FileNotFoundError(errno.ENOENT, f"{self._location}/{key}: not found")
        return b"".join(self.read_bytes(name) for name in segments)

    def _segments(self, key: str) -> list[str]:
        """The objects of the line log ``key``, in order."""
        folder, _, name = key.rpartition("/")
        found = self.list_dir(folder)
        numbers = sorted(
            int(n[len(name) + 1 :])
            for n in found
            if n.startswith(name + ".") and n[len(name) + 1 :].isdigit()
        )
        first = [key] if name in found else []
        return first + [f"{key}.{n}" for n in numbers]

    def _read_or_empty(self, key: str) -> bytes:
        try:
            return self.read_bytes(key)
        except FileNotFoundError:
            return b""

    def remove(self, key: str) -> None:
        import obstore

        try:
            obstore.delete(self._store, key)
        except FileNotFoundError:
            pass
        except Exception as exc:
            raise self._error(exc, "delete", key) from exc

    def remove_tree(self, key: str) -> None:
        import obstore

        prefix = key.rstrip("/")
        paths = [prefix] if prefix else []  # "": everything under the dataset's prefix
        paths += [
            meta["path"]
            for batch in obstore.list(self._store, prefix=prefix + "/" if prefix else None)
            for meta in batch
        ]
        for path in paths:
            self.remove(path)

    # -- reads --------------------------------------------------------------------------
    def read_bytes(self, key: str) -> bytes:
        import obstore

        try:
            return bytes(obstore.get(self._store, key).bytes())
        except Exception as exc:
            raise self._error(exc, "read", key) from exc

    def read_range(self, key: str, offset: int, n: int) -> bytes:
        import obstore

        if n == 0:
            return b""
        try:
            data = bytes(obstore.get_range(self._store, key, start=offset, length=n))
        except Exception as exc:
            raise self._error(exc, "read", key) from exc
        if len(data) != n:
            raise StorageError(errno.EIO, f"{self._location}/{key}: shorter than {offset + n}")
        return data

    def size(self, key: str) -> int:
        import obstore

        try:
            return int(obstore.head(self._store, key)["size"])
        except Exception as exc:
            raise self._error(exc, "read", key) from exc

    def walk(self, key: str = "") -> list[str]:
        import obstore

        prefix = key.rstrip("/")
        try:
            found = [
                meta["path"]
                for batch in obstore.list(self._store, prefix=prefix + "/" if prefix else None)
                for meta in batch
            ]
        except Exception as exc:
            raise self._error(exc, "list", key) from exc
        return sorted(found)

    def truncate_lines(self, key: str, nbytes: int) -> None:
        """Cut a line log after ``nbytes``: the segments past the cut go, last first,
        then the segment holding the cut is rewritten; each step leaves a prefix."""
        segments = self._segments(key)
        sizes = [self.size(name) for name in segments]
        start = 0
        for i, (name, size) in enumerate(zip(segments, sizes, strict=True)):
            if start + size >= nbytes:
                for later in reversed(segments[i + 1 :]):
                    self.remove(later)
                if start + size > nbytes:
                    self._put(name, self.read_bytes(name)[: nbytes - start])
                break
            start += size
        with self._logs_lock:
            self._logs.pop(key, None)  # the next append starts from what is stored

    def abort_uploads(self) -> int:
        """Abort the multipart uploads left under the dataset's prefix (a writer killed
        while a shard streamed). obstore does not list uploads, so this goes through
        boto3, with the same AWS environment."""
        try:
            import boto3
        except ImportError as exc:
            raise StorageError(
                errno.ENOSYS, "aborting uploads needs boto3 (pip install 'acqwriter[s3]')"
            ) from exc
        bucket, _, prefix = self._location.removeprefix("s3://").partition("/")
        options = {k: v for k, v in self._options.items() if k in _BOTO3_OPTIONS}
        client = boto3.client("s3", **{_BOTO3_OPTIONS[k]: v for k, v in options.items()})
        prefix = prefix.rstrip("/") + "/" if prefix else ""
        aborted = 0
        try:
            pages = client.get_paginator("list_multipart_uploads")
            for page in pages.paginate(Bucket=bucket, Prefix=prefix):
                for upload in page.get("Uploads", []):
                    client.abort_multipart_upload(
                        Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                    )
                    aborted += 1
        except Exception as exc:
            raise StorageError(
                errno.EIO, f"cannot abort the uploads under {self._location}: {_reason(exc)}"
            ) from exc
        return aborted

    def tree_bytes(self, key: str) -> int:
        import obstore

        prefix = key.rstrip("/")
        try:
            return sum(
                meta["size"]
                for batch in obstore.list(self._store, prefix=prefix + "/" if prefix else None)
                for meta in batch
            )
        except Exception as exc:
            raise self._error(exc, "list", key) from exc

    def list_dir(self, key: str = "") -> list[str]:
        import obstore

        prefix = key.rstrip("/")
        try:
            found = obstore.list_with_delimiter(self._store, prefix or None)
        except Exception as exc:
            raise self._error(exc, "list", key) from exc
        names = {p.rstrip("/").rsplit("/", 1)[-1] for p in found["common_prefixes"]}
        names |= {m["path"].rsplit("/", 1)[-1] for m in found["objects"]}
        return sorted(names)

    # -- space, lock ----------------------------------------------------------------------
    def free_bytes(self) -> int:
        return 1 << 62  # a bucket's quota is not told: a full one fails a write instead

    def take_lock(self) -> None:
        """Hold the dataset's lock object (:mod:`acqwriter.store.object_lock`), taking
        over a dead writer's; FileExistsError naming a live one."""
        from acqwriter.store.object_lock import ObjectLock

        lock = ObjectLock(self._store, self._location)
        try:
            lock.take()
        except FileExistsError:
            raise
        except Exception as exc:
            raise self._error(exc, "lock", LOCK_NAME) from exc
        self._lock = lock

    def writer_alive(self) -> str:
        """Who holds the dataset's lock, when that writer may be alive ("" when none)."""
        from acqwriter.store.object_lock import live_holder

        try:
            return live_holder(self._store)
        except Exception as exc:
            raise self._error(exc, "read", LOCK_NAME) from exc

    def release_lock(self) -> None:
        lock, self._lock = self._lock, None
        if lock is not None:
            lock.release()


# obstore's config keys that boto3 takes, with boto3's names
_BOTO3_OPTIONS = {
    "endpoint": "endpoint_url",
    "region": "region_name",
    "access_key_id": "aws_access_key_id",
    "secret_access_key": "aws_secret_access_key",
    "session_token": "aws_session_token",
}


@dataclass
class _Log:
    """The last segment of a line log: its number (0: the log's own key) and bytes."""

    number: int
    data: bytearray


def _seconds(text: object) -> float:
    """``storage_options.retry_timeout_s``: seconds, 1 to 3600."""
    try:
        value = float(str(text))
    except ValueError:
        value = float("nan")
    if not 1 <= value <= 3600:
        raise StorageError(
            errno.EINVAL,
            f"storage_options.retry_timeout_s: expected seconds from 1 to 3600, got {text!r}",
        )
    return value


# a request that failed while being sent, which the client did not retry
_UNSENT = re.compile(r"performing \w+ (\w+://[^/?\s]+)\S* in [^,]* - HTTP error: error sending")


def _reason(exc: Exception, retried: int = 0) -> str:
    """One line saying why a request failed: the server's error code and message when
    it sent them (S3's XML error), else the first line of the client's. ``retried``:
    the retries made here on top of the client's."""
    text = str(exc)
    refused = re.search(r"Os \{\s*code: \d+,\s*kind: \w+,\s*message: \"([^\"]*)\"", text)
    retries = re.search(r"performing \w+ (\w+://[^/?\s]+)\S* in [^,]*, after (\d+) retries", text)
    if retries:
        why = refused.group(1).lower() if refused else "no answer"
        count = int(retries.group(2)) + retried
        return f"{retries.group(1)}: {why} (gave up after {count} retries)"
    unsent = _UNSENT.search(text)
    if unsent:
        return f"{unsent.group(1)}: no answer (gave up after {retried} retries)"
    code = re.search(r"<Code>([^<]*)</Code>", text)
    if code:
        message = re.search(r"<Message>([^<]*)</Message>", text)
        return code.group(1) + (f" ({message.group(1)})" if message else "")
    status = re.search(r"status code: (\d+)", text)
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    if status:
        return f"HTTP {status.group(1)}: {first[:160]}"
    return first[:200]
