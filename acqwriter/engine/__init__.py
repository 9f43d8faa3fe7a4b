"""The streaming engine: it wires what the plan says and moves frames to the store.

In the order a frame moves: ``slots`` (frame slots, the bounded memory a frame is
copied into once) → ``assembly`` (frames into chunk batches) → ``workers`` (compressor
and I/O threads, encoded-chunk buffers) → ``array`` (one array's tiles: compress,
write, pack) → ``shards`` (one shard being filled and published) and ``open_shards``
(an array's open shards: finished, sealed, salvaged) → ``commit`` (per-frame metadata,
then the extent). Beside them: ``ledger`` (indices, records, drops, latencies),
``guard`` (failure and disk space), ``errors`` (what ``append`` raises), ``pipeline``
(what every image of a dataset shares), ``image`` (one image: its array, group
document, pyramid), ``hierarchy`` (the groups above a dataset's images), ``progress``
(live snapshots and the close's ticker), ``preflight`` (memory and disk checks before
opening), ``dataset`` (:class:`DatasetWriter`, wiring a
:class:`~acqwriter.plan.dataset.DatasetPlan`) and ``stream`` (the
:class:`FrameStream` facade of a one-image dataset).
"""
