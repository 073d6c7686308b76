"""What a threshold would leave, counted without building it: the MACs and parameters of the network ``polar.prune``
would return, from each channel set's kept count, with no copy, no surgery and no thop.

Searching a threshold for a FLOPs target (``polar.threshold_for_reduction``) asks this question a dozen times per
target; pruning for real and profiling each candidate took seconds per target on ResNet-56, this takes
milliseconds. Exactness is the contract: ``pruned_cost(m, thr, ...) == polar.cost(polar.prune(m, thr, ...))`` for
every registered model and option (tests/test_prune.py checks it on many random masks).

How: every conv, linear and BatchNorm keeps its spatial size under pruning; only its channel counts change. One
forward pass records each layer's output size (cached per model and input size); each model family says, for a
removal plan, which layers get which (input, output) widths and which are dropped (``layer_widths``, registered
next to its surgery); the count is then thop's formula under the paper's convention — convs
``H·W·k²·C_in/groups·C_out``, linear layers ``in·out`` per sample, parameters of convs, BNs and linear layers.
"""
from __future__ import annotations

import weakref
from functools import singledispatch

import torch
from torch import nn

from ..errors import ConfigError
from ..flops import Cost
from ..models import channel_sets, sparse_bns, unwrap
from .plan import Threshold, plan_removal
from .surgery import Removal

__all__ = ["pruned_cost", "unpruned_cost", "pruned_channels", "layer_widths", "Widths"]

# id(module) -> (input width, output width) after pruning, or None when pruning drops the module
Widths = dict[int, "tuple[int, int] | None"]

_COUNTED = (nn.Conv2d, nn.Linear, nn.BatchNorm2d, nn.BatchNorm1d)


@singledispatch
def layer_widths(model: nn.Module, removal: Removal) -> Widths:
    """The (input, output) widths pruning gives each conv, linear layer and BN of ``model`` whose widths change,
    and None for those it drops; layers not named keep their widths."""
    raise ConfigError(f"pruning has no cost rule for {type(model).__name__}; use a model from polar.create_model, or "
                     "register one with polar.prune.cost.layer_widths.register")


_OUTPUT_SIZES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _outputs_per_channel(model: nn.Module, input_size: tuple[int, ...]) -> dict[int, int]:
    """For each conv and linear layer, the output elements per output channel (N·H·W, or N) at ``input_size``:
    one forward pass per model and input size (pruning never changes them)."""
    cached = _OUTPUT_SIZES.setdefault(model, {})
    if input_size not in cached:
        sizes: dict[int, int] = {}

        def record(module: nn.Module, args, out: torch.Tensor) -> None:
            channels = module.out_channels if isinstance(module, nn.Conv2d) else module.out_features
            sizes[id(module)] = out.numel() // channels

        hooks = [m.register_forward_hook(record) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
        was_training = model.training
        param = next(model.parameters())
        try:
            model.eval()
            with torch.no_grad():
                model(torch.zeros(input_size, device=param.device, dtype=param.dtype))
        finally:
            model.train(was_training)
            for h in hooks:
                h.remove()
        cached[input_size] = sizes
    return cached[input_size]


def _count(module: nn.Module, widths: tuple[int, int], outputs: int) -> tuple[int, int]:
    """(MACs, parameters) of one layer at the given (input, output) widths."""
    c_in, c_out = widths
    if isinstance(module, nn.Conv2d):
        depthwise = module.groups > 1
        if depthwise and not module.groups == module.in_channels == module.out_channels:
            raise ConfigError(f"{module} is a grouped conv; pruning only handles plain and depthwise convs")
        per_output = (1 if depthwise else c_in) * module.kernel_size[0] * module.kernel_size[1]
        bias = c_out if module.bias is not None else 0
        return outputs * c_out * per_output, c_out * per_output + bias
    if isinstance(module, nn.Linear):
        return outputs * c_out * c_in, c_in * c_out + (c_out if module.bias is not None else 0)
    return 0, 2 * c_out if module.affine else 0  # BatchNorm: γ and β; its compute counts 0 (the paper's convention)


def _current(module: nn.Module) -> tuple[int, int]:
    if isinstance(module, nn.Conv2d):
        return module.in_channels, module.out_channels
    if isinstance(module, nn.Linear):
        return module.in_features, module.out_features
    return module.num_features, module.num_features


def _planned_widths(model: nn.Module, threshold: Threshold, zero_beta: bool, round_to: int,
                    narrow_residual: bool, input_size: tuple[int, ...]) -> Widths:
    plan = plan_removal(model, threshold, round_to, zero_beta)
    removal = Removal({id(cs.bns[0]): gone for cs, gone in zip(channel_sets(model), plan)}, input_size,
                      narrow_residual, round_to)
    return layer_widths(model, removal)


def _default_input(model: nn.Module, input_size: tuple[int, ...] | None) -> tuple[int, ...]:
    return (1, 3, model.input_size, model.input_size) if input_size is None else tuple(input_size)


def pruned_cost(model: nn.Module, threshold: Threshold, zero_beta: bool = False,
                input_size: tuple[int, ...] | None = None, round_to: int = 1,
                narrow_residual: bool = False) -> Cost:
    """The :class:`polar.Cost` of ``polar.prune(model, threshold, ...)`` (same arguments), counted without pruning.

    ``input_size`` is the shape the count is for, as in ``polar.count_macs`` (default: one image at the model's own
    size); it is not ``prune``'s size for folded border maps, which does not change a count.
    """
    inner = unwrap(model)
    input_size = _default_input(inner, input_size)
    return _total(inner, _planned_widths(inner, threshold, zero_beta, round_to, narrow_residual, input_size),
                  input_size)


def unpruned_cost(model: nn.Module, input_size: tuple[int, ...] | None = None) -> Cost:
    """``polar.cost(model)`` by the same closed form as :func:`pruned_cost`: the base a FLOPs reduction is taken
    against, without thop."""
    inner = unwrap(model)
    input_size = _default_input(inner, input_size)
    return _total(inner, {}, input_size)


def _total(model: nn.Module, widths: Widths, input_size: tuple[int, ...]) -> Cost:
    outputs = _outputs_per_channel(model, input_size)
    macs = params = 0
    for module in model.modules():
        if not isinstance(module, _COUNTED):
            continue
        shape = widths.get(id(module), _current(module))
        if shape is None:
            continue
        m, p = _count(module, shape, outputs.get(id(module), 0))
        macs, params = macs + m, params + p
    return Cost(macs, params)


def pruned_channels(model: nn.Module, threshold: Threshold, zero_beta: bool = False, round_to: int = 1) -> int:
    """How many channels of the sparse BNs ``polar.prune(model, threshold, ...)`` removes (those of a removed
    block's branch included), counted without pruning."""
    inner = unwrap(model)
    widths = _planned_widths(inner, threshold, zero_beta, round_to, False, _default_input(inner, None))
    return sum(bn.num_features - (widths.get(id(bn), _current(bn)) or (0, 0))[1] for bn in sparse_bns(inner))
