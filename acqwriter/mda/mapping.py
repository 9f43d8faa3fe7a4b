"""From a useq ``MDASequence`` to the dataset it fills: which image each event's frame
belongs to, the axes and sizes of each image, and where each image was.

The sequence is planned without expanding its time plan: the events of one time point
(the sequence with its top-level time plan cut to one time point) are read once, before the first
frame, and the time points are counted (:func:`acqwriter.mda.sequence.timepoints`).
Each distinct position (``p``, and grid field ``g``) is an image; its axes are ``t``
and, where the events have them, ``c`` and ``z``, sized by the largest index any of its
events has, so per-position sub-sequences (their own z plans or channels), channels
without z stacks and channels acquired every n-th time point all fit: the frames that
never come are flagged ``missing``.

A ``WellPlatePlan`` becomes a plate: its selected wells and points per well give each
position's ``ROW/COLUMN/FIELD`` key (whatever the names: ``B3`` with one point per
well, ``B3_0001`` with several), and the physical plate its rows, columns and name.
Other positions make a collection named after them. Each image's stage position (from
its first event) becomes its ``translation`` (see :func:`image_translation`). Its z
step is the spacing of the z positions its events name, when they are evenly spaced
(any z plan: a range, above and below, top and bottom, or a list of positions); when
they are not, or name no position, z is written as a plane index with no unit rather
than as a distance nothing moved.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

from acqwriter.mda.sequence import (
    MAX_EVENTS_PER_TIMEPOINT,
    MAX_IMAGES,
    check_bounds,
    timepoints,
)
from acqwriter.spec.dataset import row_name
from acqwriter.validation import SpecError

__all__ = ["ImagePlan", "SequencePlan", "plan_sequence"]


@dataclass
class ImagePlan:
    """One image of the dataset a sequence fills."""

    key: str
    sizes: dict[str, int] = field(default_factory=dict)  # t, c, z: largest index + 1
    channels: dict[int, str] = field(default_factory=dict)  # c index -> channel name
    x: float | None = None
    y: float | None = None
    z_positions: dict[int, float | None] = field(default_factory=dict)  # z index -> z (µm)

    def z_origin(self) -> float | None:
        """The z of plane 0 (µm) when the planes are evenly spaced and known, else None."""
        if "z" not in self.sizes:
            return None
        if self.sizes["z"] > 1 and self.z_step() is None:
            return None
        return self.z_positions.get(0)

    def dims(self) -> str:
        return "t" + "".join(a for a in "cz" if a in self.sizes) + "yx"

    def z_step(self) -> float | None:
        """The spacing of the z planes in µm, or None when the planes' positions are not
        all known or not evenly spaced (a single plane: None, nothing to space)."""
        planes = self.sizes.get("z", 0)
        zs = [self.z_positions.get(k) for k in range(planes)]
        if planes < 2 or any(z is None for z in zs):
            return None
        steps = [b - a for a, b in itertools.pairwise(zs)]  # type: ignore[operator]
        first = steps[0]
        if first == 0 or any(abs(d - first) > 1e-6 * max(abs(first), 1.0) for d in steps):
            return None  # uneven, or moving back and forth
        return abs(first)


@dataclass
class SequencePlan:
    layout: str
    images: dict[str, ImagePlan]
    keys: dict[tuple[int, int], str]  # (p, g) -> image key
    plate: dict[str, Any] | None = None  # name, rows, columns of a well plate
    events: int = 0  # events the whole sequence holds (counted, not expanded)

    def key_of(self, index: dict[str, int]) -> str | None:
        """The image of an event's index, or None for a position the plan does not hold."""
        return self.keys.get((index.get("p", 0), index.get("g", 0)))


def _axis(name: Any) -> str:
    return str(getattr(name, "value", name))


def _event_index(event: Any) -> dict[str, int]:
    return {_axis(k): int(v) for k, v in event.index.items()}


def _plate_keys(plan: Any) -> tuple[dict[int, str], dict[str, Any]]:
    """Each position index of a WellPlatePlan → ``ROW/COLUMN/FIELD``, and the plate."""
    per_well = max(1, int(plan.num_points_per_well))
    keys = {}
    for w, (row, column) in enumerate(plan.selected_well_indices):
        for f in range(per_well):
            keys[w * per_well + f] = f"{row_name(int(row))}/{int(column) + 1}/{f}"
    plate = plan.plate
    info = {"name": plate.name or None, "rows": int(plate.rows), "columns": int(plate.columns)}
    return keys, info


def plan_sequence(sequence: Any) -> SequencePlan:
    """The images ``sequence`` fills (see the module docstring). Raises SpecError for a
    sequence beyond :mod:`acqwriter.mda.sequence`'s bounds."""
    check_bounds(sequence)
    plate_keys: dict[int, str] = {}
    plate_info = None
    if type(sequence.stage_positions).__name__ == "WellPlatePlan":
        plate_keys, plate_info = _plate_keys(sequence.stage_positions)
    n_t = timepoints(sequence)
    one_timepoint = sequence
    if sequence.time_plan is not None:  # the events of time point 0 (all channels come)
        one_timepoint = sequence.replace(time_plan={"interval": 0, "loops": 1})
    images: dict[str, ImagePlan] = {}
    keys: dict[tuple[int, int], str] = {}
    owner: dict[str, tuple[int, int]] = {}
    read = 0
    for event in one_timepoint:
        read += 1
        if read > MAX_EVENTS_PER_TIMEPOINT:
            raise SpecError(
                f"sequence: more than {MAX_EVENTS_PER_TIMEPOINT} events per time point "
                "(positions x grid fields x channels x planes); split the acquisition"
            )
        index = _event_index(event)
        where = (index.get("p", 0), index.get("g", 0))
        key = keys.get(where)
        if key is None:
            key = plate_keys.get(where[0]) if plate_info is not None else None
            if key is None:
                key = event.pos_name or f"p{where[0]}"
                if "g" in index:
                    key = f"{key}_g{where[1]}"
                if owner.get(key, where) != where:  # two positions of one name
                    key = f"{key}_{where[0]}_{where[1]}"
            owner[key] = where
            keys[where] = key
            if len(images) >= MAX_IMAGES:
                raise SpecError(
                    f"sequence: more than {MAX_IMAGES} images (positions x grid fields); "
                    "split the acquisition"
                )
            images[key] = ImagePlan(key, x=event.x_pos, y=event.y_pos)
        image = images[key]
        for axis in ("t", "c", "z"):
            if axis in index:
                image.sizes[axis] = max(image.sizes.get(axis, 0), index[axis] + 1)
        if "c" in index and event.channel is not None:
            image.channels.setdefault(index["c"], event.channel.config)
        if "z" in index:
            image.z_positions.setdefault(index["z"], event.z_pos)
    for image in images.values():
        image.sizes["t"] = max(image.sizes.get("t", 1), n_t)
    if plate_info is not None:
        layout = "plate"
    else:
        layout = "collection" if len(images) > 1 or sequence.stage_positions else "image"
    return SequencePlan(layout, images, keys, plate_info, read * n_t)
