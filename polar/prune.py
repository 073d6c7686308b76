"""Physical channel pruning: a sparsely trained network becomes a smaller dense network of the same class.

``mask(m, thr)`` zeroes the γ of prunable channels with γ ≤ thr; ``prune(m, thr)`` removes those channels and
gives the same outputs as ``mask(m, thr)`` in eval mode. A channel with γ = 0 is not silent: it outputs a constant
(its β through the activation and any channel-local layers after it). Polar folds that constant into the next
cross-channel layer (conv or linear) or, for a ResNet block's output, into the residual stream — exactly, zero-padded
borders included — where the paper's code drops it (``zero_beta=True`` reproduces that: γ and β zeroed).

Two options trade exact thresholding for speed: ``round_to`` keeps channel counts at multiples of, say, 8 (oneDNN's
convs run up to 2x slower on odd widths than on the next multiple of 8), and ``narrow_residual`` removes residual
channels of a CIFAR ResNet that no block writes to any more (all their writers are pruned and the channel enters
the stage as a constant), so the stream itself gets narrower and nothing is scattered back into those channels.

The per-layer functions (``prune_conv_out``, ``prune_conv_in``, ``prune_bn``, ...) slice one layer on one side;
``prune`` combines them using each model family's known structure.
"""
from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import is_finite_number
from .models import sparse_bns, unwrap
from .models._common import FoldedBias
from .models.mobilenetv2 import MobileNetV2
from .models.resnet import Bottleneck, CifarResNet, ShortcutA, _ResNetBase, option_a_index
from .models.vgg import VGG

__all__ = ["mask", "prune", "channel_sets", "ChannelSet", "prune_conv_out", "prune_conv_in", "prune_depthwise",
           "prune_bn", "prune_linear_in", "prune_folded_bias", "layer_thresholds", "Threshold"]


# ---------------------------------------------------------------- per-layer functions

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
    assert conv.groups == 1, "grouped convs are pruned with prune_depthwise"
    conv.weight = _select(conv.weight, 1, keep)
    conv.in_channels = len(keep)


def prune_depthwise(conv: nn.Conv2d, keep: Tensor) -> None:
    """Keep channels ``keep`` of a depthwise conv: input, output and groups stay tied."""
    assert conv.groups == conv.in_channels == conv.out_channels, "not a depthwise conv"
    prune_conv_out(conv, keep)
    conv.in_channels = conv.groups = len(keep)


def prune_bn(bn: nn.BatchNorm2d, keep: Tensor) -> None:
    """Keep channels ``keep`` of a BatchNorm: γ, β and the running statistics."""
    bn.weight = _select(bn.weight, 0, keep)
    bn.bias = _select(bn.bias, 0, keep)
    assert bn.running_mean is not None and bn.running_var is not None
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
        fold.bias = fold.bias.index_select(0, keep.to(fold.bias.device)).clone()


def _add_fold(fold: FoldedBias, value: Tensor) -> None:
    """Add a (C, H, W) map to a folded bias; store it as (C, 1, 1) when it is spatially constant (then the pruned
    model also runs at other input sizes)."""
    total = value if fold.bias is None else fold.bias + value
    if torch.equal(total, total[:, :1, :1].expand_as(total)):
        total = total[:, :1, :1]
    fold.bias = total.detach().clone()


# ---------------------------------------------------------------- which channels go

@dataclass
class ChannelSet:
    """Channels gated together: removing channel i removes it from every BN in ``bns`` and from their convs.

    ``allow_empty``: whether every channel may go (a ResNet block then becomes its shortcut).
    """

    bns: list[nn.BatchNorm2d]
    allow_empty: bool


