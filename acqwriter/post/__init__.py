"""After (or beside) acquisition: read what was written (``reader``), find a dataset's
images (``hierarchy``), compute a lower level's values (``downsample``), build the
pyramid (``pyramid``, one unit of work in ``regions``, on a Dask cluster in ``cluster``),
finish a dataset whose writer died (``recover``) and describe a dataset (``info``).
:func:`build_pyramid` is the entry point for a dataset at a path or URL. These never
import the engine; the engine calls the pyramid at close.
"""

from acqwriter.post.pyramid import build_pyramid

__all__ = ["build_pyramid"]
