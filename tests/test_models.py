"""Every registered model runs forward and backward at its input size and reports its sparse BNs correctly."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import polar


@pytest.mark.parametrize("name", polar.list_models())
def test_forward_backward_and_sparse_bns(name: str) -> None:
    model = polar.create_model(name, num_classes=7)
    size = model.input_size
    order: list[nn.Module] = []
    hooks = [m.register_forward_hook(lambda mod, i, o: order.append(mod)) for m in model.modules()
             if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    x = torch.randn(2, 3, size, size)
    logits = model(x)
    assert logits.shape == (2, 7)
    logits.sum().backward()
    for h in hooks:
        h.remove()

    bns = polar.sparse_bns(model)
    assert bns and all(isinstance(bn, (nn.BatchNorm2d, nn.BatchNorm1d)) for bn in bns)
    assert len({id(bn) for bn in bns}) == len(bns)
    run_order = [m for m in order if any(m is bn for bn in bns)]
    assert run_order == bns, "sparse_bns must be in forward order"
    for bn in bns:
        assert torch.all(bn.weight == 0.5), "sparse γ start at 0.5 (the paper's init)"
        assert bn.weight.grad is not None
    others = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
              and not any(m is bn for bn in bns)]
    official = name in ("resnet20", "resnet32", "resnet56", "resnet110", "vgg16")  # the official code's CIFAR models
    assert all(torch.all(m.weight == (0.5 if official else 1.0)) for m in others)  # its init: every γ at 0.5


def test_official_cifar_models_use_kaiming_fan_in() -> None:
    torch.manual_seed(0)
    model = polar.create_model("vgg16")
    for layer in [model.features[0], model.features[-4], model.hidden[0], model.classifier]:
        fan_in = layer.weight[0].numel()
        assert layer.weight.std().item() == pytest.approx((2 / fan_in) ** 0.5, rel=0.15), layer


def test_expected_sparse_layers() -> None:
    r56 = polar.create_model("resnet56")
    assert len(polar.sparse_bns(r56)) == 2 * 27  # bn1 and bn2 of 27 basic blocks
    assert len(polar.sparse_bns(polar.create_model("vgg16"))) == 14  # every conv's BN and the hidden BatchNorm1d
    assert len(polar.sparse_bns(polar.create_model("resnet50_imagenet"))) == 3 * 16
    mb = polar.create_model("mobilenet_v2")
    assert len(polar.sparse_bns(mb)) == 2 * 17  # a shared (expand, depthwise) pair per inverted residual
    for cs in mb.channel_sets():
        first, depthwise = cs.bns
        assert first.num_features == depthwise.num_features


@pytest.mark.parametrize("name", ["resnet20", "vgg16", "mobilenet_v2", "resnet50_imagenet"])
def test_spec_rebuilds_the_same_architecture(name: str) -> None:
    model = polar.create_model(name, num_classes=5)
    again = polar.create_model(name, **model.spec())
    assert {k: v.shape for k, v in again.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}


def test_imagenet_models_match_torchvision() -> None:
    import torchvision

    ours, theirs = polar.create_model("resnet50_imagenet"), torchvision.models.resnet50()
    ours.load_state_dict(theirs.state_dict())  # same attribute names: torchvision weights load as they are
    ours.eval(), theirs.eval()
    x = torch.randn(1, 3, 224, 224)
    torch.testing.assert_close(ours(x), theirs(x))
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(polar.create_model("mobilenet_v2_imagenet")) == count(torchvision.models.mobilenet_v2())


@pytest.mark.parametrize("name", polar.list_models())
def test_every_model_provides_the_pruning_interface(name: str) -> None:
    model = polar.create_model(name)
    assert isinstance(model, polar.PrunableModel)
    sets = polar.channel_sets(model)
    assert [bn for cs in sets for bn in cs.bns] == polar.sparse_bns(model)  # every sparse BN in one set, in order
    not_prunable = {id(bn) for bn in polar.regularized_bns(model)} - {id(bn) for bn in polar.sparse_bns(model)}
    assert not_prunable == ({id(model.bn1)} if name.startswith("resnet") and "imagenet" not in name else set())
    assert polar.create_model(model.name, **model.spec()).spec() == model.spec()


def test_a_model_without_the_interface_gets_a_clear_error() -> None:
    plain = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    for use in (polar.sparse_bns, lambda m: polar.prune(m, 0.1), lambda m: polar.Polarization(1e-4)(m)):
        with pytest.raises(ValueError, match="PrunableModel"):
            use(plain)


def test_a_family_without_registered_surgery_gets_a_clear_error() -> None:
    class Tiny(nn.Sequential):  # provides the interface, but pruning has no surgery for it
        name, input_size = "tiny", 8

        def sparse_bns(self) -> list[nn.Module]:
            return [self[1]]

        regularized_bns = sparse_bns

        def channel_sets(self) -> list[polar.ChannelSet]:
            return [polar.ChannelSet([self[1]])]

        def spec(self) -> dict:
            return {}

    tiny = Tiny(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    assert len(polar.mask(tiny, 0.6).state_dict()) == len(tiny.state_dict())  # planning works from the interface
    with pytest.raises(ValueError, match="no surgery for Tiny.*remove_channels.register"):
        polar.prune(tiny, 0.6)


def test_unknown_model_lists_valid_names() -> None:
    with pytest.raises(ValueError, match="resnet56") as err:
        polar.create_model("resnet57")
    assert all(name in str(err.value) for name in polar.list_models())


def test_registry_is_sorted_and_complete() -> None:
    names = polar.list_models()
    assert names == sorted(names)
    assert {"resnet20", "resnet32", "resnet56", "resnet110", "vgg16", "mobilenet_v2", "resnet50_imagenet",
            "mobilenet_v2_imagenet"} <= set(names)
