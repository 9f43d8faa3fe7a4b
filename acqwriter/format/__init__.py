"""The bytes and documents on disk: keys, Zarr arrays and shards, OME-NGFF groups and
layouts, the summary and what the frames showed. No threads, no stores: functions from
values to documents.

``keys`` spells every key (parameterised by the array's path inside the dataset),
``zarr_v3`` and ``zarr_v2`` the array documents and the shard index. ``model`` is what
a group's OME-NGFF metadata says in no version's spelling, built for an image by
``image`` (placed by ``placement``) and for the groups above images by ``layouts``
(image paths, series, rows, wells, plate, scene); ``ngff_v04``, ``ngff_v05`` and
``ngff_v06`` render and parse it, and ``versions`` picks one and turns it into files.
``ome_xml`` is a collection's OME-XML, ``display`` the measured time scale and display
windows, ``summary`` the result.
"""
