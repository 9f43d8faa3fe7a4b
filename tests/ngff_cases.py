"""Fixed inputs for the OME-NGFF renderers, and what each renders to.

``tests/data/ngff_documents.json`` holds the files the 0.4 and 0.5 renderers wrote for
these inputs; ``test_ngff_versions`` renders them again and compares byte for byte, so
a change to the version-neutral model cannot change what a 0.4 or 0.5 reader gets.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

GOLDEN = Path(__file__).parent / "data" / "ngff_documents.json"

_BASE = {"out": "/data/run.ome.zarr", "shape": (48, 64), "dtype": "uint16"}

IMAGE_CASES: dict[str, dict[str, Any]] = {
    "tyx": {"spec": {**_BASE, "pixel_size": 0.65}, "levels": [(1, 1, 1)]},
    "tyx-levels-measured": {
        "spec": {**_BASE, "pixel_size": 0.65, "time_unit": "millisecond"},
        "levels": [(1, 1, 1), (1, 2, 2), (1, 4, 4)],
        "extra": {
            "measured": {"time_increment_s": 0.125, "channel_windows": [[100.0, 900.0]]},
            "summary": {"frames": 3},
        },
    },
    "tczyx-channels-z": {
        "spec": {
            **_BASE,
            "dims": "tczyx",
            "sizes": {"c": 2, "z": 5},
            "pixel_size": 0.2,
            "z_step": 0.5,
            "time_increment": 2.0,
            "channels": [{"name": "DAPI"}, {"name": "GFP", "color": "00FF00", "window": [5, 50]}],
            "name": "cells",
            "pyramid": {"method": "mean", "downsample_z": True},
        },
        "levels": [(1, 1, 1, 1, 1), (1, 1, 2, 2, 2)],
        "extra": {"translation": {"x": 100.5, "y": -20.25, "z": 3.0}, "image": "p0"},
    },
    "czyx-nearest-translation": {
        "spec": {
            **_BASE,
            "dims": "czyx",
            "sizes": {"c": 3, "z": 4},
            "z_unit": None,
            "dtype": "float32",
            "pyramid": {"method": "nearest"},
        },
        "levels": [(1, 1, 1, 1), (1, 1, 2, 2)],
        "extra": {"translation": {"x": 0.0, "y": 0.0}},
    },
    "single-level": {
        "spec": {**_BASE, "dims": "zyx", "sizes": {"z": 3}, "dtype": "uint8"},
        "levels": [(1, 1, 1)],
        "no_pyramid": "the image is smaller than one chunk",
        "state": "complete",
    },
}

PLATE_KEYS = ["B/3/0", "B/3/1", "A/10/0", "A/2/0"]
COLLECTION_PATHS = ["0", "1", "2"]
