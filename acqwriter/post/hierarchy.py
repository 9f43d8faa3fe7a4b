"""The images a dataset's root names, checked to stay inside the dataset.

A collection's or plate's root document lists its images' paths
(``attributes.acqwriter.images``); ``info``, ``pyramid`` and ``recover`` follow them.
The document is data on disk, not a promise: a hand-edited or hostile root naming
``"../other.ome.zarr"`` (or a path through a symbolic link leading out) would make them
read, rewrite or delete another dataset under its own live writer. Every path is
checked here before anything is touched, and the whole dataset is refused when one
fails: the tools hold the dataset's lock, which covers only what lies inside it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from acqwriter.format.keys import image_path
from acqwriter.store.base import Store
from acqwriter.store.local import LocalStore

__all__ = ["dataset_images", "image_paths"]


def dataset_images(root: Path, acq: dict[str, Any]) -> dict[str, Path]:
    """Each image's folder by key, from the root's ``acqwriter`` attributes ``acq``.
    Raises ValueError (naming the image) for a path that leaves the dataset."""
    images = acq.get("images", {})
    if not isinstance(images, dict):
        raise ValueError(f"{root}: images: expected a mapping of keys to paths")
    base = root.resolve()
    out: dict[str, Path] = {}
    for key, path in images.items():
        try:
            checked = image_path(path)
        except ValueError as exc:
            raise ValueError(f"{root}: image {key!r}: {exc}") from None
        folder = root / checked if checked else root
        resolved = folder.resolve()
        if resolved != base and base not in resolved.parents:
            raise ValueError(
                f"{root}: image {key!r}: path {path!r} leads out of the dataset; refused"
            )
        out[str(key)] = folder
    return out


def image_paths(store: Store, where: str, acq: dict[str, Any]) -> dict[str, str]:
    """Each image's path inside the dataset in ``store``, by key, checked as
    :func:`dataset_images` checks folders (on a filesystem, links resolved too);
    ``where`` names the dataset in messages."""
    if isinstance(store, LocalStore):
        return {
            key: "" if folder == store.root else str(folder.relative_to(store.root))
            for key, folder in dataset_images(store.root, acq).items()
        }
    images = acq.get("images", {})
    if not isinstance(images, dict):
        raise ValueError(f"{where}: images: expected a mapping of keys to paths")
    out = {}
    for key, path in images.items():
        try:
            out[str(key)] = image_path(path)
        except ValueError as exc:
            raise ValueError(f"{where}: image {key!r}: {exc}") from None
    return out
