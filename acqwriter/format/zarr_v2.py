"""Zarr v2 array metadata (``.zarray``), for datasets written as OME-NGFF 0.4.

The chunks are the same bytes as in Zarr v3 (a blosc or zstd frame, or raw): only the
description differs. Compressors are spelled as numcodecs configures them for Zarr v2
(``blosc`` with ``cname``/``clevel``/``shuffle``/``blocksize``, ``zstd`` with ``level``,
or none), C order, ``/`` as the dimension separator, the dtype in its byte-order string.
Zarr v2 has no sharding.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from acqwriter.codec.settings import SHUFFLE_IDS

if TYPE_CHECKING:
    from acqwriter.spec.model import StreamSpec

__all__ = ["array_metadata_v2"]


def _compressor(spec: StreamSpec) -> dict[str, Any] | None:
    codec = spec.codec
    if codec.name == "blosc":
        return {
            "id": "blosc",
            "cname": codec.cname,
            "clevel": codec.level,
            "shuffle": SHUFFLE_IDS[codec.shuffle],
            "blocksize": codec.block_bytes(),
        }
    if codec.name == "zstd":
        return {"id": "zstd", "level": codec.level}
    return None


def array_metadata_v2(
    spec: StreamSpec, shape: tuple[int, ...], chunks: tuple[int, ...]
) -> dict[str, Any]:
    """An array's ``.zarray`` as a dict (``shape`` is rewritten as the array grows)."""
    dtype = np.dtype(spec.dtype)
    return {
        "zarr_format": 2,
        "shape": list(shape),
        "chunks": list(chunks),
        "dtype": dtype.newbyteorder("<").str if dtype.itemsize > 1 else dtype.str,
        "compressor": _compressor(spec),
        "fill_value": 0.0 if dtype.kind == "f" else 0,
        "order": "C",
        "filters": None,
        "dimension_separator": "/",
    }
