"""What to write when one acquisition makes many images: positions, tiles, well plates.

A :class:`DatasetSpec` is the writer options shared by every image (codec, ring, threads,
durability, …) and, by key, the :class:`ImageSpec` of each image: its frame shape and
dtype, axes and sizes, chunks, calibration, channels, pyramid and stage position
(``translation``). ``layout`` says how the images are arranged on disk:

* ``"image"``: one image at the root (the dataset :class:`~acqwriter.spec.model.StreamSpec`
  describes);
* ``"collection"``: several images at ``0``, ``1``, … in the order given (the
  ``bioformats2raw.layout``), each found again by its key (a position name);
* ``"plate"``: a high-content-screening plate; each key is ``ROW/COLUMN/FIELD``
  (``"B/3/0"``): rows, columns and wells follow from the keys.

Each image is written as a one-image stream would be: :meth:`DatasetSpec.image_stream`
gives its :class:`StreamSpec` (the image's fields, the shared writer options, ``out``
the image's folder), validated here so that an error names ``images.<key>.<field>``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from acqwriter.codec.settings import Compression
from acqwriter.spec.model import (
    Channel,
    FiniteFloat,
    PositiveFloat,
    PositiveInt,
    PyramidSpec,
    StreamSpec,
    WriterOptions,
)
from acqwriter.validation import StrictModel, format_validation_error

__all__ = ["DatasetSpec", "ImageSpec", "PlateSpec", "plate_key", "row_name"]

# The fields of a StreamSpec that belong to one image; the others are the writer's.
IMAGE_FIELDS = (
    "shape",
    "dtype",
    "dims",
    "sizes",
    "chunks",
    "shards",
    "pixel_size",
    "pixel_unit",
    "z_step",
    "z_unit",
    "time_increment",
    "time_unit",
    "channels",
    "name",
    "pyramid",
)
WRITER_FIELDS = tuple(
    name for name in WriterOptions.model_fields if name not in IMAGE_FIELDS and name != "out"
)
# fullmatch, not ``$``: ``$`` also matches before a final newline ("A/1/0\n")
_PLATE_KEY = re.compile(r"([A-Za-z0-9]+)/([A-Za-z0-9]+)/([A-Za-z0-9]+)")


class StagePlace(StrictModel):
    """Where the stage was when an image was taken: its x, y (and z, the focus of the
    first plane) in the stage's own axes, µm, and the pixel configuration's affine
    (Micro-Manager's ``getPixelSizeAffine``: stage µm = A · (pixel x, pixel y, 1);
    omitted or the identity: uncalibrated, see ``acqwriter.format.placement``)."""

    x: FiniteFloat
    y: FiniteFloat
    z: FiniteFloat | None = None
    affine: (
        tuple[FiniteFloat, FiniteFloat, FiniteFloat, FiniteFloat, FiniteFloat, FiniteFloat] | None
    ) = None

    @field_validator("affine")
    @classmethod
    def _invertible(cls, value: tuple[float, ...] | None) -> tuple[float, ...] | None:
        if value is not None and abs(value[0] * value[4] - value[1] * value[3]) < 1e-12:
            raise ValueError(
                "expected an invertible pixel affine (a, b, c, d, e, f) with a*e - b*d != 0"
            )
        return value


class ImageSpec(StrictModel):
    """One image of a dataset: the per-image fields of a stream spec, the stage position
    of its origin (``translation``, physical units, per spatial axis) and, optionally,
    its own codec."""

    shape: tuple[PositiveInt, PositiveInt]
    dtype: str
    dims: str = "tyx"
    sizes: dict[str, PositiveInt | None] = Field(default_factory=dict)
    chunks: dict[str, PositiveInt] = Field(default_factory=dict)
    shards: Literal["auto", "none"] | dict[str, PositiveInt] = "auto"
    pixel_size: PositiveFloat = 1.0
    pixel_unit: str = "micrometer"
    z_step: PositiveFloat = 1.0
    z_unit: str | None = "micrometer"  # None: z is a plane index (see StreamSpec)
    time_increment: PositiveFloat | None = None
    time_unit: str = "second"
    channels: list[Channel] = Field(default_factory=list)
    name: str | None = None
    pyramid: PyramidSpec = Field(default_factory=PyramidSpec)
    codec: Compression | None = None
    translation: dict[str, FiniteFloat] = Field(default_factory=dict)
    stage: StagePlace | None = None

    @field_validator("dtype", mode="before")
    @classmethod
    def _dtype(cls, value: Any) -> str:
        return StreamSpec._dtype(value)  # type: ignore[operator]

    @field_validator("translation")
    @classmethod
    def _spatial(cls, value: dict[str, float]) -> dict[str, float]:
        for axis in value:
            if axis not in ("z", "y", "x"):
                raise ValueError(
                    f"translation.{axis}: expected a spatial axis (z, y or x), got {axis!r}"
                )
        return value


def row_name(index: int) -> str:
    """A plate row's name from its index: A..Z, then AA, AB, … (as plates are labelled,
    and as useq names wells)."""
    name = ""
    index += 1
    while index:
        index, r = divmod(index - 1, 26)
        name = chr(ord("A") + r) + name
    return name


class PlateSpec(StrictModel):
    """The physical plate: its name and its rows and columns, used or not.

    OME-NGFF lists the rows and columns of the plate itself (a 96-well plate has 8 rows
    and 12 columns even when three wells were imaged), and places each well by its index
    in them. ``rows`` / ``columns``: a count (rows named ``A``, ``B``, …, columns ``1``,
    ``2``, …) or the names in plate order. Omitted, they are the rows and columns the
    image keys use (a plate of unknown format). ``name`` defaults to the folder's name.
    """

    name: str | None = None
    rows: Annotated[int, Field(ge=1, le=702)] | list[str] | None = None
    columns: Annotated[int, Field(ge=1, le=10_000)] | list[str] | None = None

    @field_validator("rows", "columns")
    @classmethod
    def _names(cls, value: Any, info: Any) -> Any:
        if isinstance(value, list):
            if not value:
                raise ValueError("expected at least one name")
            for name in value:
                if not re.fullmatch(r"[A-Za-z0-9]+", name):
                    raise ValueError(f"expected names of letters and digits, got {name!r}")
            if len(set(value)) != len(value):
                raise ValueError("expected distinct names")
        return value

    def row_names(self) -> list[str] | None:
        if isinstance(self.rows, int):
            return [row_name(i) for i in range(self.rows)]
        return self.rows

    def column_names(self) -> list[str] | None:
        if isinstance(self.columns, int):
            return [str(i) for i in range(1, self.columns + 1)]
        return self.columns


class DatasetSpec(WriterOptions):
    """Many images, one acquisition (see the module docstring)."""

    layout: Literal["image", "collection", "plate"] = "collection"
    images: Annotated[dict[str, ImageSpec], Field(min_length=1)]
    plate: PlateSpec | None = None

    @model_validator(mode="before")
    @classmethod
    def _no_image_fields_at_the_top(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for name in IMAGE_FIELDS:
                if name in data:
                    raise ValueError(
                        f"{name}: a field of each image: give it in images.<key>.{name}"
                    )
        return data

    @model_validator(mode="after")
    def _keys_fit_the_layout(self) -> DatasetSpec:
        if self.layout == "image" and len(self.images) != 1:
            raise ValueError(
                f"images: layout 'image' holds exactly one image, got {len(self.images)}; "
                "use layout 'collection' or 'plate'"
            )
        for key in self.images:
            if not key or "\0" in key:
                raise ValueError(f"images: expected a non-empty name, got {key!r}")
            if self.layout == "plate" and plate_key(key) is None:
                raise ValueError(
                    f"images.{key}: expected a plate key ROW/COLUMN/FIELD of letters and "
                    f"digits, e.g. 'B/3/0', got {key!r}"
                )
        if self.plate is not None and self.layout != "plate":
            raise ValueError("plate: given, but layout is not 'plate'")
        if self.plate is not None:
            rows, columns = self.plate.row_names(), self.plate.column_names()
            for key in self.images:
                row, column, _ = plate_key(key)  # type: ignore[misc]
                if rows is not None and row not in rows:
                    raise ValueError(
                        f"images.{key}: row {row!r} is not a row of the plate "
                        f"(plate.rows: {rows[0]}..{rows[-1]})"
                    )
                if columns is not None and column not in columns:
                    raise ValueError(
                        f"images.{key}: column {column!r} is not a column of the plate "
                        f"(plate.columns: {columns[0]}..{columns[-1]})"
                    )
        for key in self.images:  # each image must make a valid stream spec
            self.image_stream(key)
        return self

    def image_stream(self, key: str, out: Path | None = None) -> StreamSpec:
        """The :class:`StreamSpec` image ``key`` is written with (``out``: its folder)."""
        image = self.images[key]
        data = {
            **{name: getattr(self, name) for name in WRITER_FIELDS},
            **{name: getattr(image, name) for name in IMAGE_FIELDS},
            "codec": image.codec or self.codec,
            "out": out or self.out,
            "overwrite": True,
            "disk_check": False,
            "name": image.name or key,
        }
        try:
            return StreamSpec.model_validate(data)
        except ValidationError as exc:
            error = format_validation_error(exc, prefix=f"images.{key}.")
            raise ValueError(str(error).removeprefix("invalid spec: ")) from None


def plate_key(key: str) -> tuple[str, str, str] | None:
    """(row, column, field) of a plate image key ``ROW/COLUMN/FIELD``, or None."""
    match = _PLATE_KEY.fullmatch(key)
    return None if match is None else (match.group(1), match.group(2), match.group(3))
