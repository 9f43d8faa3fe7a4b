"""An existing dataset's store, for the tools that read or rewrite one (``info``,
``pyramid``): a folder's :class:`~acqwriter.store.local.LocalStore`, or an object-store
URL's :class:`~acqwriter.store.objects.ObjectStore` (credentials from the AWS
environment). Nothing is created or locked here.
"""

from __future__ import annotations

import os
from pathlib import Path

from acqwriter.spec.location import parse_object_url
from acqwriter.store.base import Store
from acqwriter.store.local import LocalStore

__all__ = ["open_store"]


def open_store(location: str | os.PathLike[str], *, sync: str = "none") -> Store:
    """The store of the dataset at ``location`` (a path, or ``s3://bucket/prefix`` with
    credentials from the AWS environment); its ``location`` names it in messages.
    ValueError for a URL that cannot name a dataset."""
    if isinstance(location, str) and "://" in location:
        from acqwriter.store.objects import ObjectStore

        return ObjectStore.from_url(parse_object_url(location), sync=sync)
    return LocalStore(Path(location), sync=sync)
