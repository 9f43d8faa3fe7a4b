"""After (or beside) acquisition: read what was written (``reader``), find a dataset's
images (``hierarchy``), compute a lower level's values (``downsample``), build the
pyramid (``pyramid``, one unit of work in ``regions``, on a Dask cluster in ``cluster``),
finish a dataset whose writer died (``recover``) and describe a dataset (``info``).
:func:`build_pyramid` is the entry point for a dataset at a path or URL; on a cluster
it raises :class:`ClusterLost` when the scheduler goes mid-build (run it again: it
resumes). These never import the engine; the engine calls the pyramid at close.
"""

from acqwriter.post.cluster import ClusterLost
from acqwriter.post.pyramid import build_pyramid

__all__ = ["ClusterLost", "build_pyramid"]
