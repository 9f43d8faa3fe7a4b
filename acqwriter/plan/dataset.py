"""The plan of a dataset: everything decided before anything is wired.

:class:`DatasetPlan` is computed once from a spec (and the cores this process may run
on) and the engine only wires what it says: each image's key, path, stream spec,
resources and levels (:class:`ImagePlan`), the frame slots the images share, the
threads and the encoded-chunk buffers, the memory and disk each part takes, and the
plate document. ``open_dataset(spec).plan`` and ``acqwriter acquire ... --plan`` show it:
:meth:`DatasetPlan.describe` for people, :meth:`DatasetPlan.to_dict` as JSON.

Rules decided here, each with its reason:

* **Shards of an image of many stay within a time point.** With many images open at
  once, each image's open t-shard would hold a staging segment beside the frame slots,
  outside the memory bound; images without their own shard sizes are therefore not
  sharded along the first axis.
* **One set of slots for every image**, sized for the largest frame: what
  ``ring_bytes`` leaves after the staging of open shards and the compressors' own
  buffers, in frames, capped at the frames every image holds when all are bounded,
  never below what one image's row of chunks keeps open.
* **Disk**: an estimate of the uncompressed frames plus 5 %, ``min_free_bytes`` and
  the two reserves the writer keeps for finishing after a full disk.

Pure: no I/O (the machine checks against these numbers live in the engine's preflight).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from acqwriter.codec.blosc import max_compressed_size
from acqwriter.format.image import STAGE_KEY, TRANSLATION_KEY
from acqwriter.format.layouts import group_documents, image_path_in, plate_document
from acqwriter.format.model import GroupMetadata
from acqwriter.format.placement import stage_attributes
from acqwriter.format.versions import array_document
from acqwriter.plan.layout import FrameLayout
from acqwriter.plan.levels import LiveLevel, live_level_bytes, live_levels
from acqwriter.plan.pyramid import level_chunks, no_pyramid_reason, plan_levels
from acqwriter.plan.resources import RING_MAX_FRAMES, Resources
from acqwriter.plan.sharding import shard_factors
from acqwriter.spec.dataset import WRITER_FIELDS, DatasetSpec
from acqwriter.spec.location import ObjectURL
from acqwriter.spec.model import StreamSpec, WriterOptions
from acqwriter.validation import SpecError

__all__ = [
    "FINAL_RESERVE_BYTES",
    "RESERVE_BYTES",
    "VIEW_CACHE_FRAMES",
    "DatasetPlan",
    "ImagePlan",
    "LevelPlan",
    "SlotPlan",
]

# Disk set aside for when the disk fills up: one reserve for the final extent and
# per-frame metadata (freed on error), one kept for the root's final state alone.
RESERVE_BYTES = 4 * 2**20
FINAL_RESERVE_BYTES = 1 * 2**20
_LISTED = 10  # images :meth:`DatasetPlan.describe` lists before "… N more"
# newest frames a live view keeps in memory per viewed image (acqwriter.engine.view):
# its budget, beside ring_bytes, only while a view is attached
VIEW_CACHE_FRAMES = 2


@dataclass(frozen=True)
class LevelPlan:
    """One resolution level: its shape (``None``: the first axis grows) and chunks."""

    index: int
    shape: tuple[int | None, ...]
    chunks: tuple[int, ...]


@dataclass(frozen=True)
class ImagePlan:
    """One image of the dataset: where it lives, how it is written, its levels."""

    key: str
    path: str  # inside the dataset ("" for the root)
    spec: StreamSpec
    resources: Resources
    levels: tuple[LevelPlan, ...]  # level 0 first; lower ones only when they are built
    attrs: dict[str, Any] = field(default_factory=dict)  # under attributes.acqwriter
    no_pyramid: str | None = None  # why there is no lower level, when there is none
    live: tuple[LiveLevel, ...] = ()  # levels 1.. written during acquisition

    @property
    def layout(self) -> FrameLayout:
        return self.resources.layout

    @classmethod
    def of(cls, key: str, path: str, spec: StreamSpec, attrs: dict[str, Any]) -> ImagePlan:
        resources = Resources.of(spec)
        layout = resources.layout
        grows = layout.outer_sizes[0] is None
        sizes = layout.array_shape(1 if grows else layout.outer_sizes[0])  # type: ignore[arg-type]
        levels = [LevelPlan(0, _shown(sizes, grows), layout.chunk_shape)]
        reason = no_pyramid_reason(spec)
        shapes = plan_levels(spec, sizes) if reason is None else []
        for k, shape in enumerate(shapes, start=1):
            levels.append(LevelPlan(k, _shown(shape, grows), level_chunks(spec, shape)))
        live = live_levels(spec, shapes, grows=grows)
        return cls(key, path, spec, resources, tuple(levels), attrs, reason, live)

    def live_bytes(self) -> int:
        """What its live levels hold in memory at most (:mod:`acqwriter.plan.levels`)."""
        threads = self.resources.compressors + 1  # and the producer, compressing inline
        return live_level_bytes(
            self.layout, self.live, threads, downsample_z=self.spec.pyramid.downsample_z
        )

    def level_fraction(self) -> float:
        """The raw bytes of its lower levels per byte of level 0 (0: none written)."""
        if len(self.levels) == 1 or self.spec.pyramid.when == "none":
            return 0.0
        size = [math.prod(s for s in level.shape[1:] if s) for level in self.levels]
        return sum(size[1:]) / size[0]

    def array_document(self) -> dict[str, Any]:
        """Level 0's array metadata as first written (its first axis empty), in the
        Zarr version of the image's OME-NGFF version."""
        layout = self.layout
        return array_document(
            self.spec, layout.array_shape(0), layout.chunk_shape, layout.shard_shape
        )

    def to_dict(self) -> dict[str, Any]:
        layout = self.layout
        return {
            "key": self.key,
            "path": self.path,
            "dims": list(self.spec.dims),
            "dtype": layout.dtype.name,
            "frame_bytes": layout.frame_bytes,
            "chunks": list(layout.chunk_shape),
            "shards": None if layout.shard_shape is None else list(layout.shard_shape),
            "levels": [
                {"shape": list(level.shape), "chunks": list(level.chunks)} for level in self.levels
            ],
            "no_pyramid": self.no_pyramid,
            "min_slot_frames": layout.min_ring_frames,
            "shard_staging_bytes": layout.extra_staging_bytes,
        }


