"""Where a dataset's bytes go: the :class:`Store` interface and its implementations.

``base`` defines the interface (no files or descriptors in it), ``local`` the
filesystem store every acquisition uses, ``memory`` an in-memory store, ``prefixed`` an
image's view of its dataset's store, ``buffers`` the page-aligned memory that chunks
are written from, ``folders`` the rules of dataset folders (what may be replaced, the
writer lock, missing parents), ``objects`` (with ``object_shards`` and ``object_lock``)
the store in an S3 bucket, ``create`` a new dataset's store and ``existing``
(:func:`open_store`) an existing dataset's, from a path or an ``s3://`` URL.
"""

from acqwriter.store.base import PartialAppend, ShardSink, StorageError, Store
from acqwriter.store.existing import open_store
from acqwriter.store.local import LocalStore
from acqwriter.store.memory import MemoryStore

__all__ = [
    "LocalStore",
    "MemoryStore",
    "PartialAppend",
    "ShardSink",
    "StorageError",
    "Store",
    "open_store",
]
