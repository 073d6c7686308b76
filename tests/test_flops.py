"""thop's counts (paper convention: conv + linear) equal PyTorch's own FlopCounterMode, before and after pruning."""
from __future__ import annotations

import copy
import random

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import polar
from polar.prune import layer_thresholds, pruned_channels

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


def _random_mask(model: torch.nn.Module, rng: random.Random) -> torch.nn.Module:
    """γ above or below 0.5 at random, per channel set: all of a set below (an emptied set, a removed block), all
    above, or a random share — the cases pruning's rules differ on."""
    gen = torch.Generator().manual_seed(rng.randrange(2**31))
    with torch.no_grad():
        for cs in polar.channel_sets(model):
            share = rng.choice([0.0, 1.0, rng.random(), rng.random()])
            for bn in cs.bns:
                low = torch.rand(bn.num_features, generator=gen) < share
                bn.weight.copy_(torch.where(low, 0.5 * torch.rand(bn.num_features, generator=gen),
                                            0.5 + 0.5 * torch.rand(bn.num_features, generator=gen)))
    return model


CASES = {"resnet20": 10, "resnet56": 6, "vgg16": 8, "mobilenet_v2": 8, "resnet50_imagenet": 2,
         "mobilenet_v2_imagenet": 2}


@pytest.mark.parametrize("name", polar.list_models())
def test_pruned_cost_without_surgery_equals_thop_on_the_pruned_model(name: str) -> None:
    """polar.pruned_cost counts from kept widths alone; thop counts the physically pruned network. Random masks
    with emptied sets and removed blocks, every option, one threshold or one per layer, a model pruned already."""
    rng = random.Random(name)
    model = polarize_randomly(polar.create_model(name), seed=1)
    assert polar.pruned_cost(model, -1.0) == polar.unpruned_cost(model) == polar.cost(model)  # nothing removed
    for case in range(CASES.get(name, 4)):
        if case == CASES.get(name, 4) - 1:  # the last case starts from a network pruned once already
            model = polar.prune(model, 0.5, round_to=8, narrow_residual=True)
            assert polar.unpruned_cost(model) == polar.cost(model)
        _random_mask(model, rng)
        threshold = 0.5 if rng.random() < 0.7 else layer_thresholds(model, 0.5)
        options = {"round_to": rng.choice([1, 1, 8, 16]), "narrow_residual": rng.random() < 0.5,
                   "zero_beta": rng.random() < 0.3}
        small = polar.prune(model, threshold, **options)
        assert polar.pruned_cost(model, threshold, **options) == polar.cost(small), f"case {case}: {options}"
        if not options["narrow_residual"]:  # the sparse channels pruning removes, a removed block's included
            removed = sum(bn.num_features for bn in polar.sparse_bns(model)) - sum(
                bn.num_features for bn in polar.sparse_bns(small))
            assert pruned_channels(model, threshold, options["zero_beta"], options["round_to"]) == removed
    batch = (3, 3, model.input_size, model.input_size)  # a batch counts every image, as thop does
    assert polar.pruned_cost(model, 0.5, input_size=batch) == polar.cost(polar.prune(model, 0.5), batch)
