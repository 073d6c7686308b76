"""ONNX deployment: every registered model, pruned where pruning applies, runs in ONNX Runtime with PyTorch's
outputs (within 1e-4 of the largest logit) at several batch sizes."""
from __future__ import annotations

import platform
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import polar

from .conftest import polarize_randomly

ort = pytest.importorskip("onnxruntime", reason="onnxruntime is pinned in requirements.txt")


@pytest.mark.parametrize("name", polar.list_models())
def test_onnx_runtime_matches_pytorch(name: str, tmp_path: Path) -> None:
    model = polarize_randomly(polar.create_model(name), seed=2).eval()
    small = polar.prune(model, 0.06, round_to=8).eval()
    path = polar.export_onnx(small, tmp_path / f"{name}.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch in (1, 3):
        x = torch.randn(batch, 3, small.input_size, small.input_size)
        with torch.no_grad():
            expected = small(x).numpy()
        got = session.run(["logits"], {"images": x.numpy()})[0]
        assert got.shape == expected.shape
        assert np.abs(got - expected).max() <= 1e-4 * max(1.0, float(np.abs(expected).max()))
    assert not list(tmp_path.glob(".*.tmp"))  # written atomically


def test_deployed_latency_times_both_runtimes() -> None:
    model = polarize_randomly(polar.create_model("resnet20"), seed=4).eval()
    small = polar.prune(model, 0.06, round_to=8).eval()
    table = polar.deployed_latency(model, small, batches=(1, 8), repeats=2, rounds=1)
    assert list(table["runtime"]) == ["PyTorch", "PyTorch", "ONNX Runtime", "ONNX Runtime"]
    assert (table[["original_ms", "pruned_ms", "speedup"]] > 0).all().all()
    assert table["macs_ratio"].iloc[0] == polar.cost(model).macs / polar.cost(small).macs > 1


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_steady_allocator_ends_the_page_faults_of_each_forward_pass() -> None:
    """In a child process (it is process-wide and permanent): with glibc's defaults a batch-64 forward pass
    page-faults its activations in again (thousands of minor faults); after ``steady_allocator`` none. Medians of
    seven passes each: one pass now and then faults for reasons of its own (CI read 1,792 once, 0 is typical)."""
    script = """
import resource, torch, polar
model = polar.create_model("resnet20").eval().to(memory_format=torch.channels_last)
x = torch.randn(64, 3, 32, 32).contiguous(memory_format=torch.channels_last)
def faults():
    with torch.inference_mode():
        model(x); start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt; model(x)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start
def median_faults():
    return sorted(faults() for _ in range(7))[3]
faults(); before = median_faults()
assert polar.steady_allocator()
faults(); print(before, median_faults())
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout.split()
    before, after = int(out[0]), int(out[1])
    assert before > 1000 and after < before / 100, (before, after)
