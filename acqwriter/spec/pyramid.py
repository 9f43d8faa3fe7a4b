"""The multiscale pyramid a spec asks for: when its lower levels are written, how many,
and how their values are computed (the arithmetic is :mod:`acqwriter.plan.pyramid` and
:mod:`acqwriter.post.downsample`)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, Strict, model_validator

from acqwriter.validation import StrictModel

__all__ = ["PYRAMID_WHEN", "PyramidSpec"]

# when the lower levels are written (see PyramidSpec)
PYRAMID_WHEN = ("live", "close", "none")
PositiveInt = Annotated[int, Strict(), Field(gt=0)]


class PyramidSpec(StrictModel):
    """The multiscale pyramid: when its lower levels are written, how many, how.

    ``when``: ``"live"`` computes each lower level from the frames while they are still
    in memory, on the writer's threads, and commits it beside level 0 (a reader sees
    every level grow; close only flushes); ``"close"`` builds the levels after the last
    frame, reading level 0 back from disk; ``"none"`` writes level 0 only. A bare
    string (``pyramid="live"``) sets ``when``; ``enabled=False`` is ``when="none"``.

    Levels are downsampled 2× in y and x (and in z when ``downsample_z``). With
    ``levels="auto"`` levels are added until the largest of y and x is at most 256
    pixels (a size a viewer shows whole; :mod:`acqwriter.plan.pyramid`) or
    ``max_levels`` (level 0 included) is reached, whatever the chunking; an integer asks
    for exactly that many levels (level 0 included), still capped where a level would be
    1×1.
    ``method="mean"`` averages each block (integers rounded half up:
    ``(sum + n // 2) // n``; at an odd edge the block is clipped to the pixels that
    exist); ``"nearest"`` keeps the top-left pixel of each block. A frame that never
    reached level 0 (dropped or missing) counts as the fill value there, as a reader of
    level 0 sees it, whoever builds the level.
    """

    when: Literal["live", "close", "none"] = "close"
    enabled: bool = True
    levels: Literal["auto"] | PositiveInt = "auto"
    max_levels: PositiveInt = 8
    method: Literal["mean", "nearest"] = "mean"
    downsample_z: bool = False

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        if isinstance(value, str):
            return {"when": value, "enabled": value != "none"}
        if isinstance(value, bool):
            return {"enabled": True} if value else {"enabled": False, "when": "none"}
        if isinstance(value, dict):
            if value.get("when") == "none":
                return {**value, "enabled": False}
            if "when" not in value and value.get("enabled") is False:
                return {**value, "when": "none"}
        return value

    @model_validator(mode="after")
    def _when_agrees(self) -> PyramidSpec:
        if self.when != "none" and not self.enabled:
            raise ValueError(
                f"enabled: false contradicts when={self.when!r}; give when='none' "
                "(or enabled: true)"
            )
        return self
