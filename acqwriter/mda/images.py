"""What the images of an MDA are: their specs, from a planned sequence or from events
as they come.

:func:`image_specs` turns a :class:`~acqwriter.mda.mapping.SequencePlan` into the
ImageSpec fields of each image (axes, sizes, z step, channels, placement);
:class:`EventImages` makes images as frames come for a run of events no sequence
describes. :class:`~acqwriter.mda.writer.MDAWriter` opens the dataset with them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from acqwriter.engine.dataset import open_dataset
from acqwriter.mda.mapping import SequencePlan

if TYPE_CHECKING:
    from acqwriter.mda.writer import MDAWriter

__all__ = [
    "IMAGE_OPTIONS",
    "EventImages",
    "image_specs",
    "only_axes",
    "plate_of",
    "read_back",
    "split_image_options",
]

# MDAWriter options that describe every image rather than the writer
IMAGE_OPTIONS = ("chunks", "shards", "pyramid", "channels")


def split_image_options(
    options: dict[str, Any],
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """The per-image options among ``options`` (``channels`` apart) and the channels
    given by name (colour, display window), which override the defaults."""
    image_options = {k: options[k] for k in IMAGE_OPTIONS if k in options}
    given = {
        (c["name"] if isinstance(c, dict) else c.name): (
            c if isinstance(c, dict) else c.model_dump()
        )
        for c in image_options.pop("channels", None) or []
    }
    return image_options, given


def plate_of(plan: SequencePlan) -> dict[str, Any] | None:
    """The plate a sequence's well-plate plan names (``PlateSpec`` fields), or None."""
    if plan.plate is None:
        return None
    return {k: v for k, v in plan.plate.items() if v is not None}


def image_specs(
    plan: SequencePlan,
    shape: tuple[int, ...],
    dtype: str,
    pixel_size: float,
    image_options: dict[str, Any],
    given: dict[str, dict[str, Any]],
    to_image: Any,
) -> dict[str, dict[str, Any]]:
    """The ImageSpec fields of each image ``plan`` names: axes and sizes, the z step (or
    a plane index when the planes are unevenly spaced), channels (``given`` by name
    override the defaults) and the translation from the stage position."""
    images = {}
    for key, image in plan.images.items():
        spec: dict[str, Any] = {
            "shape": shape,
            "dtype": dtype,
            "dims": image.dims(),
            "sizes": {a: n for a, n in image.sizes.items() if a != "t"} | {"t": image.sizes["t"]},
            "pixel_size": pixel_size,
            **image_options,
        }
        only_axes(spec, spec["dims"])
        if "z" in image.sizes:
            step = image.z_step()
            if step is not None:
                spec["z_step"] = step
            elif image.sizes["z"] > 1:
                spec["z_unit"] = None  # planes unevenly spaced: z is a plane index
        if "c" in image.sizes:
            names = [image.channels.get(c, f"Channel {c}") for c in range(image.sizes["c"])]
            spec["channels"] = [given.get(name) or {"name": name} for name in names]
        translation = {}
        if image.x is not None and image.y is not None:
            translation = to_image(float(image.x), float(image.y))
            spec["stage"] = _stage(to_image, image.x, image.y)
        z0 = image.z_origin()
        if z0 is not None and "z_step" in spec:
            translation["z"] = float(z0)
            if "stage" in spec:
                spec["stage"]["z"] = float(z0)
        if translation:
            spec["translation"] = translation
        images[key] = spec
    return images


def read_back(record: dict[str, Any], index: dict[str, int]) -> dict[str, float] | None:
    """The stage position a frame's record read back (``z`` only for a first plane: the
    focus of the image's ``z = 0``), or None when it read back none."""
    if record["x_um"] is None or record["y_um"] is None:
        return None
    stage = {"x": record["x_um"], "y": record["y_um"]}
    if record["z_um"] is not None and not any(index.values()):
        stage["z"] = record["z_um"]
    return stage


def _stage(to_image: Any, x: float, y: float) -> dict[str, Any]:
    """The planned stage position of an image and the pixel affine it is seen through."""
    return {"x": float(x), "y": float(y), "affine": to_image.describe["affine"]}


class EventImages:
    """Images made as frames come, for a run of events that no sequence describes
    (``mmc.run_mda([MDAEvent(...), ...])``): each position (its name, else ``p<p>``,
    with ``_g<g>`` for a grid field) is an image of a collection, its frames along
    ``t`` in the order they came (each frame's event index is in its metadata: no
    size along c or z was ever said), placed at the stage position of its first event."""

    def __init__(
        self,
        base: dict[str, Any],
        options: dict[str, Any],
        to_image: Any,
        summary: dict[str, Any],
    ) -> None:
        self.base = base
        self.options = options
        self.to_image = to_image
        self.summary = summary
        self.count: dict[str, int] = {}

    def place(self, writer: MDAWriter, event: Any, index: dict[str, int]) -> tuple[str, dict]:
        key = event.pos_name or f"p{index.get('p', 0)}"
        if "g" in index and not event.pos_name:
            key = f"{key}_g{index['g']}"
        if key not in self.count:
            spec = dict(self.base)
            if event.x_pos is not None and event.y_pos is not None:
                spec["translation"] = self.to_image(float(event.x_pos), float(event.y_pos))
                spec["stage"] = _stage(self.to_image, event.x_pos, event.y_pos)
            if writer.dataset is None:
                writer.dataset = open_dataset(
                    {
                        **self.options,
                        "out": writer.path,
                        "overwrite": writer.overwrite,
                        "layout": "collection",
                        "images": {key: spec},
                    },
                    root_attrs={"mda": self.summary},
                    store=writer.store,
                )
            else:
                writer.dataset.add_image(key, spec)
            writer.bind_views()
            self.count[key] = 0
        t = self.count[key]
        self.count[key] = t + 1
        return key, {"t": t}


def only_axes(spec: dict[str, Any], dims: str) -> None:
    """Chunk and shard sizes along axes an image does not have do not apply to it."""
    for name in ("chunks", "shards"):
        if isinstance(spec.get(name), dict):
            spec[name] = {a: n for a, n in spec[name].items() if a in dims}
