"""How to write a spec: frame ↔ chunk ↔ shard arithmetic and the resources a stream
uses, computed once from the spec and the machine (pure: no I/O, no threads).

``layout`` maps frame indices to chunks and extents, ``sharding`` packs chunks into
shards, ``resources`` decides threads, buffers and frame slots.
"""
