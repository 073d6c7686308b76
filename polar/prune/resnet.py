"""ResNet surgery: block-inner channels, block outputs scattered back into the residual stream (or the whole branch
when it is input-independent), and for CIFAR ResNets optionally the residual stream itself (``narrow_residual``);
and the widths that leaves each layer, without the surgery (``resnet_widths``, for ``pruned_cost``)."""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from ..models.resnet import Bottleneck, CifarResNet, ShortcutA, _ResNetBase, option_a_index
from .cost import Widths, layer_widths
from .layers import (
    Recorder,
    add_fold,
    conv_contribution,
    fold_into_linear,
    prune_bn,
    prune_conv_in,
    prune_conv_out,
    prune_folded_bias,
    prune_linear_in,
    split_removed,
)
from .plan import round_up, unremove_strongest
from .surgery import Removal, remove_channels


@remove_channels.register
def prune_resnet(model: _ResNetBase, removal: Removal) -> None:
    removed, input_size = removal.channels, removal.input_size
    narrow_residual, round_to = removal.narrow_residual, removal.round_to
    blocks = [b for b in model.blocks() if b.sparse_bns()]
    convs = {id(b): [b.conv1, b.conv2] + ([b.conv3] if isinstance(b, Bottleneck) else []) for b in blocks}
    narrow = narrow_residual and isinstance(model, CifarResNet)
    stream_readers = [*model.blocks(), model.fc] if narrow else []  # a block's input is its conv1's input
    shortcuts = [b.downsample for b in model.blocks() if b.downsample is not None] if narrow else []
    rec = Recorder(model, [c for b in blocks for c in convs[id(b)][1:]] + stream_readers,
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
            add_fold(block.fold_out, residual.expand(-1, *branch.shape[1:]).index_add(0, stream, branch))
            _drop_branch(block)
            continue
        for k, bn in enumerate(bns):
            keep, gone = split_removed(removed[id(bn)])
            if len(gone) and k + 1 < len(bns):  # inner channels: fold into the next conv's output
                nxt = block_convs[k + 1]
                add_fold(folds[k + 1], conv_contribution(nxt, gone, rec.constant(nxt, gone)))
            elif len(gone):  # block outputs: β of removed channels joins the residual stream
                constant = rec.constant(bn, gone)[0]  # (R, H, W), spatially constant
                add_fold(block.fold_out, residual.expand(-1, *constant.shape[1:]).index_add(0, stream[gone], constant))
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


# A block's stream positions it writes to: an index tensor, slice(None) for all, None for none (no branch)
Writes = Callable[[nn.Module], "Tensor | slice | None"]


def _writes_now(block: nn.Module) -> Tensor | slice | None:
    """What a block writes to as it is (after the surgery of its own channels)."""
    if block.conv1 is None:
        return None
    return slice(None) if block.keep is None else block.keep.cpu()


def _constant_channels(model: CifarResNet, round_to: int, writes: Writes = _writes_now) -> list[Tensor]:
    """Per stage, which positions of its residual stream hold an input-independent value throughout the stage:
    no live block writes to them and they enter the stage as a constant (option A's zero padding, or a channel
    the previous stage narrows). With ``round_to``, enough of them stay that the stream width is a multiple."""
    constant, previous_kept = [], set(range(16))  # the stem writes every channel of stage 1's input
    previous_planes = 16
    for stage, planes, chans in zip(model.stages(), model.stage_planes, model.stream_lists()):
        pad = (planes - previous_planes) // 2
        written = torch.zeros(len(chans), dtype=torch.bool)
        for block in stage:
            positions = writes(block)
            if positions is not None:
                written[positions] = True
        enters_constant = torch.tensor([c - pad not in previous_kept for c in chans], dtype=torch.bool)
        gone = enters_constant & ~written
        kept = int((~gone).sum())
        unremove_strongest(gone, -torch.arange(len(chans), dtype=torch.float),
                            round_up(kept, round_to, len(chans)) - kept)
        constant.append(gone)
        previous_kept = {c for c, g in zip(chans, gone.tolist()) if not g}
        previous_planes = planes
    return constant


def _narrow_streams(model: CifarResNet, rec: Recorder, round_to: int) -> None:
    """Remove the residual channels ``_constant_channels`` finds, folding their values into every reader: each
    block's conv1 (``fold1``), the next stage's shortcut (``fold_out`` of its first block) and the classifier."""
    gone_per_stage = _constant_channels(model, round_to)
    if not any(g.any() for g in gone_per_stage):
        return
    device = model.fc.weight.device
    old = model.stream_lists()
    new = [[c for c, g in zip(chans, gone.tolist()) if not g] for chans, gone in zip(old, gone_per_stage)]
    splits = [tuple(t.to(device) for t in split_removed(g)) for g in gone_per_stage]
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
                add_fold(block.fold1, conv_contribution(block.conv1, in_gone, x))
                prune_conv_in(block.conv1, in_keep)
            prune_folded_bias(block.fold_out, keep)
            if i == 0 and block.downsample is not None:
                previous_gone = {old[s - 1][p] for p in previous_split[1].tolist()} if s else set()
                _narrow_shortcut(block, rec, previous_gone, old[s], new[s], previous_new, previous_planes, planes,
                                 position)
            if block.keep is not None:
                moved = position[block.keep]
                if not bool((moved >= 0).all()):  # the plan narrows only channels nobody writes
                    raise RuntimeError("a narrowed residual channel still has a writer")
                block.keep = None if len(moved) == len(keep) else moved
            block.out_planes = len(keep)
        previous_split, previous_new, previous_planes = splits[s], new[s], planes
    keep, gone = splits[-1]
    if len(gone):
        fold_into_linear(model.fc, gone, rec.constant(model.fc, gone))
        prune_linear_in(model.fc, keep)
    model.stream_channels = [None if chans == list(range(p)) else chans for chans, p in zip(new, model.stage_planes)]


def _narrow_shortcut(block: nn.Module, rec: Recorder, previous_gone: set[int], old: list[int], new: list[int],
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
        add_fold(block.fold_out, value.new_zeros(len(new), *value.shape[1:]).index_add(0, position[fed], value))
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


def _dropped(block: nn.Module, removal: Removal) -> bool:
    """A block one of whose channel sets loses every channel becomes its shortcut (as in ``prune_resnet``)."""
    return any(bool(removal.channels[id(bn)].all()) for bn in block.sparse_bns())


@layer_widths.register
def resnet_widths(model: _ResNetBase, removal: Removal) -> Widths:
    """Inside a live block each conv reads the previous BN's kept channels and writes its own; a dropped block
    loses its branch. With ``narrow_residual`` (CIFAR ResNets) the convs reading the stream and the classifier read
    the narrowed stream."""
    widths: Widths = {}
    live = [b for b in model.blocks() if b.sparse_bns()]
    for block in live:
        bns = block.sparse_bns()
        convs = [block.conv1, block.conv2] + ([block.conv3] if isinstance(block, Bottleneck) else [])
        if _dropped(block, removal):
            widths.update({id(m): None for m in convs + bns})
            continue
        previous = convs[0].in_channels
        for conv, bn in zip(convs, bns):
            kept = int((~removal.channels[id(bn)]).sum())
            widths[id(conv)], widths[id(bn)] = (previous, kept), (kept, kept)
            previous = kept
    if removal.narrow_residual and isinstance(model, CifarResNet):
        _narrowed_stream_widths(model, removal, live, widths)
    return widths


def _narrowed_stream_widths(model: CifarResNet, removal: Removal, live: list[nn.Module], widths: Widths) -> None:
    """The stream each stage keeps once ``_narrow_streams`` has run on the planned blocks: its first block's conv1
    reads the previous stage's stream, the others and the classifier read their own."""
    def writes(block: nn.Module) -> Tensor | slice | None:
        if block not in live or _dropped(block, removal):
            return None
        kept = ~removal.channels[id(block.sparse_bns()[-1])].cpu()
        return kept.nonzero().flatten() if block.keep is None else block.keep.cpu()[kept]

    stream = [int((~gone).sum()) for gone in _constant_channels(model, removal.round_to, writes)]
    for s, stage in enumerate(model.stages()):
        for i, block in enumerate(stage):
            shape = widths.get(id(block.conv1))
            if block.conv1 is not None and shape is not None:
                widths[id(block.conv1)] = (stream[s - 1] if i == 0 and s else 16 if i == 0 else stream[s], shape[1])
    widths[id(model.fc)] = (stream[-1], model.fc.out_features)
