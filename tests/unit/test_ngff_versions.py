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
