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

__all__ = ["dataset_images"]


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
