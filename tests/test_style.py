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


def _polar_imports() -> dict[str, set[str]]:
    """Each ``polar`` module's imports of other ``polar`` modules, at any depth of its code (function-local
    imports included: they only hide a cycle). A package stands for its ``__init__``."""
    import ast

    root = REPO / "polar"
    modules = {".".join(p.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__"): p
               for p in root.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = package.split(".")[:len(package.split(".")) - node.level + 1] if node.level else []
                target = ".".join(base + ([node.module] if node.module else []))
                candidates = [target] + [f"{target}.{alias.name}" for alias in node.names]
            elif isinstance(node, ast.Import):
                candidates = [alias.name for alias in node.names]
            else:
                continue
            found |= {c for c in candidates if c in modules and c != name}
        graph[name] = found
    return graph


def test_polar_has_no_import_cycles() -> None:
    """An import cycle among the library's modules (even one dodged by a function-local import) means two modules
    that cannot be read, tested or moved apart. A package's ``__init__`` re-exporting its modules is not a cycle
    unless a module imports the package back."""
    graph = _polar_imports()
    cycles = []

    def visit(node: str, path: list[str]) -> None:
        for nxt in sorted(graph[node]):
            if nxt in path:
                cycles.append(" -> ".join(path[path.index(nxt):] + [nxt]))
            elif nxt not in done:
                visit(nxt, path + [nxt])
        done.add(node)

    done: set[str] = set()
    for start in sorted(graph):
        if start not in done:
            visit(start, [start])
    assert not cycles, "\n".join(sorted(set(cycles)))


def test_library_code_checks_with_exceptions_not_asserts() -> None:
    """``python -O`` strips asserts: a check that guards the user's data must raise the library's errors."""
    import ast

    found = [f"{path.relative_to(REPO)}:{node.lineno}" for path in sorted((REPO / "polar").rglob("*.py"))
             for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.Assert)]
    assert not found, found
