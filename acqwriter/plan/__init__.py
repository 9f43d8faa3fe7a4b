"""How to write a spec, decided once before anything is wired (pure: no I/O, no threads).

``layout`` maps frame indices to chunks and extents, ``sharding`` packs chunks into
shards, ``pyramid`` says which lower levels an image gets, ``resources`` decides one
image's threads, buffers and frame slots, and ``dataset`` puts it together: the
:class:`~acqwriter.plan.dataset.DatasetPlan` of every image, its levels, the shared
slots, the memory and the disk, that the engine wires and ``--plan`` prints.
"""
