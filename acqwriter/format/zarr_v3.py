"""Zarr v3 array documents and the ``sharding_indexed`` shard format.

:func:`array_metadata` builds an array's ``zarr.json`` key for key as zarr-python's
``create_array`` writes it (the tests compare them) without importing zarr on the hot
path; :func:`encode_array_metadata` rewrites only its ``shape`` as the array grows.
A shard is its inner chunks followed by an index of ``(offset, nbytes)`` uint64 pairs
and the index's crc32c (index at the end, zarr-python's default), so every Zarr v3
reader (zarr-python, tensorstore) reads what :mod:`acqwriter.engine.shards` writes
(:func:`acqwriter.post.reader.read_inner_chunk` reads one inner chunk back).
"""

from __future__ import annotations

import json
import struct
from typing import TYPE_CHECKING, Any

import google_crc32c
import numpy as np

from acqwriter.codec.chain import codec_chain, sharding_codec

if TYPE_CHECKING:
    from acqwriter.spec.model import StreamSpec

__all__ = [
    "EMPTY",
    "array_metadata",
    "decode_index",
    "encode_array_metadata",
    "encode_index",
    "index_nbytes",
]

EMPTY = 2**64 - 1  # index entry of an inner chunk that was never written (reads as fill)


def encode_index(entries: np.ndarray) -> bytes:
    """The shard index as stored: (offset, nbytes) uint64 little endian, then crc32c."""
    body = np.ascontiguousarray(entries, dtype="<u8").tobytes()
    return body + struct.pack("<I", google_crc32c.value(body))


def index_nbytes(n_inner: int) -> int:
    return 16 * n_inner + 4


def decode_index(tail: bytes, n_inner: int) -> np.ndarray | None:
    """The (n_inner, 2) index from a shard's last :func:`index_nbytes` bytes, or None if
    it is torn (length or checksum)."""
    if len(tail) != index_nbytes(n_inner):
        return None
    body, crc = tail[:-4], struct.unpack("<I", tail[-4:])[0]
    if google_crc32c.value(body) != crc:
        return None
    return np.frombuffer(body, "<u8").reshape(n_inner, 2)


def array_metadata(
    spec: StreamSpec,
    shape: tuple[int, ...],
    chunks: tuple[int, ...],
    shards: tuple[int, ...] | None = None,
) -> dict[str, Any]:
    """A level's Zarr v3 array ``zarr.json`` as a dict, key for key what zarr-python's
    ``create_array`` writes (the tests check it) without importing zarr on the hot path.

    With ``shards``, ``chunks`` are the inner chunks of a ``sharding_indexed`` codec
    (zarr-python's defaults: index at the end, crc32c), as :mod:`acqwriter.engine.shards` writes.
    """
    dtype = np.dtype(spec.dtype)
    codecs = codec_chain(spec.codec, dtype)
    if shards is not None:
        codecs = [sharding_codec(chunks, codecs)]
    return {
        "shape": list(shape),
        "data_type": dtype.name,
        "chunk_grid": {
            "name": "regular",
            "configuration": {"chunk_shape": list(shards if shards is not None else chunks)},
        },
        "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
        "fill_value": 0.0 if dtype.kind == "f" else 0,
        "codecs": codecs,
        "attributes": {},
        "dimension_names": list(spec.dims),
        "zarr_format": 3,
        "node_type": "array",
        "storage_transformers": [],
    }


def encode_array_metadata(meta: dict[str, Any], shape: tuple[int, ...]) -> bytes:
    meta = dict(meta)
    meta["shape"] = list(shape)
    return json.dumps(meta, indent=2, allow_nan=False).encode()
