"""Pyramid levels written live (``pyramid.when="live"``): the same values as the offline
builder's, every level valid and growing while it is written, the plan's memory, the
spec's forms."""

from __future__ import annotations

import itertools
import json
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
import zarr

import acqwriter
from acqwriter import SpecError, open_dataset, open_stream
from acqwriter.post.pyramid import rebuild_pyramid
from acqwriter.spec.model import StreamSpec
from helpers import check_dataset


def _frames(n: int, shape: tuple[int, int], dtype: str, seed: int = 0) -> np.ndarray:
    """Cells on a background with shot noise: values a mean must round."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    base = 100 + 60 * np.sin(yy / 7.0) * np.cos(xx / 5.0)
    frames = rng.poisson(np.maximum(base, 1), (n, *shape)).astype(np.float64)
    if np.dtype(dtype).kind == "f":
        return (frames / 3.0).astype(dtype)
    if np.dtype(dtype).kind == "i":
        frames -= 120
    info = np.iinfo(dtype)
    return np.clip(frames, info.min, info.max).astype(dtype)


def _levels(path: Path) -> dict[str, np.ndarray]:
    group = zarr.open_group(path, mode="r")
    attrs = group.attrs.asdict()
    ms = attrs.get("ome", attrs)["multiscales"][0]
    return {d["path"]: group[d["path"]][...] for d in ms["datasets"]}


def _offline(live: Path, tmp_path: Path) -> dict[str, np.ndarray]:
    """The levels ``acqwriter pyramid`` builds from the finished level 0."""
    copy = tmp_path / "offline.ome.zarr"
    shutil.copytree(live, copy)
    rebuild_pyramid(copy)
    return _levels(copy)


def _assert_same_as_offline(out: Path, tmp_path: Path, levels: int) -> None:
    check_dataset(out)
    live = _levels(out)
    assert len(live) == levels
    offline = _offline(out, tmp_path)
    assert list(live) == list(offline)
    for name in live:
        assert live[name].shape == offline[name].shape, name
        assert live[name].dtype == offline[name].dtype
        np.testing.assert_array_equal(live[name], offline[name], err_msg=f"level {name}")


CASES = {
    # name: spec fields, frames (t, c, z counts)
    "odd frame, tiles": ({"dims": "tyx", "chunks": {"y": 64, "x": 48}}, (7, 1, 1)),
    "t-chunks span frames": ({"dims": "tyx", "chunks": {"t": 3}}, (8, 1, 1)),
    "channels, sharded in t": ({"dims": "tcyx", "sizes": {"c": 2}, "shards": {"t": 4}}, (9, 2, 1)),
    "z stack, odd z, downsample_z": (
        {"dims": "tzyx", "sizes": {"z": 5}, "pyramid": {"downsample_z": True}},
        (3, 1, 5),
    ),
    "z chunks of 2, downsample_z": (
        {
            "dims": "tczyx",
            "sizes": {"c": 2, "z": 4},
            "chunks": {"z": 2},
            "pyramid": {"downsample_z": True},
        },
        (2, 2, 4),
    ),
    "z first, unbounded, odd count": (
        {"dims": "zyx", "pyramid": {"downsample_z": True}},
        (1, 1, 7),
    ),
    "ngff 0.4": ({"dims": "tcyx", "sizes": {"c": 2}, "ngff_version": "0.4"}, (5, 2, 1)),
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize(
    ("dtype", "method"), [("uint16", "mean"), ("uint8", "nearest"), ("int16", "mean")]
)
def test_live_levels_equal_the_offline_builder(tmp_path, case, dtype, method):
    fields, (nt, nc, nz) = CASES[case]
    shape = (93, 77)
    pyramid = {"when": "live", "levels": 3, "method": method, **fields.get("pyramid", {})}
    spec = {
        "out": str(tmp_path / "live.ome.zarr"),
        "shape": shape,
        "dtype": dtype,
        "shard_seal_s": 0.05,
        **fields,
        "pyramid": pyramid,
    }
    frames = _frames(nt * nc * nz, shape, dtype)
    with open_stream(spec) as stream:
        for frame in frames:
            stream.append(frame)
    summary = stream.close()
    assert summary.pyramid_levels == 3 and summary.pyramid_duration_s == 0.0
    _assert_same_as_offline(tmp_path / "live.ome.zarr", tmp_path, 3)


def test_float_mean_is_the_offline_builders_to_the_bit(tmp_path):
    spec = {
        "out": str(tmp_path / "live.ome.zarr"),
        "shape": (61, 90),
        "dtype": "float32",
        "dims": "tzyx",
        "sizes": {"z": 3},
        "pyramid": {"when": "live", "levels": 4, "downsample_z": True},
    }
    with open_stream(spec) as stream:
        for frame in _frames(6, (61, 90), "float32"):
            stream.append(frame)
    _assert_same_as_offline(tmp_path / "live.ome.zarr", tmp_path, 4)


@pytest.mark.parametrize("downsample_z", [False, True])
def test_dropped_and_missing_frames_are_the_fill_value_in_every_level(tmp_path, downsample_z):
    """A frame skipped (dropped) or never given (missing at close) is the fill value in
    level 0; every level counts it so, as the offline builder reading level 0 does."""
    shape = (40, 50)
    spec = {
        "out": str(tmp_path / "live.ome.zarr"),
        "shape": shape,
        "dtype": "uint16",
        "dims": "tzyx",
        "sizes": {"z": 4},
        "chunks": {"z": 2},
        "pyramid": {"when": "live", "levels": 3, "downsample_z": downsample_z},
    }
    frames = _frames(11, shape, "uint16")
    with open_stream(spec) as stream:
        for i, frame in enumerate(frames):
            if i in (2, 5, 6):
                stream.skip(reason="camera_timeout")
            else:
                stream.append(frame)
    # 11 frames of 4 z planes: the last time point's fourth plane never came
    out = tmp_path / "live.ome.zarr"
    summary = stream.close()
    assert summary.frames_dropped == 3 and summary.frames_missing == 1
    _assert_same_as_offline(out, tmp_path, 3)
    level1 = _levels(out)["1"]
    if not downsample_z:  # a dropped frame's level frames are the fill value
        assert not level1[0, 2].any() and not level1[1, 1].any() and level1[1, 3].any()


@pytest.mark.parametrize("layout", ["plate", "collection"])
@pytest.mark.parametrize("ngff_version", ["0.5", "0.4"])
def test_many_images_with_live_levels_equal_the_offline_builder(tmp_path, layout, ngff_version):
    out = tmp_path / "many.ome.zarr"
    image = {
        "shape": [70, 66],
        "dtype": "uint16",
        "dims": "tcyx",
        "sizes": {"t": 3, "c": 2},
        "pyramid": {"when": "live", "levels": 3},
    }
    keys = ["A/1/0", "A/2/0"] if layout == "plate" else ["p0", "p1"]
    spec = {
        "out": str(out),
        "layout": layout,
        "images": {key: image for key in keys},
        "ngff_version": ngff_version,
        **({"plate": {"rows": 1, "columns": 2}} if layout == "plate" else {}),
    }
    frames = _frames(12, (70, 66), "uint16")
    with open_dataset(spec) as dataset:
        for t in range(3):  # positions interleaved, as a multi-position run delivers them
            for i, key in enumerate(keys):
                for c in range(2):
                    dataset.append(frames[6 * i + 2 * t + c], image=key, index={"t": t, "c": c})
    summary = dataset.close()
    assert all(s.pyramid_levels == 3 for s in summary.images.values())
    check_dataset(out)
    copy = tmp_path / "copy.ome.zarr"
    shutil.copytree(out, copy)
    rebuild_pyramid(copy)
    roots = {key: (out / key, copy / key) for key in keys}
    if layout == "collection":
        paths = json.loads((out / "zarr.json").read_text()) if ngff_version == "0.5" else None
        images = (
            paths["attributes"]["acqwriter"]["images"]
            if paths is not None
            else json.loads((out / ".zattrs").read_text())["acqwriter"]["images"]
        )
        roots = {key: (out / images[key], copy / images[key]) for key in keys}
    for live_root, offline_root in roots.values():
        live, offline = _levels(live_root), _levels(offline_root)
        assert list(live) == ["0", "1", "2"]
        for name in live:
            np.testing.assert_array_equal(live[name], offline[name])


def test_close_reads_nothing_back_with_live_levels(tmp_path):
    """``live``: close only flushes; nothing of level 0 is read back (``close`` reads
    every chunk of it)."""
    from stores import StoreWrapper, local_store

    class Reads(StoreWrapper):
        def __init__(self, inner):
            super().__init__(inner)
            self.keys: list[str] = []

        def read_bytes(self, key):
            self.keys.append(key)
            return super().read_bytes(key)

        def read_range(self, key, offset, n):
            self.keys.append(key)
            return super().read_range(key, offset, n)

        def read_into(self, key, buf=None):
            self.keys.append(key)
            return super().read_into(key, buf)

    chunk_reads = {}
    for when in ("live", "close"):
        out = tmp_path / f"{when}.ome.zarr"
        spec = {
            "out": str(out),
            "shape": (96, 80),
            "dtype": "uint16",
            "pyramid": {"when": when, "levels": 3},
        }
        store = Reads(local_store(out))
        stream = open_stream(spec, store=store)
        for frame in _frames(12, (96, 80), "uint16"):
            stream.append(frame)
        stream.close()
        chunk_reads[when] = [k for k in store.keys if k.startswith("0/c")]
        assert stream.summary.pyramid_levels == 3
    assert chunk_reads["live"] == []
    assert len(chunk_reads["close"]) >= 12


def test_a_reader_sees_every_level_valid_and_growing(tmp_path):
    out = tmp_path / "grow.ome.zarr"
    spec = {
        "out": str(out),
        "shape": (64, 80),
        "dtype": "uint16",
        "commit_interval_s": 0.01,
        "shard_seal_s": 0.01,
        "pyramid": {"when": "live", "levels": 4},
    }
    frames = _frames(400, (64, 80), "uint16")
    seen: list[list[int]] = []
    errors: list[BaseException] = []
    done = threading.Event()

    def read() -> None:
        try:
            while not done.is_set():
                group = zarr.open_group(out, mode="r")
                names = [d["path"] for d in group.attrs["ome"]["multiscales"][0]["datasets"]]
                assert names == ["0", "1", "2", "3"]  # every level listed from the start
                # level 0 sized first: a lower level never lacks a row level 0 has
                extents = [group[name].shape[0] for name in names]
                assert all(e >= extents[0] for e in extents[1:]), extents
                for name in names:
                    array = group[name]
                    n = array.shape[0]
                    if n:
                        last = array[n - 1]  # every row inside an extent is on disk
                        assert last.any(), f"level {name} row {n - 1} is fill"
                seen.append(extents)
        except BaseException as exc:
            errors.append(exc)

    reader = threading.Thread(target=read)
    with open_stream(spec) as stream:
        reader.start()
        for frame in frames:
            stream.append(frame)
            if not seen:
                threading.Event().wait(0.001)
    done.set()
    reader.join()
    assert not errors, errors[0]
    assert len({tuple(s) for s in seen}) >= 2  # it grew while read
    for a, b in itertools.pairwise(seen):
        assert all(y >= x for x, y in zip(a, b, strict=True))
    final = _levels(out)
    assert [v.shape[0] for v in final.values()] == [400] * 4
    _assert_same_as_offline(out, tmp_path, 4)


def test_progress_reports_each_levels_frames(tmp_path):
    spec = {
        "out": str(tmp_path / "p.ome.zarr"),
        "shape": (64, 64),
        "dtype": "uint16",
        "pyramid": {"when": "live", "levels": 3},
    }
    stream = open_stream(spec)
    for frame in _frames(20, (64, 64), "uint16"):
        stream.append(frame)
    phases: list[dict] = []
    stream.close(on_progress=phases.append)
    final = stream.progress()
    assert final["pyramid_level_frames"] == [20, 20, 20]
    assert "pyramid" not in [p["phase"] for p in phases]  # close only flushed
    json.dumps(final, allow_nan=False)


def test_the_plan_counts_what_live_levels_hold(tmp_path):
    base = {"out": str(tmp_path / "x.ome.zarr"), "shape": (2048, 2048), "dtype": "uint16"}
    close = open_stream({**base, "pyramid": "close"})
    close.close()
    live_spec = {**base, "out": str(tmp_path / "y.ome.zarr"), "pyramid": "live"}
    live = open_stream(live_spec)
    live.close()
    assert close.plan.memory()["live_levels"] == 0
    held = live.plan.memory()["live_levels"]
    # at least one frame of each lower level per thread that makes them
    assert held >= (2 * 1024 * 1024 + 2 * 512 * 512 + 2 * 256 * 256) * 2
    assert "live levels" in live.plan.describe() and "(written live)" in live.plan.describe()
    image = live.plan.to_dict()["images"][0]
    assert [level["shape"][1:] for level in image["levels"]] == [
        [2048, 2048], [1024, 1024], [512, 512], [256, 256]
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("given", "when", "enabled"),
    [
        ("live", "live", True),
        ("none", "none", False),
        ({"when": "close"}, "close", True),
        ({"enabled": False}, "none", False),
        (False, "none", False),
        ({"when": "none", "enabled": True}, "none", False),
    ],
)
def test_pyramid_spec_forms(given, when, enabled):
    spec = StreamSpec.model_validate(
        {"out": "x.ome.zarr", "shape": (8, 8), "dtype": "uint8", "pyramid": given}
    )
    assert (spec.pyramid.when, spec.pyramid.enabled) == (when, enabled)


@pytest.mark.parametrize(
    ("given", "words"),
    [
        ("sometimes", ["pyramid.when", "'live', 'close' or 'none'"]),
        ({"when": "live", "enabled": False}, ["pyramid", "enabled: false contradicts"]),
    ],
)
def test_a_bad_pyramid_names_the_field(tmp_path, given, words):
    spec = {"out": str(tmp_path / "x.ome.zarr"), "shape": (8, 8), "dtype": "uint8"}
    with pytest.raises(SpecError) as info:
        acqwriter.open_stream({**spec, "pyramid": given})
    message = str(info.value)
    assert "\n" not in message and all(w in message for w in words), message
    assert not (tmp_path / "x.ome.zarr").exists()


@pytest.mark.parametrize("dtype", ["uint8", "uint16"])
@pytest.mark.parametrize(
    ("shape", "crop"),
    [((2048, 2048), None), ((6, 10), None), ((1, 1, 258, 130), None), ((100, 200), (10, 21))],
)
def test_the_packed_2x2_mean_equals_the_general_one(monkeypatch, dtype, shape, crop):
    """8- and 16-bit frames take a faster path; it must give the general path's values,
    extremes included (sums that need every bit of the wider type), on frames that are
    views into bigger ones too."""
    from acqwriter.post import downsample as kernel

    info = np.iinfo(dtype)
    data = np.random.default_rng(3).integers(0, info.max + 1, shape, dtype=dtype)
    data.reshape(-1)[:7] = info.max
    if crop is not None:
        data = data[crop[0] : crop[0] + 64, crop[1] : crop[1] + 96]
    factors = (1,) * (data.ndim - 2) + (2, 2)
    assert kernel._packs(data, factors)
    fast = kernel.downsample(data, factors, "mean", scratch={}).copy()
    monkeypatch.setattr(kernel, "_packs", lambda *args: False)
    general = kernel.downsample(data, factors, "mean")
    assert fast.shape == general.shape and fast.dtype == general.dtype
    np.testing.assert_array_equal(fast, general)


@pytest.mark.parametrize(
    ("dims", "sizes", "chunks", "downsample_z"),
    [
        ("tyx", {}, {"t": 8}, False),
        ("tcyx", {"c": 3}, {"c": 3, "t": 2}, False),
        ("tzyx", {"z": 6}, {"z": 2}, True),
    ],
)
def test_live_levels_hold_no_more_frames_than_planned(tmp_path, dims, sizes, chunks, downsample_z):
    from acqwriter.plan.levels import live_level_frames

    spec = {
        "out": str(tmp_path / "m.ome.zarr"),
        "shape": (256, 256),
        "dtype": "uint16",
        "dims": dims,
        "sizes": sizes,
        "chunks": chunks,
        "threads": 2,
        "pyramid": {"when": "live", "levels": 3, "downsample_z": downsample_z},
    }
    stream = open_stream(spec)
    for frame in _frames(96, (256, 256), "uint16"):
        stream.append(frame)
    stream.close()
    image = stream.plan.images["image"]
    threads = image.resources.compressors + 1
    feeds = stream._dataset.images["image"].live.feeds
    for level, feed in zip(image.live, feeds, strict=True):
        planned = live_level_frames(level.layout, threads, downsample_z=downsample_z)
        assert 0 < feed.frames.high_water <= planned, (level.index, feed.frames.high_water)
