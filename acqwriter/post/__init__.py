"""After (or beside) acquisition: read what was written (``reader``), find a dataset's
images (``hierarchy``), compute a lower level's values (``downsample``), build the
pyramid (``pyramid``), finish a dataset whose writer died (``recover``) and describe a
dataset (``info``). These never import the engine; the engine calls the pyramid at
close.
"""
