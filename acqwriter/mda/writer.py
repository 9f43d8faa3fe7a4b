"""acqwriter as a pymmcore-plus MDA handler: ``mmc.run_mda(seq, output=MDAWriter(path))``.

Call order (pymmcore-plus's handler protocol): ``sequenceStarted(sequence, summary)``
opens the dataset the sequence fills (:mod:`acqwriter.mda.mapping`: images, axes,
sizes, channels, stage translations; frame shape, dtype and pixel size from the
summary's ``image_infos``) and stores the summary metadata (devices, config groups,
the sequence as useq JSON) once, in the root's ``attributes.acqwriter.mda``;
``frameReady(image, event, metadata)`` places each frame at its event's index in its
image, with the event's index, the stage position read back (none for a
hardware-sequenced frame) and the one the event asked for, exposure, runner time,
camera and hardware-triggered flag as its per-frame metadata; ``sequenceCanceled``
marks the run cut short; ``sequenceFinished`` closes the dataset (frames the plan
promised that never came are flagged ``missing``).

Back-pressure. pymmcore-plus relays the calls of ``output=`` handlers through a thread
with an unbounded queue: a writer slower than the camera would let frames pile up in
memory there, whatever the writer's own bound. So the writer takes frames on the
acquisition thread itself, where a frame is copied into the ring (or waits for a slot
under ``overflow="block"``, or is dropped and counted under ``"drop"``) before the next
one is taken:

* given the core (``MDAWriter(path, core=mmc)``), it connects to ``mmc.mda.events`` at
  construction and ignores the relayed calls, for every run until :meth:`detach`;
* without it (``output=MDAWriter(path)``), the relayed ``sequenceStarted`` finds the
  core running the sequence (pymmcore-plus's global core, the one ``CMMCorePlus.instance()``
  returns, when it is running) and connects to its ``frameReady`` for that run. The few
  frames queued before that moment arrive relayed; from then on each frame arrives
  twice and is written by whichever call claims its event index first. Frames of
  another sequence (a second core running its own) are left to the relay. When no
  running core is found, every frame comes through the relay, and memory is bounded
  only by how far the relay falls behind.
"""

from __future__ import annotations

import math
import threading
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import TypeAdapter, ValidationError

from acqwriter.engine.dataset import DatasetWriter, open_dataset
from acqwriter.format.summary import Summary
from acqwriter.mda.mapping import SequencePlan, plan_sequence
from acqwriter.spec.dataset import WRITER_FIELDS
from acqwriter.spec.model import Channel, StreamSpec
from acqwriter.store.base import Store
from acqwriter.validation import SpecError, did_you_mean, format_validation_error

__all__ = ["MDAWriter"]

_COLORS = {
    "DAPI": "0000FF",
    "FITC": "00FF00",
    "GFP": "00FF00",
    "Rhodamine": "FF0000",
    "Cy5": "FF00FF",
    "mCherry": "FF0000",
    "TRITC": "FF8000",
}


