"""What an acquisition will do, said before it starts: the daemon's ``configure`` reply
and the CLI's summary line (:func:`acquisition_plan`, :func:`describe_plan`), the
writer's whole plan (:func:`writer_plan`: ``acqwriter acquire --plan``), and the check
that a sequence's channels exist on the core (:func:`check_sequence`)."""

from __future__ import annotations

from typing import Any

import numpy as np

from acqwriter.acquisition.runner import mda_options, positions_dataset, stream_spec_for
from acqwriter.acquisition.spec import AcquisitionSpec
from acqwriter.devices.camera import DeviceError
from acqwriter.devices.microscope import Microscope
from acqwriter.mda.images import IMAGE_OPTIONS, image_specs, plate_of, split_image_options
from acqwriter.mda.mapping import plan_sequence
from acqwriter.mda.placement import image_axes
from acqwriter.mda.sequence import check_core, parse_sequence
from acqwriter.plan.dataset import DatasetPlan
from acqwriter.spec.dataset import DatasetSpec
from acqwriter.spec.model import StreamSpec
from acqwriter.validation import SpecError

__all__ = ["acquisition_plan", "check_sequence", "describe_plan", "writer_plan"]


def acquisition_plan(spec: AcquisitionSpec, stream_spec: StreamSpec) -> dict[str, Any]:
    """What ``spec`` will acquire, said concisely: where, the images (key, axes and sizes,
    channels; the first 20 of a long list), frames, camera frame and bytes."""
    frame_bytes = int(np.prod(stream_spec.shape)) * np.dtype(stream_spec.dtype).itemsize
    images: dict[str, Any] = {}
    if spec.sequence is not None:
        plan = plan_sequence(parse_sequence(spec.sequence))
        frames: int | None = plan.events
        layout = plan.layout
        for key, image in plan.images.items():
            images[key] = {
                "dims": image.dims(),
                "sizes": {a: image.sizes[a] for a in image.dims()[:-2]},
                "channels": [image.channels.get(c, f"Channel {c}") for c in
                             range(image.sizes.get("c", 0))],
            }  # fmt: skip
    else:
        sizes = dict(zip(stream_spec.outer_dims, stream_spec.outer_sizes(), strict=True))
        positions = spec.position_count
        layout = "collection" if positions > 1 else "image"
        frames = None if spec.frames is None else spec.frames * positions
        for i in range(positions):
            key = "image" if positions == 1 else f"p{i}"
            if spec.stage_positions is not None and spec.stage_positions[i].name:
                key = spec.stage_positions[i].name
            images[key] = {
                "dims": stream_spec.dims,
                "sizes": sizes,
                "channels": [c.name for c in stream_spec.channels],
            }
    shown = dict(list(images.items())[:20])
    return {
        "out": str(spec.out),
        "layout": layout,
        "image_count": len(images),
        "images": shown,
        "frames": frames,
        "frame": {"shape": list(stream_spec.shape), "dtype": str(stream_spec.dtype)},
        "bytes": None if frames is None else frames * frame_bytes,
        "duration_s": spec.duration,
    }


def describe_plan(acquires: dict[str, Any]) -> str:
    """:func:`acquisition_plan` as a few lines for a terminal."""
    size = acquires.get("bytes")
    frames = acquires.get("frames")
    frame = acquires["frame"]
    count = acquires["image_count"]
    head = f"configured: {count} image(s) ({acquires['layout']}) -> {acquires['out']}"
    amount = (
        f"{frames} frames of {frame['shape'][0]}x{frame['shape'][1]} {frame['dtype']}, "
        f"{size / 1e6:.1f} MB uncompressed"
        if frames is not None and size is not None
        else f"frames of {frame['shape'][0]}x{frame['shape'][1]} {frame['dtype']} "
        f"for {acquires.get('duration_s')} s"
    )
    lines = [head, f"  {amount}"]
    for key, image in acquires["images"].items():
        sizes = " ".join(f"{a}={n if n is not None else '…'}" for a, n in image["sizes"].items())
        channels = f", channels {', '.join(image['channels'])}" if image["channels"] else ""
        lines.append(f"  {key}: {image['dims']} {sizes}{channels}")
    if count > len(acquires["images"]):
        lines.append(f"  … and {count - len(acquires['images'])} more image(s)")
    return "\n".join(lines)


def check_sequence(scope: Microscope, spec: AcquisitionSpec) -> None:
    """Refuse, before anything starts, a sequence this scope cannot run (a channel its
    core does not have)."""
    if spec.sequence is not None:
        try:
            # made from the options (--channel): name the option, not the sequence
            prefix = "" if spec.channels else "sequence"
            check_core(scope.core, parse_sequence(spec.sequence), prefix)
        except SpecError as exc:
            raise DeviceError(str(exc)) from None


def writer_plan(scope: Microscope, spec: AcquisitionSpec) -> DatasetPlan:
    """The plan the writer will follow for ``spec`` on ``scope`` (images, levels, frame
    slots, threads, memory, disk), computed as the run computes it, nothing opened. A
    sequence's images are planned all at once here; the run makes each as its first
    frame comes, with the same specs."""
    stream = stream_spec_for(scope, spec)
    if spec.sequence is not None:
        sequence = parse_sequence(spec.sequence)
        check_core(scope.core, sequence)
        plan = plan_sequence(sequence)
        options = mda_options(spec)
        image_options, given = split_image_options(options)
        writer = {k: v for k, v in options.items() if k not in IMAGE_OPTIONS}
        if writer.get("expected_frames") is None and plan.events:
            writer["expected_frames"] = plan.events
        to_image = image_axes(scope.core)
        images = image_specs(
            plan, stream.shape, stream.dtype, stream.pixel_size, image_options, given, to_image
        )
        plate = plate_of(plan)
        dataset = {
            **writer,
            "out": spec.out,
            "overwrite": spec.overwrite,
            "layout": plan.layout,
            "images": images,
            **({"plate": plate} if plate is not None else {}),
        }
        return DatasetPlan.of(DatasetSpec.parse(dataset), more_images=len(images) > 1)
    if spec.position_count > 1:
        dataset, _ = positions_dataset(scope, spec)
        return DatasetPlan.of(DatasetSpec.parse(dataset))
    return DatasetPlan.of_stream(stream)
