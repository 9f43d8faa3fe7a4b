"""Where the daemon may write: a configured ``out`` resolved and checked before any
acquisition starts, so a bad destination is refused at ``configure`` with its reason."""

from __future__ import annotations

import os
from pathlib import Path

from acqwriter.acquisition.spec import AcquisitionSpec
from acqwriter.control.protocol import ControlError
from acqwriter.spec.location import ObjectURL
from acqwriter.store.folders import nearest_existing, replace_refusal

__all__ = ["check_out"]


def check_out(
    root: Path | None, spec: AcquisitionSpec, object_root: ObjectURL | None = None
) -> Path | ObjectURL:
    """Resolve ``out`` (against the server's ``root`` when given) and refuse unsafe
    destinations: outside the root, an existing path without overwrite, something that
    is not a Zarr dataset, a parent that is not a writable directory. An object-store
    URL must lie under the server's ``object_root`` (``--object-root``); without one,
    URLs are refused (the bucket itself is checked when the acquisition opens it)."""
    if isinstance(spec.out, ObjectURL):
        if object_root is None:
            raise ControlError(
                "path_refused",
                f"out: {spec.out}: this daemon has no --object-root; object-store URLs are refused",
            )
        if not spec.out.startswith(object_root.rstrip("/") + "/"):
            raise ControlError(
                "path_refused", f"out: {spec.out} is outside the server's object root "
                f"{object_root}",
            )  # fmt: skip
        return spec.out
    out = Path(spec.out).expanduser()
    if root is not None:
        out = (out if out.is_absolute() else root / out).resolve()
        if not out.is_relative_to(root):
            raise ControlError(
                "path_refused", f"out: {spec.out} is outside the server's root {root}"
            )
    else:
        out = out.resolve()
    if out.exists() or out.is_symlink():
        if not spec.overwrite:
            raise ControlError(
                "path_refused", f"out: {out} already exists (set overwrite to replace it)"
            )
        refusal = replace_refusal(out)  # the rule `acquire --overwrite` follows
        if refusal is not None:
            raise ControlError("path_refused", f"out: {out} {refusal}")
    # Missing parent folders are created when the acquisition starts (as `acquire`
    # does) and listed in the configure reply and the summary; the nearest existing
    # one must be a writable directory.
    parent = nearest_existing(out.parent)
    if not parent.is_dir():
        raise ControlError("path_refused", f"out: {parent} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ControlError("path_refused", f"out: directory {parent} is not writable")
    return out
