"""OME-NGFF 0.6 (Zarr v3, RFC-5): the renderer and the parser of a group's metadata.

An image's ``multiscales`` entry names its coordinate systems: ``physical`` (the axes
with their units), where every level lands through one ``scale`` (level 0) or a
``sequence`` of a scale and the level's offset, each from the level's ``path``; and,
when the stage position is known, ``stage`` (the same axes in the stage's
coordinates), reached from ``physical`` by the image's placement (a ``translation``,
or an ``affine`` when the stage's axes are turned or flipped against the camera's).

A collection's root carries a ``scene``: a ``world`` coordinate system (the stage's,
µm) first, and for each image the transformation from its ``physical`` system to it.
An image the stage never placed joins the scene through an ``identity``. Plates and
wells are spelt as in 0.5, with version ``"0.6"``.
"""

from __future__ import annotations

from typing import Any

from acqwriter.format.model import (
    Axis,
    GroupMetadata,
    ImageLevel,
    ImageMetadata,
    Placement,
    SceneImage,
)
from acqwriter.format.ngff_v05 import parse_ome_group

__all__ = ["PHYSICAL", "STAGE", "VERSION", "WORLD", "parse_group", "render_group"]

VERSION = "0.6"
PHYSICAL = "physical"  # an image's own coordinate system, the levels' output
STAGE = "stage"  # an image's placement in the stage's coordinates
WORLD = "world"  # a scene's common coordinate system: the stage's


def _system(name: str, axes: tuple[Axis, ...]) -> dict[str, Any]:
    return {"name": name, "axes": [a.document() for a in axes]}


def _placement(placement: Placement | None) -> dict[str, Any]:
    """A placement as a transformation, without its ends."""
    if placement is None:
        return {"type": "identity"}
    if placement.is_translation:
        return {"type": "translation", "translation": list(placement.translation)}
    return {"type": "affine", "affine": [list(row) for row in placement.matrix]}


def _level(level: ImageLevel) -> dict[str, Any]:
    ends = {"input": {"path": level.path}, "output": {"name": PHYSICAL}}
    scale = {"type": "scale", "scale": list(level.scale)}
    if level.offset is None:
        return {**scale, **ends}
    translation = {"type": "translation", "translation": list(level.offset)}
    return {"type": "sequence", **ends, "transformations": [scale, translation]}


def multiscale(image: ImageMetadata) -> dict[str, Any]:
    """An image's ``multiscales`` entry in 0.6."""
    systems = [_system(PHYSICAL, image.axes)]
    entry: dict[str, Any] = {"name": image.name, "coordinateSystems": systems}
    entry["datasets"] = [
        {"path": level.path, "coordinateTransformations": [_level(level)]} for level in image.levels
    ]
    if image.placement is not None:
        systems.append(_system(STAGE, image.axes))
        entry["coordinateTransformations"] = [
            {
                **_placement(image.placement),
                "input": {"name": PHYSICAL},
                "output": {"name": STAGE},
                "name": f"{PHYSICAL} to {STAGE}",
            }
        ]
    entry["type"] = image.method
    entry["metadata"] = image.method_metadata
    return entry


def _world_axes(images: list[SceneImage]) -> tuple[Axis, ...]:
    """The axes of every image, in OME-NGFF order (t, c, z, y, x), units of the first
    image that has each."""
    seen: dict[str, Axis] = {}
    for image in images:
        for axis in image.axes:
            seen.setdefault(axis.name, axis)
    return tuple(seen[name] for name in "tczyx" if name in seen) + tuple(
        a for name, a in seen.items() if name not in "tczyx"
    )


def _into(image: SceneImage, world: tuple[Axis, ...]) -> Placement | None:
    """``image``'s placement onto the ``world`` axes: its own when they are the same,
    else an affine taking each of its axes to the world axis of that name (a world axis
    it lacks is 0 for it)."""
    names = [a.name for a in image.axes]
    if names == [a.name for a in world]:
        return image.placement
    n = len(names)
    placed = image.placement or Placement.shift([0.0] * n, "none")
    own = placed.matrix
    rows = []
    for axis in world:
        rows.append(own[names.index(axis.name)] if axis.name in names else (0.0,) * (n + 1))
    return Placement(tuple(rows), None, "stage")


