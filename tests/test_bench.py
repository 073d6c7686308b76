"""The benchmark scripts run end to end in their fast settings and write what they promise."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd

import polar

REPO = Path(__file__).resolve().parents[1]


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=900, cwd=REPO,
                          env={**os.environ, **(env or {})})
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def test_throughput_and_speedup_scripts_run(tmp_path: Path) -> None:
    _run("bench/train_throughput.py", "--device", "cpu", "--steps", "2", "--warmup", "1", "--repeats", "1",
         "--out", str(tmp_path))
    result = json.loads((tmp_path / "train_throughput_cpu.json").read_text())
    assert result["ratio"] > 0 and "baseline_workers0" in result["median"] and "def main" in result["code"]
    assert set(result["ratios"]) == {"polar_fp32", "polar_bf16"} and result["bf16"] == polar.uses_bf16(
        polar.resolve_device("cpu"), True)
    _run("bench/prune_speedup.py", "--models", "resnet20", "--repeats", "1", "--rounds", "1", "--out", str(tmp_path))
    rows = json.loads((tmp_path / "prune_speedup.json").read_text())["rows"]
    assert [(r["model"], r["round_to"], r["runtime"]) for r in rows] == [
        ("resnet20", r, runtime) for r in (1, 8, 16) for runtime in ("PyTorch", "ONNX Runtime")]
    assert all(0.45 < r["flops_reduction"] < 0.6 and r["ideal_speedup"] > 1.8 for r in rows)
    _run("bench/conv_widths.py", "--batch", "2", "--repeats", "1", "--out", str(tmp_path))
    convs = json.loads((tmp_path / "conv_widths.json").read_text())["rows"]
    assert len(convs) == 12 and all(r["ms"] > 0 for r in convs)
    _run("bench/eval_batch.py", "--models", "resnet20", "--dataset", "synthetic", "--test-images", "20",
         "--repeats", "1", "--out", str(tmp_path))
    evals = json.loads((tmp_path / "eval_batch.json").read_text())
    assert [r["model"] for r in evals["rows"]] == ["resnet20"] and evals["test_images"] == 20
    assert evals["rows"][0]["speedup_over_256"] >= 1 and not evals["steady"]


def test_duel_script_runs(tmp_path: Path) -> None:
    _run("bench/duel.py", "--fast", "--device", "cpu", "--out", str(tmp_path))
    result = json.loads((tmp_path / "duel_cpu.json").read_text())
    assert [r["method"] for r in result["table"]] == ["polar", "l1"] and result["seconds"] > 0
    reductions = [r["flops_reduction"] for r in result["table"]]
    assert abs(reductions[0] - reductions[1]) < 0.05  # matched FLOPs


def test_study_fast_mode_keeps_every_point_chooses_reruns_and_resumes(tmp_path: Path) -> None:
    sys.path.insert(0, str(REPO / "bench"))
    import study

    _run("bench/study.py", "--fast", "--results", str(tmp_path))
    out = tmp_path / "study_resnet20_synthetic"
    points = pd.read_csv(out / "points.csv")
    grid = study.FAST["GRID"]
    seed0 = points[(points["seed"] == 0) & (points["method"] != "ucs")]
    assert len(seed0.groupby(["method", "lam", "t"], dropna=False)) == sum(map(len, grid.values()))  # all kept
    summary = pd.read_csv(out / "summary.csv")
    assert set(summary["method"]) == {"polar", "l1", "ucs"} and (summary["seeds"] == len(study.SEEDS)).all()
    for target in ("50%", "70%"):  # matched FLOPs: every method within a point of the target
        at = summary[summary["target"] == target]
        assert (abs(at["flops_reduction"] - int(target[:2]) / 100) < 0.02).all(), at
    chosen = study.choose(points)
    assert study.summarize(points, chosen)[["method", "target", "acc_finetuned"]].round(6).equals(
        summary[["method", "target", "acc_finetuned"]].round(6))
    assert (out / "verdict.txt").read_text().splitlines() == study.verdict(summary)  # computed, never typed
    assert (out / "table.md").read_text() == study.markdown_table(summary)
    assert len((out / "table.md").read_text().splitlines()) == 2 + len(summary)
    assert (out / "study.png").stat().st_size > 10_000
    cached = sorted(p.name for p in (out / "runs").iterdir())
    again = _run("bench/study.py", "--fast", "--results", str(tmp_path))
    assert "done in" not in again.stdout and sorted(p.name for p in (out / "runs").iterdir()) == cached  # resumed


def test_readme_quotes_the_committed_study_as_its_script_wrote_it() -> None:
    """The README's study table and verdict are pasted from results/<study>/table.md and verdict.txt, never typed:
    they must still match what ``bench/study.py --report`` wrote."""
    readme = (REPO / "README.md").read_text()
    folder = REPO / "results" / "study_resnet20_cifar10"
    assert (folder / "table.md").read_text() in readme
    assert f"```text\n{(folder / 'verdict.txt').read_text()}```" in readme


def test_a_small_class_at_once(tmp_path: Path) -> None:
    """bench/classroom.py with 3 students on the synthetic set, each flow up to the pruning table (Start, Pause,
    Prune: the whole flow of 3 students takes 10+ minutes on 2 cores, more than the suite can spend): every flow
    finishes without an error and the server goes back to idle (the timing targets are the benchmark's, at
    N = 10, whole flows, on a quiet machine)."""
    if not Path("/usr/bin/chromium").exists():
        import pytest

        pytest.skip("Debian's chromium is not installed (.ci/run installs it with apt-get)")
    _run("bench/classroom.py", "--students", "3", "--stagger", "10", "--train-s", "3", "--dataset", "synthetic",
         "--subset", "20", "--until", "prune", "--out", str(tmp_path),
         env={"POLAR_STEP_LIMIT_S": "300"})  # a stuck step fails with the page's text, well before the timeout
    result = json.loads((tmp_path / "classroom_N3.json").read_text())
    assert result["finished"] == 3 and result["errors"] == [], result["errors"]
    assert result["steps"]["start"]["n"] == result["steps"]["prune"]["n"] == 3
    assert result["back_to_idle_s"] is not None and result["observer_redraws"] > 0 and result["health_checks"] > 0
