"""Test helpers: NGFF schema validation, dataset checks and independent readers.

Readers here never go through acqwriter: zarr-python and tensorstore open the dataset
as any user would, and the OME-NGFF 0.5 JSON schemas (copied byte for byte from the
spec repository into tests/ngff_schemas) validate the metadata.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import referencing
import referencing.jsonschema
import zarr

# SIGKILLs each random-moment kill test makes: enough moments to land before, during and
# after the stream's milestones on every run; benchmarks/hostile.py raises it for a deep run
KILLS = int(os.environ.get("HOSTILE_KILLS", "10"))

SCHEMA_ROOT = Path(__file__).parent / "ngff_schemas"
SCHEMA_DIR = SCHEMA_ROOT / "0.5"


def _registry() -> referencing.Registry:
    resources = []
    for file in SCHEMA_ROOT.glob("*/*.schema"):
        doc = json.loads(file.read_text())
        resources.append(
            (
                doc["$id"],
                referencing.Resource.from_contents(
                    doc, default_specification=referencing.jsonschema.DRAFT202012
                ),
            )
        )
    return referencing.Registry().with_resources(resources)


REGISTRY = _registry()


def ngff_validator(name: str = "image", version: str = "0.5") -> jsonschema.Draft202012Validator:
    schema = json.loads((SCHEMA_ROOT / version / f"{name}.schema").read_text())
    return jsonschema.Draft202012Validator(schema, registry=REGISTRY)


def validate_ngff(attributes: dict[str, Any], name: str = "image", version: str = "0.5") -> None:
    ngff_validator(name, version).validate(attributes)


def check_dataset(path: Path, *, growing: bool = False) -> dict[str, Any]:
    """Everything a reader relies on; raises AssertionError/ValidationError otherwise.

    The schemas alone do not check axis order, scale vs shape, missing arrays or
    dimension_names, so those are checked here too. ``growing``: levels written live
    and caught mid-commit (a reader, a crash): a lower level may hold rows of the first
    axis level 0 does not list yet, never fewer.
    """
    import yaozarrs

    if (path / ".zattrs").exists() and not (path / "zarr.json").exists():
        return check_dataset_v2(path)
    root = json.loads((path / "zarr.json").read_text())
    assert root["zarr_format"] == 3 and root["node_type"] == "group"
    attrs = root["attributes"]
    if attrs.get("ome", {}).get("version") == "0.6":
        return check_dataset_v06(path, growing=growing)
    layout = attrs.get("acqwriter", {}).get("layout")
    if layout in ("collection", "plate"):  # a dataset of images: each one checked
        validate_ngff(attrs, "bf2raw" if layout == "collection" else "plate")
        yaozarrs.validate_zarr_store(str(path))
        for image in attrs["acqwriter"]["images"].values():
            check_dataset(path / image, growing=growing)
        return attrs
    validate_ngff(attrs, "image")
    validate_ngff(attrs, "strict_image")
    yaozarrs.validate_zarr_store(str(path))
    ms = attrs["ome"]["multiscales"][0]
    axes = [a["name"] for a in ms["axes"]]
    assert axes[-2:] == ["y", "x"]
    order = "tczyx"
    assert [order.index(a) for a in axes] == sorted(order.index(a) for a in axes)
    prev_shape = None
    for i, ds in enumerate(ms["datasets"]):
        assert ds["path"] == str(i)
        meta = json.loads((path / ds["path"] / "zarr.json").read_text())
        assert meta["node_type"] == "array"
        assert meta["dimension_names"] == axes
        assert len(meta["shape"]) == len(axes)
        scale = ds["coordinateTransformations"][0]["scale"]
        assert len(scale) == len(axes)
        if prev_shape is not None:
            for i_axis, (a, n_prev, n) in enumerate(
                zip(axes, prev_shape, meta["shape"], strict=True)
            ):
                if a in "yx":
                    assert n == math.ceil(n_prev / 2)
                elif growing and i_axis == 0 and a != "z":
                    assert n >= n_prev, (a, n_prev, n)
                elif a in "tc":
                    assert n == n_prev
        prev_shape = meta["shape"]
        arr = zarr.open_array(str(path / ds["path"]), mode="r")
        assert list(arr.shape) == meta["shape"]
    return attrs


def check_dataset_v06(path: Path, *, growing: bool = False) -> dict[str, Any]:
    """The OME-NGFF 0.6 counterpart of :func:`check_dataset`: every document against the
    0.6 schemas, the scene naming every image of a collection and resolving to each
    image's ``physical`` system, every level's transformation ending there, and the
    arrays open in zarr-python with the shapes the metadata says."""
    attrs = json.loads((path / "zarr.json").read_text())["attributes"]
    validate_ngff(attrs, "ome_zarr", "0.6")
    validate_ngff(attrs, "strict_ome_zarr", "0.6")
    acq = attrs.get("acqwriter", {})
    layout = acq.get("layout")
    if layout in ("collection", "plate"):
        images = acq["images"]
        if layout == "collection":
            validate_ngff(attrs, "bf2raw", "0.6")
            validate_ngff(attrs, "scene", "0.6")
            scene = attrs["ome"]["scene"]
            assert scene["coordinateSystems"][0]["name"] == "world"
            paths = [t["input"]["path"] for t in scene["coordinateTransformations"]]
            assert paths == list(images.values())
            for t in scene["coordinateTransformations"]:
                assert t["input"]["name"] == "physical" and t["output"] == {"name": "world"}
        else:
            validate_ngff(attrs, "strict_plate", "0.6")
            for well in attrs["ome"]["plate"]["wells"]:
                well_attrs = json.loads((path / well["path"] / "zarr.json").read_text())
                validate_ngff(well_attrs["attributes"], "strict_well", "0.6")
        for image in images.values():
            check_dataset_v06(path / image, growing=growing)
        return attrs
    validate_ngff(attrs, "image", "0.6")
    validate_ngff(attrs, "strict_image", "0.6")
    ms = attrs["ome"]["multiscales"][0]
    systems = {s["name"]: s for s in ms["coordinateSystems"]}
    axes = [a["name"] for a in systems["physical"]["axes"]]
    assert axes[-2:] == ["y", "x"]
    for i, ds in enumerate(ms["datasets"]):
        assert ds["path"] == str(i)
        (transform,) = ds["coordinateTransformations"]
        assert transform["input"] == {"path": ds["path"]}
        assert transform["output"] == {"name": "physical"}
        scale = (transform.get("transformations") or [transform])[0]["scale"]
        assert len(scale) == len(axes)
        meta = json.loads((path / ds["path"] / "zarr.json").read_text())
        assert meta["dimension_names"] == axes
        arr = zarr.open_array(str(path / ds["path"]), mode="r")
        if growing:  # the array may have grown between the two reads
            assert arr.shape[0] >= meta["shape"][0] and list(arr.shape[1:]) == meta["shape"][1:]
        else:
            assert list(arr.shape) == meta["shape"]
    for t in ms.get("coordinateTransformations", []):
        assert t["input"] == {"name": "physical"} and t["output"]["name"] in systems
    return attrs


def check_dataset_v2(path: Path) -> dict[str, Any]:
    """The OME-NGFF 0.4 / Zarr v2 counterpart of :func:`check_dataset`."""
    assert json.loads((path / ".zgroup").read_text()) == {"zarr_format": 2}
    attrs = json.loads((path / ".zattrs").read_text())
    layout = attrs.get("acqwriter", {}).get("layout")
    if layout in ("collection", "plate"):
        if layout == "collection":
            assert attrs["bioformats2raw.layout"] == 3
            series = json.loads((path / "OME" / ".zattrs").read_text())["series"]
            assert series == list(attrs["acqwriter"]["images"].values())
        else:
            validate_ngff(attrs, "plate", "0.4")
            validate_ngff(attrs, "strict_plate", "0.4")
            for well in attrs["plate"]["wells"]:
                validate_ngff(
                    json.loads((path / well["path"] / ".zattrs").read_text()), "well", "0.4"
                )
        for image in attrs["acqwriter"]["images"].values():
            check_dataset_v2(path / image)
        return attrs
    validate_ngff(attrs, "image", "0.4")
    validate_ngff(attrs, "strict_image", "0.4")
    ms = attrs["multiscales"][0]
    assert ms["version"] == "0.4"
    axes = [a["name"] for a in ms["axes"]]
    assert axes[-2:] == ["y", "x"]
    for i, ds in enumerate(ms["datasets"]):
        assert ds["path"] == str(i)
        meta = json.loads((path / ds["path"] / ".zarray").read_text())
        assert meta["zarr_format"] == 2 and meta["dimension_separator"] == "/"
        assert len(meta["shape"]) == len(axes) == len(ds["coordinateTransformations"][0]["scale"])
        arr = zarr.open_array(str(path / ds["path"]), mode="r")
        assert list(arr.shape) == meta["shape"]
    return attrs


def read_zarr(path: Path, level: int = 0) -> np.ndarray:
    return zarr.open_array(str(path / str(level)), mode="r")[...]


def read_tensorstore(path: Path, level: int = 0) -> np.ndarray:
    import tensorstore as ts

    driver = "zarr3" if (path / str(level) / "zarr.json").exists() else "zarr"  # v3 or v2
    store = ts.open(
        {"driver": driver, "kvstore": {"driver": "file", "path": str(path / str(level))}},
        read=True,
    ).result()
    return store.read().result()


def frame_records(path: Path) -> list[dict[str, Any]]:
    return [
        json.loads(line) for line in (path / "0" / "frame_metadata.jsonl").read_text().splitlines()
    ]


def run_cli(*args: str, cwd: Path, timeout: float = 120):
    """Run the installed ``acqwriter`` console script (the one beside this interpreter).

    ``cwd`` is always a scratch directory: ``python -m`` from the repository root would
    import the source tree instead of the installed package.
    """
    import shutil
    import subprocess
    import sys

    exe = Path(sys.executable).parent / "acqwriter"
    cmd = [str(exe), *args] if exe.exists() else [shutil.which("acqwriter") or "acqwriter", *args]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, timeout=timeout)


def resident_fraction(arr: np.ndarray) -> float:
    """Fraction of ``arr``'s pages backed by memory (Linux ``mincore``)."""
    import ctypes
    import mmap

    libc = ctypes.CDLL(None, use_errno=True)
    page = mmap.PAGESIZE
    start = arr.ctypes.data - arr.ctypes.data % page
    length = arr.ctypes.data + arr.nbytes - start
    vec = (ctypes.c_ubyte * (-(-length // page)))()
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
    assert libc.mincore(ctypes.c_void_p(start), length, vec) == 0, ctypes.get_errno()
    return sum(v & 1 for v in vec) / len(vec)


def peak_rss_during(fn) -> tuple[int, int]:
    """(RSS before, peak RSS while ``fn()`` runs), sampled every 5 ms."""
    import threading
    import time

    import psutil

    proc = psutil.Process()
    base = proc.memory_info().rss
    peak = [base]
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss)
            time.sleep(0.005)

    t = threading.Thread(target=sample)
    t.start()
    try:
        fn()
    finally:
        done.set()
        t.join()
    return base, peak[0]


def resident_pages(address: int, nbytes: int) -> int:
    """Pages of [address, address + nbytes) backed by memory in this process, 0 when the
    range is not mapped at all (Linux ``mincore`` fails with ENOMEM there). Counting
    resident pages rather than asking "mapped?" keeps the check true if another
    allocation happens to be mapped at the freed address before it runs."""
    import ctypes
    import errno
    import mmap

    libc = ctypes.CDLL(None, use_errno=True)
    page = mmap.PAGESIZE
    start = address - address % page
    length = address + nbytes - start
    vec = (ctypes.c_ubyte * (-(-length // page)))()
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
    if libc.mincore(ctypes.c_void_p(start), length, vec) != 0:
        assert ctypes.get_errno() == errno.ENOMEM
        return 0
    return sum(v & 1 for v in vec)
