"""acqwriter as the pymmcore-plus MDA sink: ``mmc.run_mda(seq, output=MDAWriter(path))``.

``sequence`` parses and bounds a useq ``MDASequence`` and checks it against the core,
``mapping`` turns it into the dataset it fills (images, axes, sizes, channels, stage
positions), ``placement`` turns stage positions into image translations, ``images``
the images' specs, ``failures`` what a failed run leaves counted, and ``writer`` is the
handler that writes it.
"""

from acqwriter.mda.writer import MDAWriter

__all__ = ["MDAWriter"]
