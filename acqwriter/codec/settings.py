"""The compression settings of a spec: which codec, which level, which blocks.

One definition of each codec constant lives here; :mod:`acqwriter.codec.chain` turns a
:class:`Compression` into the Zarr codec chain and numcodecs codecs, and
:mod:`acqwriter.codec.blosc` compresses with it without copies.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Strict, field_validator, model_validator

from acqwriter.validation import StrictModel, did_you_mean

__all__ = ["SHUFFLE_IDS", "ZSTD_BLOCK_BYTES", "Compression"]

# blosc's shuffle filters by name, as c-blosc and numcodecs number them
SHUFFLE_IDS = {"noshuffle": 0, "shuffle": 1, "bitshuffle": 2}
ZSTD_BLOCK_BYTES = 1 << 20  # blosc block size "auto" picks for zstd (see Compression)
MIN_BLOCK_BYTES = 128  # c-blosc's smallest block (MIN_BUFFERSIZE)
MAX_BLOCK_BYTES = 1 << 30  # c-blosc 1 keeps sizes in 31 bits; a block is at most a chunk


_CODEC_SHORTHANDS: dict[str, dict[str, Any]] = {
    "lz4": {"name": "blosc", "cname": "lz4", "shuffle": "shuffle", "level": 5},
    "blosc-lz4": {"name": "blosc", "cname": "lz4", "shuffle": "shuffle", "level": 5},
    "blosc-zstd": {"name": "blosc", "cname": "zstd", "shuffle": "bitshuffle", "level": 1},
    "zstd": {"name": "zstd", "level": 1},
    "none": {"name": "none"},
}


class Compression(StrictModel):
    """How chunks are compressed.

    ``name="blosc"`` uses ``cname`` (lz4 or zstd) with ``shuffle``, ``level`` and
    ``blocksize``; ``name="zstd"`` is plain zstd at ``level``; ``name="none"`` stores raw
    bytes. A string shorthand is accepted wherever a codec is expected:
    ``lz4`` / ``blosc-lz4`` (blosc lz4 level 5 shuffle), ``blosc-zstd`` (blosc zstd level 1
    bitshuffle), ``zstd`` (plain zstd level 1), ``none``.

    ``blocksize`` is the size of the blocks blosc compresses one at a time inside a chunk
    (bytes; written to ``zarr.json`` and to every chunk's header, so any reader decodes
    it). ``0`` lets c-blosc choose (numcodecs' and zarr-python's default); ``"auto"``
    (default) is c-blosc's choice for lz4 and :data:`ZSTD_BLOCK_BYTES` for zstd. Why:
    c-blosc's own choice for zstd is 32 KiB at level 1 (128 KiB at level 3), and zstd
    resets its state for every block: with 1 MiB blocks zstd compresses and decompresses
    faster and stores less; lz4 gains nothing measurable (``docs/decisions.md``).
    """

    name: Literal["blosc", "zstd", "none"] = "blosc"
    cname: Literal["lz4", "zstd"] = "lz4"
    shuffle: Literal["shuffle", "bitshuffle", "noshuffle"] = "shuffle"
    level: Annotated[int, Strict()] = 5
    blocksize: Literal["auto"] | int = "auto"

    @field_validator("blocksize", mode="before")
    @classmethod
    def _blocksize(cls, value: Any) -> Any:
        ok = value == "auto" or (
            isinstance(value, int)
            and not isinstance(value, bool)
            and (value == 0 or MIN_BLOCK_BYTES <= value <= MAX_BLOCK_BYTES)
        )
        if not ok:
            raise ValueError(
                "expected 'auto', 0 (c-blosc chooses) or a number of bytes from "
                f"{MIN_BLOCK_BYTES} to {MAX_BLOCK_BYTES}, got {value!r}"
            )
        return value

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        if isinstance(value, str):
            key = value.strip().lower()
            if key not in _CODEC_SHORTHANDS:
                raise ValueError(
                    f"expected one of {', '.join(sorted(_CODEC_SHORTHANDS))} "
                    f"or an object with name/cname/shuffle/level, got {value!r}"
                    + did_you_mean(key, _CODEC_SHORTHANDS)
                )
            return dict(_CODEC_SHORTHANDS[key])
        return value

    @model_validator(mode="after")
    def _check_level(self) -> Compression:
        lo, hi = (0, 9) if self.name == "blosc" else (-131072, 22)
        if self.name != "none" and not lo <= self.level <= hi:
            raise ValueError(
                f"level: expected {lo}..{hi} for codec {self.name!r}, got {self.level}"
            )
        if self.name != "blosc" and self.blocksize != "auto":
            raise ValueError(
                f"blocksize: applies to blosc only, got {self.blocksize!r} for codec "
                f"{self.name!r} (remove it, or use name 'blosc')"
            )
        return self

    def block_bytes(self) -> int:
        """The blosc block size written (0: c-blosc chooses per chunk); 0 for non-blosc."""
        if self.name != "blosc":
            return 0
        if self.blocksize == "auto":
            return ZSTD_BLOCK_BYTES if self.cname == "zstd" else 0
        return int(self.blocksize)

    def describe(self) -> str:
        if self.name == "blosc":
            return f"blosc {self.cname} level {self.level} {self.shuffle}"
        if self.name == "zstd":
            return f"zstd level {self.level}"
        return "none"
