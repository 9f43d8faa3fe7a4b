"""From a useq ``MDASequence`` to the dataset it fills: which image each event's frame
belongs to, the axes and sizes of each image, and where each image was.

The sequence's events are read once, before the first frame (a long time plan is
counted from its first time points and its size): each distinct position (``p``, and
grid field ``g``) is an image; its axes are ``t`` and, where the events have them,
``c`` and ``z``, sized by the largest index any of its events has, so per-position
sub-sequences (their own z plans or channels), channels without z stacks and channels
acquired every n-th time point all fit: the frames that never come are flagged
``missing``. A ``WellPlatePlan`` (positions named ``A1_0000``) becomes a plate of wells
and fields; other positions a collection named after them. Each image's stage position
(from its first event) becomes its ``translation``. Its z step is the spacing of the z
positions its events name, when they are evenly spaced (any z plan: a range, above and
below, top and bottom, or a list of positions); when they are not, or name no position,
z is written as a plane index with no unit rather than as a distance nothing moved.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ImagePlan", "SequencePlan", "plan_sequence"]

# at most this many events are read ahead; time points beyond are counted, not read
MAX_EVENTS_READ = 200_000
_WELL_POINT = re.compile(r"^([A-Za-z]+)(\d+)_(\d+)$")  # useq WellPlatePlan names: A1_0000


@dataclass
class ImagePlan:
    """One image of the dataset a sequence fills."""

    key: str
    sizes: dict[str, int] = field(default_factory=dict)  # t, c, z: largest index + 1
    channels: dict[int, str] = field(default_factory=dict)  # c index -> channel name
    x: float | None = None
    y: float | None = None
    z_positions: dict[int, float | None] = field(default_factory=dict)  # z index -> z (µm)

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

    def key_of(self, index: dict[str, int]) -> str:
        return self.keys[(index.get("p", 0), index.get("g", 0))]


def _axis(name: Any) -> str:
    return str(getattr(name, "value", name))


def _event_index(event: Any) -> dict[str, int]:
    return {_axis(k): int(v) for k, v in event.index.items()}


def _plate_key(name: str | None) -> str | None:
    match = _WELL_POINT.match(name or "")
    if match is None:
        return None
    return f"{match.group(1).upper()}/{match.group(2)}/{int(match.group(3))}"


def plan_sequence(sequence: Any) -> SequencePlan:
    """The images ``sequence`` fills (see the module docstring)."""
    plate = type(sequence.stage_positions).__name__ == "WellPlatePlan"
    images: dict[str, ImagePlan] = {}
    keys: dict[tuple[int, int], str] = {}
    owner: dict[str, tuple[int, int]] = {}
    read = 0
    for event in itertools.islice(iter(sequence), MAX_EVENTS_READ):
        read += 1
        index = _event_index(event)
        where = (index.get("p", 0), index.get("g", 0))
        key = keys.get(where)
        if key is None:
            key = _plate_key(event.pos_name) if plate else None
            if key is None:
                key = event.pos_name or f"p{where[0]}"
                if "g" in index:
                    key = f"{key}_g{where[1]}"
                if owner.get(key, where) != where:  # two positions of one name
                    key = f"{key}_{where[0]}_{where[1]}"
            owner[key] = where
            keys[where] = key
            images[key] = ImagePlan(key, x=event.x_pos, y=event.y_pos)
        image = images[key]
        for axis in ("t", "c", "z"):
            if axis in index:
                image.sizes[axis] = max(image.sizes.get(axis, 0), index[axis] + 1)
        if "c" in index and event.channel is not None:
            image.channels.setdefault(index["c"], event.channel.config)
        if "z" in index:
            image.z_positions.setdefault(index["z"], event.z_pos)
    truncated = read >= MAX_EVENTS_READ
    for image in images.values():
        seen = image.sizes.get("t", 1)
        image.sizes["t"] = max(seen, sequence.sizes.get("t") or 1) if truncated else seen
    if plate:
        layout = "plate"
    else:
        layout = "collection" if len(images) > 1 or sequence.stage_positions else "image"
    return SequencePlan(layout, images, keys)