def _shown(shape: tuple[int, ...], grows: bool) -> tuple[int | None, ...]:
    return (None, *shape[1:]) if grows else tuple(shape)


@dataclass(frozen=True)
class SlotPlan:
    """The frame slots every image shares: ``frames`` slots of ``shape`` ``dtype`` (the
    frame itself when all images have one frame shape, else raw bytes of the largest)."""

    frames: int
    shape: tuple[int, ...]
    dtype: np.dtype

    @property
    def slot_bytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize

    @property
    def nbytes(self) -> int:
        return self.frames * self.slot_bytes

    def holds(self, layout: FrameLayout) -> bool:
        """Frames of ``layout`` fit: the same frame, and enough slots for one row of its
        chunks."""
        return (
            tuple(self.shape) == tuple(layout.frame_shape)
            and self.dtype == layout.dtype
            and self.frames >= layout.min_ring_frames
        )


def _slot_plan(images: list[ImagePlan], ring_bytes: int) -> SlotPlan:
    resources = [image.resources for image in images]
    layouts = [r.layout for r in resources]
    if len(resources) == 1:
        frames = resources[0].ring_frames
    else:
        slot_bytes = max(layout.frame_bytes for layout in layouts)
        staging = sum(layout.extra_staging_bytes for layout in layouts)
        usable = ring_bytes - staging - max(r.thread_buffer_bytes for r in resources)
        limits = [usable // slot_bytes, RING_MAX_FRAMES]
        if all(layout.max_frames is not None for layout in layouts):
            limits.append(sum(layout.max_frames for layout in layouts))  # type: ignore[misc]
        frames = max(min(limits), max(layout.min_ring_frames for layout in layouts))
    first = layouts[0]
    if all(x.frame_shape == first.frame_shape and x.dtype == first.dtype for x in layouts):
        return SlotPlan(frames, first.frame_shape, first.dtype)
    return SlotPlan(frames, (1, max(x.frame_bytes for x in layouts)), np.dtype(np.uint8))


@dataclass
class DatasetPlan:
    """What a dataset is made of and what it takes (see the module docstring). Build
    with :meth:`of` (a :class:`DatasetSpec`) or :meth:`of_stream` (one image at the
    root). A dataset that takes images as their frames come grows by :meth:`add_image`."""

    writer: WriterOptions  # the writer options every image shares (out, ring_bytes, …)
    layout: str  # "image", "collection" or "plate"
    images: dict[str, ImagePlan]
    slots: SlotPlan
    by_index: bool = True  # frames are placed at the index given (a stream: in order)
    plate: dict[str, Any] | None = None  # the plate document of a plate
    more_images: bool = False  # images are added as their first frame comes

    # -- building -----------------------------------------------------------------------
    @classmethod
    def of(cls, spec: DatasetSpec, *, more_images: bool = False) -> DatasetPlan:
        many = more_images or len(spec.images) > 1
        images = [
            _image(spec, key, image_path_in(spec.layout, key, i), many=many)
            for i, key in enumerate(spec.images)
        ]
        plate = plate_document(spec, list(spec.images)) if spec.layout == "plate" else None
        return cls(
            writer=spec,
            layout=spec.layout,
            images={image.key: image for image in images},
            slots=_slot_plan(images, spec.ring_bytes),
            by_index=True,
            plate=plate,
            more_images=more_images,
        )

    @classmethod
    def of_stream(cls, spec: StreamSpec) -> DatasetPlan:
        """One image at the root, frames in the order they come."""
        image = ImagePlan.of("image", "", spec, {})
        return cls(spec, "image", {"image": image}, _slot_plan([image], spec.ring_bytes), False)

    def add_image(self, key: str, image: dict[str, Any]) -> ImagePlan:
        """Plan image ``key`` (ImageSpec fields) of a collection or plate and add it: its
        frames must fit the planned slots. Raises :class:`SpecError` naming the field."""
        spec = self.writer
        if self.layout == "image" or not isinstance(spec, DatasetSpec):
            raise SpecError(f"images.{key}: images are added to a collection or a plate")
        if key in self.images:
            raise SpecError(f"images.{key}: the dataset has this image")
        writer = {name: getattr(spec, name) for name in WRITER_FIELDS}
        one = DatasetSpec.parse(
            {**writer, "out": spec.out, "layout": self.layout, "images": {key: image}}
            | ({"plate": spec.plate} if spec.plate is not None else {})
        )
        added = _image(one, key, image_path_in(self.layout, key, len(self.images)), many=True)
        if not self.slots.holds(added.layout):
            raise SpecError(f"images.{key}: its frames do not fit the dataset's frame slots")
        self.images[key] = added
        if self.layout == "plate":
            self.plate = plate_document(one, list(self.images))
        return added

    @property
    def has_scene(self) -> bool:
        """Whether the root places the images (OME-NGFF 0.6 collections)."""
        return self.layout == "collection" and self.writer.ngff_version == "0.6"

    def group_documents(self) -> list[tuple[str, GroupMetadata]]:
        """The documents of the groups between the root and the images (a collection's
        ``OME`` series, a plate's wells and rows), as (prefix, document); the root's own
        document says the dataset's state and is written by the engine as it changes."""
        return group_documents(self.layout, [i.path for i in self.images.values()])

    # -- what it takes ------------------------------------------------------------------
    @property
    def out(self) -> Path | ObjectURL:
        out = self.writer.out
        return out if isinstance(out, ObjectURL) else Path(out)

    @property
    def compressors(self) -> int:
        """Compressor threads: the most any image's resources ask for."""
        return max(image.resources.compressors for image in self.images.values())

    @property
    def io_threads(self) -> int:
        return max(image.resources.io_threads for image in self.images.values())

    def encoded_buffers(self) -> tuple[int, int]:
        """(count, bytes each) of the encoded-chunk buffers between compressors and I/O
        threads; (0, 0) when no image hands chunks to I/O threads."""
        pipelined = [i.resources for i in self.images.values() if i.resources.io_threads]
        if not pipelined:
            return 0, 0
        size = max(max_compressed_size(r.layout.chunk_bytes) for r in pipelined)
        return max(r.encoded_buffers(size) for r in pipelined), size

    def memory(self) -> dict[str, int]:
        """Bytes each part holds at most, by part (``ring_bytes`` bounds the first three
        together; the encoded buffers are bounded on their own; ``live_levels`` is what
        the levels written during acquisition hold; ``view_cache`` is what each image a
        live view watches adds, only while it is watched)."""
        count, size = self.encoded_buffers()
        images = self.images.values()
        return {
            "frame_slots": self.slots.nbytes,
            "shard_staging": sum(i.layout.extra_staging_bytes for i in images),
            "compressor_buffers": max(i.resources.thread_buffer_bytes for i in images),
            "encoded_buffers": count * size,
            "live_levels": sum(i.live_bytes() for i in images),
            "view_cache": VIEW_CACHE_FRAMES * max(i.layout.frame_bytes for i in images),
        }

    def disk_frames(self) -> int:
        """Frames the disk estimate counts: ``expected_frames``, or every bounded image's."""
        if self.writer.expected_frames:
            return self.writer.expected_frames
        return sum(i.layout.max_frames or 0 for i in self.images.values())

    def disk_need_bytes(self) -> int:
        """Free space the dataset needs (see the module docstring)."""
        need = self.writer.min_free_bytes + RESERVE_BYTES + FINAL_RESERVE_BYTES
        images = self.images.values()
        if self.writer.expected_frames:
            frame_bytes = max(i.layout.frame_bytes * (1 + i.level_fraction()) for i in images)
            return need + int(self.writer.expected_frames * frame_bytes * 1.05)
        for image in images:
            if image.layout.max_frames:
                raw = image.layout.frame_bytes * (1 + image.level_fraction())
                need += int(image.layout.max_frames * raw * 1.05)
        return need

    # -- showing it ---------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The plan as JSON values (``acqwriter acquire --plan --json``)."""
        count, size = self.encoded_buffers()
        return {
            "out": str(self.out),
            "layout": self.layout,
            "ngff_version": self.writer.ngff_version,
            "images": [image.to_dict() for image in self.images.values()],
            "more_images": self.more_images,
            "slots": {
                "frames": self.slots.frames,
                "slot_bytes": self.slots.slot_bytes,
                "bytes": self.slots.nbytes,
            },
            "threads": {"compressors": self.compressors, "io": self.io_threads},
            "encoded_buffers": {"count": count, "bytes_each": size},
            "memory_bytes": self.memory(),
            "ring_bytes": self.writer.ring_bytes,
            "disk": {"frames": self.disk_frames(), "need_bytes": self.disk_need_bytes()},
            "plate": self.plate,
        }

    def describe(self) -> str:
        """The plan for people: what is written where, and what memory and disk it takes."""
        images = list(self.images.values())
        what = (
            "one image"
            if self.layout == "image"
            else f"a {self.layout} of {len(images)} image(s)"
            + (", each made as its first frame comes" if self.more_images else "")
        )
        lines = [f"dataset {self.out}: {what}, OME-NGFF {self.writer.ngff_version}"]
        for image in images[:_LISTED]:
            lines.extend(_describe_image(image))
        if len(images) > _LISTED:
            lines.append(f"  … {len(images) - _LISTED} more image(s)")
        count, size = self.encoded_buffers()
        memory = self.memory()
        lines += [
            f"threads: {self.compressors} compressor(s), {self.io_threads} I/O",
            f"memory (ring_bytes {_mib(self.writer.ring_bytes)}):",
            f"  frame slots         {self.slots.frames} x {_mib(self.slots.slot_bytes)}"
            f" = {_mib(memory['frame_slots'])}",
            f"  shard staging       {_mib(memory['shard_staging'])}",
            f"  compressor buffers  {_mib(memory['compressor_buffers'])}",
            f"  encoded buffers     {count} x {_mib(size)} = {_mib(memory['encoded_buffers'])}",
            f"  live levels         {_mib(memory['live_levels'])} (pyramid levels made as "
            "frames pass)",
            f"  view cache          {_mib(memory['view_cache'])} per image a live view watches",
            f"disk: {_mib(self.disk_need_bytes())} free needed for {self.disk_frames()} "
            "frame(s) (uncompressed, lower levels included, + 5 %, min_free_bytes, reserves)",
        ]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.describe()


def _describe_image(image: ImagePlan) -> list[str]:
    layout = image.layout
    where = f"{image.path}/" if image.path else "the root"
    shards = "" if layout.shard_shape is None else f", shards {_dims(layout.shard_shape)}"
    lines = [
        f"  {image.key} at {where}: {''.join(image.spec.dims)} {layout.dtype.name}, "
        f"chunks {_dims(layout.chunk_shape)}{shards}"
    ]
    when = {"live": "written live", "close": "built at close"}.get(image.spec.pyramid.when, "")
    for level in image.levels:
        how = f" ({when})" if level.index and when else ""
        lines.append(f"    level {level.index}: {_dims(level.shape)}{how}")
    if image.no_pyramid is not None:
        lines.append(f"    no lower level: {image.no_pyramid}")
    return lines


def _dims(shape: tuple[int | None, ...]) -> str:
    return "(" + ", ".join("grows" if s is None else str(s) for s in shape) + ")"


def _mib(nbytes: int) -> str:
    return f"{nbytes / 2**20:.1f} MiB"


def _image(spec: DatasetSpec, key: str, path: str, *, many: bool) -> ImagePlan:
    """Image ``key`` of ``spec`` at ``path`` in the dataset (``many``: one of several
    images, whose automatic shards stay within a time point)."""
    stream = spec.image_stream(key, out=spec.out / path if path else spec.out)
    if many and stream.shards == "auto":
        stream = _within_time_points(stream)
    attrs: dict[str, Any] = {"image": key}
    translation = spec.images[key].translation
    if translation:
        attrs[TRANSLATION_KEY] = dict(translation)
    stage = spec.images[key].stage
    if stage is not None:
        attrs[STAGE_KEY] = stage_attributes(stage.model_dump())
    return ImagePlan.of(key, path, stream, attrs)


def _within_time_points(stream: StreamSpec) -> StreamSpec:
    """``stream`` with automatic shards that do not span its first axis."""
    factors = shard_factors(stream)
    if factors[0] == 1:
        return stream
    chunks = stream.resolved_chunks()
    outer = stream.outer_dims
    shards = {axis: f * c for axis, f, c in zip(outer, factors, chunks, strict=False)}
    shards[outer[0]] = chunks[0]
    return stream.model_copy(update={"shards": shards})
