"""The streaming engine, in the order a frame moves through it.

``slots`` (frame slots, the bounded memory a frame is copied into once) →
``assembly`` (frames into chunk batches) → ``workers`` (compressor and I/O threads,
encoded-chunk buffers) → ``array`` (one array's tiles: compress, write, pack) →
``shards`` (shards being filled and published) → ``commit`` (per-frame metadata, then
the extent) ; beside them ``ledger`` (indices, records, drops, latencies), ``guard``
(failure and disk space), ``preflight`` (memory and disk checks before opening) and
``stream`` (the :class:`FrameStream` facade that wires them for one image).
"""