def scene(images: list[SceneImage]) -> dict[str, Any]:
    """A scene placing ``images`` in the stage's coordinates (``world``, first)."""
    axes = _world_axes(images)
    return {
        "coordinateSystems": [_system(WORLD, axes)],
        "coordinateTransformations": [
            {
                **_placement(_into(image, axes)),
                "input": {"path": image.path, "name": PHYSICAL},
                "output": {"name": WORLD},
                "name": f"{image.path} to {WORLD}",
            }
            for image in images
        ],
    }


def render_group(group: GroupMetadata) -> dict[str, Any]:
    """The group's attributes in 0.6."""
    ome: dict[str, Any] = {}
    if group.image is not None:
        ome["multiscales"] = [multiscale(group.image)]
        if group.image.omero is not None:
            ome["omero"] = group.image.omero
    ome.update(group.entries)
    if group.scene:
        ome["scene"] = scene(group.scene)
    if not ome:
        return dict(group.attributes)
    return {"ome": {"version": VERSION, **ome}, **group.attributes}


# -- reading -------------------------------------------------------------------------------
def _axes(systems: list[dict[str, Any]], name: str) -> tuple[Axis, ...]:
    for system in systems:
        if system.get("name") == name:
            return tuple(Axis.parse(a) for a in system["axes"])
    raise ValueError(f"coordinate system {name!r} is not among {[s.get('name') for s in systems]}")


def _parse_level(dataset: dict[str, Any]) -> tuple[ImageLevel, str]:
    transform = dataset["coordinateTransformations"][0]
    output = transform.get("output", {}).get("name", PHYSICAL)
    parts = transform.get("transformations", [transform])
    scale = next((t["scale"] for t in parts if t.get("type") == "scale"), None)
    shift = next((t["translation"] for t in parts if t.get("type") == "translation"), None)
    level = ImageLevel(
        dataset["path"],
        tuple(scale) if scale is not None else (),
        tuple(shift) if shift is not None else None,
    )
    return level, output


def _parse_placement(transform: dict[str, Any], n: int) -> Placement | None:
    kind = transform.get("type")
    if kind == "translation":
        return Placement.shift(transform["translation"], STAGE)
    if kind == "affine" and "affine" in transform:
        return Placement(
            tuple(tuple(float(v) for v in r) for r in transform["affine"]), None, STAGE
        )
    return None


def parse_multiscale(entry: dict[str, Any], omero: Any = None) -> ImageMetadata:
    """An image from a 0.6 ``multiscales`` entry."""
    parsed = [_parse_level(d) for d in entry["datasets"]]
    systems = entry.get("coordinateSystems") or []
    axes = _axes(systems, parsed[0][1] if parsed else PHYSICAL)
    placement = None
    for transform in entry.get("coordinateTransformations") or []:
        if transform.get("output", {}).get("name") == STAGE:
            placement = _parse_placement(transform, len(axes))
    return ImageMetadata(
        name=str(entry.get("name", "")),
        axes=axes,
        levels=tuple(level for level, _ in parsed),
        method=str(entry.get("type", "")),
        method_metadata=dict(entry.get("metadata") or {}),
        omero=omero if isinstance(omero, dict) else None,
        placement=placement,
    )


def _parse_scene(document: dict[str, Any]) -> list[SceneImage]:
    systems = document.get("coordinateSystems") or []
    world = systems[0] if systems else {"axes": []}
    axes = tuple(Axis.parse(a) for a in world["axes"])
    images = []
    for transform in document.get("coordinateTransformations") or []:
        path = (transform.get("input") or {}).get("path")
        if path is None:
            continue
        placement = _parse_placement(transform, len(axes))
        if placement is None:  # an identity: the image was not placed
            placement = Placement.shift([0.0] * len(axes), "none")
        images.append(SceneImage(path, placement, axes))
    return images


def parse_group(attributes: dict[str, Any]) -> GroupMetadata:
    """A group's metadata from its 0.6 attributes."""
    return parse_ome_group(attributes, VERSION, parse_multiscale, _parse_scene)
