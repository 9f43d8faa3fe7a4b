"""The layouts of a dataset of many images: where each image lives and the groups that
point at its images.

Three layouts (``DatasetSpec.layout``):

* ``image``: one image at the root; the root group is the image's own group.
* ``collection``: ``bioformats2raw.layout``; image ``i`` (in the spec's order) at
  ``i/``, the ``OME`` group listing them (``series``) and ``OME/METADATA.ome.xml``.
* ``plate``: an HCS plate; image ``ROW/COLUMN/FIELD`` at that path, a group per row
  and per well, the root's ``plate`` object naming the physical plate.

Functions from values to documents: the plan (:mod:`acqwriter.plan.dataset`) decides
paths and the plate with them, the engine writes what they return.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from acqwriter._version import __version__
from acqwriter.format.model import GroupMetadata, SceneImage
from acqwriter.spec.dataset import plate_key

if TYPE_CHECKING:
    from acqwriter.spec.dataset import DatasetSpec

__all__ = [
    "COLLECTION_SERIES",
    "LAYOUTS",
    "dataset_root",
    "group_documents",
    "image_path_in",
    "plate_document",
    "plate_metadata",
]

LAYOUTS = ("image", "collection", "plate")
COLLECTION_SERIES = "OME"  # the group whose ``series`` lists a collection's images


def image_path_in(layout: str, key: str, position: int) -> str:
    """Where image ``key``, the ``position``-th of its dataset, lives (``""``: the root)."""
    if layout == "image":
        return ""
    if layout == "collection":
        return str(position)
    return key


def dataset_root(
    layout: str,
    acqwriter_attrs: dict[str, Any],
    plate: dict[str, Any] | None,
    scene: list[SceneImage] | None = None,
) -> GroupMetadata:
    """The root group of a collection (``bioformats2raw.layout``, and the ``scene``
    placing its images where versions have scenes) or a plate (``plate``);
    ``acqwriter_attrs`` (state, images by key, summary) go under ``acqwriter``."""
    entries: dict[str, Any] = (
        {"bioformats2raw.layout": 3} if layout == "collection" else {"plate": plate}
    )
    return GroupMetadata(
        entries=entries,
        scene=scene if layout == "collection" and scene else None,
        attributes={"acqwriter": {"version": __version__, **acqwriter_attrs}},
    )


def seriesgroup_document(paths: list[str]) -> GroupMetadata:
    """The ``OME`` group of a collection: its images' paths, in order."""
    return GroupMetadata(entries={"series": list(paths)})


def wellgroup_document(fields: list[str]) -> GroupMetadata:
    """A plate's well group: the paths of its fields (one acquisition, id 0)."""
    images = [{"path": field, "acquisition": 0} for field in fields]
    return GroupMetadata(entries={"well": {"images": images}})


def rowgroup_document() -> GroupMetadata:
    """A plate's row group (``B/``): a plain group, so Zarr readers can walk from the
    plate to its wells (NGFF puts no metadata on it)."""
    return GroupMetadata()


def group_documents(layout: str, paths: list[str]) -> list[tuple[str, GroupMetadata]]:
    """The groups between the root and the images at ``paths``, as (prefix, document):
    the ``OME`` series of a collection; a plate's wells, then its rows."""
    if layout == "collection":
        return [(COLLECTION_SERIES, seriesgroup_document(paths))]
    if layout != "plate":
        return []
    wells: dict[str, list[str]] = {}
    for path in paths:
        well, _, field_path = path.rpartition("/")
        wells.setdefault(well, []).append(field_path)
    groups = [(well, wellgroup_document(fields)) for well, fields in wells.items()]
    rows = sorted({well.partition("/")[0] for well in wells})
    return groups + [(row, rowgroup_document()) for row in rows]


def _natural(name: str) -> tuple[int, int | str]:
    return (0, int(name)) if name.isdigit() else (1, name)


def plate_metadata(
    keys: list[tuple[str, str, str]],
    name: str,
    acquisition_name: str,
    rows: list[str] | None = None,
    columns: list[str] | None = None,
) -> dict[str, Any]:
    """The ``plate`` object of (row, column, field) image keys: the plate's ``rows`` and
    ``columns`` (all of them, used or not; omitted: those the keys use, in natural order,
    ``2`` before ``10``), each well placed by its index in them, the largest field
    count, one acquisition."""
    if rows is None:
        rows = sorted({r for r, _, _ in keys}, key=lambda s: (len(s), s))
    if columns is None:
        columns = sorted({c for _, c, _ in keys}, key=_natural)
    wells = sorted(
        {(r, c) for r, c, _ in keys}, key=lambda w: (rows.index(w[0]), columns.index(w[1]))
    )
    fields: dict[tuple[str, str], int] = {}
    for r, c, _ in keys:
        fields[(r, c)] = fields.get((r, c), 0) + 1
    field_count = max(fields.values())
    return {
        "name": name,
        "rows": [{"name": r} for r in rows],
        "columns": [{"name": c} for c in columns],
        "wells": [
            {"path": f"{r}/{c}", "rowIndex": rows.index(r), "columnIndex": columns.index(c)}
            for r, c in wells
        ],
        "field_count": field_count,
        "acquisitions": [{"id": 0, "name": acquisition_name, "maximumfieldcount": field_count}],
    }


def plate_document(spec: DatasetSpec, keys: list[str]) -> dict[str, Any]:
    """The ``plate`` object of the images ``keys`` of ``spec``'s plate."""
    given = spec.plate
    name = (given.name if given else None) or spec.out.name.split(".")[0]
    return plate_metadata(
        [plate_key(key) for key in keys],  # type: ignore[misc]
        name,
        name,
        rows=given.row_names() if given else None,
        columns=given.column_names() if given else None,
    )
