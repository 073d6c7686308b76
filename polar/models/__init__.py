"""Polar's model zoo: CIFAR ResNets, VGG-16, MobileNetV2 and the ImageNet ResNet-50 / MobileNetV2."""
from torch import nn

from ..errors import ConfigError
from . import mobilenetv2, resnet, vgg  # noqa: F401  (registers the builders)
from ._common import ChannelSet, PrunableModel
from ._registry import create_model, list_models, register_model

__all__ = ["create_model", "list_models", "register_model", "sparse_bns", "regularized_bns", "channel_sets", "unwrap",
           "ChannelSet", "PrunableModel", "prunable"]


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside DistributedDataParallel (``.module``) or torch.compile (``._orig_mod``) wrappers."""
    while (isinstance(getattr(model, "module", None), nn.Module)
           or isinstance(getattr(model, "_orig_mod", None), nn.Module)):
        model = getattr(model, "module", None) or model._orig_mod
    return model


def sparse_bns(model: nn.Module) -> list[nn.BatchNorm2d]:
    """The BatchNorm layers whose γ are prunable (thresholds, histograms, pruning), in forward order.

    Works through DistributedDataParallel / torch.compile wrappers.

    Raises:
        ValueError: if the model does not declare its sparse BNs (build it with ``polar.create_model``).
    """
    return prunable(model).sparse_bns()


def regularized_bns(model: nn.Module) -> list[nn.BatchNorm2d]:
    """The BatchNorm layers whose γ the regularizer penalizes and clamps: the sparse ones, except ResNet-50's bn3
    (the paper's Appendix C and its code regularize bn1 and bn2 of each bottleneck only)."""
    return prunable(model).regularized_bns()


def channel_sets(model: nn.Module) -> list[ChannelSet]:
    """The prunable channel sets of a model, in forward order (through wrappers)."""
    return prunable(model).channel_sets()


def prunable(model: nn.Module) -> PrunableModel:
    """The model inside any wrappers, checked to provide ``PrunableModel``.

    Raises:
        ValueError: if it does not (build models with ``polar.create_model``, or implement the interface).
    """
    inner = unwrap(model)
    if not isinstance(inner, PrunableModel):
        raise ConfigError(f"{type(inner).__name__} does not provide polar.models.PrunableModel (sparse_bns, "
                         "regularized_bns, channel_sets, spec, input_size); build models with polar.create_model")
    return inner
