"""The regularizers' value and gradient equal the paper's formula and its analytic subgradient."""
from __future__ import annotations

import pytest
import torch

import polar
from polar.regularizers import sparse_gammas


def _randomise_gammas(model, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for bn in polar.sparse_bns(model):
            bn.weight.copy_(torch.rand(bn.weight.shape, generator=gen) * 0.98 + 0.01)  # away from 0: sign defined
    return sparse_gammas(model).detach().double()


@pytest.mark.parametrize("lam", [1e-4, 5e-5, 0.3])
@pytest.mark.parametrize("t", [0.0, 1.0, 1.2, 1.4, 2.0])
def test_polarization_value_and_gradient(lam: float, t: float) -> None:
    model = polar.create_model("resnet20")
    g = _randomise_gammas(model, seed=int(t * 10) + int(lam * 1e6))
    value = polar.Polarization(lam=lam, t=t)(model)
    n = len(g)
    mean = g.mean()
    expected = lam * (t * g.abs().sum() - (g - mean).abs().sum())
    assert value.item() == pytest.approx(expected.item(), rel=1e-5)
    # the per-layer form of the spec: λ·Σ_l [t·‖γ_l‖₁ − ‖γ_l − γ̄‖₁] with one network-wide γ̄
    per_layer = sum(t * bn.weight.double().abs().sum() - (bn.weight.double() - mean).abs().sum()
                    for bn in polar.sparse_bns(model))
    assert value.item() == pytest.approx(lam * per_layer.item(), rel=1e-5)

    value.backward()
    grad = torch.cat([bn.weight.grad.flatten() for bn in polar.sparse_bns(model)]).double()
    s = torch.sign(g - mean)
    # d/dγ_i: t·sign(γ_i) − sign(γ_i − γ̄) + (1/n)·Σ_j sign(γ_j − γ̄)   (γ̄ is not detached)
    analytic = lam * (t * torch.sign(g) - s + s.sum() / n)
    torch.testing.assert_close(grad, analytic, rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("lam", [1e-4, 0.01])
def test_l1_value_and_gradient(lam: float) -> None:
    model = polar.create_model("vgg16")
    g = _randomise_gammas(model, seed=3)
    value = polar.L1(lam=lam)(model)
    assert value.item() == pytest.approx(lam * g.abs().sum().item(), rel=1e-5)
    value.backward()
    grad = torch.cat([bn.weight.grad.flatten() for bn in polar.sparse_bns(model)]).double()
    torch.testing.assert_close(grad, lam * torch.sign(g), rtol=1e-5, atol=1e-9)


def test_what_each_regularizer_touches_in_a_cifar_resnet() -> None:
    """As the official code: polarization penalizes the sparse γ only (γ̄ is their mean) and clamps the stem's too;
    L1 penalizes every BN's γ, the stem's included."""
    model = polar.create_model("resnet20")
    polar.Polarization(lam=1.0, t=1.2)(model).backward()
    sparse = {id(bn.weight) for bn in polar.sparse_bns(model)}
    for p in model.parameters():
        assert (p.grad is not None) == (id(p) in sparse)
    model.zero_grad(set_to_none=True)
    polar.L1(lam=1.0)(model).backward()
    assert {id(p) for p in model.parameters() if p.grad is not None} == sparse | {id(model.bn1.weight)}
    with torch.no_grad():
        model.bn1.weight.fill_(3.0)
    polar.Polarization(lam=1.0).clamp_(model)
    assert torch.all(model.bn1.weight == 1.0)


def test_polarization_clamps_to_upper_bound() -> None:
    model = polar.create_model("resnet20")
    with torch.no_grad():
        for bn in polar.sparse_bns(model):
            bn.weight.uniform_(-2, 3)
    polar.Polarization(lam=1e-4, t=1.2, upper=1.0).clamp_(model)
    g = sparse_gammas(model)
    assert g.min() >= 0 and g.max() <= 1.0
    assert g.min() == 0 and g.max() == 1.0  # values out of range really were moved to the bounds


def test_no_regularizer_is_zero_and_l1_does_not_clamp() -> None:
    model = polar.create_model("resnet20")
    assert polar.NoRegularizer()(model).item() == 0
    with torch.no_grad():
        polar.sparse_bns(model)[0].weight.fill_(-1.0)
    polar.L1(lam=1e-4).clamp_(model)
    assert polar.sparse_bns(model)[0].weight.min() == -1.0


@pytest.mark.parametrize("make", [lambda: polar.Polarization(lam=-1e-4), lambda: polar.Polarization(1e-4, t=-1),
                                  lambda: polar.Polarization(1e-4, t=50), lambda: polar.Polarization(1e-4, upper=0),
                                  lambda: polar.L1(lam=-1.0), lambda: polar.make_regularizer("l2")])
def test_bad_settings_raise_value_error(make) -> None:
    with pytest.raises(ValueError):
        make()


def test_theorem_3_2_share_at_zero() -> None:
    assert [polar.optimal_zero_share(t) for t in (-3, -2, 0, 1.2, 2, 3)] == pytest.approx([0, 0, 0.5, 0.8, 1, 1])


def test_the_toy_splits_under_polarization_and_slides_under_l1() -> None:
    """polar.toy_gammas (notebook 01 and the playground): polarization leaves a spike at 0 and an emptied middle;
    L1 at the same λ (unclamped, as network slimming) slides γ down and leaves the middle full; without the clamp
    polarization's small γ fall below 0."""
    polarized = polar.toy_gammas("polar", lam=0.3, snapshots=(400,))[400]
    shrunk = polar.toy_gammas("l1", lam=0.3, clamp=False, snapshots=(400,))[400]
    assert float((polarized == 0).float().mean()) > 0.2 and polar.is_polarized(polarized)
    assert float((shrunk == 0).float().mean()) == 0
    assert polar.middle_share(polarized) < 0.5 * polar.middle_share(shrunk)
    free = polar.toy_gammas("polar", lam=0.3, clamp=False, snapshots=(400,))[400]
    assert float((free < 0).float().mean()) > 0.05  # the clamp is what holds them at exactly 0
    assert torch.equal(polar.toy_gammas("polar", 0.3, snapshots=(400,))[400], polarized)  # seeded
    with pytest.raises(polar.ConfigError, match="finite"):
        polar.toy_gammas("polar", lam=float("nan"))


def test_resnet50_regularizes_bn1_and_bn2_and_still_prunes_bn3() -> None:
    """The paper's Appendix C and its code: bn3 of a bottleneck is prunable but not penalized or clamped."""
    model = polar.create_model("resnet50_imagenet")
    blocks = model.blocks()
    assert len(polar.sparse_bns(model)) == 3 * len(blocks) and len(polar.regularized_bns(model)) == 2 * len(blocks)
    bn3 = {id(b.bn3) for b in blocks}
    assert not bn3 & {id(bn) for bn in polar.regularized_bns(model)}
    for reg in (polar.Polarization(lam=1e-3, t=1.2), polar.L1(lam=1e-3)):
        model.zero_grad()
        reg(model).backward()
        assert all(b.bn3.weight.grad is None for b in blocks)
        assert all(b.bn1.weight.grad is not None and b.bn2.weight.grad.abs().sum() > 0 for b in blocks)
    with torch.no_grad():
        blocks[0].bn3.weight.fill_(1.5)
        blocks[0].bn1.weight.fill_(1.5)
    polar.Polarization(lam=1e-3).clamp_(model)
    assert float(blocks[0].bn3.weight.min()) == 1.5 and float(blocks[0].bn1.weight.max()) == 1.0


@pytest.mark.parametrize("reg", ["polar", "l1"])
def test_the_toys_closed_form_gradient_is_autograds(reg: str) -> None:
    """polar.toy_gammas descends with a closed-form subgradient: it must equal autograd's on the real penalty."""
    from polar.regularizers import l1, polarization
    from polar.toy import penalty_gradient

    g = torch.rand(500, generator=torch.Generator().manual_seed(3))
    g[:50] = 0.0  # exact zeros: the subgradient there is autograd's (0)
    g.requires_grad_(True)
    (polarization(g, 1.3) if reg == "polar" else l1(g)).backward()
    assert torch.allclose(penalty_gradient(reg, g.detach(), 1.3), g.grad, atol=1e-6)


def test_channel_macs_are_the_analytic_cost_of_one_channel() -> None:
    """One channel of a CIFAR ResNet block's bn1 costs its row of conv1 and its column of conv2; bn2's costs its row
    of conv2 (the residual stream keeps its width): 9 · (in + out) · H·W and 9 · mid · H·W."""
    from polar.channel_cost import channel_macs

    model = polar.create_model("resnet20")
    expected = []
    for block in model.blocks():
        side = 32 // {16: 1, 32: 2, 64: 4}[block.conv2.out_channels]
        area = side * side
        conv1, conv2 = block.conv1, block.conv2
        expected += [9 * (conv1.in_channels + conv2.out_channels) * area, 9 * conv1.out_channels * area]
    assert channel_macs(model) == expected


def test_flops_weights_scale_each_layers_terms() -> None:
    from polar.channel_cost import flops_layer_weights

    model = polar.create_model("resnet20")
    g = _randomise_gammas(model, seed=3)
    weights = flops_layer_weights(model, 0.5, 1.5)  # the stem first: regularized, not prunable, so it saves nothing
    assert weights[0] == 0.5 and max(weights) == weights[1] == 1.5 and weights[-1] < weights[1]  # stage 1's bn1
    sizes = [bn.num_features for bn in polar.sparse_bns(model)]
    per_gamma = torch.tensor(weights[1:], dtype=torch.float64).repeat_interleave(torch.tensor(sizes))
    polarized = polar.Polarization(0.1, t=1.2, layer_weights=weights)(model).item()
    assert polarized == pytest.approx(0.1 * (per_gamma * (1.2 * g.abs() - (g - g.mean()).abs())).sum().item(), rel=1e-5)
    stem = model.bn1.weight.detach().double().abs().sum().item()
    l1_weighted = polar.L1(0.1, layer_weights=weights)(model).item()
    assert l1_weighted == pytest.approx(0.1 * (0.5 * stem + (per_gamma * g.abs()).sum().item()), rel=1e-5)
    ones = polar.Polarization(0.1, layer_weights=[1.0] * len(weights))(model)
    assert ones.item() == pytest.approx(polar.Polarization(0.1)(model).item(), rel=1e-6)
    with pytest.raises(ValueError, match="layer weights for"):
        polar.Polarization(0.1, layer_weights=weights[:-1])(model)
    with pytest.raises(polar.ConfigError, match="flops_weights"):
        polar.TrainConfig(flops_weights="1.5,0.5")


def test_a_regularizer_keeps_one_layout_per_model() -> None:
    """The penalized BNs and their weights are found once per model (they depend on its architecture only): the
    same regularizer then serves a second, pruned model with its own layout, after the first one's γ changed."""
    model = polar.create_model("resnet20")
    _randomise_gammas(model, seed=4)
    reg = polar.Polarization(0.1, t=1.2)
    first = reg(model).item()
    small = polar.prune(model, 0.3)
    assert polar.cost(small).macs < polar.cost(model).macs
    g = polar.sparse_gammas(small).detach().double()
    assert reg(small).item() == pytest.approx(0.1 * (1.2 * g.abs() - (g - g.mean()).abs()).sum().item(), rel=1e-5)
    with torch.no_grad():
        model.layer1[0].bn1.weight.mul_(2)
    assert reg(model).item() != first


def test_flops_weighting_prunes_the_expensive_layer_more() -> None:
    """A toy of two layers whose channels the task needs equally, one 4x costlier per channel: weighted by cost, the
    penalty sends more of the expensive layer's γ to 0; unweighted, both lose the same share."""
    gen = torch.Generator().manual_seed(0)
    n = 1000
    importance = torch.exp(torch.randn(n, generator=gen)).repeat(2)  # the same needs in both layers
    preferred = (0.3 + 0.4 * torch.rand(n, generator=gen)).repeat(2)

    def zero_shares(layer_weights: list[float]) -> tuple[float, float]:
        g = torch.full((2 * n,), 0.5, requires_grad=True)
        weights = torch.tensor(layer_weights).repeat_interleave(n)
        for _ in range(400):
            loss = (0.5 * importance * (g - preferred) ** 2).sum() + 0.3 * polar.polarization(g, 1.2, weights)
            (grad,) = torch.autograd.grad(loss, g)
            with torch.no_grad():
                g -= 0.05 * grad
                g.clamp_(0, 1)
        zero = (g.detach() < 0.01).float()
        return zero[:n].mean().item(), zero[n:].mean().item()

    cheap, costly = zero_shares([0.5, 2.0])
    assert costly > cheap + 0.1, (cheap, costly)
    same = zero_shares([1.0, 1.0])
    assert same[0] == pytest.approx(same[1], abs=1e-9)
