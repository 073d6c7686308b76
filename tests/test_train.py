"""The training loop: polarization separates γ where L1 shrinks them; runs resume exactly; checkpoints survive
interruption; schedules and optimizer groups are what the paper specifies."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

import polar
from polar.gamma_stats import count_modes, gamma_histogram, middle_share
from polar.schedule import lr_at, scale_lambda
from polar.train import EpochEvent, StepEvent, build_optimizer

from .conftest import polarize_randomly

BRIEF = dict(model="resnet20", dataset="synthetic", epochs=2, batch_size=64, lr=0.1, lr_schedule="cosine",
             weight_decay=5e-4, bn_wd=False, seed=0)


def _final_epoch(cfg: polar.TrainConfig, data, **kwargs) -> EpochEvent:
    events = [e for e in polar.train(cfg, data=data, **kwargs) if isinstance(e, EpochEvent)]
    assert events and events[-1].epoch == cfg.epochs
    assert [e.epoch for e in events] == list(range(events[0].epoch, cfg.epochs + 1))
    return events[-1]


def test_polarization_splits_gamma_and_l1_does_not(synthetic) -> None:
    # 2 epochs x 31 steps: brief, so λ is ~100x the paper's 200-epoch value (see the README's note on λ scale)
    polar_run = _final_epoch(polar.TrainConfig(reg="polar", lam=0.01, t=1.2, **BRIEF), synthetic)
    l1_run = _final_epoch(polar.TrainConfig(reg="l1", lam=0.01, **BRIEF), synthetic)
    polar_mid, l1_mid = middle_share(polar_run.gammas), middle_share(l1_run.gammas)
    assert polar_mid < 0.25 and l1_mid > 0.6, (polar_mid, l1_mid)
    assert count_modes(gamma_histogram(polar_run.gammas, bins=10)[0]) == 2
    assert count_modes(gamma_histogram(l1_run.gammas, bins=10)[0]) == 1
    g = torch.cat(list(polar_run.gammas.values()))
    assert (g < 0.05).float().mean() > 0.2 and (g > 0.3).float().mean() > 0.2  # a spike at 0 and a mode away
    assert g.min() >= 0 and g.max() <= 1  # clamped to [0, upper]
    assert polar_run.test_acc > 0.5 and l1_run.test_acc > 0.5  # both still learn the task


def test_same_seed_same_initial_weights_and_step_events(synthetic) -> None:
    cfg = polar.TrainConfig(reg="none", **{**BRIEF, "epochs": 1})
    steps = [e for e in polar.train(cfg, data=synthetic) if isinstance(e, StepEvent)]
    assert [s.step for s in steps] == list(range(1, len(steps) + 1))
    assert all(s.reg.item() == 0 for s in steps) and all(torch.isfinite(s.loss) for s in steps)
    torch.manual_seed(123)  # the loop seeds model init itself
    a = polar.create_model("resnet20")
    torch.manual_seed(0)
    b = polar.create_model("resnet20")
    assert not all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_resume_reproduces_an_uninterrupted_run(tmp_path: Path, synthetic) -> None:
    cfg = polar.TrainConfig(reg="polar", lam=0.01, t=1.2, **BRIEF)
    straight = _final_epoch(cfg, synthetic, run_dir=tmp_path / "straight")
    one = dataclasses.replace(cfg, epochs=2)
    gen = polar.train(one, data=synthetic, run_dir=tmp_path / "split")
    for event in gen:  # stop mid-way through epoch 2, as Ctrl-C would
        if isinstance(event, StepEvent) and event.epoch == 2 and event.step % event.steps_per_epoch == 5:
            gen.close()
            break
    ckpt = polar.RunDir(tmp_path / "split").load_checkpoint()
    assert ckpt["epoch"] == 1  # the last complete epoch survived the interruption
    resumed = _final_epoch(one, synthetic, run_dir=tmp_path / "split", resume=True)
    for name, g in straight.gammas.items():
        torch.testing.assert_close(resumed.gammas[name], g, rtol=0, atol=0)
    assert resumed.test_acc == straight.test_acc
    rows = polar.RunDir(tmp_path / "split").read_metrics()
    assert [r["epoch"] for r in rows] == [1, 2]
    assert polar.RunDir(tmp_path / "split").gamma_epochs() == [1, 2]


def _until(run, stop) -> None:
    """Take ``run``'s events until ``stop(event)``, then leave the generator suspended there."""
    for event in run:
        if stop(event):
            return
    raise AssertionError("the run ended before the stop")


