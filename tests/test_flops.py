"""thop's counts (paper convention: conv + linear) equal PyTorch's own FlopCounterMode, before and after pruning."""
from __future__ import annotations

import copy

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import polar

from .conftest import polarize_randomly


def _torch_macs(model: torch.nn.Module) -> int:
    side = model.input_size
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model.eval()(torch.zeros(1, 3, side, side))
    counts = counter.get_flop_counts()["Global"]
    assert {str(op).split(".")[1] for op in counts} <= {"convolution", "addmm", "mm"}  # conv + linear only
    return counter.get_total_flops() // 2


@pytest.mark.parametrize("name", polar.list_models())
def test_thop_agrees_with_flop_counter_before_and_after_pruning(name: str) -> None:
    model = polarize_randomly(polar.create_model(name), seed=3)
    before = copy.deepcopy(model.state_dict())
    for m in (model, polar.prune(model, 0.06)):
        macs, params = polar.count_macs(m)
        assert macs == _torch_macs(m)
        assert params == sum(p.numel() for p in m.parameters())
        cost = polar.cost(m)
        assert cost.flops == 2 * cost.macs == 2 * macs
    assert model.state_dict().keys() == before.keys()  # thop's total_ops / total_params buffers did not leak
    assert not any(hasattr(m, "total_ops") or hasattr(m, "total_params") for m in model.modules())


def test_paper_figures() -> None:
    # the paper reports ResNet-56 at 125.49M and ResNet-50 at 4.09G (multiply-accumulates, called FLOPs there)
    assert polar.count_macs(polar.create_model("resnet56"))[0] == 125_485_696
    assert polar.count_macs(polar.create_model("vgg16"))[0] == 313_463_808  # the official vgg16_linear
    assert polar.count_macs(polar.create_model("resnet50_imagenet"))[0] == 4_089_184_256
    assert polar.count_macs(polar.create_model("resnet56"), input_size=(4, 3, 32, 32))[0] == 4 * 125_485_696
