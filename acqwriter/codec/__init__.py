"""Compression: the settings (``settings``), the Zarr codec chain and numcodecs codecs
that describe and decode them (``chain``), and the zero-copy blosc encoder that
compresses straight into a write buffer (``blosc``)."""
