"""The CUDA path (``pytest -m cuda``, run by bench/gpu_check.sh on a GPU machine): training with bf16 autocast and
channels_last, pruning, counting, saving and the explorer's trainer on CUDA. Without CUDA every test skips, saying
so; the device-choice logic that a CPU can check is tested at the end without a GPU."""
from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest
import torch

import polar

from .conftest import polarize_randomly

CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="no CUDA device here (bench/gpu_check.sh runs these on a GPU)")
CIFAR_MODELS = [m for m in polar.list_models() if not m.endswith("imagenet")]


@pytest.mark.cuda
@needs_cuda
def test_training_on_cuda_in_bf16_lowers_the_loss_and_keeps_gamma_clamped() -> None:
    cfg = polar.TrainConfig(model="resnet20", dataset="synthetic", subset=100, epochs=3, batch_size=64, lr=0.05,
                            lr_schedule="cosine", reg="polar", lam=0.01, t=1.2, device="cuda", amp=True)
    data = polar.load_dataset("synthetic", "cuda", subset=100)
    assert polar.uses_bf16(data.device, True)
    events = list(polar.train(cfg, data=data))
    steps = [e for e in events if isinstance(e, polar.StepEvent)]
    last = [e for e in events if isinstance(e, polar.EpochEvent)][-1]
    assert float(steps[-1].loss) < float(steps[0].loss)
    g = polar.gamma_stats.flat_gammas(last.gammas)
    assert float(g.min()) >= 0 and float(g.max()) <= 1


@pytest.mark.cuda
@needs_cuda
def test_compiled_training_on_cuda_with_cuda_graphs_lowers_the_loss() -> None:
    cfg = polar.TrainConfig(model="resnet20", dataset="synthetic", subset=100, epochs=3, batch_size=64, lr=0.05,
                            lr_schedule="cosine", reg="polar", lam=0.01, t=1.2, device="cuda", compile=True)
    events = list(polar.train(cfg, data=polar.load_dataset("synthetic", "cuda", subset=100)))
    steps = [e for e in events if isinstance(e, polar.StepEvent)]
    assert float(steps[-1].loss) < float(steps[0].loss)
    g = polar.gamma_stats.flat_gammas([e for e in events if isinstance(e, polar.EpochEvent)][-1].gammas)
    assert float(g.min()) >= 0 and float(g.max()) <= 1


@pytest.mark.cuda
@needs_cuda
@pytest.mark.parametrize("name", CIFAR_MODELS)
def test_pruned_equals_masked_on_cuda(name: str) -> None:
    model = polarize_randomly(polar.create_model(name)).cuda().eval()
    threshold = 0.06
    x = torch.randn(8, 3, 32, 32, device="cuda")
    with torch.no_grad():
        expected = polar.mask(model, threshold)(x)
        got = polar.prune(model, threshold)(x)
    assert torch.allclose(got, expected, rtol=1e-3, atol=1e-3 * float(expected.abs().max()))
    assert polar.count_macs(polar.prune(model, threshold))[0] < polar.count_macs(model)[0]


@pytest.mark.cuda
@needs_cuda
def test_a_model_saved_on_cuda_loads_on_cpu(tmp_path: Path) -> None:
    model = polar.create_model("resnet20").cuda()
    polar.save(model, tmp_path / "m.pt")
    again = polar.load(tmp_path / "m.pt")
    assert next(again.parameters()).device.type == "cpu"
    assert all(torch.equal(a.cpu(), b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))


@pytest.mark.cuda
@needs_cuda
def test_the_explorers_trainer_runs_on_cuda(tmp_path: Path) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "app"))
    from trainers import TrainerPool

    pool = TrainerPool(lambda session: True, max_running=1, threads_per_trainer=1)
    try:
        base = dict(model="resnet20", dataset="synthetic", subset=50, epochs=1, batch_size=32, lr=0.05, device="cuda")
        cfgs = {"polar": polar.TrainConfig(**base, reg="polar", lam=0.01), "l1": polar.TrainConfig(**base, reg="l1")}
        data = polar.load_dataset("synthetic", subset=50)  # the page's copy stays on the CPU: CUDA is the child's
        duel = pool.new_duel(cfgs, {"name": "synthetic", "subset": 50}, data, tmp_path, owner="me")
        duel.start()
        deadline = time.time() + 120
        while duel.snapshot().state != "done":
            assert time.time() < deadline and duel.snapshot().state != "error", duel.snapshot().message
            time.sleep(0.2)
        assert duel.snapshot().epoch == 1 and len(duel.snapshot().epochs) == 2
    finally:
        pool.close()


def test_device_choice_without_a_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """What a CPU can check of the CUDA path: auto picks CUDA only when there is one; asking for CUDA without one
    is a one-line error; bf16 autocast follows the device and the CPU's instructions."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert polar.resolve_device("auto").type == "cpu"
    with pytest.raises(polar.ConfigError, match="CUDA is not available"):
        polar.resolve_device("cuda")
    assert polar.uses_bf16(torch.device("cuda"), True) and not polar.uses_bf16(torch.device("cuda"), False)
    monkeypatch.setenv("POLAR_CPU_BF16", "0")
    polar.device.cpu_has_native_bf16.cache_clear()
    assert not polar.uses_bf16(torch.device("cpu"), True)
    monkeypatch.setenv("POLAR_CPU_BF16", "1")
    polar.device.cpu_has_native_bf16.cache_clear()
    assert polar.uses_bf16(torch.device("cpu"), True)
    monkeypatch.delenv("POLAR_CPU_BF16")
    polar.device.cpu_has_native_bf16.cache_clear()
    cfg = polar.TrainConfig(model="resnet20", dataset="synthetic", subset=10, epochs=1, batch_size=16, device="cpu",
                            compile=True)
    with pytest.raises(polar.ConfigError, match="compile is for CUDA"):
        next(polar.train(cfg))
