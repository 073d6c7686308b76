"""One real-data pass: ResNet-20 trained a few hundred steps on real CIFAR-10 clearly beats chance."""
from __future__ import annotations

from pathlib import Path

import polar
from polar.train import EpochEvent

from .conftest import DATA_DIR, requires_cifar10


@requires_cifar10
def test_resnet20_learns_real_cifar10(tmp_path: Path) -> None:
    cfg = polar.TrainConfig(model="resnet20", dataset="cifar10", data_dir=str(DATA_DIR), epochs=1, batch_size=128,
                            lr=0.1, lr_schedule="cosine", weight_decay=5e-4, bn_wd=False, reg="polar", lam=2e-3, t=1.2,
                            device="cpu")
    events = list(polar.train(cfg, run_dir=tmp_path))
    steps = [e for e in events if isinstance(e, polar.StepEvent)]
    last = [e for e in events if isinstance(e, EpochEvent)][-1]
    assert len(steps) == 50_000 // 128  # 390 steps over the full training split
    print(f"\nreal CIFAR-10, resnet20, {len(steps)} steps: test acc {last.test_acc:.3f}, "
          f"{last.images_per_s:.0f} img/s")
    assert last.test_acc > 0.35  # chance is 0.10
    assert float(steps[-1].loss) < float(steps[0].loss) - 0.5
    assert polar.RunDir(tmp_path).read_metrics()[0]["test_acc"] == last.test_acc
