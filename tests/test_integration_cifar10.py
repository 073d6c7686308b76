"""Real data: ResNet-20 trained briefly on real CIFAR-10 beats chance in fp32 and bf16 alike; the shipped baseline's
accuracy is what its manifest says."""
from __future__ import annotations

from pathlib import Path

import polar
from polar.train import EpochEvent

from .conftest import DATA_DIR, requires_cifar10


def _short_run(tmp_path: Path, amp: bool) -> tuple[list, EpochEvent]:
    cfg = polar.TrainConfig(model="resnet20", dataset="cifar10", data_dir=str(DATA_DIR), subset=2000, epochs=1,
                            batch_size=128, lr=0.1, lr_schedule="cosine", weight_decay=5e-4, bn_wd=False, reg="polar",
                            lam=2e-3, t=1.2, device="cpu", amp=amp)
    events = list(polar.train(cfg, run_dir=tmp_path / ("bf16" if amp else "fp32")))
    return [e for e in events if isinstance(e, polar.StepEvent)], [e for e in events if isinstance(e, EpochEvent)][-1]


@requires_cifar10
def test_resnet20_learns_real_cifar10_in_fp32_and_bf16_alike(tmp_path: Path) -> None:
    """156 steps on 20,000 real images from one start: bf16 autocast (where the CPU has it) reaches fp32's accuracy
    within 5 points and moves γ the same way (mean within 0.02, share below 0.01 within 0.05)."""
    runs = {amp: _short_run(tmp_path, amp) for amp in (False, True)}
    for amp, (steps, last) in runs.items():
        assert len(steps) == 20_000 // 128
        print(f"\nreal CIFAR-10, resnet20, {len(steps)} steps, {'bf16' if amp else 'fp32'} "
              f"(bf16 used: {polar.uses_bf16(polar.resolve_device('cpu'), amp)}): test acc {last.test_acc:.3f}, "
              f"{last.images_per_s:.0f} img/s")
        assert last.test_acc > 0.35  # chance is 0.10
        assert float(steps[-1].loss) < float(steps[0].loss) - 0.5
    (_, fp32), (_, bf16) = runs[False], runs[True]
    assert abs(bf16.test_acc - fp32.test_acc) <= 0.05
    g32, g16 = polar.gamma_stats.flat_gammas(fp32.gammas), polar.gamma_stats.flat_gammas(bf16.gammas)
    assert abs(float(g32.mean()) - float(g16.mean())) <= 0.02
    assert abs(float((g32 < 0.01).float().mean()) - float((g16 < 0.01).float().mean())) <= 0.05
    assert polar.RunDir(tmp_path / "bf16").read_metrics()[0]["test_acc"] == bf16.test_acc


@requires_cifar10
def test_the_shipped_baseline_reproduces_its_manifest_accuracy() -> None:
    """polar.evaluate on the full JPEG test split gives the manifest's accuracy (±0.1 point: float summation
    order may differ between CPUs)."""
    manifest = polar.list_pretrained()
    assert "resnet20" in manifest
    data = polar.load_dataset("cifar10", data_dir=DATA_DIR, subset=1, download=False)  # the full test split
    acc = polar.evaluate(polar.pretrained("resnet20"), data)[1]
    print(f"\nshipped resnet20: {acc:.4f} on the test split (manifest {manifest['resnet20']['test_acc']:.4f})")
    assert len(data.test_y) == 10_000 and abs(acc - manifest["resnet20"]["test_acc"]) <= 0.001
