"""acqwriter as the pymmcore-plus MDA sink: ``mmc.run_mda(seq, output=MDAWriter(path))``.

``mapping`` turns a useq ``MDASequence`` into the dataset it fills (images, axes,
sizes, channels, stage positions); ``writer`` is the handler that writes it.
"""

from acqwriter.mda.writer import MDAWriter

__all__ = ["MDAWriter"]
