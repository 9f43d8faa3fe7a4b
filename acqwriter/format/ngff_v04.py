"""OME-NGFF 0.4 (Zarr v2): the renderer and the parser of a group's metadata.

A group's ``.zattrs`` holds the OME entries at the top, beside ``acqwriter``: each
``multiscales`` entry, ``plate`` and ``well`` carries its own ``version: "0.4"``;
``omero``, ``bioformats2raw.layout`` and ``series`` do not. The levels are spelt as in
0.5 (:func:`acqwriter.format.ngff_v05.multiscale`); a scene is not written.
"""

from __future__ import annotations

from typing import Any

from acqwriter.format.model import GroupMetadata
from acqwriter.format.ngff_v05 import multiscale, parse_multiscale

__all__ = ["VERSION", "parse_group", "render_group"]

VERSION = "0.4"
_VERSIONED = ("plate", "well")  # 0.4 objects that carry their own version
_OWN = ("multiscales", "omero", "plate", "well", "bioformats2raw.layout", "series")


def render_group(group: GroupMetadata) -> dict[str, Any]:
    """The group's attributes in 0.4."""
    out = dict(group.attributes)
    if group.image is not None:
        out["multiscales"] = [{"version": VERSION, **multiscale(group.image)}]
        if group.image.omero is not None:
            out["omero"] = group.image.omero
    for key, value in group.entries.items():
        out[key] = {**value, "version": VERSION} if key in _VERSIONED else value
    return out


def parse_group(attributes: dict[str, Any]) -> GroupMetadata:
    """A group's metadata from its 0.4 attributes."""
    entries = {
        k: v for k, v in attributes.items() if k in _OWN and k not in ("multiscales", "omero")
    }
    for key in _VERSIONED:
        if isinstance(entries.get(key), dict):
            entries[key] = {k: v for k, v in entries[key].items() if k != "version"}
    image = None
    if attributes.get("multiscales"):
        image = parse_multiscale(attributes["multiscales"][0], attributes.get("omero"))
    others = {k: v for k, v in attributes.items() if k not in _OWN}
    return GroupMetadata(image=image, entries=entries, attributes=others, version=VERSION)
