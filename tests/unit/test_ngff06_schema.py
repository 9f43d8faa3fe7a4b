"""The OME-NGFF 0.6 validator checked against the spec's own cases and examples."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers import SCHEMA_ROOT, ngff_validator

V06 = SCHEMA_ROOT / "0.6"
CASES = sorted((V06 / "tests" / "attributes").rglob("*.json"))
# The transformation examples name ``coordinate_systems_and_transforms``, a schema the
# 0.6 release does not ship: they are pairs of coordinate systems and transformations,
# checked here against that pair: each transformation against the release's
# transformation schema, each coordinate system for its name and axes (they illustrate
# transformations between any axes, not images: the image axis rules do not apply).
PAIR = "coordinate_systems_and_transforms"
_PAIR_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "properties": {
        "coordinateSystems": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "name": {"type": "string", "minLength": 1},
                    "axes": {"type": "array", "minItems": 1, "items": {"required": ["name"]}},
                },
                "required": ["name", "axes"],
            },
        },
        "coordinateTransformations": {
            "type": "array",
            "items": {
                "$ref": "https://ngff.openmicroscopy.org/0.6/schemas/"
                "coordinate_transformations.schema#/$defs/coordinateTransformation"
            },
        },
    },
    "required": ["coordinateTransformations"],
}
# Examples the released schemas refuse, each for a defect of the example itself (the
# spec's own harness never reached them: it globs a folder outside its repository).
DEFECTIVE = {
    "multiscales_strict/multiscales_example_relative.json": "a fragment without 'ome'",
    "multiscales_strict/multiscales_reference_to_label.json": "strict, without type/metadata",
    "displacements/multiscales.json": "'ome' is a string, not an object",
    "transformations/byDimensionXarray.json": "'coordinates' inside byDimension, refused",
}
_ONE_TRANSFORM = {
    "$ref": "https://ngff.openmicroscopy.org/0.6/schemas/"
    "coordinate_transformations.schema#/$defs/coordinateTransformation"
}


def _validator(schema: str, document: dict):
    """The validator for ``document`` under ``schema``; under the missing pair schema,
    an example that is a whole OME document, a lone transformation or a pair each
    gets the release's schema for what it is."""
    if schema != PAIR:
        return ngff_validator(schema, "0.6")
    if "ome" in document:
        return ngff_validator("ome_zarr", "0.6")
    import jsonschema

    from helpers import REGISTRY

    own = _ONE_TRANSFORM if "type" in document else _PAIR_SCHEMA
    return jsonschema.Draft202012Validator(own, registry=REGISTRY)


def _example_cases():
    for config in sorted((V06 / "examples").rglob(".config.json")):
        schema = Path(json.loads(config.read_text())["schema"]).stem
        assert schema == PAIR or (V06 / f"{schema}.schema").exists(), config
        valid = json.loads(config.read_text()).get("valid", True)
        for example in sorted(config.parent.glob("[!.]*.json")):
            name = f"{config.parent.name}/{example.name}"
            marks = []
            if name in DEFECTIVE:
                marks = [pytest.mark.xfail(reason=DEFECTIVE[name], strict=True)]
            yield pytest.param(example, schema, valid, id=name, marks=marks)


def _without_comments(path: Path) -> dict:
    """An example's document (the spec's examples carry ``//`` comment lines)."""
    text = "".join(
        line for line in path.read_text().splitlines(True) if not line.lstrip().startswith("//")
    )
    doc = json.loads(text)
    return doc.get("attributes", doc)


@pytest.mark.parametrize("case", CASES, ids=lambda p: str(p.relative_to(V06)))
def test_validator_agrees_with_the_spec_cases(case):
    doc = json.loads(case.read_text())
    conformance = doc.get("_conformance", {})
    schema = "strict_ome_zarr" if conformance.get("strict") else "ome_zarr"
    assert ngff_validator(schema, "0.6").is_valid(doc) == conformance.get("valid", True)


@pytest.mark.parametrize(("example", "schema", "valid"), list(_example_cases()))
def test_spec_examples_pass_as_their_config_says(example, schema, valid):
    document = _without_comments(example)
    assert _validator(schema, document).is_valid(document) == valid


def test_the_cases_hold_invalid_documents_too():
    """The suite is not all-valid: the validator has to refuse some of them."""
    verdicts = [json.loads(c.read_text()).get("_conformance", {}).get("valid", True) for c in CASES]
    assert len(CASES) > 100 and verdicts.count(False) > 50
