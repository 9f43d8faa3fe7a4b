"""Where things live inside a dataset: the one place that spells keys.

Every key acqwriter reads or writes is built here, from the path of the array it
belongs to inside the dataset (``"0"`` for the full-resolution level of a one-image
dataset; ``"1"``, ``"2"`` … for its pyramid levels; another image of a collection or a
plate has its own prefix). Chunk keys follow Zarr v3's default encoding (``c/`` and
``/`` separators); a shard being written lives under a temporary name beside its key,
so the key itself never holds a torn shard.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "COLLECTION_OME_XML",
    "GROUP_METADATA",
    "LEVEL0",
    "ZATTRS",
    "ZGROUP",
    "ArrayKeys",
    "image_path",
    "level",
]

GROUP_METADATA = "zarr.json"  # the root group's document
ZGROUP = ".zgroup"  # a Zarr v2 group's marker (its attributes are in ``.zattrs``)
ZATTRS = ".zattrs"
COLLECTION_OME_XML = "OME/METADATA.ome.xml"  # a collection's OME-XML (bioformats2raw)
FRAME_METADATA_NAME = "frame_metadata.jsonl"  # one JSON line per frame, in the array's folder
PYRAMID_BUILD_LOG = ".acqwriter.pyramid.jsonl"  # a cluster pyramid build's finished tasks


@dataclass(frozen=True)
class ArrayKeys:
    """The keys of one array, given its path inside the dataset (and its Zarr version:
    v2 keeps its metadata in ``.zarray`` and its chunks right under its path)."""

    path: str
    zarr_format: int = 3

    @property
    def metadata(self) -> str:
        """The array's ``zarr.json`` (Zarr v2: ``.zarray``)."""
        return f"{self.path}/{'zarr.json' if self.zarr_format == 3 else '.zarray'}"

    @property
    def frame_metadata(self) -> str:
        """The array's per-frame metadata (JSON lines): inside the array's folder, which
        Zarr readers never list for members, so it stays with the image it describes."""
        return f"{self.path}/{FRAME_METADATA_NAME}"

    @property
    def chunks(self) -> str:
        """The folder under which every chunk (or shard) key of the array lies."""
        return f"{self.path}/c" if self.zarr_format == 3 else self.path

    def chunk(self, coords: Sequence[int]) -> str:
        """The key of the chunk (or shard) at grid ``coords`` (``/`` separators)."""
        return f"{self.chunks}/" + "/".join(str(int(i)) for i in coords)


def level(k: int, zarr_format: int = 3) -> ArrayKeys:
    """The keys of pyramid level ``k`` of a one-image dataset."""
    return ArrayKeys(str(k), zarr_format)


LEVEL0 = level(0)


def image_path(path: object) -> str:
    """An image's path as a dataset's root document names it, checked to stay inside the
    dataset: a relative path of plain names (``"0"``, ``"B/3/0"``), never absolute,
    never ``..`` or ``.``, no backslash or NUL. A document names paths for the tools
    that read it (``info``, ``pyramid``, ``recover``): one naming ``"../other"`` must not
    make them touch another dataset. Raises ValueError saying which path."""
    if not isinstance(path, str):
        raise ValueError(f"image path: expected a string, got {path!r}")
    if path == "":
        return path
    parts = path.split("/")
    if (
        path.startswith("/")
        or "\\" in path
        or "\0" in path
        or any(p in ("", ".", "..") for p in parts)
    ):
        raise ValueError(f"image path {path!r}: not a path inside the dataset; refused")
    return path
