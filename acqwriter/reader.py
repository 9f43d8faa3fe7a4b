"""Read regions of an array acqwriter wrote, straight from its chunk files.

Used after acquisition (pyramid building), where zarr-python's per-call overhead made
pyramids slower than the acquisition itself (a 500-frame 2048² demo: ~12 s). It only
handles what acqwriter writes — regular grid, default ``c/…`` keys, one numcodecs codec —
and decodes with numcodecs, which releases the GIL, so pyramid threads scale.
A missing chunk reads as the fill value, as in Zarr.
"""

from __future__ import annotations

import itertools
import json
from typing import Any

import numpy as np

from acqwriter.storage import LocalStore

__all__ = ["LevelReader"]


class LevelReader:
    """``reader[slices]`` → ndarray for one level (``"0"``, ``"1"``, …) of a dataset."""

    def __init__(self, store: LocalStore, path: str, decoder: Any) -> None:
        meta = json.loads(store.read_bytes(f"{path}/zarr.json"))
        self.store = store
        self.path = path
        self.decoder = decoder
        self.shape = tuple(meta["shape"])
        self.chunks = tuple(meta["chunk_grid"]["configuration"]["chunk_shape"])
        self.dtype = np.dtype(meta["data_type"])
        self.fill_value = meta["fill_value"]

    def __getitem__(self, slices: tuple[slice, ...]) -> np.ndarray:
        bounds = [
            (s.start or 0, min(s.stop if s.stop is not None else n, n))
            for s, n in zip(slices, self.shape, strict=True)
        ]
        out = np.full([hi - lo for lo, hi in bounds], self.fill_value, self.dtype)
        ranges = [
            range(lo // c, (hi - 1) // c + 1)
            for (lo, hi), c in zip(bounds, self.chunks, strict=True)
        ]
        for index in itertools.product(*ranges):
            key = f"{self.path}/c/" + "/".join(map(str, index))
            try:
                data = self.store.read_bytes(key)
            except FileNotFoundError:
                continue  # never written: fill value
            chunk = np.frombuffer(self.decoder.decode(data), self.dtype).reshape(self.chunks)
            src, dst = [], []
            for i, (lo, hi), c in zip(index, bounds, self.chunks, strict=True):
                c0 = i * c
                a, b = max(lo, c0), min(hi, c0 + c)
                src.append(slice(a - c0, b - c0))
                dst.append(slice(a - lo, b - lo))
            out[tuple(dst)] = chunk[tuple(src)]
        return out
