"""Which OME-NGFF and Zarr versions a dataset is written in, and the one place that
turns a document into the files of that version.

Every document is built once, in its OME-NGFF 0.5 / Zarr v3 form (``format.ngff_v05``,
``format.zarr_v3``). A dataset written as OME-NGFF 0.4 on Zarr v2 stores the same
content as Zarr v2 files: a group's attributes go to ``.zattrs`` beside a ``.zgroup``,
with the 0.4 spelling (``multiscales``, ``omero``, ``plate``, ``well``,
``bioformats2raw.layout`` and ``series`` at the top of the attributes, the version
inside each multiscale, plate and well); an array's metadata is ``.zarray``
(:mod:`acqwriter.format.zarr_v2`). Readers go the other way
(:func:`read_attributes`), so the offline tools see one shape of document whatever the
version.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from acqwriter.format.keys import GROUP_METADATA, ZATTRS, ZGROUP, ArrayKeys
from acqwriter.format.zarr_v2 import array_metadata_v2
from acqwriter.format.zarr_v3 import array_metadata
from acqwriter.spec.model import NGFF_VERSIONS

if TYPE_CHECKING:
    from acqwriter.spec.model import StreamSpec

__all__ = [
    "NGFF_VERSIONS",
    "ZARR_FORMAT",
    "array_document",
    "array_keys",
    "group_document",
    "group_files",
    "read_attributes",
    "stored_version",
    "write_group",
]

ZARR_FORMAT = {"0.4": 2, "0.5": 3}  # the Zarr version each OME-NGFF version is stored in
_V04_VERSIONED = ("plate", "well")  # 0.4 objects that carry their own version


def array_keys(path: str, ngff_version: str = "0.5") -> ArrayKeys:
    """The keys of the array at ``path`` in a dataset of ``ngff_version``."""
    return ArrayKeys(path, ZARR_FORMAT[ngff_version])


def _to_v04(attributes: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in attributes.items() if k != "ome"}
    ome = dict(attributes.get("ome") or {})
    ome.pop("version", None)
    for key, value in ome.items():
        if key == "multiscales":
            value = [{"version": "0.4", **m} for m in value]
        elif key in _V04_VERSIONED:
            value = {**value, "version": "0.4"}
        out[key] = value
    return out


def _from_v04(attributes: dict[str, Any]) -> dict[str, Any]:
    own = ("multiscales", "omero", "plate", "well", "bioformats2raw.layout", "series")
    ome: dict[str, Any] = {"version": "0.4"}
    out: dict[str, Any] = {}
    for key, value in attributes.items():
        if key in own:
            ome[key] = value
        else:
            out[key] = value
    return {"ome": ome, **out}


def group_files(document: bytes, ngff_version: str, prefix: str = "") -> list[tuple[str, bytes]]:
    """(key, bytes) to write for a group document built in its 0.5 form: ``zarr.json``
    itself, or for 0.4 ``.zattrs`` then ``.zgroup`` (each replaced atomically; the
    attributes first, so a group is never listed with attributes of another time)."""
    base = f"{prefix.rstrip('/')}/" if prefix else ""
    if ZARR_FORMAT[ngff_version] == 3:
        return [(f"{base}zarr.json", document)]
    attributes = json.loads(document)["attributes"]
    attrs = json.dumps(_to_v04(attributes), indent=2, allow_nan=False).encode()
    return [(f"{base}{ZATTRS}", attrs), (f"{base}{ZGROUP}", b'{\n  "zarr_format": 2\n}')]


def group_document(attributes: dict[str, Any]) -> bytes:
    """A group's document in its 0.5 form (``write_group`` stores it as a version
    asks)."""
    doc = {"zarr_format": 3, "node_type": "group", "attributes": attributes}
    return json.dumps(doc, indent=2, allow_nan=False).encode()


def stored_version(exists: Callable[[str], bool], prefix: str = "") -> str:
    """The OME-NGFF version the group at ``prefix`` is stored in, from its files:
    ``zarr.json`` is Zarr v3 (0.5), ``.zattrs`` Zarr v2 (0.4). ``exists(key)``: whether
    the store has that key. Raises FileNotFoundError when it has neither."""
    base = f"{prefix.rstrip('/')}/" if prefix else ""
    if exists(f"{base}{GROUP_METADATA}"):
        return "0.5"
    if exists(f"{base}{ZATTRS}"):
        return "0.4"
    raise FileNotFoundError(f"no zarr.json or .zattrs at {prefix or 'the root'!r}")


def read_attributes(read: Callable[[str], bytes], prefix: str = "") -> dict[str, Any]:
    """A group's attributes in their 0.5 shape, from ``zarr.json`` or (0.4) ``.zattrs``.
    ``read(key)`` returns a file's bytes or raises FileNotFoundError."""
    base = f"{prefix.rstrip('/')}/" if prefix else ""
    try:
        return json.loads(read(f"{base}zarr.json"))["attributes"]
    except FileNotFoundError:
        pass
    try:
        attributes = json.loads(read(f"{base}.zattrs"))
    except FileNotFoundError:
        raise FileNotFoundError(f"no zarr.json or .zattrs at {prefix or 'the root'!r}") from None
    return _from_v04(attributes)


def write_group(
    write: Callable[[str, bytes], None], document: bytes, ngff_version: str, prefix: str = ""
) -> None:
    """Write a group document (built in its 0.5 form) as ``ngff_version`` stores it,
    through ``write(key, data)`` (a store's atomic write)."""
    for key, data in group_files(document, ngff_version, prefix):
        write(key, data)


def array_document(
    spec: StreamSpec,
    shape: tuple[int, ...],
    chunks: tuple[int, ...],
    shards: tuple[int, ...] | None = None,
) -> dict[str, Any]:
    """An array's metadata document in the spec's version (Zarr v2 has no shards)."""
    if ZARR_FORMAT[spec.ngff_version] == 2:
        return array_metadata_v2(spec, shape, chunks)
    return array_metadata(spec, shape, chunks, shards)
