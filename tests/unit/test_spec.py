"""Spec validation (field-named errors) and spec files (JSON / YAML / TOML)."""

from __future__ import annotations

import pytest

from acqwriter import SpecError, StreamSpec, open_stream
from acqwriter.acquisition.spec import AcquisitionSpec, parse_duration
from acqwriter.plan.resources import Resources
from acqwriter.spec.files import dump_spec, load_spec

BASE = {"out": "x.ome.zarr", "shape": [64, 64], "dtype": "uint16"}


def test_defaults_and_derived_values():
    spec = StreamSpec.parse(BASE)
    assert spec.dims == "tyx"
    assert spec.outer_sizes() == (None,)
    assert spec.resolved_chunks() == (1, 64, 64)
    assert spec.codec.name == "blosc" and spec.codec.cname == "lz4" and spec.codec.level == 5
    assert spec.frame_bytes == 64 * 64 * 2
    # frames up to 8 MiB are one chunk; larger ones are cut into 1024² tiles
    assert StreamSpec.parse({**BASE, "shape": [2048, 2048]}).resolved_chunks() == (1, 2048, 2048)
    assert StreamSpec.parse({**BASE, "shape": [1500, 1500]}).resolved_chunks() == (1, 1500, 1500)
    big = StreamSpec.parse({**BASE, "shape": [2048, 2049]})
    assert big.resolved_chunks() == (1, 1024, 1024)
    wide = StreamSpec.parse({**BASE, "shape": [2048, 2048], "dtype": "float32"})
    assert wide.resolved_chunks() == (1, 1024, 1024)


@pytest.mark.parametrize(
    ("change", "field", "expected"),
    [
        ({"dims": "tzcyx"}, "dims", "ordered subset"),
        ({"dims": "tyxz"}, "dims", "ending in 'yx'"),
        ({"dims": "yx"}, "dims", "at least one"),
        ({"dims": "tqyx"}, "dims", "ordered subset"),
        ({"dtype": "complex64"}, "dtype", "uint8"),
        ({"dtype": "not-a-dtype"}, "dtype", "uint8"),
        ({"shape": [0, 64]}, "shape.0", "greater than 0"),
        ({"shape": [64]}, "shape", "[height, width]"),
        ({"chunks": {"t": 0}}, "chunks.t", "greater than 0"),
        ({"chunks": {"q": 2}}, "chunks.q", "not in dims"),
        ({"dims": "tczyx", "sizes": {"c": 2}}, "sizes.z", "only the first axis"),
        ({"sizes": {"z": 3}}, "sizes.z", "not one of the non-frame axes"),
        ({"codec": "lz5"}, "codec", "expected one of"),
        ({"codec": {"name": "blosc", "level": 12}}, "level", "0..9"),
        ({"codec": {"name": "blosc", "shuffle": "twice"}}, "codec.shuffle", "shuffle"),
        ({"codec": {"name": "blosc", "blocksize": 64}}, "codec.blocksize", "from 128"),
        ({"codec": {"name": "blosc", "blocksize": -1}}, "codec.blocksize", "'auto', 0"),
        ({"codec": {"name": "blosc", "blocksize": 2**31}}, "codec.blocksize", "to 1073741824"),
        ({"codec": {"name": "blosc", "blocksize": "big"}}, "codec.blocksize", "got 'big'"),
        ({"codec": {"name": "blosc", "blocksize": 1.5e6}}, "codec.blocksize", "'auto', 0"),
        ({"codec": {"name": "blosc", "blocksize": True}}, "codec.blocksize", "got True"),
        ({"codec": {"name": "zstd", "blocksize": 4096}}, "blocksize", "blosc only"),
        ({"pixel_size": -1}, "pixel_size", "greater than 0"),
        ({"pixel_unit": "furlong"}, "pixel_unit", "space unit"),
        ({"time_unit": "micrometer"}, "time_unit", "time unit"),
        ({"overflow": "maybe"}, "overflow", "block"),
        ({"sync": "sometimes"}, "sync", "none"),
        ({"ring_bytes": 100}, "ring_bytes", "at least"),
        ({"ring_bytes": 0}, "ring_bytes", "greater than 0"),
        ({"colour": "red"}, "colour", "Extra inputs"),
        ({"out": ""}, "out", "empty string"),
        ({"out": "gs://bucket/x.ome.zarr"}, "out", "URLs are not supported"),
        (
            {"dims": "tcyx", "sizes": {"c": 2}, "channels": [{"name": "a"}]},
            "channels",
            "expected 2 entries",
        ),
        (
            {"dims": "tcyx", "channels": [{"name": "a", "color": "GG0000"}]},
            "channels.0.color",
            "hex",
        ),
        ({"pyramid": {"method": "median"}}, "pyramid.method", "mean"),
        ({"pyramid": {"levels": 0}}, "pyramid.levels", "greater than 0"),
    ],
)
def test_invalid_spec_names_the_field(change, field, expected):
    with pytest.raises(SpecError) as info:
        StreamSpec.parse({**BASE, **change})
    message = str(info.value)
    assert field in message, message
    assert expected in message, message


