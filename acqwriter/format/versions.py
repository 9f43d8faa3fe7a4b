"""Which OME-NGFF and Zarr versions a dataset is written in, and the one place that
turns a group's metadata into the files of that version and back.

A group's metadata is built once, in no version's spelling
(:class:`~acqwriter.format.model.GroupMetadata`); each version renders and parses it
(:mod:`acqwriter.format.ngff_v04`, ``ngff_v05``, ``ngff_v06``). 0.5 and 0.6 live in
Zarr v3: the attributes go into ``zarr.json``. 0.4 lives in Zarr v2: the attributes go
to ``.zattrs`` beside a ``.zgroup``, and an array's metadata is ``.zarray``
(:mod:`acqwriter.format.zarr_v2`). Readers go the other way (:func:`read_group`), so
the offline tools see one description of a group whatever its version.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from types import ModuleType
from typing import TYPE_CHECKING, Any

from acqwriter.format import ngff_v04, ngff_v05, ngff_v06
from acqwriter.format.keys import GROUP_METADATA, ZATTRS, ZGROUP, ArrayKeys
from acqwriter.format.model import GroupMetadata
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
    "group_files",
    "read_group",
    "stored_version",
    "write_attributes",
    "write_group",
]

# the Zarr version each OME-NGFF version is stored in, and its renderer and parser
ZARR_FORMAT = {"0.4": 2, "0.5": 3, "0.6": 3}
_SPELLING: dict[str, ModuleType] = {"0.4": ngff_v04, "0.5": ngff_v05, "0.6": ngff_v06}
_ON_DISK = {"0.6rc0": "0.6"}  # version strings read as the version they name


def array_keys(path: str, ngff_version: str = "0.5") -> ArrayKeys:
    """The keys of the array at ``path`` in a dataset of ``ngff_version``."""
    return ArrayKeys(path, ZARR_FORMAT[ngff_version])


def _base(prefix: str) -> str:
    return f"{prefix.rstrip('/')}/" if prefix else ""


def attribute_files(
    attributes: dict[str, Any], ngff_version: str, prefix: str = ""
) -> list[tuple[str, bytes]]:
    """(key, bytes) of a group's attributes as ``ngff_version`` stores them:
    ``zarr.json`` itself, or for 0.4 ``.zattrs`` then ``.zgroup`` (each replaced
    atomically; the attributes first, so a group is never listed with attributes of
    another time)."""
    base = _base(prefix)
    if ZARR_FORMAT[ngff_version] == 3:
        doc = {"zarr_format": 3, "node_type": "group", "attributes": attributes}
        return [(f"{base}{GROUP_METADATA}", json.dumps(doc, indent=2, allow_nan=False).encode())]
    attrs = json.dumps(attributes, indent=2, allow_nan=False).encode()
    return [(f"{base}{ZATTRS}", attrs), (f"{base}{ZGROUP}", b'{\n  "zarr_format": 2\n}')]


def group_files(
    group: GroupMetadata, ngff_version: str, prefix: str = ""
) -> list[tuple[str, bytes]]:
    """(key, bytes) to write for ``group`` in ``ngff_version``."""
    attributes = _SPELLING[ngff_version].render_group(group)
    return attribute_files(attributes, ngff_version, prefix)


def write_group(
    write: Callable[[str, bytes], None], group: GroupMetadata, ngff_version: str, prefix: str = ""
) -> None:
    """Write ``group`` as ``ngff_version`` stores it, through ``write(key, data)`` (a
    store's atomic write)."""
    for key, data in group_files(group, ngff_version, prefix):
        write(key, data)


def write_attributes(
    write: Callable[[str, bytes], None],
    attributes: dict[str, Any],
    ngff_version: str,
    prefix: str = "",
) -> None:
    """Write a group's attributes as they were read (:func:`read_stored`), in the
    version they were read in: a rewrite that changes only our own entries."""
    for key, data in attribute_files(attributes, ngff_version, prefix):
        write(key, data)


def read_stored(read: Callable[[str], bytes], prefix: str = "") -> tuple[str, dict[str, Any]]:
    """(version, attributes as stored) of the group at ``prefix``, from ``zarr.json``
    (0.5, 0.6: the version its ``ome`` entry names) or ``.zattrs`` (0.4). ``read(key)``
    returns a file's bytes or raises FileNotFoundError."""
    base = _base(prefix)
    try:
        attributes = json.loads(read(f"{base}{GROUP_METADATA}"))["attributes"]
    except FileNotFoundError:
        pass
    else:
        ome = attributes.get("ome")
        version = ome.get("version") if isinstance(ome, dict) else None
        version = _ON_DISK.get(version, version)
        return (version if version in _SPELLING and version != "0.4" else "0.5"), attributes
    try:
        return "0.4", json.loads(read(f"{base}{ZATTRS}"))
    except FileNotFoundError:
        raise FileNotFoundError(f"no zarr.json or .zattrs at {prefix or 'the root'!r}") from None


def read_group(read: Callable[[str], bytes], prefix: str = "") -> GroupMetadata:
    """The group at ``prefix``, parsed from the version it is stored in."""
    version, attributes = read_stored(read, prefix)
    return _SPELLING[version].parse_group(attributes)


def stored_version(read: Callable[[str], bytes], prefix: str = "") -> str:
    """The OME-NGFF version the group at ``prefix`` is stored in. Raises
    FileNotFoundError when it has no group metadata."""
    return read_stored(read, prefix)[0]


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
