"""One model, one renderer per OME-NGFF version: 0.4 and 0.5 documents stay byte for
byte what they were on the same inputs, and each version's parser reads back what its
renderer wrote."""

from __future__ import annotations

import json

import pytest
from ngff_cases import COLLECTION_PATHS, GOLDEN, IMAGE_CASES, PLATE_KEYS

from acqwriter.format.image import Level, image_group
from acqwriter.format.layouts import dataset_root, group_documents, plate_metadata
from acqwriter.format.versions import read_group, write_group
from acqwriter.spec.dataset import plate_key
from acqwriter.spec.model import StreamSpec


def _image(name: str, version: str):
    case = IMAGE_CASES[name]
    spec = StreamSpec.model_validate({**case["spec"], "ngff_version": version})
    levels = [Level(str(i), tuple(f), spec.pyramid.method) for i, f in enumerate(case["levels"])]
    group = image_group(
        spec,
        levels,
        state=case.get("state", "acquiring"),
        extra=case.get("extra"),
        no_pyramid=case.get("no_pyramid"),
    )
    return spec, levels, group


def render(version: str) -> dict[str, str]:
    """Every document the cases render to in ``version``, by a name and key."""
    out: dict[str, str] = {}

    def into(name: str):
        return lambda key, data: out.__setitem__(f"{version}/{name}/{key}", data.decode())

    for name in IMAGE_CASES:
        write_group(into(f"image/{name}"), _image(name, version)[2], version)
    plate = plate_metadata([plate_key(k) for k in PLATE_KEYS], "P1", "P1", rows=["A", "B", "C"])
    for layout, paths in (("plate", PLATE_KEYS), ("collection", COLLECTION_PATHS)):
        for prefix, group in group_documents(layout, paths):
            write_group(into(layout), group, version, prefix)
        root = dataset_root(
            layout, {"state": "acquiring", "layout": layout}, plate if layout == "plate" else None
        )
        write_group(into(layout), root, version)
    return out


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_documents_are_unchanged_byte_for_byte(version):
    golden = json.loads(GOLDEN.read_text())
    expected = {k: v for k, v in golden.items() if k.startswith(f"{version}/")}
    assert len(expected) > 10
    assert render(version) == expected


@pytest.mark.parametrize("version", ["0.4", "0.5", "0.6"])
@pytest.mark.parametrize("name", list(IMAGE_CASES))
def test_each_parser_reads_back_what_its_renderer_wrote(version, name):
    group = _image(name, version)[2]
    files: dict[str, bytes] = {}
    write_group(files.__setitem__, group, version)

    def read(key: str) -> bytes:
        if key not in files:
            raise FileNotFoundError(key)
        return files[key]

    back = read_group(read)
    assert back.version == version
    assert back.acqwriter == group.acqwriter
    image, built = back.image, group.image
    assert image is not None and built is not None
    assert image.axes == built.axes
    assert [(lv.path, lv.scale) for lv in image.levels] == [
        (lv.path, lv.scale) for lv in built.levels
    ]
    assert image.method == built.method and image.omero == built.omero
    if version == "0.6":  # 0.6 keeps the level's offset apart from the placement
        assert [lv.offset for lv in image.levels] == [lv.offset for lv in built.levels]
        if built.placement is not None:
            assert image.placement is not None
            assert image.placement.matrix == built.placement.matrix


def _map(placement, point):
    import numpy as np

    m = np.asarray(placement.matrix)
    return m[:, :-1] @ np.asarray(point, float) + m[:, -1]


@pytest.mark.parametrize(
    "affine",
    [(0.5, 0.0, 0.0, 0.0, 0.5, 0.0), (0.0, 0.5, 0.0, -0.5, 0.0, 0.0), (-0.5, 0.0, 0, 0, 0.5, 0)],
)
def test_a_pixel_lands_where_the_stage_and_the_affine_put_it(affine):
    from acqwriter.format.placement import image_placement

    shape, px = (40, 60), 0.5
    stage = {"x": 100.0, "y": -20.0, "z": 3.0, "affine": affine}
    placement = image_placement("tzyx", shape, px, None, stage)
    assert placement.source == "stage"
    assert placement.is_translation == (affine[0] == affine[4] > 0)
    cy, cx = (shape[0] - 1) / 2, (shape[1] - 1) / 2
    for i, j, k in ((0, 0, 0), (7, 33, 2), (39, 59, 4)):
        world = _map(placement, [5.0, k * 1.0, i * px, j * px])
        a, b, _, d, e, _ = affine
        assert world[0] == 5.0 and world[1] == pytest.approx(3.0 + k)  # t, z (+ focus)
        assert world[3] == pytest.approx(100.0 + a * (j - cx) + b * (i - cy))  # stage x
        assert world[2] == pytest.approx(-20.0 + d * (j - cx) + e * (i - cy))  # stage y


def test_placements_without_a_stage_or_in_other_units():
    from acqwriter.format.placement import image_placement, stage_attributes

    uncalibrated = image_placement("yx", (10, 10), 2.0, None, {"x": 1.0, "y": 1.0})
    assert uncalibrated.matrix[0][0] == -1.0 and uncalibrated.matrix[1][1] == 1.0  # y up
    assert "assumed" in stage_attributes({"x": 1.0, "y": 1.0, "affine": None})
    assert "assumed" not in stage_attributes({"x": 1, "y": 1, "affine": (2, 0, 0, 0, 2, 0)})
    nm = image_placement("yx", (11, 11), 100.0, None, {"x": 2.0, "y": 3.0, "affine": None})
    um = image_placement("yx", (11, 11), 0.1, None, {"x": 2.0, "y": 3.0, "affine": None})
    nm_placement = image_placement(
        "yx", (11, 11), 100.0, None, {"x": 2.0, "y": 3.0, "affine": None}, "nanometer"
    )
    assert nm_placement.translation == pytest.approx([t * 1000 for t in um.translation])
    assert nm.translation != nm_placement.translation  # micrometre assumed without a unit
    assert image_placement("yx", (4, 4), 1.0, None, {"x": 1.0, "y": 1.0}, "inch") is None
    given = image_placement("zyx", (4, 4), 1.0, {"x": 5.0, "z": 2.0}, None)
    assert given.source == "translation" and given.translation == (2.0, 0.0, 5.0)
    assert image_placement("yx", (4, 4), 1.0, None, None) is None