def test_missing_required_fields_are_named():
    with pytest.raises(SpecError) as info:
        StreamSpec.parse({"shape": [8, 8]})
    assert "out: required field is missing" in str(info.value)
    assert "dtype: required field is missing" in str(info.value)


def test_ring_must_hold_open_chunk_rows():
    # chunks of 4 time points interleaved over 3 channels: the first group completes
    # with frame t3c0 (index 9), when 10 frames are resident at once
    spec = {**BASE, "dims": "tcyx", "sizes": {"c": 3}, "chunks": {"t": 4}}
    frame = 64 * 64 * 2
    Resources.of(StreamSpec.parse({**spec, "ring_bytes": 10 * frame}))
    with pytest.raises(SpecError, match=r"ring_bytes: expected at least 81920 bytes \(10 frames"):
        Resources.of(StreamSpec.parse({**spec, "ring_bytes": 10 * frame - 1}))
    with pytest.raises(SpecError, match=r"ring_bytes: expected at least 81920 bytes"):
        open_stream({**spec, "ring_bytes": 10 * frame - 1})


def test_codec_shorthands():
    assert StreamSpec.parse({**BASE, "codec": "zstd"}).codec.name == "zstd"
    bz = StreamSpec.parse({**BASE, "codec": "blosc-zstd"}).codec
    assert (bz.name, bz.cname, bz.shuffle, bz.level) == ("blosc", "zstd", "bitshuffle", 1)
    assert StreamSpec.parse({**BASE, "codec": "none"}).codec.name == "none"


def test_blosc_block_size_auto_zero_and_explicit():
    def codec(value):
        return StreamSpec.parse({**BASE, "codec": value}).codec

    # "auto": 1 MiB blocks for zstd (1.7x faster at level 1), c-blosc's choice for lz4
    assert codec("blosc-zstd").blocksize == "auto"
    assert codec("blosc-zstd").block_bytes() == 1 << 20
    assert codec("lz4").block_bytes() == 0
    zero = {"name": "blosc", "cname": "zstd", "shuffle": "bitshuffle", "level": 1, "blocksize": 0}
    assert codec(zero).block_bytes() == 0
    assert codec({**zero, "blocksize": 4096}).block_bytes() == 4096
    assert codec({**zero, "blocksize": 3000}).block_bytes() == 3000
    assert codec({"name": "zstd", "blocksize": "auto"}).block_bytes() == 0


@pytest.mark.parametrize("suffix", [".json", ".yaml", ".yml", ".toml"])
def test_spec_files_round_trip(tmp_path, suffix):
    spec = StreamSpec.parse(
        {
            **BASE,
            "dims": "tczyx",
            "sizes": {"c": 2, "z": 5},
            "chunks": {"z": 5, "y": 32},
            "codec": "blosc-zstd",
            "channels": [{"name": "GFP", "color": "00ff00"}, {"name": "RFP", "color": "FF0000"}],
            "pixel_size": 0.108,
            "z_step": 0.5,
        }
    )
    path = tmp_path / f"spec{suffix}"
    dump_spec(spec, path)
    loaded = load_spec(path, StreamSpec)
    assert loaded == spec


