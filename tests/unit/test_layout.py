"""Index ↔ coordinate ↔ chunk arithmetic."""

from __future__ import annotations

from acqwriter import StreamSpec
from acqwriter.format.keys import ArrayKeys
from acqwriter.plan.layout import FrameLayout


def layout(**kw) -> FrameLayout:
    return FrameLayout(StreamSpec.parse({"out": "x", "shape": (100, 90), "dtype": "uint16", **kw}))


def test_coords_follow_c_order_with_unbounded_first_axis():
    lay = layout(dims="tczyx", sizes={"c": 2, "z": 3})
    assert lay.frames_per_row == 6
    assert [lay.coords(i) for i in (0, 1, 3, 5, 6, 17, 600)] == [
        (0, 0, 0),
        (0, 0, 1),
        (0, 1, 0),
        (0, 1, 2),
        (1, 0, 0),
        (2, 1, 2),
        (100, 0, 0),
    ]
    assert lay.array_shape(4) == (4, 2, 3, 100, 90)
    assert lay.rows_for_frames(13) == 3


def test_groups_tiles_and_keys():
    lay = layout(dims="tzyx", sizes={"z": 5}, chunks={"t": 2, "z": 2, "y": 48, "x": 40})
    assert lay.chunk_shape == (2, 2, 48, 40)
    assert (lay.tiles_y, lay.tiles_x) == (3, 3)
    assert lay.batch_of(0) == (0, 0) and lay.batch_of(4) == (0, 2) and lay.batch_of(7) == (0, 1)
    assert lay.batch_frame_count((0, 0)) == 4 and lay.batch_frame_count((0, 2)) == 2
    assert lay.batch_frame_count((1, 2), total_rows=3) == 1
    assert lay.position_in_batch(7) == (1, 0)
    assert lay.tile_slices(2, 2) == (slice(96, 100), slice(80, 90), 4, 10)
    assert lay.chunk_coords((3, 1), 2, 0) == (3, 1, 2, 0)
    assert ArrayKeys("0").chunk(lay.chunk_coords((3, 1), 2, 0)) == "0/c/3/1/2/0"
    assert not lay.frame_is_chunk
    assert layout(chunks={"y": 100, "x": 90}).frame_is_chunk


def test_min_ring_frames():
    assert layout().min_ring_frames == 1
    assert layout(chunks={"t": 8}).min_ring_frames == 8
    assert layout(dims="tcyx", sizes={"c": 3}, chunks={"t": 4}).min_ring_frames == 10
    assert layout(dims="tzyx", sizes={"z": 20}, chunks={"z": 20}).min_ring_frames == 20
