"""The code base stays ruff-clean under the project's own configuration (pyproject.toml: E, F, W, I; 120 columns),
and the committed results name no machine's paths."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_ruff_check_is_clean() -> None:
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    if ruff is None:
        pytest.skip("ruff is not installed (requirements.txt pins it)")
    done = subprocess.run([ruff, "check", "."], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-3000:]


MACHINE_PATH = re.compile(r"(?<![\w.])(/tmp/|/work/|/root/|/home/|\.\./\.\./tmp/)")


def test_committed_results_name_no_machine_paths() -> None:
    """A result file is read by people on other machines: where it was made (a temporary folder, a home) is noise.
    The benchmarks' JSON embeds their own source, which may name paths in code; that is left out."""
    found = []
    for path in sorted((REPO / "results").rglob("*")):
        if path.suffix not in (".txt", ".json", ".csv", ".md") or not path.is_file():
            continue
        text = path.read_text(errors="replace")
        if path.suffix == ".json":
            text = re.sub(r'"code": "(?:[^"\\]|\\.)*"', "", text)
        found += [f"{path.relative_to(REPO)}: {m.group(0)}" for m in MACHINE_PATH.finditer(text)]
    assert not found, found[:10]