def test_spec_file_errors_name_file_and_field(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("out: x.zarr\nshape: [64, 64]\ndtype: uint16\nchunks: {t: -1}\n")
    with pytest.raises(SpecError, match=r"chunks\.t"):
        load_spec(bad, StreamSpec)
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(SpecError, match="not valid JSON"):
        load_spec(broken, StreamSpec)
    with pytest.raises(SpecError, match=r"expected a \.json, \.yaml"):
        load_spec(tmp_path / "spec.ini", StreamSpec)
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(SpecError, match="mapping"):
        load_spec(listy, StreamSpec)


def test_acquisition_spec_fields():
    spec = AcquisitionSpec.parse({"out": "a.zarr", "duration": "2m"})
    assert spec.duration == 120.0
    with pytest.raises(SpecError, match="duration: give a length in frames"):
        AcquisitionSpec.parse({"out": "a.zarr", "frames": 10, "duration": "2m"})
    spec = AcquisitionSpec.parse({"out": "a.zarr", "frames": 10})
    assert spec.camera == "sim"
    stream = spec.stream_spec((32, 48), "uint8")
    assert stream.shape == (32, 48) and stream.dtype == "uint8" and stream.out == spec.out
    with pytest.raises(SpecError, match="frames: expected a frame count, a number of time"):
        AcquisitionSpec.parse({"out": "a.zarr"})
    with pytest.raises(SpecError, match="shape: only the simulated camera"):
        AcquisitionSpec.parse({"out": "a.zarr", "frames": 3, "camera": "demo", "shape": [8, 8]})
    with pytest.raises(SpecError, match=r"duration: .*expected a duration"):
        AcquisitionSpec.parse({"out": "a.zarr", "duration": "ten seconds"})
    with pytest.raises(SpecError, match="roi"):
        AcquisitionSpec.parse({"out": "a.zarr", "frames": 1, "roi": [0, 0, 0, 5]})


@pytest.mark.parametrize(
    ("text", "seconds"), [("10s", 10.0), ("500ms", 0.5), ("2m", 120.0), ("1.5h", 5400.0), (3, 3.0)]
)
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


def test_load_and_save_methods(tmp_path):
    spec = StreamSpec.parse({**BASE, "codec": "zstd", "chunks": {"t": 4}})
    for name in ("s.json", "s.yaml", "s.toml"):
        spec.save(tmp_path / name)
        assert StreamSpec.load(tmp_path / name) == spec
    acq = AcquisitionSpec.parse({"out": "a.zarr", "frames": 7, "camera": "demo"})
    acq.save(tmp_path / "a.yaml")
    assert AcquisitionSpec.load(tmp_path / "a.yaml") == acq


def test_writer_threads_follow_chunk_size_and_explicit_setting_wins() -> None:
    import os

    cores = len(os.sched_getaffinity(0))
    base = {"out": "/nonexistent.ome.zarr", "dtype": "uint16"}
    small = StreamSpec.parse({**base, "shape": (512, 512)})  # 512 KiB chunks
    tiles = {"y": 1024, "x": 1024}
    big = StreamSpec.parse({**base, "shape": (2048, 2048), "chunks": tiles})  # 2 MiB chunks
    big_sharded = StreamSpec.parse(
        {**base, "shape": (2048, 2048), "chunks": tiles, "shards": {"t": 4}}
    )
    huge = StreamSpec.parse(
        {**base, "shape": (2048, 2048), "chunks": {"t": 16, "y": 2048, "x": 2048}}  # 128 MiB
    )
    huge_sharded = StreamSpec.parse(
        {
            **base,
            "shape": (2048, 2048),
            "chunks": {"t": 16, "y": 2048, "x": 2048},
            "shards": {"t": 32},
        }
    )
    # small chunks: writers compress and write, one per core plus one
    assert (Resources.of(small).compressors, Resources.of(small).io_threads) == (cores + 1, 0)
    # big unsharded chunks: pipelined, one compressor per core and four I/O threads ...
    assert (Resources.of(big).compressors, Resources.of(big).io_threads) == (
        cores,
        4,
    )  # 4 chunks per frame
    assert (Resources.of(huge).compressors, Resources.of(huge).io_threads) == (cores, 4)
    frame_chunks = {**base, "shape": (2048, 2048), "chunks": {"y": 2048, "x": 2048}}
    frame_drop = StreamSpec.parse({**frame_chunks, "overflow": "drop"})
    assert (Resources.of(frame_drop).compressors, Resources.of(frame_drop).io_threads) == (cores, 4)
    # ... less one when a frame is a chunk under "block": the producer compresses the
    # frames that find the ring full, on the core left to it
    frame_block = StreamSpec.parse(frame_chunks)
    assert (Resources.of(frame_block).compressors, Resources.of(frame_block).io_threads) == (
        max(1, cores - 1),
        4,
    )
    # ... whose encoded-chunk pool stays bounded (256 MiB) but keeps every compressor busy
    assert Resources.of(big).encoded_buffers(8 << 20) == cores + 8
    assert Resources.of(big).encoded_buffers(128 << 20) == cores + 1
    # big sharded chunks: writers also write segments, four per core, memory-capped
    assert Resources.of(big_sharded).io_threads == 0
    assert Resources.of(big_sharded).compressors == 4 * cores
    assert Resources.of(huge_sharded).compressors == cores + 1  # two 128 MiB buffers per thread
    assert (
        Resources.of(StreamSpec.parse({**base, "shape": (2048, 2048), "threads": 2})).compressors
        == 2
    )
