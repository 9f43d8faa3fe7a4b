"""Property-based tests (hypothesis): any spec a user could write is either accepted or
refused with a SpecError that names a field — never a traceback from deep inside."""

from __future__ import annotations

import re

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from acqwriter import SpecError, StreamSpec
from acqwriter.acquisition.spec import AcquisitionSpec

ANY_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True)
    | st.text(max_size=12),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=10,
)

GOOD = {
    "out": st.just("x.ome.zarr"),
    "shape": st.tuples(st.integers(1, 64), st.integers(1, 64)),
    "dtype": st.sampled_from(["uint8", "uint16", "int16", "float32"]),
    "dims": st.sampled_from(["tyx", "cyx", "zyx", "tczyx", "tzyx", "czyx"]),
    "codec": st.sampled_from(["lz4", "zstd", "blosc-zstd", "none"]),
    "overflow": st.sampled_from(["block", "drop"]),
    "pixel_size": st.floats(0.01, 10),
}
FIELDS = [*sorted(set(StreamSpec.model_fields) | set(AcquisitionSpec.model_fields)), "bogus"]


@st.composite
def specs(draw):
    data = {
        k: draw(v) for k, v in GOOD.items() if draw(st.booleans()) or k in ("out", "shape", "dtype")
    }
    for _ in range(draw(st.integers(0, 3))):  # then spoil some fields with anything
        data[draw(st.sampled_from(FIELDS))] = draw(ANY_JSON)
    if draw(st.booleans()):
        data["sizes"] = draw(
            st.dictionaries(st.sampled_from("tczyq"), st.none() | st.integers(-2, 5), max_size=3)
        )
    if draw(st.booleans()):
        data["chunks"] = draw(
            st.dictionaries(st.sampled_from("tczyxq"), st.integers(-2, 70), max_size=4)
        )
    return data


def _names_a_field(message: str) -> bool:
    first = message.splitlines()[1] if "\n" in message else message.removeprefix("invalid spec:")
    # "field: …", "field.sub: …", "images.B/3/0.dtype: …" (keys of letters, digits, "/"
    # and "-" are shown bare, as image keys are) or "field['odd key']: …"
    match = re.match(r"([A-Za-z_]\w*)(\.[\w/-]+|\[.*?\])*\s*:", first.strip())
    return bool(match)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(specs())
def test_stream_spec_accepts_or_names_the_field(data):
    try:
        spec = StreamSpec.parse(data)
    except SpecError as exc:
        assert _names_a_field(str(exc)), str(exc)
        assert exc.errors and all(e["field"] for e in exc.errors)
        return
    # accepted: the derived values are usable
    assert len(spec.resolved_chunks()) == len(spec.dims)
    assert all(c >= 1 for c in spec.resolved_chunks())


@settings(max_examples=300, deadline=None)
@given(
    specs(),
    st.dictionaries(
        st.sampled_from(
            ["camera", "frames", "duration", "roi", "binning", "exposure_ms", "fps", "sim_faults"]
        ),
        ANY_JSON,
        max_size=3,
    ),
)
def test_acquisition_spec_accepts_or_names_the_field(data, extra):
    data = {**data, "frames": 5, **extra}
    data.pop("shape", None) if data.get("camera", "sim") != "sim" else None
    try:
        AcquisitionSpec.parse(data)
    except SpecError as exc:
        assert _names_a_field(str(exc)), str(exc)


@settings(max_examples=200, deadline=None)
@given(ANY_JSON)
def test_anything_at_all_is_refused_cleanly(data):
    for model in (StreamSpec, AcquisitionSpec):
        try:
            model.parse(data)
        except SpecError as exc:
            assert str(exc).startswith("invalid spec:")
