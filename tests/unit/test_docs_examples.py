"""Every code example in the README and docs runs as written.

Python blocks run as scripts in a scratch folder, each twice (an example must not leave
anything that blocks the next run); YAML spec blocks are loaded as acquisition specs and
recorded with the CLI, shortened (the only options added make them small)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from acqwriter.acquisition.spec import AcquisitionSpec
from helpers import check_dataset, run_cli

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
_FENCE = re.compile(r"^```(\w+)\n(.*?)^```", re.S | re.M)


def _blocks(language: str) -> list[tuple[str, str]]:
    found = []
    for doc in DOCS:
        for i, match in enumerate(_FENCE.finditer(doc.read_text())):
            if match.group(1) == language:
                found.append((f"{doc.relative_to(ROOT)}#{i}", match.group(2)))
    return found


def test_the_docs_have_examples():
    assert _blocks("python") and _blocks("yaml")


@pytest.mark.parametrize(("where", "code"), _blocks("python"))
def test_python_example_runs_as_written(tmp_path, where, code):
    script = tmp_path / "example.py"
    script.write_text(code)
    for _ in range(2):
        run = subprocess.run(
            [sys.executable, str(script)], capture_output=True, text=True, cwd=tmp_path, timeout=300
        )
        assert run.returncode == 0, f"{where}:\n{run.stderr}"
    for dataset in tmp_path.glob("*.ome.zarr"):
        check_dataset(dataset)


@pytest.mark.parametrize(("where", "text"), _blocks("yaml"))
def test_yaml_spec_example_loads_and_records(tmp_path, where, text):
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(text)
    spec = AcquisitionSpec.load(spec_file)
    small = ["--shape", "64x64", "--timepoints", "5"] if spec.camera == "sim" else []
    run = run_cli("acquire", "--spec", str(spec_file), *small, "--quiet", cwd=tmp_path)
    assert run.returncode == 0, f"{where}: {run.stderr}"
    check_dataset(tmp_path / spec.out)