def test_a_train_state_continues_a_run_exactly_from_mid_epoch_and_from_an_epochs_last_step(
        tmp_path: Path, synthetic) -> None:
    """What the explorer does to a paused duel whose trainer is evicted: capture the state between two steps, build
    the model again from its weights alone, continue — twice (mid-epoch 1, then after epoch 2's last step but before
    its evaluation) — and end exactly where an uninterrupted run ends, with the same metrics.csv."""
    from polar.saving import read_weights, weights_blob

    cfg = polar.TrainConfig(reg="polar", lam=0.01, t=1.2, **{**BRIEF, "epochs": 3})
    straight = _final_epoch(cfg, synthetic, run_dir=tmp_path / "straight")
    model, state = polar.initial_model(cfg, synthetic.num_classes), polar.TrainState()
    run = polar.train(cfg, data=synthetic, run_dir=tmp_path / "split", model=model, state=state)
    spe = synthetic.steps_per_epoch(cfg.batch_size)
    for stop in (lambda e: isinstance(e, StepEvent) and e.step == 5,  # mid-epoch 1
                 lambda e: isinstance(e, StepEvent) and e.step == 2 * spe):  # epoch 2's last step, not evaluated
        _until(run, stop)
        blob, weights = state.to_bytes(), weights_blob({"m": model})
        run.close()
        model, state = read_weights(weights)["m"], polar.TrainState.from_bytes(blob)
        run = polar.train(cfg, data=synthetic, run_dir=tmp_path / "split", model=model, state=state)
    events = list(run)
    assert [e.epoch for e in events if isinstance(e, EpochEvent)] == [2, 3]
    assert [e.step for e in events if isinstance(e, StepEvent)][0] == 2 * spe + 1
    resumed = events[-1]
    for name, g in straight.gammas.items():
        torch.testing.assert_close(resumed.gammas[name], g, rtol=0, atol=0)
    assert (resumed.test_acc, resumed.train_loss, resumed.train_acc, resumed.reg) == (
        straight.test_acc, straight.train_loss, straight.train_acc, straight.reg)
    drop = ("seconds", "images_per_s")
    rows = [{k: v for k, v in r.items() if k not in drop} for r in polar.RunDir(tmp_path / "split").read_metrics()]
    assert rows == [{k: v for k, v in r.items() if k not in drop}
                    for r in polar.RunDir(tmp_path / "straight").read_metrics()]
    with pytest.raises(polar.ConfigError, match="without resume=True"):
        next(polar.train(cfg, data=synthetic, run_dir=tmp_path / "split", resume=True, state=state))


def test_existing_run_is_not_overwritten(tmp_path: Path, synthetic) -> None:
    cfg = polar.TrainConfig(reg="none", **{**BRIEF, "epochs": 1})
    _final_epoch(cfg, synthetic, run_dir=tmp_path)
    before = (tmp_path / "checkpoint.pt").read_bytes()
    with pytest.raises(polar.CheckpointError, match="--resume"):
        _final_epoch(cfg, synthetic, run_dir=tmp_path)
    assert (tmp_path / "checkpoint.pt").read_bytes() == before
    with pytest.raises(polar.CheckpointError, match="seed"):
        _final_epoch(dataclasses.replace(cfg, seed=1, epochs=2), synthetic, run_dir=tmp_path,
                     resume=True)


def test_saved_checkpoint_loads_as_a_model(tmp_path: Path, synthetic) -> None:
    cfg = polar.TrainConfig(reg="polar", lam=0.01, **{**BRIEF, "epochs": 1})
    last = _final_epoch(cfg, synthetic, run_dir=tmp_path)
    model = polar.load(tmp_path / "checkpoint.pt")
    assert polar.evaluate(model, synthetic)[1] == pytest.approx(last.test_acc)


def test_evaluation_answers_the_same_at_every_batch_and_layout(synthetic) -> None:
    """The batch (64 on a CPU by default, chosen for speed) and the memory layout change only how fast: the same
    count of correct images and the same loss at a batch of 7 (a ragged last batch), 64 and the whole split."""
    model = polarize_randomly(polar.create_model("resnet20", num_classes=synthetic.num_classes), seed=3).eval()
    answers = [polar.evaluate(model, synthetic, batch_size=b, channels_last=cl)
               for b in (None, 7, 64, len(synthetic.test_y)) for cl in (True, False)]
    assert len({acc for _, acc in answers}) == 1
    assert all(loss == pytest.approx(answers[0][0], rel=1e-5) for loss, _ in answers)


def test_step_schedule_and_warmup() -> None:
    cfg = polar.TrainConfig(lr=0.1, lr_schedule="step", epochs=4)
    lrs = [lr_at(s, 400, cfg, 100) for s in range(400)]
    assert lrs[0] == 0.1 and lrs[199] == 0.1 and lrs[200] == pytest.approx(0.01) and lrs[300] == pytest.approx(0.001)
    cos = polar.TrainConfig(lr=0.2, lr_schedule="cosine", warmup_epochs=1, epochs=4)
    assert lr_at(0, 400, cos, 100) == pytest.approx(0.002) and lr_at(99, 400, cos, 100) == pytest.approx(0.2)
    assert lr_at(399, 400, cos, 100) < 1e-4


