"""The zero-copy encoder writes exactly the bytes numcodecs would (so the codec chain in
``zarr.json`` describes them), for every compression a spec can name."""

from __future__ import annotations

import itertools
import mmap

import numpy as np
import pytest

from acqwriter.codec.blosc import (
    IntoEncoder,
    _compress_ctx,
    _python_blosc_library,
    _same_output,
    blosc_compressor,
    max_compressed_size,
)
from acqwriter.codec.chain import chunk_encoder
from acqwriter.simulators import FrameBank
from acqwriter.spec.model import Compression
from acqwriter.store.local import LocalStore

BLOSC = [
    Compression(name="blosc", cname=c, shuffle=s, level=lvl)
    for c, s, lvl in itertools.product(
        ["lz4", "zstd"], ["shuffle", "bitshuffle", "noshuffle"], [1, 5]
    )
]
# block sizes: c-blosc's choice, "auto"'s for zstd (1 MiB, bigger than these frames), a
# forced size that is not a multiple of the item size nor of bitshuffle's 8 elements
BLOSC += [
    Compression(name="blosc", cname=c, shuffle=s, level=1, blocksize=b)
    for c, s, b in itertools.product(["lz4", "zstd"], ["shuffle", "bitshuffle"], [0, 1000, 1 << 20])
]
OTHERS = [Compression(name="zstd", level=1), Compression(name="none")]


def _frames():
    bank = FrameBank((96, 130), "uint16", seed=3)
    yield bank.frame(0)
    yield np.random.default_rng(1).integers(0, 2**16, (64, 64), dtype=np.uint16)  # noise
    yield np.zeros((33, 17), np.uint8)
    yield np.linspace(0, 1, 4096, dtype=np.float32).reshape(64, 64)


@pytest.mark.parametrize("compression", BLOSC + OTHERS, ids=str)
def test_encode_into_matches_numcodecs_bytes(compression, tmp_path):
    store = LocalStore(tmp_path)
    for frame in _frames():
        encoder = IntoEncoder(compression, frame.dtype)
        assert encoder.zero_copy == (compression.name == "blosc")
        buf, address = store.scratch(max_compressed_size(frame.nbytes))
        n = encoder.encode_into(frame, buf, address)
        expected = bytes(memoryview(chunk_encoder(compression).encode(frame)).cast("B"))
        assert bytes(buf[:n]) == expected
        decoded = np.frombuffer(chunk_encoder(compression).decode(bytes(buf[:n])), frame.dtype)
        np.testing.assert_array_equal(decoded.reshape(frame.shape), frame)


def test_scratch_buffer_is_page_aligned_per_thread_and_grows(tmp_path):
    store = LocalStore(tmp_path)
    buf, address = store.scratch(10)
    assert address % mmap.PAGESIZE == 0 and len(buf) >= 10
    _, same = store.scratch(100)
    assert same == address  # reused while big enough
    big, big_address = store.scratch(5 << 20)
    assert len(big) >= 5 << 20 and big_address % mmap.PAGESIZE == 0


def test_too_small_destination_is_refused_before_writing(tmp_path):
    encoder = IntoEncoder(BLOSC[0], np.dtype("uint16"))
    noise = np.random.default_rng(2).integers(0, 2**16, (256, 256), dtype=np.uint16)
    small = bytearray(1024)
    address = np.frombuffer(small, np.uint8).ctypes.data
    with pytest.raises(ValueError, match="too small"):
        encoder.encode_into(noise, small, address)


def test_python_blosc_simd_library_is_chosen_when_it_matches_numcodecs():
    """python-blosc is a dependency: its AVX2 build of c-blosc must be the one in use
    (the speed of scenario (a) depends on it), and only because it agreed with numcodecs."""
    import numcodecs.blosc

    library = _python_blosc_library()
    assert library is not None and "libblosc" in library
    assert blosc_compressor()[1] == library
    assert _same_output(_compress_ctx(library), _compress_ctx(numcodecs.blosc.__file__))


def test_a_library_whose_bytes_differ_is_refused():
    import numcodecs.blosc

    reference = _compress_ctx(numcodecs.blosc.__file__)

    def other_level(clevel, *args):  # a "library" that compresses differently
        return reference(clevel + 4, *args)

    assert not _same_output(other_level, reference)
