"""Live views of an image while it is written: the shape grows, the values are the
dataset's, the signals come off the acquisition thread, coalesced, and a viewer's slot
never holds the writer back."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import zarr

import acqwriter
from acqwriter import FrameError
from acqwriter.engine.view import CACHE_RATE_HZ
from acqwriter.simulators import FrameBank

INDEXES = [
    (...,),
    (0,),
    (-1,),
    (slice(None), 1),
    (2, 0, slice(3, 20, 4), slice(None, None, -3)),
    (slice(-3, None), slice(None), 5),
    (..., slice(2, 7)),
    (np.int64(3), 1, -1, -1),
]


def _zarr(out, image=""):
    group = zarr.open_group(out, mode="r")
    return (group[image] if image else group)["0"][:]


class Recorder:
    """A coords_changed slot: the thread it ran on and the shape it saw."""

    def __init__(self, view):
        self.view = view
        self.calls: list[tuple[str, tuple[int, ...]]] = []
        view.coords_changed.connect(self)

    def __call__(self):
        self.calls.append((threading.current_thread().name, self.view.shape))


def test_a_stream_view_grows_and_reads_what_is_on_disk(tmp_path):
    out = tmp_path / "s.ome.zarr"
    bank = FrameBank((48, 40), "uint16", seed=3)
    spec = {"out": out, "shape": (48, 40), "dtype": "uint16", "dims": "tcyx"}
    spec |= {"sizes": {"c": 2}, "commit_interval_s": 0.01}
    with acqwriter.open_stream(spec) as stream:
        view = stream.view()
        assert (view.dims, view.dtype, view.ndim) == (("t", "c", "y", "x"), np.uint16, 4)
        assert view.shape == (0, 2, 48, 40)
        seen = Recorder(view)
        for i in range(40):
            stream.append(bank.frame(i))
            if i % 10 == 9:
                deadline = time.monotonic() + 30
                while view.shape[0] < (i + 1) // 2 and time.monotonic() < deadline:
                    time.sleep(0.01)
                assert view.shape[0] == (i + 1) // 2  # every frame so far, shown live
                np.testing.assert_array_equal(view[i // 2, 1], bank.frame(i))
    deadline = time.monotonic() + 10
    while seen.calls[-1][1][0] < 20 and time.monotonic() < deadline:
        time.sleep(0.01)
    rows = [shape[0] for _, shape in seen.calls]
    assert rows == sorted(rows) and rows[-1] == 20 and len(set(rows)) > 2  # it grew
    assert {name for name, _ in seen.calls} == {"acqwriter-view"}
    data = _zarr(out)
    assert view.shape == data.shape
    for key in INDEXES:
        np.testing.assert_array_equal(view[key], data[key], err_msg=str(key))
    np.testing.assert_array_equal(np.asarray(view), data)
    with pytest.raises(IndexError):
        view[20]
    with pytest.raises(IndexError):
        view[0, 0, 0, 0, 0]


def test_frames_not_received_or_dropped_read_as_the_fill_value(tmp_path):
    out = tmp_path / "d.ome.zarr"
    spec = {"out": out, "shape": (16, 16), "dtype": "uint8", "sizes": {"t": 5}}
    with acqwriter.open_stream(spec) as stream:
        view = stream.view()
        stream.append(np.full((16, 16), 7, np.uint8))
        stream.skip(1, reason="camera")
        stream.append(np.full((16, 16), 9, np.uint8))
    data = _zarr(out)
    assert view.shape == data.shape == (3, 16, 16)
    assert [int(view[t].max()) for t in range(3)] == [7, 0, 9]  # the lost one: fill value
    np.testing.assert_array_equal(view[:], data)


@pytest.mark.parametrize(
    "extra",
    [{"ngff_version": "0.4"}, {"shards": {"t": 8}, "chunks": {"t": 2}}],
    ids=["zarr-v2", "shards"],
)
def test_a_view_reads_every_layout_on_disk(tmp_path, extra):
    out = tmp_path / "l.ome.zarr"
    bank = FrameBank((32, 32), "uint16", seed=4)
    spec = {"out": out, "shape": (32, 32), "dtype": "uint16", **extra}
    with acqwriter.open_stream(spec) as stream:
        view = stream.view()
        for i in range(19):
            stream.append(bank.frame(i))
    data = zarr.open_group(out, mode="r")["0"][:]
    assert view.shape == data.shape == (19, 32, 32)
    np.testing.assert_array_equal(view[:], data)


def test_each_image_of_a_plate_has_its_view(tmp_path):
    out = tmp_path / "p.ome.zarr"
    keys = ["B/3/0", "B/3/1", "C/10/0"]
    images = {k: {"shape": (24, 20), "dtype": "uint16", "sizes": {"t": 3}} for k in keys}
    with acqwriter.open_dataset({"out": out, "layout": "plate", "images": images}) as ds:
        views = {k: ds.view(image=k) for k in keys}
        with pytest.raises(FrameError, match="image: this dataset has 3 images"):
            ds.view()
        with pytest.raises(FrameError, match="no image 'Z/9/9'"):
            ds.view(image="Z/9/9")
        for t in range(3):
            for n, key in enumerate(keys):
                ds.append(np.full((24, 20), 10 * n + t, np.uint16), image=key, index={"t": t})
    for key, view in views.items():
        data = _zarr(out, key)
        assert view.shape == data.shape == (3, 24, 20)
        np.testing.assert_array_equal(view[:], data)


def test_signals_are_coalesced_and_a_bad_slot_never_holds_the_writer(tmp_path):
    out = tmp_path / "b.ome.zarr"
    spec = {"out": out, "shape": (16, 16), "dtype": "uint16", "commit_interval_s": 0.01}
    slow_calls: list[str] = []

    def slow():
        slow_calls.append(threading.current_thread().name)
        time.sleep(0.3)

    def broken():
        raise RuntimeError("a viewer's bug")

    with acqwriter.open_stream(spec) as stream:
        view = stream.view()
        seen = Recorder(view)
        view.coords_changed.connect(slow)
        view.coords_changed.connect(broken)  # after the others: psygnal stops at an error
        t0 = time.monotonic()
        for i in range(300):
            stream.append(np.full((16, 16), i, np.uint16))  # never raises the slot's error
            time.sleep(0.002)
        elapsed = time.monotonic() - t0
    assert stream.summary.ok and stream.summary.frames_written == 300
    assert set(slow_calls) == {"acqwriter-view"}
    # coalesced: never more signals than the rate allows (the slow slot makes it fewer)
    assert 1 <= len(seen.calls) <= CACHE_RATE_HZ * (elapsed + 1)
    np.testing.assert_array_equal(view[-1], np.full((16, 16), 299, np.uint16))


def test_ndv_reads_the_view_through_its_own_wrapper(tmp_path):
    ndv = pytest.importorskip("ndv.models")
    out = tmp_path / "n.ome.zarr"
    spec = {"out": out, "shape": (32, 24), "dtype": "uint16", "dims": "tczyx"}
    spec |= {"sizes": {"c": 2, "z": 3}}
    with acqwriter.open_stream(spec) as stream:
        view = stream.view()
        for i in range(12):
            stream.append(np.full((32, 24), i, np.uint16))
    wrapper = ndv.DataWrapper.create(view)
    assert wrapper.dims == ("t", "c", "z", "y", "x")
    assert dict(wrapper.sizes()) == {"t": 2, "c": 2, "z": 3, "y": 32, "x": 24}
    assert wrapper.guess_channel_axis() == 1
    plane = wrapper.isel({0: 1, 1: 0, 2: 2})
    np.testing.assert_array_equal(plane, np.full((32, 24), 8, np.uint16))


def test_an_mda_view_made_before_the_run_follows_its_positions(tmp_path):
    pytest.importorskip("pymmcore_plus")
    from pymmcore_plus import CMMCorePlus
    from useq import MDASequence

    from acqwriter.mda import MDAWriter

    core = CMMCorePlus()
    core.loadSystemConfiguration()  # the DemoCamera configuration
    core.setProperty("Camera", "Mode", "Noise")
    seq = MDASequence(
        time_plan={"interval": 0, "loops": 2},
        channels=["DAPI", "FITC"],
        z_plan={"range": 2, "step": 1},
        stage_positions=[(0, 0, 0), (5, 5, 0)],
        axis_order="tpcz",
    )
    out = tmp_path / "m.ome.zarr"
    writer = MDAWriter(out, core=core)
    first, second = writer.view(), writer.view(image="p1")
    assert first.shape == (0, 0, 0) and first.image is None  # nothing made yet
    seen = Recorder(second)
    core.mda.run(seq)
    writer.detach()
    assert first.dims == ("t", "c", "z", "y", "x")
    for key, view in (("p0", first), ("p1", second)):
        data = _zarr(out, "0" if key == "p0" else "1")
        assert view.shape == data.shape == (2, 2, 3, 512, 512)
        np.testing.assert_array_equal(view[:], data)
        assert data[-1].any()  # real frames, not the fill value
    assert seen.calls and {name for name, _ in seen.calls} == {"acqwriter-view"}
    # pymmcore-gui's way in: the runner's get_view() answers with this writer's view
    sink_view = core.mda.get_view()
    assert sink_view is not None and sink_view.shape == (2, 2, 3, 512, 512)
    np.testing.assert_array_equal(sink_view[1, 1, 2], _zarr(out, "0")[1, 1, 2])
    del core


def test_the_window_reads_a_plate_image_as_written(tmp_path):
    from acqwriter.viewer.follow import open_image

    out = tmp_path / "plate.ome.zarr"
    keys = ["B/3/0", "C/10/0"]
    images = {
        k: {
            "shape": (24, 20),
            "dtype": "uint16",
            "dims": "tcyx",
            "sizes": {"t": 3, "c": 2},
            "channels": [{"name": "DAPI", "window": [0, 500]}, {"name": "GFP"}],
        }
        for k in keys
    }
    with acqwriter.open_dataset({"out": out, "layout": "plate", "images": images}) as ds:
        for t in range(3):
            for c in range(2):
                for n, key in enumerate(keys):
                    frame = np.full((24, 20), 100 * n + 10 * t + c, np.uint16)
                    ds.append(frame, image=key, index={"t": t, "c": c})
    image = open_image(out, "C/10/0")
    assert (image.key, image.images, image.dims) == ("C/10/0", keys, ("t", "c", "y", "x"))
    assert image.channels[0].name == "DAPI" and image.channels[0].window == (0.0, 500.0)
    assert image.writer_state() == "complete"
    data = _zarr(out, "C/10/0")
    for key in [*INDEXES[:-1], (np.int64(2), 1, -1, -1)]:
        np.testing.assert_array_equal(image[key], data[key], err_msg=str(key))
    assert open_image(out).key == "B/3/0"  # the first, when none is named
    with pytest.raises(ValueError, match="--image: no image 'Z/1/0'"):
        open_image(out, "Z/1/0")
    with pytest.raises(ValueError, match="not a Zarr dataset"):
        open_image(tmp_path / "nothing.ome.zarr")


def test_view_without_the_extra_says_what_to_install(monkeypatch, capsys):
    """Stands in for a machine without ndv (it is installed here): the one line."""
    import importlib.util

    from acqwriter.cli.main import main

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "ndv" else real(name, *a)
    )
    assert main(["view", "any.ome.zarr"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        "acqwriter view: the viewer needs ndv, which is not installed: "
        'pip install "acqwriter[view]"'
    )


def test_a_view_made_after_close_reads_the_dataset_and_starts_no_thread(tmp_path):
    out = tmp_path / "late.ome.zarr"
    with acqwriter.open_stream({"out": out, "shape": (8, 8), "dtype": "uint8"}) as stream:
        for i in range(3):
            stream.append(np.full((8, 8), i, np.uint8))
    before = {t.name for t in threading.enumerate()}
    view = stream.view()
    assert view.shape == (3, 8, 8) and int(view[2].max()) == 2
    time.sleep(0.1)
    assert "acqwriter-view" not in {t.name for t in threading.enumerate()} - before
