"""OME-NGFF 0.5 (Zarr v3): the renderer and the parser of a group's metadata.

A group's ``zarr.json`` attributes hold ``ome`` (``version: "0.5"``, then an image's
``multiscales`` and ``omero``, or a collection's ``bioformats2raw.layout``, a series, a
plate or a well) beside ``acqwriter``. 0.5 has no coordinate systems: each level's
``scale`` is followed by one ``translation``, the level's own offset plus where the
stage put the image in the image's own axes; a scene is not written (the images'
translations place them).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from acqwriter.format.model import Axis, GroupMetadata, ImageLevel, ImageMetadata, SceneImage

__all__ = [
    "VERSION",
    "multiscale",
    "parse_group",
    "parse_multiscale",
    "parse_ome_group",
    "render_group",
]

VERSION = "0.5"


def multiscale(image: ImageMetadata) -> dict[str, Any]:
    """An image's ``multiscales`` entry as 0.5 (and 0.4) spell it."""
    place = image.placement.offset if image.placement is not None else None
    datasets = []
    for level in image.levels:
        transforms: list[dict[str, Any]] = [{"type": "scale", "scale": list(level.scale)}]
        translation = list(level.offset) if level.offset is not None else None
        if place is not None:  # given, even at the origin: every position carries its place
            translation = [
                s + o for s, o in zip(translation or [0.0] * len(place), place, strict=True)
            ]
        if translation is not None:
            transforms.append({"type": "translation", "translation": translation})
        datasets.append({"path": level.path, "coordinateTransformations": transforms})
    return {
        "name": image.name,
        "axes": [a.document() for a in image.axes],
        "datasets": datasets,
        "type": image.method,
        "metadata": image.method_metadata,
    }


def render_group(group: GroupMetadata) -> dict[str, Any]:
    """The group's attributes in 0.5."""
    ome: dict[str, Any] = {}
    if group.image is not None:
        ome["multiscales"] = [multiscale(group.image)]
        if group.image.omero is not None:
            ome["omero"] = group.image.omero
    ome.update(group.entries)
    if not ome:
        return dict(group.attributes)  # a plain group (a plate's row)
    return {"ome": {"version": VERSION, **ome}, **group.attributes}


def parse_multiscale(entry: dict[str, Any], omero: Any = None) -> ImageMetadata:
    """An image from a 0.4/0.5 ``multiscales`` entry: each level's ``scale`` and its
    ``translation`` (taken as the level's offset: 0.5 cannot tell it from a placement)."""
    levels = []
    for dataset in entry["datasets"]:
        transforms = dataset.get("coordinateTransformations", [])
        scale = next((t["scale"] for t in transforms if t.get("type") == "scale"), None)
        shift = next((t["translation"] for t in transforms if t.get("type") == "translation"), None)
        levels.append(
            ImageLevel(
                dataset["path"],
                tuple(scale) if scale is not None else (),
                tuple(shift) if shift is not None else None,
            )
        )
    return ImageMetadata(
        name=str(entry.get("name", "")),
        axes=tuple(Axis.parse(a) for a in entry["axes"]),
        levels=tuple(levels),
        method=str(entry.get("type", "")),
        method_metadata=dict(entry.get("metadata") or {}),
        omero=omero if isinstance(omero, dict) else None,
    )


def parse_ome_group(
    attributes: dict[str, Any],
    version: str,
    parse_image: Callable[[dict[str, Any], Any], ImageMetadata],
    parse_scene: Callable[[dict[str, Any]], list[SceneImage]] | None = None,
) -> GroupMetadata:
    """A group's metadata from attributes that keep the OME entries under ``ome`` (0.5
    and later), with that version's multiscale (and scene) parser."""
    ome = attributes.get("ome")
    others = {k: v for k, v in attributes.items() if k != "ome"}
    if not isinstance(ome, dict):
        return GroupMetadata(attributes=others, version=version)
    image = None
    if ome.get("multiscales"):
        image = parse_image(ome["multiscales"][0], ome.get("omero"))
    scene = None
    if parse_scene is not None and isinstance(ome.get("scene"), dict):
        scene = parse_scene(ome["scene"])
    own = ("version", "multiscales", "omero", "scene")
    entries = {k: v for k, v in ome.items() if k not in own}
    return GroupMetadata(
        image=image, entries=entries, scene=scene, attributes=others, version=version
    )


def parse_group(attributes: dict[str, Any]) -> GroupMetadata:
    """A group's metadata from its 0.5 attributes."""
    return parse_ome_group(attributes, VERSION, parse_multiscale)