@pytest.mark.parametrize("bn_wd", [True, False])
def test_bn_weight_decay_switch(bn_wd: bool) -> None:
    model = polar.create_model("resnet20")
    opt = build_optimizer(model, polar.TrainConfig(bn_wd=bn_wd, weight_decay=1e-4))
    bn_ids = {id(p) for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d) for p in m.parameters()}
    for group in opt.param_groups:
        has_bn = any(id(p) in bn_ids for p in group["params"])
        if has_bn and not bn_wd:
            assert group["weight_decay"] == 0 and all(id(p) in bn_ids for p in group["params"])
        else:
            assert group["weight_decay"] == 1e-4
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(model.parameters()))


def test_config_rejects_unknown_keys_and_bad_types() -> None:
    with pytest.raises(polar.ConfigError, match="unknown setting"):
        polar.TrainConfig.from_dict({"lamda": 1e-4})
    with pytest.raises(polar.ConfigError, match="lam must be"):
        polar.TrainConfig(lam="big")  # type: ignore[arg-type]
    with pytest.raises(polar.ConfigError, match="subset"):
        polar.TrainConfig(subset=-3)
    cfg = polar.TrainConfig.from_preset("cifar", model="vgg16")
    assert (cfg.epochs, cfg.batch_size, cfg.lam, cfg.t) == (200, 64, 3e-5, 1.5)  # the official VGG-16 settings


def test_scale_lambda_keeps_lambda_times_lr_sum() -> None:
    brief = polar.TrainConfig(epochs=5, lr=0.1, lr_schedule="cosine")
    lam = scale_lambda(1e-4, brief, steps_per_epoch=390)
    # the paper's run: 200 epochs x 781 steps, lr 0.1 for half, 0.01 for a quarter, 0.001 for the rest
    paper_sum = 781 * (100 * 0.1 + 50 * 0.01 + 50 * 0.001)
    brief_sum = 5 * 390 * 0.1 / 2  # cosine averages half the peak
    assert lam == pytest.approx(1e-4 * paper_sum / brief_sum, rel=1e-3)


def test_the_official_presets_reproduce_the_papers_schedules() -> None:
    spe = 781  # 50,000 // 64
    r56 = polar.TrainConfig.from_preset("paper-cifar", model="resnet56")
    assert (r56.lam, r56.t, r56.batch_size, r56.weight_decay, r56.bn_wd) == (5e-5, 1.4, 64, 5e-4, True)
    vgg = polar.TrainConfig.from_preset("paper-cifar", model="vgg16")
    assert (vgg.lam, vgg.t) == (3e-5, 1.5)
    lrs = {epoch: lr_at(epoch * spe, 200 * spe, r56, spe) for epoch in (0, 1, 59, 60, 119, 120, 160, 199)}
    assert lrs == pytest.approx({0: 0.01, 1: 0.1, 59: 0.1, 60: 0.02, 119: 0.02, 120: 0.004, 160: 0.0008, 199: 0.0008})
    ft = polar.TrainConfig.from_preset("paper-cifar-finetune-resnet56", model="resnet56")
    assert (ft.reg, ft.lam) == ("none", 0.0)
    assert [lr_at(e * spe, 200 * spe, ft, spe) for e in (0, 30, 80, 150)] == pytest.approx([1e-3, 5e-4, 2.5e-4, 1e-4])
    r50 = polar.TrainConfig.from_preset("paper-imagenet", model="resnet50_imagenet")
    assert (r50.lam, r50.t, r50.batch_size) == (8e-5, 1.2, 512)
    for bad in ("", "1:1", "0:1,0:2", "0:1,60:-1", "0:nan", "a:b"):
        with pytest.raises(polar.ConfigError, match="lr_steps"):
            polar.TrainConfig(lr_schedule="piecewise", lr_steps=bad)


def test_flops_weighted_training_runs_and_is_recorded(synthetic) -> None:
    cfg = polar.TrainConfig(reg="polar", lam=0.01, t=1.2, flops_weights="0.5,1.5", **BRIEF)
    last = _final_epoch(cfg, synthetic)
    assert polar.TrainConfig.from_dict(cfg.to_dict()).flops_weight_range() == (0.5, 1.5)
    assert last.test_acc > 0.3


def test_train_config_is_frozen_and_every_variant_is_checked() -> None:
    import dataclasses

    cfg = polar.TrainConfig(model="resnet20", dataset="synthetic", lam=1)
    assert cfg.lam == 1.0 and isinstance(cfg.lam, float)  # ints become floats once, at construction
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.lam = 0.5  # type: ignore[misc]
    assert dataclasses.replace(cfg, lam=0.5).lam == 0.5 and cfg.lam == 1.0
    with pytest.raises(polar.ConfigError, match="lam must be in"):
        dataclasses.replace(cfg, lam=-1.0)
    with pytest.raises(polar.ConfigError, match="epochs must be int"):
        dataclasses.replace(cfg, epochs=2.5)
    finetune = polar.TrainConfig.from_preset("cifar-finetune", model="resnet20")
    assert (finetune.reg, finetune.lam) == ("none", 0.0)  # the preset says what its name says
