"""What a dataset's OME-NGFF metadata says, apart from how a version spells it.

One in-memory description of a group: an image (its axes, its levels with their scale
and offset, how the levels were made, display settings, where the stage put it), the
entries of the groups above images (a collection's series, a plate, a well) and the
scene that places a collection's images in the stage's coordinates. Each OME-NGFF
version has one renderer and one parser of it (:mod:`acqwriter.format.ngff_v04`,
``ngff_v05``, ``ngff_v06``, chosen in :mod:`acqwriter.format.versions`): a fifth
version is one more pair of functions.

Built from a spec by :mod:`acqwriter.format.image`; the placement maths is in
:mod:`acqwriter.format.placement`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "Axis",
    "GroupMetadata",
    "ImageLevel",
    "ImageMetadata",
    "Placement",
    "SceneImage",
]


@dataclass(frozen=True)
class Axis:
    """One array axis: its name (``t``, ``c``, ``z``, ``y``, ``x``), type and unit."""

    name: str
    type: str
    unit: str | None = None

    @classmethod
    def parse(cls, entry: dict[str, Any]) -> Axis:
        """An axis from its document (every version spells one alike)."""
        return cls(entry["name"], entry.get("type", ""), entry.get("unit"))

    def document(self) -> dict[str, str]:
        entry = {"name": self.name, "type": self.type}
        if self.unit is not None:
            entry["unit"] = self.unit
        return entry


@dataclass(frozen=True)
class ImageLevel:
    """One resolution level: its array's path, the size of its pixel along each axis
    (physical units) and its offset from level 0's first pixel (``None``: none, as for
    level 0 and nearest-neighbour levels)."""

    path: str
    scale: tuple[float, ...]
    offset: tuple[float, ...] | None = None


@dataclass(frozen=True)
class Placement:
    """Where the stage put an image, as the affine map from the image's physical
    coordinates to the stage's (``matrix``: one row per axis, the last column the
    offset; axes in the image's order). ``offset`` is the same place as a plain
    translation in the image's own axes (what OME-NGFF 0.4 and 0.5 can say: levels are
    shifted by it), ``None`` when the stage was never said."""

    matrix: tuple[tuple[float, ...], ...]
    offset: tuple[float, ...] | None
    source: str  # "stage" (read back or planned stage position), "translation", "none"

    @property
    def is_translation(self) -> bool:
        """Whether the map is a translation (no rotation, flip or scaling)."""
        n = len(self.matrix)
        if any(len(row) != n + 1 for row in self.matrix):
            return False
        return all(
            self.matrix[i][j] == (1.0 if i == j else 0.0) for i in range(n) for j in range(n)
        )

    @property
    def translation(self) -> tuple[float, ...]:
        return tuple(row[-1] for row in self.matrix)

    @classmethod
    def shift(cls, offsets: Any, source: str, offset: Any = None) -> Placement:
        """A pure translation by ``offsets`` (zeros: the identity)."""
        n = len(offsets)
        rows = [[1.0 if i == j else 0.0 for j in range(n)] + [float(offsets[i])] for i in range(n)]
        return cls(tuple(tuple(r) for r in rows), offset, source)


@dataclass(frozen=True)
class ImageMetadata:
    """An image's multiscale description and display settings."""

    name: str
    axes: tuple[Axis, ...]
    levels: tuple[ImageLevel, ...]
    method: str  # how levels 1.. are made (the multiscale's ``type``)
    method_metadata: dict[str, Any]
    omero: dict[str, Any] | None = None
    placement: Placement | None = None


@dataclass(frozen=True)
class SceneImage:
    """One image of a scene: its path below the scene's group, its placement and its
    axes (those of its ``physical`` coordinate system)."""

    path: str
    placement: Placement | None
    axes: tuple[Axis, ...]


@dataclass
class GroupMetadata:
    """A group's metadata in no version's spelling.

    ``image``: the group is an image. ``entries``: the other OME entries, each as every
    version names it (``bioformats2raw.layout``, ``series``, ``plate``, ``well``).
    ``scene``: the images below the group placed in the stage's coordinates (written by
    versions that have scenes). ``attributes``: entries beside ``ome`` (``acqwriter``).
    ``version``: the version a parser read it from (``None`` when built)."""

    image: ImageMetadata | None = None
    entries: dict[str, Any] = field(default_factory=dict)
    scene: list[SceneImage] | None = None
    attributes: dict[str, Any] = field(default_factory=dict)
    version: str | None = None

    @property
    def acqwriter(self) -> dict[str, Any]:
        value = self.attributes.get("acqwriter")
        return value if isinstance(value, dict) else {}
