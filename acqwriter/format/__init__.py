"""The bytes and documents on disk: keys, Zarr arrays and shards, OME-NGFF groups and
layouts, the summary and what the frames showed. No threads, no stores: functions from
values to documents.

``keys`` spells every key (parameterised by the array's path inside the dataset),
``zarr_v3`` and ``zarr_v2`` the array documents and the shard index, ``versions`` what
differs between OME-NGFF 0.5 (Zarr v3) and 0.4 (Zarr v2), ``ngff_v05`` an image's
group, ``layouts`` the collection and plate layouts (image paths, series, rows, wells,
plate), ``ome_xml`` a collection's OME-XML, ``display`` the measured time scale and
display windows, ``summary`` the result.
"""
