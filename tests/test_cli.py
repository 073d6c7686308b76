"""The command line: a tiny run writes the run directory; bad input ends in one line and exit status 2."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import polar
from polar.cli import main
from polar.sweep import SWEEP_COLUMNS


def _polar(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "polar", *args], capture_output=True, text=True, cwd=cwd, timeout=300,
                          env=env)


def test_train_writes_a_complete_run_directory(tmp_path: Path) -> None:
    out = tmp_path / "run"
    done = _polar("train", "--model", "resnet20", "--dataset", "synthetic", "--preset", "demo", "--epochs", "1",
                  "--subset", "40", "--lam", "0.01", "--t", "1.3", "--out", str(out), "--quiet")
    assert done.returncode == 0, done.stderr
    assert "epoch 1:" in done.stdout
    cfg = json.loads((out / "config.json").read_text())
    assert (cfg["model"], cfg["lam"], cfg["t"], cfg["subset"], cfg["epochs"]) == ("resnet20", 0.01, 1.3, 40, 1)
    rows = polar.RunDir(out).read_metrics()
    assert len(rows) == 1 and 0 <= rows[0]["test_acc"] <= 1
    assert (out / "gammas" / "epoch_0001.pt").is_file() and (out / "checkpoint.pt").is_file()
    more = _polar("train", "--out", str(out), "--resume", "--epochs", "2", "--quiet")
    assert more.returncode == 0, more.stderr
    assert [r["epoch"] for r in polar.RunDir(out).read_metrics()] == [1, 2]


@pytest.mark.parametrize("args, message", [
    (["--lam", "-1"], "lam must be in [0, 10]"),
    (["--t", "40"], "t must be in [0, 4]"),
    (["--model", "resnet57"], "unknown model 'resnet57'"),
    (["--dataset", "mnist"], "unknown dataset 'mnist'"),
    (["--device", "cuda:7"] if not __import__("torch").cuda.is_available() else ["--device", "tpu"], "device"),
    (["--epochs", "many"], "invalid int value"),
])
def test_bad_arguments_give_one_line_errors(tmp_path: Path, args: list[str], message: str) -> None:
    done = _polar("train", "--out", str(tmp_path / "x"), "--dataset", "synthetic", *args)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("polar: error:") and message in lines[0], done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "x").exists()  # nothing written for invalid arguments


def _one_line_refusal(capsys: pytest.CaptureFixture, argv: list[str]) -> str:
    """Run the CLI in this process; assert it refused with exit status 2 and one ``polar: error:`` line."""
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse's own refusals
        code = exit_.code
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and err.startswith("polar: error:"), (code, err)
    return err


NUMERIC_FLAGS = [name for name, kind in polar.config.field_types().items() if kind in (int, float)]


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
@pytest.mark.parametrize("name", NUMERIC_FLAGS)
def test_every_numeric_train_flag_refuses_nan_and_infinity(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                          name: str, value: str) -> None:
    out = tmp_path / "run"
    _one_line_refusal(capsys, ["train", "--dataset", "synthetic", "--out", str(out), f"--{name.replace('_', '-')}",
                               value])
    assert not out.exists()


@pytest.mark.parametrize("argv, message", [
    (["prune", "--threshold", "fixed:nan"], "--threshold must be"),
    (["prune", "--threshold", "percent:inf"], "--threshold must be"),
    (["prune", "--threshold", "flops:1.5"], "--threshold must be"),
    (["prune", "--sweep", "abc"], "--sweep must be"),
    (["prune", "--sweep", "0.2,nan"], "--sweep must be"),
    (["prune", "--round-to", "0"], "--round-to must be a positive integer"),
    (["prune", "--threshold", "fixed:0.1", "--per-layer"], "--per-layer goes with"),
    (["search", "--target-flops-reduction", "nan"], "--target-flops-reduction must be in (0, 1)"),
    (["search", "--target-flops-reduction", "0.5", "--tolerance", "inf"], "--tolerance must be in (0, 1)"),
    (["search", "--target-flops-reduction", "0.5", "--max-trials", "0"], "--max-trials must be at least 1"),
    (["search", "--target-flops-reduction", "0.5", "--lam", "nan"], "lam must be a finite number"),
])
def test_prune_and_search_refuse_bad_values_before_any_work(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                            argv: list[str], message: str) -> None:
    run = tmp_path / "run"
    run.mkdir()
    polar.RunDir(run).write_config(polar.TrainConfig(dataset="synthetic", model="resnet20").to_dict())
    extra = ["--run", str(run)] if argv[0] == "prune" else ["--out", str(tmp_path / "search"), "--dataset", "synthetic"]
    err = _one_line_refusal(capsys, [argv[0], *extra, *argv[1:]])
    assert message in err
    assert sorted(p.name for p in run.iterdir()) == ["config.json"] and not (tmp_path / "search").exists()


def test_file_system_and_malformed_inputs_are_one_line_errors(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    assert "is a file, not a folder" in _one_line_refusal(
        capsys, ["train", "--dataset", "synthetic", "--epochs", "1", "--out", str(a_file)])
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text("[1, 2]")  # valid JSON, not a run's settings
    assert "not the settings of a run" in _one_line_refusal(capsys, ["prune", "--run", str(run)])
    assert "does not exist" in _one_line_refusal(capsys, ["finetune", "--run", str(run)])


def test_unreadable_checkpoint_is_a_one_line_error(tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    polar.RunDir(out).write_config(polar.TrainConfig(dataset="synthetic", model="resnet20").to_dict())
    (out / "checkpoint.pt").write_bytes(b"not a checkpoint")
    done = _polar("train", "--out", str(out), "--resume")
    assert done.returncode == 2 and "not a readable Polar checkpoint" in done.stderr
    assert "Traceback" not in done.stderr
    assert (out / "checkpoint.pt").read_bytes() == b"not a checkpoint"  # nothing already saved is touched


def test_prune_finetune_and_search_commands(tmp_path: Path) -> None:
    run = tmp_path / "run"
    common = ["--model", "resnet20", "--dataset", "synthetic", "--preset", "demo", "--batch-size", "64",
              "--lr-schedule", "cosine", "--t", "1.2", "--quiet"]
    assert _polar("train", *common, "--epochs", "2", "--lam", "0.01", "--out", str(run)).returncode == 0
    done = _polar("prune", "--run", str(run), "--sweep", "0.2,0.5")
    assert done.returncode == 0, done.stderr
    report = json.loads((run / "pruned" / "report.json").read_text())
    assert 0 < report["flops_reduction"] < 1 and report["macs_after"] < report["macs_before"]
    assert report["flops_after"] == 2 * report["macs_after"]
    small = polar.load(run / "pruned" / "model.pt")
    assert polar.count_macs(small)[0] == report["macs_after"]
    sweep = __import__("pandas").read_csv(run / "pruned" / "sweep.csv")
    assert list(sweep.columns) == SWEEP_COLUMNS
    assert sweep["flops_reduction"].tolist() == sorted(sweep["flops_reduction"].tolist())
    # each target is reached (γ tied at exactly 0 by the clamp are pruned together, so it can be overshot)
    assert all(r >= t - 0.0025 for r, t in zip(sweep["flops_reduction"], sweep["target_reduction"]))

    done = _polar("prune", "--run", str(run), "--threshold", "flops:0.3", "--round-to", "8", "--narrow-residual",
                  "--out", str(tmp_path / "rounded"))
    assert done.returncode == 0, done.stderr
    rounded = json.loads((tmp_path / "rounded" / "report.json").read_text())
    assert rounded["round_to"] == 8 and rounded["narrow_residual"] and rounded["flops_reduction"] >= 0.3 - 0.0025
    assert all(bn.num_features % 8 == 0 for bn in polar.sparse_bns(polar.load(tmp_path / "rounded" / "model.pt")))

    done = _polar("prune", "--run", str(run), "--threshold", "paper", "--per-layer", "--out", str(tmp_path / "pl"))
    assert done.returncode == 0, done.stderr
    per_layer = json.loads((tmp_path / "pl" / "report.json").read_text())
    sparse = polar.sparse_bns(polar.load(run / "checkpoint.pt"))
    assert per_layer["per_layer"] and len(per_layer["threshold"]) == len(sparse)  # one threshold per sparse BN

    cache = dict(os.environ, POLAR_CACHE=str(tmp_path / "cache"))  # the latency table, measured once
    done = _polar("prune", "--run", str(run), "--speedup", "1.5", "--batch-size", "8", "--out",
                  str(tmp_path / "fast"), env=cache)
    assert done.returncode == 0, done.stderr
    fast = json.loads((tmp_path / "fast" / "report.json").read_text())
    # measured and re-planned (--replans 2 by default): the plan kept asked the table for some speed-up >= 1
    assert fast["threshold"] is None and fast["measured_speedup"] > 0 and fast["replans"] == 2
    assert fast["asked_of_table"] >= 1 and fast["predicted_speedup"] >= fast["asked_of_table"] * (1 - 1e-9)
    assert polar.count_macs(polar.load(tmp_path / "fast" / "model.pt"))[0] == fast["macs_after"] < fast["macs_before"]
    assert len(list((tmp_path / "cache" / "latency").glob("*.json"))) == 1
    clash = _polar("prune", "--run", str(run), "--speedup", "2", "--round-to", "8", env=cache)
    assert clash.returncode != 0 and "drop --round-to" in clash.stderr and "Traceback" not in clash.stderr
    negative = _polar("prune", "--run", str(run), "--speedup", "2", "--replans", "-1", env=cache)
    assert negative.returncode != 0 and "--replans must be 0 or more" in negative.stderr

    done = _polar("export", "--run", str(run), "--format", "onnx")
    assert done.returncode == 0, done.stderr
    assert (run / "pruned" / "model.onnx").stat().st_size > 10_000

    done = _polar("finetune", "--run", str(run), "--preset", "demo-finetune", "--epochs", "1", "--quiet")
    assert done.returncode == 0, done.stderr
    tuned = polar.load(run / "finetune" / "checkpoint.pt")
    assert tuned.spec() == small.spec()  # fine-tuning keeps the pruned architecture
    assert json.loads((run / "finetune" / "config.json").read_text())["reg"] == "none"

    out = tmp_path / "search"
    done = _polar("search", "--target-flops-reduction", "0.9", "--max-trials", "2", "--tolerance", "0.01",
                  "--out", str(out), *common, "--epochs", "1", "--subset", "40", "--lam", "0.001")
    assert done.returncode == 0, done.stderr
    trials = __import__("pandas").read_csv(out / "trials.csv")
    assert len(trials) == 2 and trials["lam"].tolist() == [0.001, 0.002]  # short of 90 %: λ doubles
    assert "closest after the trial budget" in done.stdout


def test_grid_writes_every_point_and_resumes_without_training(tmp_path: Path) -> None:
    out = tmp_path / "grid"
    args = ("grid", "--lams", "0.01,0.05", "--ts", "1.2", "--model", "resnet20", "--dataset", "synthetic",
            "--subset", "30", "--epochs", "1", "--batch-size", "32", "--init", "", "--out", str(out))
    done = _polar(*args)
    assert done.returncode == 0, done.stderr
    points = pd.read_csv(out / "grid.csv")
    assert sorted(points["lam"]) == [0.01, 0.05] and set(points["t"]) == {1.2}  # every point kept
    assert ((points["flops_reduction"] >= 0) & (points["flops_reduction"] < 1)).all()
    summary = pd.read_csv(out / "summary.csv")
    assert list(summary["seeds"]) == [1, 1]
    stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("lam*.json")}
    again = _polar(*args)  # the cache answers: nothing is trained or rewritten
    assert again.returncode == 0 and {p.name: p.stat().st_mtime_ns for p in out.glob("lam*.json")} == stamps
    bad = _polar("grid", "--lams", "0.01,lots", "--out", str(tmp_path / "bad"))
    assert bad.returncode == 2 and "--lams must be comma-separated numbers" in bad.stderr
    bad = _polar("grid", "--lams", "0.01", "--ts", "9", "--out", str(tmp_path / "bad"))
    assert bad.returncode == 2 and "t must be in [0, 4]" in bad.stderr and not (tmp_path / "bad").exists()


def test_a_user_error_is_one_line_but_a_bug_keeps_its_traceback(monkeypatch: pytest.MonkeyPatch,
                                                                 capsys: pytest.CaptureFixture,
                                                                 tmp_path: Path) -> None:
    """The CLI prints the library's errors (``polar.PolarError``) as one line; any other exception is a bug in
    Polar, and hiding it behind 'polar: error:' would hide where it happened."""
    import polar.cli

    def broken(args) -> None:
        raise ValueError("an internal bug")

    monkeypatch.setattr(polar.cli, "cmd_export", broken)
    with pytest.raises(ValueError, match="an internal bug"):
        main(["export", "--run", str(tmp_path)])
    assert "polar: error" not in capsys.readouterr().err
    assert "is this a run directory?" in _one_line_refusal(capsys, ["prune", "--run", str(tmp_path / "missing")])
