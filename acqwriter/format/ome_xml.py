"""The OME-XML of a collection: ``OME/METADATA.ome.xml`` of the bioformats2raw layout.

Readers of ``bioformats2raw.layout`` collections (ome-zarr-py, napari-ome-zarr,
Fiji/Bio-Formats, OMERO) find the images and what they are from this document: one
OME ``Image`` per series, in the order of ``OME/zarr.json``'s ``series``, with its name,
pixel type and sizes, physical pixel size and z step, channels (names, colours) and the
stage position it was acquired at (``StageLabel``). Built with ome-types (the OME data
model), never by hand; written at open and again at close, when the time points are
known.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from acqwriter.spec.model import StreamSpec

__all__ = ["collection_ome_xml"]
_UNITS = {"micrometer": "µm", "nanometer": "nm", "millimeter": "mm", "meter": "m"}
_TIME_UNITS = {"second": "s", "millisecond": "ms", "minute": "min", "hour": "h"}
_PIXEL_TYPES = {"float32": "float", "float64": "double"}  # OME's names; ints are numpy's


def _image(i: int, spec: StreamSpec, time_points: int, stage: dict[str, float]) -> Any:
    from ome_types import model

    from acqwriter.spec.palette import channel_color

    sizes = dict(zip(spec.outer_dims, spec.outer_sizes(), strict=True))
    size_c = sizes.get("c") or 1
    channels = []
    for c in range(size_c):
        given = spec.channels[c] if c < len(spec.channels) else None
        name = given.name if given else f"Channel {c}"
        color = (given.color if given else None) or channel_color(
            given.name if given else None, c, size_c
        )
        channels.append(
            model.Channel(
                id=f"Channel:{i}:{c}",
                name=name,
                samples_per_pixel=1,
                color=model.Color(f"#{color}FF"),
            )
        )
    pixel_unit = _UNITS.get(spec.pixel_unit)
    physical: dict[str, Any] = {}
    if pixel_unit is not None:
        physical = {
            "physical_size_x": spec.pixel_size,
            "physical_size_y": spec.pixel_size,
            "physical_size_x_unit": pixel_unit,
            "physical_size_y_unit": pixel_unit,
        }
    if "z" in sizes and spec.z_unit in _UNITS:
        physical["physical_size_z"] = spec.z_step
        physical["physical_size_z_unit"] = _UNITS[spec.z_unit]
    if spec.time_increment is not None and spec.time_unit in _TIME_UNITS:
        physical["time_increment"] = spec.time_increment
        physical["time_increment_unit"] = _TIME_UNITS[spec.time_unit]
    pixels = model.Pixels(
        id=f"Pixels:{i}",
        dimension_order="XYZCT",
        type=_PIXEL_TYPES.get(str(spec.dtype), str(spec.dtype)),
        size_x=spec.shape[1],
        size_y=spec.shape[0],
        size_z=sizes.get("z") or 1,
        size_c=size_c,
        size_t=max(1, time_points),
        channels=channels,
        metadata_only=True,
        **physical,
    )
    label = None
    if stage:
        unit = pixel_unit or "µm"
        label = model.StageLabel(
            name="stage position",
            **{axis: value for axis, value in stage.items() if axis in ("x", "y", "z")},
            **{f"{axis}_unit": unit for axis in stage if axis in ("x", "y", "z")},
        )
    return model.Image(id=f"Image:{i}", name=spec.name, pixels=pixels, stage_label=label)


def collection_ome_xml(images: list[tuple[StreamSpec, int, dict[str, float]]]) -> bytes:
    """The OME-XML of a collection's images, in series order: for each, its stream spec,
    its time points so far and its stage position (``translation``)."""
    from ome_types import model, to_xml

    ome = model.OME(
        creator="acqwriter",
        images=[_image(i, spec, t, stage) for i, (spec, t, stage) in enumerate(images)],
    )
    return to_xml(ome).encode("utf-8")
