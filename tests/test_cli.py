"""The command line: a tiny run writes the run directory; bad input ends in one line and exit status 2."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import polar


def _polar(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "polar", *args], capture_output=True, text=True, cwd=cwd, timeout=300)


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
    (["--lam", "-1"], "lam must be >= 0"),
    (["--t", "40"], "t must be in [0, 10]"),
    (["--model", "resnet57"], "unknown model 'resnet57'"),
    (["--dataset", "mnist"], "unknown dataset 'mnist'"),
    (["--device", "cuda:7"] if not __import__("torch").cuda.is_available() else ["--device", "tpu"], "device"),
])
def test_bad_arguments_give_one_line_errors(tmp_path: Path, args: list[str], message: str) -> None:
    done = _polar("train", "--out", str(tmp_path / "x"), "--dataset", "synthetic", *args)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("polar: error:") and message in lines[0], done.stderr
    assert "Traceback" not in done.stderr


def test_unreadable_checkpoint_is_a_one_line_error(tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    polar.RunDir(out).write_config(polar.TrainConfig(dataset="synthetic", model="resnet20").to_dict())
    (out / "checkpoint.pt").write_bytes(b"not a checkpoint")
    done = _polar("train", "--out", str(out), "--resume")
    assert done.returncode == 2 and "not a readable Polar checkpoint" in done.stderr
    assert "Traceback" not in done.stderr
    assert (out / "checkpoint.pt").read_bytes() == b"not a checkpoint"  # nothing already saved is touched
