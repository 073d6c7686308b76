"""Hostile input to the library and the CLI, second pass: each case ends in the library's own one-line error (or
is ignored where ignoring is right), and nothing already saved is touched."""
from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import polar
from polar.atomic import atomic_save

from .test_cli import _one_line_refusal


@pytest.fixture(scope="module")
def model() -> nn.Module:
    torch.manual_seed(0)
    return polar.create_model("resnet20", num_classes=10)


def test_repeated_grid_values_are_refused_by_name(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    with pytest.raises(polar.ConfigError, match=r"λ values lists 0\.02 twice"):
        polar.parse_numbers("0.02, 0.02", "λ values", limit="lam")
    err = _one_line_refusal(capsys, ["grid", "--lams", "0.02,0.02", "--ts", "1.2", "--out", str(tmp_path / "g"),
                                     "--dataset", "synthetic"])
    assert "--lams lists 0.02 twice" in err and not (tmp_path / "g").exists()
    with pytest.raises(polar.ConfigError, match="twice"):
        next(polar.tl_grid(polar.TrainConfig(dataset="synthetic", model="resnet20"), lams=[0.01], ts=[1.2, 1.2],
                           data=None, start=nn.Identity()))


@pytest.mark.parametrize("text, limit, message", [
    (None, None, "must be comma-separated numbers"),
    ("1", "bogus", "no limit named 'bogus'"),
])
def test_parse_numbers_refuses_what_is_not_text_or_not_a_limit(text, limit, message) -> None:
    with pytest.raises(ValueError, match=message):
        polar.parse_numbers(text, "λ values", limit=limit)


def test_a_stray_file_among_the_gamma_snapshots_is_ignored(tmp_path: Path) -> None:
    run = polar.RunDir(tmp_path)
    run.save_gammas(3, {"layer": torch.ones(4)})
    for stray in ("epoch_abc.pt", "epoch_.pt", "epoch_0001.pt.bak", "notes.txt"):
        (tmp_path / "gammas" / stray).write_text("x")
    assert run.gamma_epochs() == [3]


def test_resume_removes_temporary_files_left_by_a_killed_write(tmp_path: Path) -> None:
    """A kill -9 between writing a temporary file and renaming it leaves ``.NAME.PID.XXXX.tmp``; the next training
    of that run removes those of writers that are gone (here: a process that has exited), keeping live ones."""
    out = tmp_path / "run"
    args = ["train", "--model", "resnet20", "--dataset", "synthetic", "--preset", "demo", "--epochs", "1",
            "--subset", "20", "--batch-size", "16", "--out", str(out), "--quiet"]
    assert polar.cli.main(args) == 0
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    stale = [out / f".checkpoint.pt.{gone.pid}.abcd1234.tmp", out / f".metrics.csv.{gone.pid}.x.tmp",
             out / "gammas" / f".epoch_0002.pt.{gone.pid}.y.tmp", out / ".config.json.legacy.tmp"]
    live = out / f".checkpoint.pt.{os.getppid()}.live.tmp"  # a writer that still runs (pytest's parent)
    for path in [*stale, live]:
        path.write_bytes(b"partial")
    checkpoint = (out / "checkpoint.pt").read_bytes()
    assert polar.cli.main([*args[:-3], "--epochs", "2", "--out", str(out), "--resume", "--quiet"]) == 0
    assert not any(p.exists() for p in stale) and live.exists()
    assert [r["epoch"] for r in polar.RunDir(out).read_metrics()] == [1, 2]
    assert (out / "checkpoint.pt").read_bytes() != checkpoint  # the resumed epoch was saved as usual


def test_atomic_writes_name_their_writer(tmp_path: Path) -> None:
    """What the clean-up above relies on: a temporary file carries its writer's pid."""
    seen = []

    class Spy:
        def __reduce__(self):
            seen.extend(p.name for p in tmp_path.iterdir())
            return (int, (0,))

    atomic_save({"x": Spy()}, tmp_path / "checkpoint.pt")
    assert any(name.startswith(f".checkpoint.pt.{os.getpid()}.") for name in seen), seen


@pytest.mark.parametrize("steps", ["abc", "0:1,0:2", "5:1"])
def test_lr_steps_are_checked_whatever_the_schedule(capsys: pytest.CaptureFixture, tmp_path: Path,
                                                     steps: str) -> None:
    with pytest.raises(polar.ConfigError, match="lr_steps must be"):
        polar.TrainConfig(lr_schedule="cosine", lr_steps=steps)
    err = _one_line_refusal(capsys, ["train", "--dataset", "synthetic", "--lr-steps", steps,
                                     "--out", str(tmp_path / "r")])
    assert "lr_steps must be" in err and not (tmp_path / "r").exists()


def test_export_onnx_refuses_what_it_cannot_export(model: nn.Module, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"pass input_size"):
        polar.export_onnx(nn.Linear(2, 2), tmp_path / "linear.onnx")
    with pytest.raises(ValueError, match=r"is a folder; pass a file path such as .*model\.onnx"):
        polar.export_onnx(model, tmp_path)
    assert list(tmp_path.iterdir()) == []  # no temporary file left behind


@pytest.mark.parametrize("call", [
    lambda m: polar.threshold_rules(m, upper=math.nan),
    lambda m: polar.threshold_rules(m, upper=-1),
    lambda m: polar.find_threshold(m, upper=math.nan),
    lambda m: polar.find_threshold(m, upper=math.inf),
    lambda m: polar.find_threshold(m, bins=0),
    lambda m: polar.find_threshold(m, bins=2.5),
    lambda m: polar.gamma_histogram(polar.gamma_snapshot(m), bins=-3),
], ids=["rules-upper-nan", "rules-upper-negative", "upper-nan", "upper-inf", "bins-0", "bins-float", "hist-bins"])
def test_threshold_arguments_are_checked_with_one_line(model: nn.Module, call) -> None:
    with pytest.raises(polar.ConfigError) as err:
        call(model)
    assert len(str(err.value).splitlines()) == 1 and ("upper" in str(err.value) or "bins" in str(err.value))


def test_loading_a_folder_says_it_is_a_folder(tmp_path: Path) -> None:
    with pytest.raises(polar.CheckpointError, match="is a folder, not a file; pass its checkpoint.pt"):
        polar.load(tmp_path)
