"""The groups above a dataset's images: what the root, a collection's ``OME`` group
and OME-XML, and a plate's rows and wells say at each state.

A reader walks from the root to the images, so these are written after every image's
own documents exist (the engine's call order), and rewritten when an image is added
and at close with the state and summary. What each document holds comes from
:mod:`acqwriter.format.layouts`; where the images are, from the plan.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from acqwriter.engine.image import ImageWriter
from acqwriter.format.image import TRANSLATION_KEY
from acqwriter.format.keys import COLLECTION_OME_XML
from acqwriter.format.layouts import dataset_root
from acqwriter.format.ome_xml import collection_ome_xml
from acqwriter.format.summary import DatasetSummary
from acqwriter.format.versions import write_group
from acqwriter.plan.dataset import DatasetPlan
from acqwriter.store.base import Store

__all__ = ["write_groups"]


def write_groups(
    plan: DatasetPlan,
    store: Store,
    images: Mapping[str, ImageWriter],
    state: str,
    root_attrs: dict[str, Any],
    summary: DatasetSummary | None = None,
) -> None:
    """Write the groups above ``images`` (nothing for the one-image layout, whose root
    is the image's own group): the root last, so it never names a missing group.
    ``placed``: an image was placed while acquiring; only the root's scene changed."""
    if plan.layout == "image":
        return
    root_only = state == "placed"
    state = "acquiring" if root_only else state
    paths = {key: image.path for key, image in plan.images.items()}
    version = plan.writer.ngff_version
    write = store.write_atomic
    if plan.layout == "collection" and not root_only:
        write(COLLECTION_OME_XML, _ome_xml(images.values(), state))
    for prefix, document in [] if root_only else plan.group_documents():
        write_group(write, document, version, prefix)
    attrs: dict[str, Any] = {"state": state, "layout": plan.layout, "images": paths, **root_attrs}
    if summary is not None:
        attrs["summary"] = summary.model_dump()
    scene = [images[key].scene_image() for key in paths if key in images]
    write_group(write, dataset_root(plan.layout, attrs, plan.plate, scene), version)


def _ome_xml(images: Any, state: str) -> bytes:
    """A collection's OME-XML: time points planned while acquiring, then on disk."""
    return collection_ome_xml(
        [
            (
                i.spec,
                i.writer.committer.committed_rows
                if state != "acquiring" or i.layout.outer_sizes[0] is None
                else i.layout.outer_sizes[0],
                dict(i.attrs.get(TRANSLATION_KEY) or {}),
            )
            for i in images
        ]
    )