def channel_sets(model: nn.Module) -> list[ChannelSet]:
    """The prunable channel sets of a registered model, in forward order."""
    inner = unwrap(model)
    if isinstance(inner, MobileNetV2):
        return [ChannelSet(group, allow_empty=False) for group in inner.channel_sets()]
    if isinstance(inner, VGG):
        return [ChannelSet([bn], allow_empty=False) for bn in inner.sparse_bns()]
    if isinstance(inner, _ResNetBase):  # each block BN on its own; a block may lose all of them
        return [ChannelSet([bn], allow_empty=True) for bn in inner.sparse_bns()]
    raise ValueError(f"pruning does not know {type(inner).__name__}; use a model from polar.create_model")


def _round_up(kept: int, round_to: int, width: int) -> int:
    return min(width, -(-kept // round_to) * round_to)


def _unremove_strongest(removed: Tensor, strength: Tensor, count: int) -> None:
    """Keep ``count`` more channels: the removed ones with the largest ``strength``."""
    candidates = torch.nonzero(removed).flatten()
    removed[candidates[strength[candidates].argsort(descending=True)[:count]]] = False


Threshold = Union[float, Mapping[str, float]]  # one for the network, or one per sparse BN (by module name)


def layer_thresholds(model: nn.Module, threshold: Threshold) -> dict[str, float]:
    """Each sparse BN's threshold by module name: ``threshold`` itself everywhere, or the mapping checked to name
    every sparse BN of ``model`` exactly once, with finite values."""
    inner = unwrap(model)
    sparse = {id(bn) for bn in sparse_bns(inner)}
    names = [name for name, m in inner.named_modules() if id(m) in sparse]
    if isinstance(threshold, Mapping):
        missing, unknown = sorted(set(names) - set(threshold)), sorted(set(threshold) - set(names))
        if missing or unknown:
            raise ValueError(f"per-layer thresholds must name every sparse BN: missing {missing[:3]}, unknown "
                             f"{unknown[:3]}; get them from polar.find_threshold(model, per_layer=True)")
        values = {name: threshold[name] for name in names}
    else:
        values = dict.fromkeys(names, threshold)
    for name, value in values.items():
        if not is_finite_number(value):
            raise ValueError(f"threshold must be a finite number (channels with γ <= it go), got {value!r}"
                             + (f" for {name}" if isinstance(threshold, Mapping) else ""))
    return {name: float(v) for name, v in values.items()}


def _bn_thresholds(model: nn.Module, threshold: Threshold) -> dict[int, float]:
    """Each sparse BN module's threshold, keyed by ``id`` (for ``model`` itself, not a copy of it)."""
    by_name = layer_thresholds(model, threshold)
    return {id(m): by_name[name] for name, m in unwrap(model).named_modules() if name in by_name}


def _removed(cs: ChannelSet, thresholds: dict[int, float], round_to: int) -> Tensor:
    """Channels of the set to remove: any of its γ ≤ its BN's threshold; sets that must keep one keep the strongest;
    with ``round_to`` the strongest removed channels stay until the kept count is a multiple of it (or the full
    width)."""
    gammas = torch.stack([bn.weight.detach() for bn in cs.bns])  # (len(bns), C)
    limits = torch.tensor([thresholds[id(bn)] for bn in cs.bns], dtype=gammas.dtype, device=gammas.device)
    removed = (gammas <= limits.view(-1, 1)).any(0)
    kept = int((~removed).sum())
    wanted = 0 if kept == 0 and cs.allow_empty else _round_up(max(kept, 1), round_to, len(removed))
    _unremove_strongest(removed, gammas.min(0).values, wanted - kept)
    return removed


def _check_round_to(round_to: int) -> None:
    if not isinstance(round_to, int) or round_to < 1:
        raise ValueError(f"round_to must be a positive integer (1 = no rounding, 8 suits oneDNN), got {round_to!r}")


def _plan(model: nn.Module, threshold: Threshold, round_to: int, zero_beta: bool = False) -> list[Tensor]:
    """For each channel set, in order, the channels to remove.

    With ``zero_beta`` (the official code's behaviour) a ResNet block that loses every channel of one of its sparse
    BNs loses its whole residual branch, the constants of its later BNs included."""
    _check_round_to(round_to)
    thresholds = _bn_thresholds(model, threshold)
    sets = channel_sets(model)
    plan = [_removed(cs, thresholds, round_to) for cs in sets]
    inner = unwrap(model)
    if zero_beta and isinstance(inner, _ResNetBase):
        index = {id(cs.bns[0]): i for i, cs in enumerate(sets)}
        for block in inner.blocks():
            rows = [index[id(bn)] for bn in block.sparse_bns()]
            if any(bool(plan[i].all()) for i in rows):
                for i in rows:
                    plan[i] = torch.ones_like(plan[i])
    return plan


def _masked_copy(model: nn.Module, threshold: Threshold, plan: list[Tensor], zero_beta: bool) -> nn.Module:
    masked = copy.deepcopy(unwrap(model))
    thresholds = _bn_thresholds(masked, threshold)
    with torch.no_grad():
        for cs, removed in zip(channel_sets(masked), plan):
            for bn in cs.bns:
                if zero_beta:
                    bn.weight[removed] = 0
                    bn.bias[removed] = 0
                else:
                    bn.weight[removed & (bn.weight <= thresholds[id(bn)])] = 0
    return masked


def mask(model: nn.Module, threshold: Threshold, zero_beta: bool = False, round_to: int = 1) -> nn.Module:
    """A copy whose prunable channels with γ ≤ threshold have γ set to 0 (β kept, so they output a constant).
    ``threshold``: one value, or one per sparse BN name (``polar.find_threshold(..., per_layer=True)``).

    With ``zero_beta`` (the paper's code): γ and β of every removed channel are zeroed in all BNs of its set.
    Layers other than ResNet blocks keep their strongest channel even when all γ ≤ threshold; ``round_to`` keeps
    the strongest of the small-γ channels too, until each layer's kept count is a multiple of it.
    """
    return _masked_copy(model, threshold, _plan(model, threshold, round_to, zero_beta), zero_beta)


# ---------------------------------------------------------------- the model-level prune

class _Recorder:
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
        assert torch.equal(x, x[:1].expand_as(x)), "removed channels must be input-independent"
        return x[:1]  # (1, R, H, W) or (1, R)


def _conv_contribution(conv: nn.Conv2d, channels: Tensor, x: Tensor) -> Tensor:
    """What input ``channels`` (holding the constant ``x``) add to ``conv``'s output: a (C_out, H, W) map."""
    weight = conv.weight.index_select(1, channels)
    return F.conv2d(x, weight, None, conv.stride, conv.padding, conv.dilation)[0]


def _sizes(model: nn.Module, input_size: tuple[int, ...] | None) -> tuple[int, ...]:
    if input_size is not None:
        return tuple(input_size)
    side = unwrap(model).input_size
    return (2, 3, side, side)


def prune(model: nn.Module, threshold: Threshold, zero_beta: bool = False,
          input_size: tuple[int, ...] | None = None, round_to: int = 1, narrow_residual: bool = False) -> nn.Module:
    """A copy with the channels ``mask`` would silence physically removed: smaller dense layers, their constant
    output folded into the next layer. In eval mode ``prune(m, thr, ...)(x) == mask(m, thr, ...)(x)``.

    Args:
        model: a model from ``polar.create_model`` (possibly pruned already); it is not modified.
        threshold: channels with γ ≤ threshold go; one value, or a mapping {sparse BN name: value}.
        zero_beta: the paper's code's behaviour, for comparison: γ and β zeroed, nothing left to fold.
        input_size: the input shape the folded border maps are computed for (default: the model's own, e.g.
            32x32 for CIFAR); maps that turn out spatially constant work at any size.
        round_to: keep each layer's channel count a multiple of this (the strongest small-γ channels stay), for
            faster convs; 1 prunes exactly by the threshold.
        narrow_residual: CIFAR ResNets: also remove residual-stream channels whose every writer is pruned and that
            enter their stage as a constant (their value is folded into the layers that read them). Other models
            have no such channel (the stem, a downsample conv or a projection BN writes to each), so this changes
            nothing there.
    """
    plan = _plan(model, threshold, round_to, zero_beta)
    small = _masked_copy(model, threshold, plan, zero_beta)
    removed = {id(cs.bns[0]): gone for cs, gone in zip(channel_sets(small), plan)}
    if isinstance(small, VGG):
        _prune_vgg(small, removed, _sizes(small, input_size))
    elif isinstance(small, MobileNetV2):
        _prune_mobilenet(small, removed, _sizes(small, input_size))
    else:
        _prune_resnet(small, removed, _sizes(small, input_size), narrow_residual, round_to)
    return small


def _split(removed: Tensor) -> tuple[Tensor, Tensor]:
    return torch.nonzero(~removed).flatten(), torch.nonzero(removed).flatten()


def _prune_vgg(model: VGG, removed: dict[int, Tensor], input_size: tuple[int, ...]) -> None:
    layers = list(model.features)
    convs = [i for i, m in enumerate(layers) if isinstance(m, nn.Conv2d)]
    first_linear = model.hidden[0] if model.hidden is not None else model.classifier
    consumers: list[nn.Module] = [layers[i] for i in convs[1:]] + [first_linear]
    rec = _Recorder(model, consumers + [model.classifier], [], input_size)
    cfg = list(model.cfg)
    widths = iter(i for i, v in enumerate(cfg) if v != "M")
    for n, i in enumerate(convs):
        conv, fold, bn = layers[i], layers[i + 1], layers[i + 2]
        keep, gone = _split(removed[id(bn)])
        consumer = consumers[n]
        if len(gone):
            x = rec.constant(consumer, gone)
            if isinstance(consumer, nn.Linear):  # after global pooling: a plain per-feature constant
                _fold_into_linear(consumer, gone, x)
            else:
                _add_fold(layers[convs[n + 1] + 1], _conv_contribution(consumer, gone, x))
        prune_conv_out(conv, keep)
        prune_folded_bias(fold, keep)
        prune_bn(bn, keep)
        if isinstance(consumer, nn.Linear):
            prune_linear_in(consumer, keep)
        else:
            prune_conv_in(consumer, keep)
        cfg[next(widths)] = len(keep)
    model.cfg = cfg
    if model.hidden is not None:  # the hidden layer's features: its BatchNorm1d is a sparse set of its own
        linear, bn = model.hidden[0], model.hidden[1]
        keep, gone = _split(removed[id(bn)])
        if len(gone):
            _fold_into_linear(model.classifier, gone, rec.constant(model.classifier, gone))
        prune_linear_out(linear, keep)
        prune_bn(bn, keep)
        prune_linear_in(model.classifier, keep)
        model.fc = len(keep)


def _fold_into_linear(fc: nn.Linear, gone: Tensor, x: Tensor) -> None:
    """Add what the constant input features ``gone`` (values ``x``, shape (1, R)) contribute to ``fc``'s bias."""
    fc.bias.data += x[0] @ fc.weight[:, gone].T


def _prune_mobilenet(model: MobileNetV2, removed: dict[int, Tensor], input_size: tuple[int, ...]) -> None:
    blocks = list(model.blocks)
    rec = _Recorder(model, [b.conv3 for b in blocks], [], input_size)
    for block, (first, _) in zip(blocks, model.channel_sets()):
        keep, gone = _split(removed[id(first)])
        if len(gone):
            _add_fold(block.fold3, _conv_contribution(block.conv3, gone, rec.constant(block.conv3, gone)))
        expand = block.conv1 if block.conv1 is not None else model.conv1
        prune_conv_out(expand, keep)
        prune_bn(first, keep)
        prune_depthwise(block.conv2, keep)
        prune_bn(block.bn2, keep)
        prune_conv_in(block.conv3, keep)


def _prune_resnet(model: nn.Module, removed: dict[int, Tensor], input_size: tuple[int, ...], narrow_residual: bool,
                  round_to: int) -> None:
    blocks = [b for b in model.blocks() if b.sparse_bns()]
    convs = {id(b): [b.conv1, b.conv2] + ([b.conv3] if isinstance(b, Bottleneck) else []) for b in blocks}
    narrow = narrow_residual and isinstance(model, CifarResNet)
    stream_readers = [*model.blocks(), model.fc] if narrow else []  # a block's input is its conv1's input
    shortcuts = [b.downsample for b in model.blocks() if b.downsample is not None] if narrow else []
    rec = _Recorder(model, [c for b in blocks for c in convs[id(b)][1:]] + stream_readers,
                    [b.sparse_bns()[-1] for b in blocks] + shortcuts, input_size)
    for block in blocks:
        bns, block_convs = block.sparse_bns(), convs[id(block)]
        folds = [getattr(block, "fold1", None), block.fold2] + ([block.fold3] if isinstance(block, Bottleneck) else [])
        # folds[k] follows block_convs[k]
        device = bns[-1].weight.device
        stream = (block.keep if block.keep is not None else torch.arange(bns[-1].num_features)).to(device)
        residual = torch.zeros(block.out_planes, 1, 1, device=device)
        if any(removed[id(bn)].all() for bn in bns):  # the branch is input-independent: keep the shortcut only
            branch = rec.constant(bns[-1], torch.arange(bns[-1].num_features, device=device))[0]  # (C, H, W)
            _add_fold(block.fold_out, residual.expand(-1, *branch.shape[1:]).index_add(0, stream, branch))
            _drop_branch(block)
            continue
        for k, bn in enumerate(bns):
            keep, gone = _split(removed[id(bn)])
            if len(gone) and k + 1 < len(bns):  # inner channels: fold into the next conv's output
                nxt = block_convs[k + 1]
                _add_fold(folds[k + 1], _conv_contribution(nxt, gone, rec.constant(nxt, gone)))
            elif len(gone):  # block outputs: β of removed channels joins the residual stream
                constant = rec.constant(bn, gone)[0]  # (R, H, W), spatially constant
                _add_fold(block.fold_out, residual.expand(-1, *constant.shape[1:]).index_add(0, stream[gone], constant))
            prune_conv_out(block_convs[k], keep)
            if folds[k] is not None:
                prune_folded_bias(folds[k], keep)
            prune_bn(bn, keep)
            if k + 1 < len(bns):
                prune_conv_in(block_convs[k + 1], keep)
            else:  # all residual channels still written: a plain add again (index_add is slower)
                block.keep = None if len(keep) == block.out_planes else stream[keep].clone()
    if narrow:
        _narrow_streams(model, rec, round_to)


def _constant_channels(model: CifarResNet, round_to: int) -> list[Tensor]:
    """Per stage, which positions of its residual stream hold an input-independent value throughout the stage:
    no live block writes to them and they enter the stage as a constant (option A's zero padding, or a channel
    the previous stage narrows). With ``round_to``, enough of them stay that the stream width is a multiple."""
    constant, previous_kept = [], set(range(16))  # the stem writes every channel of stage 1's input
    previous_planes = 16
    for stage, planes, chans in zip(model.stages(), model.stage_planes, model.stream_lists()):
        pad = (planes - previous_planes) // 2
        written = torch.zeros(len(chans), dtype=torch.bool)
        for block in stage:
            if block.conv1 is not None:
                written[slice(None) if block.keep is None else block.keep.cpu()] = True
        enters_constant = torch.tensor([c - pad not in previous_kept for c in chans], dtype=torch.bool)
        gone = enters_constant & ~written
        kept = int((~gone).sum())
        _unremove_strongest(gone, -torch.arange(len(chans), dtype=torch.float),
                            _round_up(kept, round_to, len(chans)) - kept)
        constant.append(gone)
        previous_kept = {c for c, g in zip(chans, gone.tolist()) if not g}
        previous_planes = planes
    return constant


def _narrow_streams(model: CifarResNet, rec: _Recorder, round_to: int) -> None:
    """Remove the residual channels ``_constant_channels`` finds, folding their values into every reader: each
    block's conv1 (``fold1``), the next stage's shortcut (``fold_out`` of its first block) and the classifier."""
    gone_per_stage = _constant_channels(model, round_to)
    if not any(g.any() for g in gone_per_stage):
        return
    device = model.fc.weight.device
    old = model.stream_lists()
    new = [[c for c, g in zip(chans, gone.tolist()) if not g] for chans, gone in zip(old, gone_per_stage)]
    splits = [tuple(t.to(device) for t in _split(g)) for g in gone_per_stage]
    previous_split = (torch.arange(16, device=device), torch.zeros(0, dtype=torch.long, device=device))
    previous_new, previous_planes = list(range(16)), 16
    for s, (stage, planes) in enumerate(zip(model.stages(), model.stage_planes)):
        keep, gone = splits[s]
        position = torch.full((len(old[s]),), -1, dtype=torch.long, device=device)
        position[keep] = torch.arange(len(keep), device=device)
        for i, block in enumerate(stage):
            in_keep, in_gone = previous_split if i == 0 else splits[s]
            if block.conv1 is not None and len(in_gone):
                x = rec.constant(block, in_gone)
                _add_fold(block.fold1, _conv_contribution(block.conv1, in_gone, x))
                prune_conv_in(block.conv1, in_keep)
            prune_folded_bias(block.fold_out, keep)
            if i == 0 and block.downsample is not None:
                previous_gone = {old[s - 1][p] for p in previous_split[1].tolist()} if s else set()
                _narrow_shortcut(block, rec, previous_gone, old[s], new[s], previous_new, previous_planes, planes,
                                 position)
            if block.keep is not None:
                moved = position[block.keep]
                assert bool((moved >= 0).all()), "a narrowed residual channel still has a writer"
                block.keep = None if len(moved) == len(keep) else moved
            block.out_planes = len(keep)
        previous_split, previous_new, previous_planes = splits[s], new[s], planes
    keep, gone = splits[-1]
    if len(gone):
        model.fc.bias.data += rec.constant(model.fc, gone)[0] @ model.fc.weight[:, gone].T
        prune_linear_in(model.fc, keep)
    model.stream_channels = [None if chans == list(range(p)) else chans for chans, p in zip(new, model.stage_planes)]


def _narrow_shortcut(block: nn.Module, rec: _Recorder, previous_gone: set[int], old: list[int], new: list[int],
                     previous_new: list[int], previous_planes: int, planes: int, position: Tensor) -> None:
    """Rebuild a stage's option-A shortcut for the narrowed streams. Channels it used to carry from a now-narrowed
    channel of the previous stage (full indices ``previous_gone``) get that constant from the block's ``fold_out``
    instead (it is added right after the shortcut, before the ReLU)."""
    shortcut = block.downsample
    pad = (planes - previous_planes) // 2
    fed = torch.tensor([j for j, c in enumerate(old) if c - pad in previous_gone and position[j] >= 0],
                       dtype=torch.long, device=position.device)
    if len(fed):
        value = rec.constant(shortcut, fed)[0]  # (R, H, W): the subsampled constants
        _add_fold(block.fold_out, value.new_zeros(len(new), *value.shape[1:]).index_add(0, position[fed], value))
    index = option_a_index(previous_new, new, previous_planes, planes)
    block.downsample = ShortcutA(len(previous_new), len(new), shortcut.stride, index).to(position.device)


def _drop_branch(block: nn.Module) -> None:
    """Turn a residual block into its shortcut (its constant is already in ``fold_out``)."""
    for name in ("conv1", "bn1", "conv2", "bn2", "conv3", "bn3"):
        if hasattr(block, name):
            setattr(block, name, None)
    for fold in (getattr(block, name, None) for name in ("fold1", "fold2", "fold3")):
        if fold is not None:
            fold.bias = None
    block.keep = None
