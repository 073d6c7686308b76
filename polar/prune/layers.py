"""Layer surgery: slice one layer on one side, and fold what removed channels leave behind into the next layer.

A removed channel whose γ is 0 still outputs a constant; :class:`Recorder` reads that constant from one forward pass
of the masked model, and the ``fold`` helpers add its contribution to the next cross-channel layer.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError
from ..models._common import FoldedBias


def _select(param: Tensor, dim: int, keep: Tensor) -> nn.Parameter:
    return nn.Parameter(param.detach().index_select(dim, keep.to(param.device)).clone(),
                        requires_grad=param.requires_grad)


def prune_conv_out(conv: nn.Conv2d, keep: Tensor) -> None:
    """Keep only the output channels ``keep`` of a (non-grouped) conv."""
    conv.weight = _select(conv.weight, 0, keep)
    if conv.bias is not None:
        conv.bias = _select(conv.bias, 0, keep)
    conv.out_channels = len(keep)


def prune_conv_in(conv: nn.Conv2d, keep: Tensor) -> None:
    """Keep only the input channels ``keep`` of a (non-grouped) conv."""
    if conv.groups != 1:
        raise ConfigError(f"{conv} is grouped: prune its channels with prune_depthwise")
    conv.weight = _select(conv.weight, 1, keep)
    conv.in_channels = len(keep)


def prune_depthwise(conv: nn.Conv2d, keep: Tensor) -> None:
    """Keep channels ``keep`` of a depthwise conv: input, output and groups stay tied."""
    if not conv.groups == conv.in_channels == conv.out_channels:
        raise ConfigError(f"{conv} is not a depthwise conv: prune it with prune_conv_out / prune_conv_in")
    prune_conv_out(conv, keep)
    conv.in_channels = conv.groups = len(keep)


def prune_bn(bn: nn.BatchNorm2d, keep: Tensor) -> None:
    """Keep channels ``keep`` of a BatchNorm: γ, β and the running statistics."""
    bn.weight = _select(bn.weight, 0, keep)
    bn.bias = _select(bn.bias, 0, keep)
    if bn.running_mean is None or bn.running_var is None:
        raise ConfigError(f"{bn} keeps no running statistics (track_running_stats=False); pruning folds them")
    bn.running_mean = bn.running_mean.index_select(0, keep.to(bn.running_mean.device)).clone()
    bn.running_var = bn.running_var.index_select(0, keep.to(bn.running_var.device)).clone()
    bn.num_features = len(keep)


def prune_linear_out(fc: nn.Linear, keep: Tensor) -> None:
    """Keep only the output features ``keep`` of a linear layer."""
    fc.weight = _select(fc.weight, 0, keep)
    if fc.bias is not None:
        fc.bias = _select(fc.bias, 0, keep)
    fc.out_features = len(keep)


def prune_linear_in(fc: nn.Linear, keep: Tensor) -> None:
    """Keep only the input features ``keep`` of a linear layer."""
    fc.weight = _select(fc.weight, 1, keep)
    fc.in_features = len(keep)


def prune_folded_bias(fold: FoldedBias, keep: Tensor) -> None:
    """Keep the channels ``keep`` of a folded bias (when the conv it follows loses output channels)."""
    if fold.bias is not None:
        fold.bias = fold.bias.index_select(1, keep.to(fold.bias.device)).clone()


def add_fold(fold: FoldedBias, value: Tensor) -> None:
    """Add a (C, H, W) map to a folded bias; store it as (1, C, 1, 1) when it is spatially constant (then the
    pruned model also runs at other input sizes), as (1, C, H, W) otherwise."""
    total = value.unsqueeze(0) if fold.bias is None else fold.bias + value
    if torch.equal(total, total[:, :, :1, :1].expand_as(total)):
        total = total[:, :, :1, :1]
    fold.bias = total.detach().clone()


def fold_into_linear(fc: nn.Linear, gone: Tensor, x: Tensor) -> None:
    """Add what the constant input features ``gone`` (values ``x``, shape (1, R)) contribute to ``fc``'s bias."""
    fc.bias.data += x[0] @ fc.weight[:, gone].T


def conv_contribution(conv: nn.Conv2d, channels: Tensor, x: Tensor) -> Tensor:
    """What input ``channels`` (holding the constant ``x``) add to ``conv``'s output: a (C_out, H, W) map."""
    weight = conv.weight.index_select(1, channels)
    return F.conv2d(x, weight, None, conv.stride, conv.padding, conv.dilation)[0]


def split_removed(removed: Tensor) -> tuple[Tensor, Tensor]:
    return torch.nonzero(~removed).flatten(), torch.nonzero(removed).flatten()


class Recorder:
    """Runs the masked model once and keeps the inputs of the layers that consume prunable channels (and the
    outputs of block-final BNs): what removed channels feed them is input-independent, so one pass suffices."""

    def __init__(self, model: nn.Module, inputs: list[nn.Module], outputs: list[nn.Module], input_size) -> None:
        self.seen: dict[int, Tensor] = {}
        hooks = [m.register_forward_pre_hook(self._keep_input) for m in inputs]
        hooks += [m.register_forward_hook(self._keep_output) for m in outputs]
        was_training = model.training
        model.eval()
        param = next(model.parameters())
        with torch.no_grad():
            gen = torch.Generator(device="cpu").manual_seed(0)
            model(torch.randn(input_size, generator=gen).to(param.device, param.dtype))
        model.train(was_training)
        for h in hooks:
            h.remove()

    def _keep_input(self, module: nn.Module, args: tuple[Tensor, ...]) -> None:
        self.seen[id(module)] = args[0].detach().clone()  # a copy: later layers may update the stream in place

    def _keep_output(self, module: nn.Module, args: tuple[Tensor, ...], out: Tensor) -> None:
        self.seen[id(module)] = out.detach().clone()

    def constant(self, module: nn.Module, channels: Tensor) -> Tensor:
        """The recorded activation of ``channels`` (removed ones), checked to be the same for every sample."""
        x = self.seen[id(module)][:, channels]
        if not torch.equal(x, x[:1].expand_as(x)):  # the plan removes only channels that carry a constant
            raise RuntimeError("a removed channel's activation depends on the input; pruning cannot fold it")
        return x[:1]  # (1, R, H, W) or (1, R)
