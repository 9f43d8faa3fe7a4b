"""The side-by-side benchmark's one command, run for real at a small scale.

``benchmarks/bench_peers.py`` is how the peers' numbers in RESULTS.md are produced; a
broken benchmark would silently stop producing them. This runs the real command (child
processes, real stores on disk, the ceiling measurement) on a few frames, against
tensorstore (zarr-python's runner is checked on its own below), and checks what it must
report: medians with their
spread, ratios of the medians and pair by pair, peak RSS, on-disk size, bit-exact read
back, acqwriter's append→durable latency, the ceiling and acqwriter's fraction of it, in
JSON, Markdown and a PNG. Speeds themselves are not asserted (the machine is shared):
only that they were measured and are consistent with each other.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_peers.py"
WRITERS = ["acqwriter", "tensorstore"]


def _bench(*args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(BENCH), *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=timeout,
    )


def _load_bench_module():
    spec = importlib.util.spec_from_file_location("bench_peers_under_test", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their annotations through it
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[spec.name]
        raise
    return module


@pytest.fixture(scope="module")
def small_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("bench")
    proc = _bench(
        "--scenarios",
        "a,c",
        "--writers",
        ",".join(WRITERS),
        "--repeats",
        "3",
        "--frames-scale",
        "0.02",
        "--workdir",
        str(tmp / "work"),
        "--json",
        str(tmp / "out.json"),
        "--markdown",
        str(tmp / "out.md"),
        "--plot",
        str(tmp / "out.png"),
        cwd=tmp,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {
        "json": json.loads((tmp / "out.json").read_text()),
        "markdown": (tmp / "out.md").read_text(),
        "png": (tmp / "out.png").read_bytes(),
        "stdout": proc.stdout,
        "stderr": proc.stderr,
        "workdir": tmp / "work",
    }


@pytest.mark.slow
def test_every_writer_runs_interleaved_and_reads_back_exact(small_run: dict) -> None:
    results = small_run["json"]
    assert results["protocol"]["repeats"] == 3
    assert set(results["scenarios"]) == {"a", "c"}
    # interleaved A B C A B C …: the log lists the runs in the order they ran
    order = [
        tuple(line.split()[:4])
        for line in small_run["stderr"].splitlines()
        if line.startswith(("a rep", "c rep"))
    ]
    expected = [
        (sc, "rep", str(rep), writer) for sc in "ac" for rep in range(3) for writer in WRITERS
    ]
    assert order == expected
    for name, scenario in results["scenarios"].items():
        for writer in WRITERS:
            runs = scenario["runs"][writer]
            assert len(runs) == 3 and all("mb_s" in r for r in runs), (name, writer, runs)
            row = scenario["summary"][writer]
            assert row["readback"] == "exact", (name, writer, row)
            assert row["runs"] == 3 and row["failed_runs"] == 0


def test_summary_reports_medians_spread_ratios_memory_and_size(small_run: dict) -> None:
    for name, scenario in small_run["json"]["scenarios"].items():
        sc = scenario["scenario"]
        raw_mb = sc["frames"] * sc["shape"][0] * sc["shape"][1] * 2 / 1e6
        ours = scenario["summary"]["acqwriter"]
        for writer in WRITERS:
            row = scenario["summary"][writer]
            speeds = sorted(r["mb_s"] for r in scenario["runs"][writer])
            assert row["mb_s"] == pytest.approx(speeds[1])  # the median of three
            assert (row["mb_s_min"], row["mb_s_max"]) == pytest.approx((speeds[0], speeds[2]))
            assert row["fps"] == pytest.approx(row["mb_s"] / raw_mb * sc["frames"], rel=1e-6)
            assert row["peak_rss_mb"] > 50
            # realistic frames compress (ratio ~1.8), but not to nothing
            assert raw_mb / 4 < row["disk_mb"] < raw_mb, (name, writer, row["disk_mb"])
            assert row["acqwriter_ratio"] == pytest.approx(ours["mb_s"] / row["mb_s"])
            pairs = [
                a["mb_s"] / b["mb_s"]
                for a, b in zip(
                    scenario["runs"]["acqwriter"], scenario["runs"][writer], strict=True
                )
            ]
            assert row["acqwriter_ratio_pairs"] == pytest.approx(pairs)
        assert ours["acqwriter_ratio"] == pytest.approx(1.0)
        # append → durable latency is acqwriter's own (peers have no such hook)
        assert 0 < ours["latency_p50_ms"] <= ours["latency_p99_ms"]


def test_ceiling_and_fraction_are_measured(small_run: dict) -> None:
    for scenario in small_run["json"]["scenarios"].values():
        c = scenario["ceiling"]
        assert c["compress_mb_s_raw"] > 0 and 1.2 < c["ratio"] < 4
        assert c["disk_buffered_mb_s"] > 0
        assert c["ceiling_buffered_mb_s_raw"] == pytest.approx(
            min(c["compress_mb_s_raw"], c["disk_buffered_mb_s"] * c["ratio"])
        )
        if c["disk_direct_mb_s"] is not None:  # None where the filesystem refuses O_DIRECT
            assert c["ceiling_direct_mb_s_raw"] == pytest.approx(
                min(c["compress_mb_s_raw"], c["disk_direct_mb_s"] * c["ratio"])
            )
        frac = scenario["summary"]["acqwriter_fraction_of_ceiling"]
        ours = scenario["summary"]["acqwriter"]["mb_s"]
        assert frac["buffered"] == pytest.approx(ours / c["ceiling_buffered_mb_s_raw"])


def test_markdown_table_and_plot_are_written(small_run: dict) -> None:
    text = small_run["markdown"]
    assert text == small_run["stdout"].rstrip("\n")  # what was printed is what was saved
    for name in ("a", "c"):
        assert f"### Scenario {name}:" in text
    for writer in WRITERS:
        row = next(line for line in text.splitlines() if line.startswith(f"| {writer} |"))
        assert row.count("|") == 9 and "exact" in row
    assert "pair by pair" in text and "Ceiling (same run)" in text
    assert "latency append→committed p50" in text
    assert "nan" not in text  # every figure was measured
    assert small_run["png"][:8] == b"\x89PNG\r\n\x1a\n"


def test_outputs_are_cleaned_from_the_workdir(small_run: dict) -> None:
    # every run deletes its store after measuring it; only the (empty) workdir is left
    assert list(small_run["workdir"].iterdir()) == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--scenarios", "q"], "--scenarios: unknown 'q'"),
        (["--scenarios", "a,a"], "--scenarios: 'a,a' names one entry twice"),
        (["--writers", "tensorstore,foo"], "--writers: unknown 'foo'"),
        (["--writers", "tensorstore"], "--writers: must include acqwriter"),
        (["--repeats", "0"], "--repeats: expected an integer ≥ 1"),
        (["--frames-scale", "-1"], "--frames-scale: expected a positive number"),
        (["--settle", "-2"], "--settle: expected seconds ≥ 0"),
    ],
)
def test_bad_arguments_are_named_before_anything_runs(
    tmp_path: Path, args: list[str], message: str
) -> None:
    proc = _bench(*args, "--workdir", str(tmp_path / "work"), cwd=tmp_path, timeout=60)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert not (tmp_path / "work").exists()  # rejected before any run or directory


def test_summary_pairs_skip_failed_runs_and_flag_a_bad_read_back() -> None:
    bench = _load_bench_module()
    run = {"fps": 1.0, "peak_rss_mb": 100.0, "disk_mb": 10.0}
    runs = {
        "acqwriter": [
            {**run, "mb_s": 200.0, "readback": "exact", "latency_p50_ms": 5, "latency_p99_ms": 9},
            {**run, "mb_s": 300.0, "latency_p50_ms": 7, "latency_p99_ms": 12},
            {**run, "mb_s": 250.0, "latency_p50_ms": 6, "latency_p99_ms": 8},
        ],
        "peer": [
            {"error": "RuntimeError: boom"},
            {**run, "mb_s": 100.0, "readback": "frame 3 differs"},
            {**run, "mb_s": 150.0},
        ],
        "absent": [{"error": "not installed ('absent')"}] * 3,
    }
    ceiling = {"ceiling_buffered_mb_s_raw": 500.0, "ceiling_direct_mb_s_raw": None}
    summary = bench.summarize(runs, ceiling)
    ours, peer = summary["acqwriter"], summary["peer"]
    assert ours["mb_s"] == 250.0 and ours["latency_p50_ms"] == 6 and ours["latency_p99_ms"] == 12
    assert peer["runs"] == 2 and peer["failed_runs"] == 1
    assert peer["mb_s"] == 125.0 and peer["acqwriter_ratio"] == 2.0
    assert peer["acqwriter_ratio_pairs"] == [3.0, 250.0 / 150.0]  # repetition 0 left out
    assert peer["readback"] == "frame 3 differs"
    assert summary["absent"] == {"failed": "not installed ('absent')", "failed_runs": 3}
    assert summary["acqwriter_fraction_of_ceiling"] == {"buffered": 0.5, "direct": None}
    text = bench.markdown(
        {
            "protocol": {},
            "scenarios": {
                "a": {
                    "scenario": {
                        "name": "a",
                        "shape": [8, 8],
                        "frames": 3,
                        "dims": "tyx",
                        "sizes": [],
                        "chunk_t": 1,
                        "chunk_yx": None,
                        "codec": "lz4",
                    },
                    "ceiling": {
                        "compress_mb_s_raw": 900.0,
                        "ratio": 1.8,
                        "disk_buffered_mb_s": 400.0,
                        "disk_direct_mb_s": None,
                        **ceiling,
                    },
                    "summary": summary,
                }
            },
        }
    )
    assert "O_DIRECT unsupported" in text
    assert "(1 of 3 runs failed)" in text
    assert "| absent | failed: not installed ('absent') |" in text


def test_read_back_check_catches_a_wrong_frame_and_invalid_metadata(tmp_path: Path) -> None:
    """The benchmark's own verdict must be able to fail: a frame that differs and a root
    group that breaks the NGFF schema are both named."""
    bench = _load_bench_module()
    sc = bench.Scenario("tiny", (64, 96), 6)
    frame, _ = bench.frame_source(sc)
    out = tmp_path / "tiny.ome.zarr"
    bench.run_acqwriter(sc, out, frame)
    assert bench.verify(sc, out, frame, "acqwriter") == "exact"

    def shifted(i: int):
        return frame(i + 1) if i == 4 else frame(i)

    assert bench.verify(sc, out, shifted, "acqwriter") == "tensorstore: frame 4 differs"
    longer = bench.Scenario("tiny", (64, 96), 7)
    assert bench.verify(longer, out, frame, "acqwriter") == "tensorstore: only 6 of 7 frames"
    root = json.loads((out / "zarr.json").read_text())
    del root["attributes"]["ome"]["multiscales"][0]["axes"]
    (out / "zarr.json").write_text(json.dumps(root))
    verdict = bench.verify(sc, out, frame, "acqwriter")
    assert verdict.startswith("NGFF 0.5 image schema:") and "axes" in verdict


def test_sim_camera_benchmark_runs_both_paths(tmp_path: Path) -> None:
    """``benchmarks/bench_sim_camera.py`` (the memory and camera-path figures in
    RESULTS.md) runs end to end: it was broken by a storage change once, unnoticed."""
    script = BENCH.parent / "bench_sim_camera.py"
    out = tmp_path / "sim.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(script),
            *("--frames", "12", "--height", "256", "--width", "320", "--repeats", "1"),
            *("--paths", "writer,camera", "--ring-mb", "16", "--json", str(out)),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads(out.read_text())
    for path in ("writer", "camera"):
        row = doc["summary"][path]
        assert row["drops_max"] == 0 and row["mb_s_median"] > 0 and row["peak_rss_mb_max"] > 0
        assert row["fraction_of_ceiling_buffered"] > 0
    ceiling = doc["ceiling"]
    assert ceiling["compress_mb_s_raw"] > 0 and ceiling["disk_buffered_mb_s"] > 0
    assert "% of the buffered ceiling" in proc.stdout


def test_zstd_block_size_is_the_same_for_every_writer_that_takes_one(tmp_path: Path) -> None:
    """Scenario b gives acqwriter's "auto" zstd block size to every writer that takes a
    block size, so the comparison is of the same codec: each ``zarr.json`` says it and each
    chunk's blosc header has it. The benchmark's copy of the constant is acqwriter's."""
    from acqwriter.codec.settings import ZSTD_BLOCK_BYTES

    bench = _load_bench_module()
    assert bench.ZSTD_BLOCK_BYTES == ZSTD_BLOCK_BYTES
    assert bench.scenarios(1.0)["b"].blocksize == ZSTD_BLOCK_BYTES
    assert bench.scenarios(1.0)["b0"].blocksize == 0
    # 2 MiB frames: acqwriter writes them unsharded, one chunk file per frame as the peers
    sc = bench.Scenario("tiny-b", (1024, 1024), 4, codec="zstd", blocksize=32768)
    frame, _ = bench.frame_source(sc)
    for writer in ("acqwriter", "tensorstore", "zarr-python"):
        out = tmp_path / f"{writer}.zarr"
        bench.RUNNERS[writer](sc, out, frame)
        array = bench._find_array(out, sc)
        meta = json.loads((array / "zarr.json").read_text())
        codecs = meta["codecs"]
        blosc = next(c for c in codecs if c["name"] == "blosc")
        assert blosc["configuration"]["blocksize"] == 32768, writer
        chunk = next(p for p in (array / "c").rglob("*") if p.is_file())
        header = chunk.read_bytes()[:16]
        assert int.from_bytes(header[8:12], "little") == 32768, writer
        assert bench.verify(sc, out, frame, writer) == "exact", writer


def test_block_size_probe_reports_every_size_for_both_codecs(tmp_path: Path) -> None:
    """``benchmarks/blocksize.py`` (how ``blocksize: auto`` was chosen) runs and reports a
    speed and a ratio for each block size, codec and c-blosc build, then decompression."""
    script = BENCH.parent / "blocksize.py"
    proc = subprocess.run(
        [sys.executable, str(script), "--shape", "64x128", "--frames", "4"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [line for line in proc.stdout.splitlines() if "MB/s raw on" in line]
    builds = {line.split()[0] for line in rows}
    assert len(rows) == len(builds) * 2 * 7  # 2 codecs × 7 block sizes per build
    for line in rows:
        speed = float(line.split("MB/s")[0].split()[-1])
        ratio = float(line.rsplit("ratio", 1)[1])
        assert speed > 0 and ratio > 1.0, line
    assert sum("decompress" in line for line in proc.stdout.splitlines()) == 2
