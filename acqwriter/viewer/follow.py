"""A dataset on disk, followed while another process writes it: the out-of-process view.

:class:`ImageOnDisk` is an array-like (``shape``, ``dtype``, ``ndim``, ``dims``, numpy
indexing) over one image's level, read straight from the chunk files
(:class:`acqwriter.post.reader.LevelReader`). It never takes the writer's lock and never
writes: it reads the array's metadata again on :meth:`ImageOnDisk.refresh` (the caller
bounds how often) and shows exactly the committed extent, which acqwriter only ever
grows over data on disk. :func:`open_image` picks the image of a collection or plate,
the level to show (the largest that fits ``max_side`` pixels, level 0 while no lower
level exists), and reads what a viewer needs to show the image as the writer meant:
channel names, colours and display windows (``omero``), the physical scale, and the
writer's state (acquiring, finished, or a writer that died: then what is on disk is
what there is).
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from acqwriter.codec.chain import chunk_encoder
from acqwriter.format.keys import ArrayKeys
from acqwriter.format.versions import read_group, read_stored
from acqwriter.post.hierarchy import dataset_images
from acqwriter.post.reader import LevelReader
from acqwriter.spec.model import Compression
from acqwriter.store.folders import writer_alive
from acqwriter.store.local import LocalStore

__all__ = ["Channel", "ImageOnDisk", "open_image"]

LIVE_STATES = ("acquiring", "recovering")


@dataclass(frozen=True)
class Channel:
    """How a channel is shown: its name, colour (hex RGB) and display window."""

    name: str
    color: str
    window: tuple[float, float] | None


@dataclass
class ImageOnDisk:
    """One level of one image, as its files say now (see the module docstring)."""

    root: Path  # the image's folder
    key: str  # its key in the dataset ("image" for a one-image dataset)
    level: str  # the array's path inside the image ("0", "1", …)
    dims: tuple[str, ...]
    scale: list[float]
    channels: list[Channel]
    dataset: Path
    images: list[str] = field(default_factory=list)  # every image's key, to pick from
    _reader: LevelReader | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.refresh()

    @property
    def shape(self) -> tuple[int, ...]:
        assert self._reader is not None
        return tuple(self._reader.shape)

    @property
    def dtype(self) -> np.dtype:
        assert self._reader is not None
        return self._reader.dtype

    @property
    def ndim(self) -> int:
        return len(self.dims)

    def refresh(self) -> bool:
        """Read the array's metadata again; True when its shape changed."""
        store = LocalStore(self.root, sync="none")
        meta = json.loads(store.read_bytes(self._keys().metadata))
        codec = _codec(meta)
        with self._lock:
            old = None if self._reader is None else self._reader.shape
            self._reader = LevelReader(store, self.level, chunk_encoder(codec))
            return tuple(self._reader.shape) != old

    def _keys(self) -> ArrayKeys:
        v3 = (self.root / self.level / "zarr.json").exists()
        return ArrayKeys(self.level, 3 if v3 else 2)

    def __getitem__(self, key: Any) -> np.ndarray:
        with self._lock:
            reader = self._reader
        assert reader is not None
        return reader.select(key)

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        out = self[...]
        return out.astype(dtype) if dtype is not None else out

    def writer_state(self) -> str:
        """``acquiring`` (a live writer), ``gone`` (a writer that died: what is on disk
        is what there is) or the finished state the dataset records."""
        attrs = read_stored(lambda k: (self.dataset / k).read_bytes())[1]
        state = (attrs.get("acqwriter") or {}).get("state")
        if writer_alive(self.dataset):
            return "acquiring"
        return "gone" if state in LIVE_STATES else str(state)


def open_image(path: str | Path, image: str | None = None, max_side: int = 2048) -> ImageOnDisk:
    """The image ``image`` of the dataset at ``path`` (its only or first one when
    omitted), at the largest level whose y and x fit ``max_side``. Raises ValueError
    naming what is wrong (not a dataset, an unknown image)."""
    dataset = Path(path)
    try:
        group = read_group(lambda k: (dataset / k).read_bytes())
    except FileNotFoundError:
        raise ValueError(f"{dataset}: not a Zarr dataset (no zarr.json or .zattrs)") from None
    acq = group.acqwriter
    if acq.get("layout") in ("collection", "plate"):
        folders = dataset_images(dataset, acq)
        if not folders:
            raise ValueError(f"{dataset}: the dataset lists no image yet")
        key = image if image is not None else next(iter(folders))
        if key not in folders:
            shown = ", ".join(list(folders)[:10])
            raise ValueError(f"--image: no image {key!r} in {dataset} (images: {shown})")
        root, keys = folders[key], list(folders)
        group = read_group(lambda k: (root / k).read_bytes())
    else:
        if image not in (None, "image"):
            raise ValueError(f"--image: {dataset} is one image; it has no image {image!r}")
        key, root, keys = "image", dataset, []
    if group.image is None:
        raise ValueError(f"{root}: not an OME-NGFF image (no multiscales in its attributes)")
    levels = [(level.path, list(level.scale)) for level in group.image.levels]
    dims = tuple(a.name for a in group.image.axes)
    level, scale = levels[0]
    for path_k, scale_k in levels:
        shape = _level_shape(root, path_k)
        if shape is not None and max(shape[-2:]) <= max_side:
            level, scale = path_k, scale_k
            break
    return ImageOnDisk(
        root=root,
        key=key,
        level=level,
        dims=dims,
        scale=list(scale or [1.0] * len(dims)),
        channels=_channels(group.image.omero or {}),
        dataset=dataset,
        images=keys,
    )


def _level_shape(root: Path, level: str) -> list[int] | None:
    for name in ("zarr.json", ".zarray"):
        meta = root / level / name
        if meta.exists():
            return list(json.loads(meta.read_text())["shape"])
    return None


def _channels(omero: dict[str, Any]) -> list[Channel]:
    out = []
    for i, channel in enumerate(omero.get("channels") or []):
        window = channel.get("window") or {}
        limits = None
        if "start" in window and "end" in window:
            limits = (float(window["start"]), float(window["end"]))
        name = channel.get("label") or f"Channel {i}"
        out.append(Channel(name, channel.get("color") or "FFFFFF", limits))
    return out


def _codec(meta: dict[str, Any]) -> Compression:
    """A compression that decodes the array (blosc and zstd read their parameters from
    each chunk's own header, so the kind is enough)."""
    if meta.get("zarr_format") == 2:
        names = [(meta.get("compressor") or {}).get("id")]
    else:
        codecs = meta["codecs"]
        if codecs[0]["name"] == "sharding_indexed":
            codecs = codecs[0]["configuration"]["codecs"]
        names = [codec["name"] for codec in codecs]
    for name in ("blosc", "zstd"):
        if name in names:
            return Compression(name=name)
    return Compression(name="none")
