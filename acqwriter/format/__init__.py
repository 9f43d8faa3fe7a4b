"""The bytes and documents on disk: keys, Zarr v3 arrays and shards, OME-NGFF 0.5
groups, the summary and what the frames showed. No threads, no stores: functions from
values to documents.

``keys`` spells every key (parameterised by the array's path inside the dataset),
``zarr_v3`` the array documents and the shard index, ``ngff_v05`` the root group,
``display`` the measured time scale and display windows, ``summary`` the result.
"""
