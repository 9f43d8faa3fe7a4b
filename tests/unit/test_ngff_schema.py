"""Our schema validator against the spec's own test suite, then our metadata against it."""

from __future__ import annotations

import json

import jsonschema
import pytest

from acqwriter import open_stream
from helpers import SCHEMA_DIR, check_dataset, ngff_validator, validate_ngff

SUITES = ["image_suite.json", "strict_image_suite.json"]


def _cases():
    for suite in SUITES:
        doc = json.loads((SCHEMA_DIR / "tests" / suite).read_text())
        schema = doc["schema"]["id"].split("/")[-1].removesuffix(".schema")
        for i, case in enumerate(doc["tests"]):
            yield pytest.param(schema, case, id=f"{suite}-{i}")


@pytest.mark.parametrize(("schema", "case"), list(_cases()))
def test_validator_agrees_with_spec_suite(schema, case):
    valid = ngff_validator(schema).is_valid(case["data"])
    assert valid == case["valid"], case.get("formerly")


def test_metadata_of_a_real_dataset_is_valid_and_complete(tmp_path):
    out = tmp_path / "m.ome.zarr"
    spec = {
        "out": out,
        "shape": (64, 64),
        "dtype": "uint16",
        "dims": "tcyx",
        "sizes": {"c": 2},
        "pixel_size": 0.65,
        "time_increment": 0.1,
        "time_unit": "millisecond",
        "name": "run-7",
    }
    with open_stream(spec) as stream:
        stream.append(__import__("numpy").zeros((64, 64), "uint16") + 7)
    attrs = check_dataset(out)
    ome = attrs["ome"]
    assert ome["version"] == "0.5"
    ms = ome["multiscales"][0]
    assert ms["name"] == "run-7" and ms["type"] == "mean"
    assert ms["axes"][0]["unit"] == "millisecond"
    assert ms["axes"][2:] == [
        {"name": "y", "type": "space", "unit": "micrometer"},
        {"name": "x", "type": "space", "unit": "micrometer"},
    ]
    assert len(ome["omero"]["channels"]) == 2
    assert attrs["acqwriter"]["frame_metadata"] == "0/frame_metadata.jsonl"
    # a broken document is caught: the validator is not vacuous
    broken = json.loads(json.dumps(attrs))
    broken["ome"]["multiscales"][0]["axes"][1]["type"] = "space"
    broken["ome"]["multiscales"][0]["axes"] = broken["ome"]["multiscales"][0]["axes"][:1]
    with pytest.raises(jsonschema.ValidationError):
        validate_ngff(broken)