class MDAWriter:
    """Writes what a pymmcore-plus MDA acquires (see the module docstring).

    ``options`` are acqwriter's writer options (``codec``, ``ring_bytes``, ``overflow``,
    ``sync``, ``io``, ``threads``, ``commit_interval_s``, ``min_free_bytes``, …) and the
    per-image ``chunks``, ``shards`` and ``pyramid``, applied to every image; ``channels``
    (name, colour, display window) set how the channels of those names are shown."""

    IMAGE_OPTIONS = ("chunks", "shards", "pyramid", "channels")

    def __init__(
        self,
        path: str | Path,
        *,
        core: Any = None,
        overwrite: bool = False,
        store: Store | None = None,
        **options: Any,
    ) -> None:
        self.path = Path(path)
        self.store = store  # where to write instead of a new directory at ``path``
        self.overwrite = overwrite
        self.options = options
        self._check_options(path)
        self.dataset: DatasetWriter | None = None
        self.plan: SequencePlan | None = None
        self.summary: Summary | None = None
        self._canceled = False
        self._core: Any = None  # connected at construction: every call comes from it
        self._joined: Any = None  # core whose frameReady was joined for the current run
        self._sequence: Any = None
        self._claimed: set[tuple[tuple[str, int], ...]] = set()  # arrived one way of two
        self._claim_lock = threading.Lock()
        if core is not None:
            events = core.mda.events
            events.sequenceStarted.connect(self._started)
            events.frameReady.connect(self._frame)
            events.sequenceCanceled.connect(self._cancel)
            events.sequenceFinished.connect(self._finished)
            self._core = core

    def _check_options(self, out: str | Path) -> None:
        """Refuse a bad option here, before any acquisition: raised when the sequence
        starts, pymmcore-plus would log the error and acquire on with nothing written.
        Raises :class:`SpecError` naming the option."""
        allowed = (*(f for f in WRITER_FIELDS if f != "overwrite"), *self.IMAGE_OPTIONS)
        for name in self.options:
            if name not in allowed:
                longer = [a for a in allowed if a.startswith(name)]  # "ring": ring_bytes
                hint = f" (did you mean {longer[0]!r}?)" if longer else did_you_mean(name, allowed)
                raise SpecError(
                    f"invalid option: {name}: not an MDAWriter option{hint}; "
                    f"expected one of {', '.join(allowed)}"
                )
        given = {k: v for k, v in self.options.items() if k != "channels"}
        # checked as a stream of one-pixel frames with every axis (chunks are clipped
        # to the frame): the same rules and messages as any stream's spec
        probe = {"shape": [1, 1], "dtype": "uint16", "dims": "tczyx", "sizes": {"c": 1, "z": 1}}
        StreamSpec.parse({**probe, **given, "out": out, "overwrite": self.overwrite})
        if self.store is None and not self.overwrite and self.path.exists():
            raise SpecError(f"out: {str(self.path)!r} already exists (set overwrite to replace it)")
        try:  # by name, for any number of channels: not part of the probe
            TypeAdapter(list[Channel]).validate_python(self.options.get("channels") or [])
        except ValidationError as exc:
            raise format_validation_error(exc, "channels.") from None

    # -- the handler protocol (relayed calls are ignored when the core was given) ------------
    def sequenceStarted(self, sequence: Any, summary: dict[str, Any] | None = None) -> None:
        if self._core is None:
            core = _running_core()
            try:
                self._started(sequence, summary)
            except BaseException:
                # relayed, the error would only be logged and the acquisition go on
                # with nothing written: stop it
                if core is not None:
                    core.mda.cancel()
                raise
            self._claimed.clear()
            self._join(core)

    def frameReady(self, image: np.ndarray, event: Any, metadata: dict[str, Any]) -> None:
        if self._core is None:
            self._frame_once(image, event, metadata)

    def sequenceCanceled(self, sequence: Any) -> None:
        if self._core is None:
            self._cancel(sequence)

    def sequenceFinished(self, sequence: Any) -> None:
        if self._core is None:
            self._leave()  # the relay is FIFO: every frame of the run has arrived
            self._claimed.clear()
            self._finished(sequence)

    def detach(self) -> None:
        """Disconnect from the core given at construction."""
        if self._core is not None:
            events = self._core.mda.events
            events.sequenceStarted.disconnect(self._started)
            events.frameReady.disconnect(self._frame)
            events.sequenceCanceled.disconnect(self._cancel)
            events.sequenceFinished.disconnect(self._finished)
            self._core = None

    # -- taking frames on the acquisition thread of a run we were relayed -------------------
    def _join(self, core: Any) -> None:
        if core is not None and self.dataset is not None:
            self._joined = core
            core.mda.events.frameReady.connect(self._frame_joined)

    def _leave(self) -> None:
        """Stop taking frames from the joined core. The claims stay until the run ends:
        frames it already wrote may still be queued in the relay."""
        with self._claim_lock:
            if self._joined is not None:
                self._joined.mda.events.frameReady.disconnect(self._frame_joined)
                self._joined = None

    def _frame_joined(self, image: np.ndarray, event: Any, metadata: dict[str, Any]) -> None:
        if getattr(event, "sequence", None) is not self._sequence:
            # Another run's frame (or events that do not name their sequence): this core
            # is not feeding ours, or cannot be told apart; the relay brings every frame.
            self._leave()
            return
        self._frame_once(image, event, metadata)

    def _frame_once(self, image: np.ndarray, event: Any, metadata: dict[str, Any]) -> None:
        """Write a frame that may arrive both relayed and joined, once: the first call
        claims its event index, the second finds the claim and drops it."""
        index = _event_index(event)
        key = tuple(sorted(index.items()))
        with self._claim_lock:  # held while a full ring blocks: the other path waits too
            if key in self._claimed:
                self._claimed.discard(key)
                return
            if self._joined is not None:
                self._claimed.add(key)
            self._frame(image, event, metadata, index)

    # -- what each call does ----------------------------------------------------------------
    def _started(self, sequence: Any, summary: dict[str, Any] | None = None) -> None:
        summary = dict(summary or {})
        info = (summary.get("image_infos") or [{}])[0]
        shape = tuple(info.get("plane_shape") or (info["height"], info["width"]))
        dtype = info.get("dtype", "uint16")
        pixel_size = info.get("pixel_size_um") or 1.0
        self.plan = plan = plan_sequence(sequence)
        image_options = {k: self.options[k] for k in self.IMAGE_OPTIONS if k in self.options}
        # channels given by name (colour, display window) override the defaults
        given = {
            (c["name"] if isinstance(c, dict) else c.name): (
                c if isinstance(c, dict) else c.model_dump()
            )
            for c in image_options.pop("channels", None) or []
        }
        writer_options = {k: v for k, v in self.options.items() if k not in self.IMAGE_OPTIONS}
        images = {}
        for key, image in plan.images.items():
            spec: dict[str, Any] = {
                "shape": shape,
                "dtype": dtype,
                "dims": image.dims(),
                "sizes": {a: n for a, n in image.sizes.items() if a != "t"}
                | {"t": image.sizes["t"]},
                "pixel_size": pixel_size,
                **image_options,
            }
            for name in ("chunks", "shards"):  # sizes along axes this image does not have
                if isinstance(spec.get(name), dict):  # do not apply to it
                    spec[name] = {a: n for a, n in spec[name].items() if a in spec["dims"]}
            if "z" in image.sizes:
                step = image.z_step()
                if step is not None:
                    spec["z_step"] = step
                elif image.sizes["z"] > 1:
                    spec["z_unit"] = None  # planes unevenly spaced: z is a plane index
            if "c" in image.sizes:
                names = [image.channels.get(c, f"Channel {c}") for c in range(image.sizes["c"])]
                spec["channels"] = [
                    given.get(name) or {"name": name, "color": _COLORS.get(name, "FFFFFF")}
                    for name in names
                ]
            if image.x is not None and image.y is not None:
                spec["translation"] = {"x": float(image.x), "y": float(image.y)}
            images[key] = spec
        summary["mda_sequence"] = sequence.model_dump(mode="json", exclude_unset=True)
        self._canceled = False
        self._sequence = sequence
        self.dataset = open_dataset(
            {
                **writer_options,
                "out": self.path,
                "overwrite": self.overwrite,
                "layout": plan.layout,
                "images": images,
            },
            root_attrs={"mda": _jsonable(summary)},
            store=self.store,
        )

    def _frame(
        self,
        image: np.ndarray,
        event: Any,
        metadata: dict[str, Any],
        index: dict[str, int] | None = None,
    ) -> None:
        if self.dataset is None or self.dataset.closed or self.plan is None:
            return
        if index is None:  # connected to the core directly: the signal's three arguments
            index = _event_index(event)
        key = self.plan.key_of(index)
        dims = self.plan.images[key].dims()
        placed = {a: index.get(a, 0) for a in dims[:-2]}
        position = metadata.get("position") or {}
        record = {
            "event_index": index,
            "position_name": event.pos_name,
            "x_um": position.get("x"),
            "y_um": position.get("y"),
            "z_um": position.get("z"),
            # where the event sent the stages (a hardware-sequenced frame has no read-back)
            "target_um": {
                axis: value
                for axis, value in (("x", event.x_pos), ("y", event.y_pos), ("z", event.z_pos))
                if value is not None
            },
            "exposure_ms": metadata.get("exposure_ms"),
            "runner_time_ms": metadata.get("runner_time_ms"),
            "camera": metadata.get("camera_device"),
            "hardware_triggered": metadata.get("hardware_triggered", False),
            "channel": event.channel.config if event.channel is not None else None,
        }
        runner = metadata.get("runner_time_ms")
        taken = runner / 1000 if isinstance(runner, float | int) and math.isfinite(runner) else None
        self.dataset.append(image, image=key, index=placed, metadata=record, taken_s=taken)

    def _cancel(self, sequence: Any) -> None:
        self._canceled = True

    def _finished(self, sequence: Any) -> None:
        if self.dataset is None or self.dataset.closed:
            return
        reason = "sequence cancelled" if self._canceled else None
        self.summary = self.dataset.close(aborted=reason, pyramid=not self._canceled)


def _event_index(event: Any) -> dict[str, int]:
    return {str(getattr(k, "value", k)): int(v) for k, v in event.index.items()}


def _running_core() -> Any:
    """pymmcore-plus's global core when it is running an MDA, else None.

    ``CMMCorePlus.instance()`` would create a core when none is alive, so its weak
    reference is read instead; were it renamed, frames simply keep coming relayed."""
    try:
        from pymmcore_plus.core import _mmcore_plus
    except ImportError:
        return None
    ref = getattr(_mmcore_plus, "_instance", None)
    core = ref() if callable(ref) else None
    if core is None or not core.mda.is_running():
        return None
    return core


def _jsonable(value: Any) -> Any:
    """Summary metadata as JSON values (tuples as lists, anything else as its string)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, str | int | float | bool) or value is None:
        return value if not (isinstance(value, float) and not math.isfinite(value)) else None
    return str(value)
