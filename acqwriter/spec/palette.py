"""The display colour of a channel that was given none: one palette everywhere.

A channel named after a fluorophore or filter set takes that dye's colour (``DAPI``
blue, ``FITC``/``GFP`` green, …), matched without regard to case, so the CLI's
``--channel DAPI``, a spec file and an MDA's channels all look the same in a viewer.
Other names take, by their index, the colours viewers use for unnamed channels (a
single channel stays white: a greyscale image).
"""

from __future__ import annotations

__all__ = ["channel_color"]

_BY_NAME = {
    "DAPI": "0000FF",
    "HOECHST": "0000FF",
    "BFP": "0000FF",
    "CFP": "00FFFF",
    "FITC": "00FF00",
    "GFP": "00FF00",
    "EGFP": "00FF00",
    "YFP": "FFFF00",
    "TRITC": "FF8000",
    "RHODAMINE": "FF0000",
    "MCHERRY": "FF0000",
    "RFP": "FF0000",
    "TXRED": "FF0000",
    "CY3": "FF8000",
    "CY5": "FF00FF",
    "CY7": "FF00FF",
}
_BY_INDEX = ("00FF00", "FF00FF", "00FFFF", "FFFF00")


def channel_color(name: str | None, index: int, count: int) -> str:
    """RRGGBB for channel ``index`` of ``count`` named ``name`` (see module docstring)."""
    if name:
        known = _BY_NAME.get(name.replace(" ", "").replace("-", "").upper())
        if known is not None:
            return known
    if count == 1:
        return "FFFFFF"
    return _BY_INDEX[index % len(_BY_INDEX)]
