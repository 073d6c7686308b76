"""VGG surgery: each conv's removed channels are folded into the next conv (or the hidden linear layer), the hidden
layer's into the classifier; and the widths that leaves each layer (for ``pruned_cost``)."""
from __future__ import annotations

from torch import nn

from ..models.vgg import VGG
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
    prune_linear_out,
    split_removed,
)
from .surgery import Removal, remove_channels


@remove_channels.register
def prune_vgg(model: VGG, removal: Removal) -> None:
    removed, input_size = removal.channels, removal.input_size
    layers = list(model.features)
    convs = [i for i, m in enumerate(layers) if isinstance(m, nn.Conv2d)]
    first_linear = model.hidden[0] if model.hidden is not None else model.classifier
    consumers: list[nn.Module] = [layers[i] for i in convs[1:]] + [first_linear]
    rec = Recorder(model, consumers + [model.classifier], [], input_size)
    cfg = list(model.cfg)
    widths = iter(i for i, v in enumerate(cfg) if v != "M")
    for n, i in enumerate(convs):
        conv, fold, bn = layers[i], layers[i + 1], layers[i + 2]
        keep, gone = split_removed(removed[id(bn)])
        consumer = consumers[n]
        if len(gone):
            x = rec.constant(consumer, gone)
            if isinstance(consumer, nn.Linear):  # after global pooling: a plain per-feature constant
                fold_into_linear(consumer, gone, x)
            else:
                add_fold(layers[convs[n + 1] + 1], conv_contribution(consumer, gone, x))
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
        keep, gone = split_removed(removed[id(bn)])
        if len(gone):
            fold_into_linear(model.classifier, gone, rec.constant(model.classifier, gone))
        prune_linear_out(linear, keep)
        prune_bn(bn, keep)
        prune_linear_in(model.classifier, keep)
        model.fc = len(keep)


@layer_widths.register
def vgg_widths(model: VGG, removal: Removal) -> Widths:
    """Each conv reads the previous set's kept channels and writes its own; the hidden layer (or the classifier)
    reads the last conv's, the classifier the hidden layer's."""
    kept = [int((~removal.channels[id(bn)]).sum()) for bn in model.sparse_bns()]
    layers = [m for m in model.features if isinstance(m, (nn.Conv2d, nn.BatchNorm2d))]
    widths: Widths = {}
    previous = 3
    for conv, bn, width in zip(layers[::2], layers[1::2], kept):
        widths[id(conv)], widths[id(bn)] = (previous, width), (width, width)
        previous = width
    if model.hidden is not None:
        linear, bn = model.hidden[0], model.hidden[1]
        widths[id(linear)], widths[id(bn)] = (previous, kept[-1]), (kept[-1], kept[-1])
        previous = kept[-1]
    widths[id(model.classifier)] = (previous, model.classifier.out_features)
    return widths
