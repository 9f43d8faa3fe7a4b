"""The layers of acqwriter, in the one order the code, the README and the tests use.

Each layer imports only the layers before it (at module level or inside a function),
and no module imports, even indirectly, a module that imports it back. The base
modules come first; the core is the writer; the outer layers join it to microscopes,
pymmcore-plus, the daemon and the command line. The hardware layer (``devices`` and
``simulators``) imports the base only: no writer, no MDA code, and not each other.
"""

from __future__ import annotations

__all__ = ["BASE", "CORE", "HARDWARE", "ORDER", "OUTER", "order_text"]

# what every layer may use: the version, checks and messages, strict JSON, memory pages
BASE = ("_version", "validation", "jsonio", "pages", "layers")
# the writer: what to write, how, in which bytes, where, then streaming and after
CORE = ("codec", "spec", "format", "plan", "store", "post", "engine")
# Micro-Manager devices and their simulators: the base only
HARDWARE = ("devices", "simulators")
# joining the writer to the world: the MDA sink, acquisitions, the daemon, the viewer
# window, the CLI
OUTER = ("mda", "acquisition", "control", "viewer", "cli")
ORDER = (*CORE, *HARDWARE, *OUTER)


def order_text(layers: tuple[str, ...] = CORE, quote: str = "``") -> str:
    """``layers`` as the package docstring (``quote="``"``) and the README (``"`"``)
    write them."""
    return " → ".join(f"{quote}{name}{quote}" for name in layers)
