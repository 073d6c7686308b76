"""Physical pruning is exact: the pruned network gives the masked network's outputs, for every model."""
from __future__ import annotations

import copy
import io
import pickle
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

import polar
from polar.models._common import FoldedBias
from polar.sweep import separate_ties
from polar.threshold import paper_valley

from .conftest import polarize_randomly


def _outputs_match(a: torch.Tensor, b: torch.Tensor) -> None:
    scale = a.abs().max().item()
    assert (a - b).abs().max().item() <= 1e-4 * max(scale, 1.0), (a - b).abs().max().item()


@pytest.mark.parametrize("zero_beta", [False, True], ids=["folded", "zero_beta"])
@pytest.mark.parametrize("name", polar.list_models())
def test_pruned_equals_masked_for_every_model(name: str, zero_beta: bool) -> None:
    model = polarize_randomly(polar.create_model(name), seed=len(name))
    before = copy.deepcopy(model.state_dict())
    x = torch.randn(2, 3, model.input_size, model.input_size)
    small = polar.prune(model, 0.06, zero_beta=zero_beta).eval()
    masked = polar.mask(model, 0.06, zero_beta=zero_beta).eval()
    with torch.no_grad():
        _outputs_match(masked(x), small(x))
    assert polar.count_macs(small)[0] < 0.8 * polar.count_macs(model)[0]
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in model.parameters())
    after = model.state_dict()  # the original is never modified
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


def test_masked_zeroes_exactly_the_small_gammas() -> None:
    model = polarize_randomly(polar.create_model("vgg16"))
    masked = polar.mask(model, 0.06)
    for bn, mbn in zip(polar.sparse_bns(model), polar.sparse_bns(masked)):
        low = bn.weight <= 0.06
        assert torch.all(mbn.weight[low] == 0) and torch.equal(mbn.weight[~low], bn.weight[~low])
        assert torch.equal(mbn.bias, bn.bias)  # β kept
    zb = polar.mask(model, 0.06, zero_beta=True)
    for bn, zbn in zip(polar.sparse_bns(model), polar.sparse_bns(zb)):
        assert torch.all(zbn.bias[bn.weight <= 0.06] == 0)


def test_trained_model_valley_pruning_is_exact_and_keeps_accuracy(trained_polar, synthetic) -> None:
    thr = polar.find_threshold(trained_polar, method="valley")
    gammas = torch.cat([bn.weight.detach() for bn in polar.sparse_bns(trained_polar)])
    pruned_share = float((gammas <= thr).float().mean())
    assert 0.2 < pruned_share < 0.8, (thr, pruned_share)
    small = polar.prune(trained_polar, thr).eval()
    x = synthetic.test_x[:64]
    with torch.no_grad():
        _outputs_match(polar.mask(trained_polar, thr).eval()(x), small(x))
    acc_full = polar.evaluate(trained_polar, synthetic)[1]
    acc_small = polar.evaluate(small, synthetic)[1]
    assert acc_small >= acc_full - 0.01  # folding the constants: pruning the valley costs (almost) nothing
    zb = polar.prune(trained_polar, thr, zero_beta=True)
    with torch.no_grad():
        _outputs_match(polar.mask(trained_polar, thr, zero_beta=True).eval()(x), zb.eval()(x))


def test_fully_pruned_block_becomes_its_shortcut() -> None:
    model = polarize_randomly(polar.create_model("resnet20"), share_pruned=0.0)
    with torch.no_grad():
        model.layer1[1].bn1.weight.zero_()  # every inner channel of one block
        model.layer2[0].bn2.weight.zero_()  # every output channel of a downsampling block
    small = polar.prune(model, 0.01).eval()
    widths = small.spec()["block_widths"]
    assert widths[1] == {"mid": [0], "keep": []} and widths[3] == {"mid": [0], "keep": []}
    assert small.layer1[1].conv1 is None and small.layer1[1].fold_out.bias is not None
    assert len(polar.sparse_bns(small)) == len(polar.sparse_bns(model)) - 4
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        _outputs_match(polar.mask(model, 0.01).eval()(x), small(x))


def test_non_residual_layers_keep_one_channel() -> None:
    model = polarize_randomly(polar.create_model("vgg16"))
    with torch.no_grad():
        for bn in polar.sparse_bns(model):
            bn.weight.mul_(0.01)  # everything below the threshold
    small = polar.prune(model, 0.5)
    assert all(v == 1 for v in small.cfg if v != "M")
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        _outputs_match(polar.mask(model, 0.5).eval()(x), small.eval()(x))


class _Payload:  # what an untrusted file could carry: unpickling it would run code
    def __reduce__(self):
        return (print, ("pickled code ran",))


def test_save_and_load_through_open_files_and_refuse_pickled_code() -> None:
    small = polar.prune(polarize_randomly(polar.create_model("resnet20")), 0.06).eval()
    buffer = io.BytesIO()
    polar.save(small, buffer)  # e.g. a download button's bytes
    buffer.seek(0)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(polar.load(buffer)(x), small(x))
    hostile = io.BytesIO()
    torch.save({"state_dict": {}, "payload": _Payload()}, hostile, pickle_protocol=pickle.DEFAULT_PROTOCOL)
    hostile.seek(0)
    with pytest.raises(polar.CheckpointError, match="not a readable Polar checkpoint"):
        polar.load(hostile)


def test_pruning_twice_saving_loading_and_scripting(tmp_path: Path) -> None:
    model = polarize_randomly(polar.create_model("resnet20"))
    once = polar.prune(model, 0.06)
    polarize_randomly(once, seed=9)
    twice = polar.prune(once, 0.06).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        _outputs_match(polar.mask(once, 0.06).eval()(x), twice(x))
        polar.save(twice, tmp_path / "pruned.pt")
        again = polar.load(tmp_path / "pruned.pt")
        assert torch.equal(again(x), twice(x))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit.script is deprecated, still supported
            scripted = torch.jit.script(twice)
        assert torch.equal(scripted(x), twice(x))
    assert type(again) is type(model) and again.spec() == twice.spec()


@pytest.mark.parametrize("name", ["resnet20", "vgg16", "mobilenet_v2"])
def test_pruned_model_fine_tunes(name: str, synthetic) -> None:
    small = polar.prune(polarize_randomly(polar.create_model(name)), 0.06).train()
    opt = torch.optim.SGD(small.parameters(), lr=0.05, momentum=0.9)
    batches = list(synthetic.train_batches(64, seed=0))[:12]
    losses = []
    for x, y in batches * 2:
        loss = nn.functional.cross_entropy(small(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-6:]) / 6 < sum(losses[:6]) / 6


def test_find_threshold_rules() -> None:
    model = polarize_randomly(polar.create_model("resnet56"))
    thr = polar.find_threshold(model, "valley")
    assert 0.05 <= thr <= 0.3  # between the spike (< 0.05) and the mode in [0.3, 1]
    gammas = torch.cat([bn.weight.detach() for bn in polar.sparse_bns(model)])
    for share in (0.1, 0.37, 0.6):
        p = polar.find_threshold(model, "percent", share)
        assert (gammas <= p).float().mean().item() == pytest.approx(share, abs=1 / len(gammas))
    assert polar.find_threshold(model, "fixed", 0.2) == 0.2
    with torch.no_grad():
        for bn in polar.sparse_bns(model):
            bn.weight.uniform_(0.2, 0.3)  # one mode, like L1
    with pytest.raises(ValueError, match="no valley"):
        polar.find_threshold(model, "valley")
    with pytest.raises(ValueError, match="percent"):
        polar.find_threshold(model, "percent", 1.5)


def test_threshold_for_a_target_flops_reduction() -> None:
    model = polarize_randomly(polar.create_model("resnet20"), share_pruned=0.7)
    base = polar.cost(model)
    thr = polar.threshold_for_reduction(model, 0.4)
    reached = polar.flops_reduction(base, polar.cost(polar.prune(model, thr)))
    gammas = torch.cat([bn.weight.detach() for bn in polar.sparse_bns(model)]).sort().values
    below = gammas[gammas < thr].max()  # one γ less pruned falls short of the target
    short = polar.flops_reduction(base, polar.cost(polar.prune(model, float(below))))
    assert reached >= 0.4 - 0.0025 and short < 0.4 - 0.0025


@pytest.mark.parametrize("name", ["resnet20", "vgg16", "mobilenet_v2"])
def test_round_to_keeps_widths_at_multiples_and_stays_exact(name: str) -> None:
    model = polarize_randomly(polar.create_model(name), seed=3)
    exact = polar.prune(model, 0.06)
    small = polar.prune(model, 0.06, round_to=8).eval()
    for bn, full in zip(polar.sparse_bns(small), polar.sparse_bns(model)):
        assert bn.num_features % 8 == 0 or bn.num_features == full.num_features, (bn.num_features, full.num_features)
    assert polar.count_macs(exact)[0] <= polar.count_macs(small)[0] < polar.count_macs(model)[0]
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        _outputs_match(polar.mask(model, 0.06, round_to=8).eval()(x), small(x))
    with pytest.raises(ValueError, match="round_to must be a positive integer"):
        polar.prune(model, 0.06, round_to=0)


def _with_constant_residual_channels(seed: int = 1) -> nn.Module:
    """A ResNet-20 where no block of stage 2 writes residual channels 0-7 (option A's zero padding) and no block
    of stage 3 writes channels 0-19: those carry constants through their stage, so the stream can narrow."""
    model = polarize_randomly(polar.create_model("resnet20"), seed=seed)
    with torch.no_grad():
        for block in model.layer2:
            block.bn2.weight[:8] = 0.01
        for block in model.layer3:
            block.bn2.weight[:20] = 0.01
    return model


def test_narrow_residual_removes_constant_stream_channels_exactly(tmp_path: Path) -> None:
    model = _with_constant_residual_channels()
    wide = polar.prune(model, 0.06).eval()
    small = polar.prune(model, 0.06, narrow_residual=True).eval()
    stream = small.spec()["stream_channels"]
    assert stream[0] is None and len(stream[1]) <= 24 and len(stream[2]) <= 44
    assert not set(range(8)) & set(stream[1]) and not set(range(20)) & set(stream[2])
    assert small.fc.in_features == len(stream[2]) and small.layer2[1].conv1.in_channels == len(stream[1])
    assert polar.count_macs(small)[0] < polar.count_macs(wide)[0]
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        expected = polar.mask(model, 0.06).eval()(x)
        _outputs_match(expected, small(x))
        nhwc = copy.deepcopy(small).to(memory_format=torch.channels_last)
        _outputs_match(expected, nhwc(x.to(memory_format=torch.channels_last)))
        polar.save(small, tmp_path / "narrow.pt")
        assert torch.equal(polar.load(tmp_path / "narrow.pt")(x), small(x))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            assert torch.equal(torch.jit.script(small)(x), small(x))
    polarize_randomly(small, seed=5)  # pruning a narrowed model again composes
    again = polar.prune(small, 0.06, round_to=8, narrow_residual=True).eval()
    with torch.no_grad():
        _outputs_match(polar.mask(small, 0.06, round_to=8).eval()(x), again(x))
    assert all(len(c) % 8 == 0 for c in again.spec()["stream_channels"] if c is not None)


def test_narrow_residual_changes_nothing_without_constant_channels() -> None:
    model = polarize_randomly(polar.create_model("vgg16"))
    assert polar.prune(model, 0.06, narrow_residual=True).cfg == polar.prune(model, 0.06).cfg
    resnet = polarize_randomly(polar.create_model("resnet20"))
    with torch.no_grad():
        for stage in (resnet.layer2, resnet.layer3):
            stage[-1].bn2.weight.fill_(0.5)  # one live writer on every residual channel: nothing may narrow
    assert "stream_channels" not in polar.prune(resnet, 0.06, narrow_residual=True).spec()


def test_folded_maps_follow_the_models_memory_format_and_old_3d_maps_still_load(tmp_path: Path) -> None:
    """The folded border maps are 4-D so that ``.to(memory_format=channels_last)`` lays them out as the activations
    (an NCHW map added to NHWC activations is read across the grain); files saved with 3-D maps still load."""
    small = polar.prune(polarize_randomly(polar.create_model("resnet20")), 0.06).eval()
    folds = [m for m in small.modules() if isinstance(m, FoldedBias) and m.bias is not None]
    assert any(m.bias.shape[-1] > 1 for m in folds) and all(m.bias.dim() == 4 for m in folds)  # border maps exist
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = small(x)
        fast = copy.deepcopy(small).to(memory_format=torch.channels_last)
        assert all(m.bias.is_contiguous(memory_format=torch.channels_last) for m in fast.modules()
                   if isinstance(m, FoldedBias) and m.bias is not None)
        _outputs_match(expected, fast(x.to(memory_format=torch.channels_last)))
        polar.save(small, tmp_path / "new.pt")
        record = torch.load(tmp_path / "new.pt", weights_only=True)
        folded = {name + ".bias" for name, m in small.named_modules() if isinstance(m, FoldedBias)}
        record["state_dict"] = {k: v[0] if k in folded else v  # as saved before the maps were 4-D
                                for k, v in record["state_dict"].items()}
        torch.save(record, tmp_path / "old.pt")
        assert torch.equal(polar.load(tmp_path / "old.pt")(x), expected)


def test_channels_last_residual_scatter_matches_nchw() -> None:
    small = polar.prune(polarize_randomly(polar.create_model("resnet20")), 0.06).train()
    x = torch.randn(4, 3, 32, 32)
    out = small(x)
    out_cl = small.to(memory_format=torch.channels_last)(x.to(memory_format=torch.channels_last))
    _outputs_match(out.detach(), out_cl.detach())  # training mode: the out-of-place scatter, with autograd
    out_cl.sum().backward()
    assert all(p.grad is not None for p in small.parameters() if p.requires_grad)


def test_ties_at_zero_are_separated_so_targets_inside_the_spike_give_points() -> None:
    model = polar.create_model("resnet20").eval()
    torch.manual_seed(0)
    with torch.no_grad():
        for bn in polar.sparse_bns(model):  # half of every layer exactly at 0, as polarization's clamp leaves it
            bn.weight.uniform_(0.3, 0.9)
            bn.weight[: bn.num_features // 2] = 0
            bn.bias.normal_()
    separated = separate_ties(model)
    before, after = polar.sparse_gammas(model).detach(), polar.sparse_gammas(separated).detach()
    assert len(torch.unique(after)) == len(after)  # every tie told apart
    assert (after - before).abs().max() <= 1e-6 * len(after)  # by tiny steps
    assert torch.equal(polar.sparse_gammas(separate_ties(model)).detach(), after)  # deterministically
    zeros = before == 0
    beta = torch.cat([bn.bias.detach().abs() for bn in polar.sparse_bns(model)])
    rank = after[zeros].argsort()
    assert torch.all(beta[zeros][rank][:-1] <= beta[zeros][rank][1:])  # smaller |β| goes first
    data = polar.load_dataset("synthetic", subset=10)
    table = polar.sweep(model, data, reductions=[0.1, 0.2, 0.3])
    assert table["flops_reduction"].tolist() == sorted(table["flops_reduction"].tolist())
    assert all(abs(r - t) < 0.03 for r, t in zip(table["flops_reduction"], table["target_reduction"]))
    folded_only = polar.sweep(model, data, reductions=[0.1, 0.2, 0.3], measure_zero_beta=False)
    assert folded_only["acc_zero_beta"].isna().all()  # half the evaluations; the rest of each row unchanged
    assert folded_only.drop(columns="acc_zero_beta").equals(table.drop(columns="acc_zero_beta"))


def _hist(*counts: int) -> tuple[torch.Tensor, torch.Tensor]:
    c = torch.zeros(100)
    c[: len(counts)] = torch.tensor(counts, dtype=torch.float)
    return c, torch.linspace(0, 1, 101)


def test_the_papers_literal_rule_on_crafted_histograms() -> None:
    assert paper_valley(*_hist(10, 5, 2, 4, 8)) == 0.02  # strictly falling then rising: the minimum's left edge
    assert paper_valley(*_hist(100, 0, 0, 0, 50)) == 0.01  # a flat run of empty bins: its first bin
    assert paper_valley(*_hist(270, 261, 275, 0, 0, 0, 0, 50)) == 0.01  # a noisy spike: stops inside it
    assert paper_valley(torch.arange(100, 0, -1).float(), torch.linspace(0, 1, 101)) is None  # no valley
    model = polar.create_model("resnet20")
    with torch.no_grad():
        for bn in polar.sparse_bns(model):
            bn.weight.copy_(torch.linspace(0.5, 0.9, bn.num_features))  # one mode, no valley
    assert polar.prune(model, polar.find_threshold(model, "paper")).spec() == model.spec()  # prunes nothing


def test_per_layer_thresholds_prune_what_each_layers_rule_says() -> None:
    model = polarize_randomly(polar.create_model("resnet20"), seed=3)
    thresholds = polar.find_threshold(model, "paper", per_layer=True)
    bns = dict((name, m) for name, m in model.named_modules() if isinstance(m, nn.BatchNorm2d))
    assert set(thresholds) == {n for n, m in bns.items() if any(m is bn for bn in polar.sparse_bns(model))}
    small = polar.prune(model, thresholds)
    masked = polar.mask(model, thresholds)
    for name, threshold in thresholds.items():  # each layer silenced exactly by its own threshold
        low = bns[name].weight <= threshold
        assert torch.all(dict(masked.named_modules())[name].weight[low] == 0)
    x = torch.randn(2, 3, 32, 32)
    _outputs_match(masked.eval()(x), small.eval()(x))
    with pytest.raises(ValueError, match="must name every sparse BN"):
        polar.prune(model, {"layer1.0.bn1": 0.1})
    with pytest.raises(ValueError, match="finite"):
        polar.prune(model, {**thresholds, next(iter(thresholds)): float("nan")})


@pytest.mark.parametrize("name", [m for m in polar.list_models()])
def test_pruned_equals_masked_with_per_layer_thresholds(name: str) -> None:
    model = polarize_randomly(polar.create_model(name), seed=len(name) + 1).eval()
    thresholds = polar.find_threshold(model, "valley", per_layer=True)
    x = torch.randn(2, 3, model.input_size, model.input_size)
    with torch.no_grad():
        _outputs_match(polar.mask(model, thresholds).eval()(x), polar.prune(model, thresholds).eval()(x))


def test_zero_beta_drops_a_blocks_whole_branch_when_its_bn1_is_wholly_pruned() -> None:
    """The official code's behaviour: the residual branch goes, bn2's constant with it (folded pruning keeps it)."""
    model = polarize_randomly(polar.create_model("resnet20"), share_pruned=0.0).eval()
    block = model.layer1[1]
    with torch.no_grad():
        block.bn1.weight.zero_()
    x = torch.randn(2, 3, 32, 32)
    masked = polar.mask(model, 0.01, zero_beta=True)
    assert torch.all(masked.layer1[1].bn2.bias == 0) and torch.all(masked.layer1[1].bn2.weight == 0)
    small = polar.prune(model, 0.01, zero_beta=True).eval()
    assert small.layer1[1].conv1 is None and not small.layer1[1].fold_out.bias.abs().any()
    with torch.no_grad():
        _outputs_match(masked.eval()(x), small(x))
        folded = polar.prune(model, 0.01).eval()
        assert folded.layer1[1].fold_out.bias.abs().any()  # Polar's default keeps the branch's constant


def test_threshold_rules_side_by_side() -> None:
    model = polarize_randomly(polar.create_model("resnet20"), seed=5)
    table = polar.threshold_rules(model)
    assert list(table["rule"]) == list(polar.compare.THRESHOLD_RULES)
    paper = table.set_index("rule").loc["paper's rule (global)"]
    small = polar.prune(model, polar.find_threshold(model, "paper"))
    assert paper["FLOPs reduction"] == polar.flops_reduction(polar.cost(model), polar.cost(small))
    assert 0 < table["FLOPs reduction"].max() < 1


@pytest.mark.parametrize("name", ["resnet20", "vgg16", "mobilenet_v2"])
def test_uniform_width_model_scales_every_prunable_layer_to_the_target_flops(name: str) -> None:
    scale, thin = polar.uniform_width_model(name, 0.5)
    full = polar.create_model(name)
    reduction = polar.flops_reduction(polar.cost(full), polar.cost(thin))
    assert 0.5 <= reduction < 0.56, reduction  # at least the target; widths are whole channels
    for wide, narrow in zip(polar.channel_sets(full), polar.channel_sets(thin)):
        assert narrow.bns[0].num_features == max(1, round(scale * wide.bns[0].num_features))
    assert all(torch.all(bn.weight == 0.5) for bn in polar.sparse_bns(thin))  # a fresh model, not a pruned one
    assert thin(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_prune_to_widths_keeps_the_first_channels_of_each_set() -> None:
    model = polar.create_model("resnet20")
    widths = [max(1, cs.bns[0].num_features // (2 + i % 3)) for i, cs in enumerate(polar.channel_sets(model))]
    thin = polar.prune_to_widths(model, widths)
    assert [cs.bns[0].num_features for cs in polar.channel_sets(thin)] == widths
    assert [cs.bns[0].num_features for cs in polar.channel_sets(model)] != widths  # the model itself is untouched
    with pytest.raises(ValueError, match="widths for"):
        polar.prune_to_widths(model, widths[:-1])


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_matched_flops_leaves_its_arguments_as_they_were(synthetic: polar.DeviceDataset, mode: str) -> None:
    """A library call reads the caller's models: their device, mode, memory format and weights are the same after
    (it used to move them to the data's device and switch them to eval mode)."""
    models = {m: polarize_randomly(polar.create_model("resnet20"), seed=i).train(mode == "train")
              for i, m in enumerate(("polar", "l1"))}
    before = {m: {k: v.clone() for k, v in model.state_dict().items()} for m, model in models.items()}
    threshold = polar.find_threshold(models["polar"], "percent", value=0.4)
    first = []
    table, small = polar.matched_flops(models, synthetic, threshold=threshold, reference="polar",
                                       on_pruned=first.append)
    assert len(first) == 1 and first[0]["acc_zero_beta"].isna().all()  # reported before the β-dropped networks
    assert first[0].drop(columns="acc_zero_beta").equals(table.drop(columns="acc_zero_beta"))
    for name, model in models.items():
        assert model.training == (mode == "train")
        assert all(torch.equal(v, before[name][k]) for k, v in model.state_dict().items())
        assert {p.device.type for p in model.parameters()} == {"cpu"}
    assert list(table["method"]) == ["polar", "l1"] and set(small) == {"polar", "l1"}


def test_prune_at_valley_reports_the_valley_the_exact_flops_and_the_pruned_accuracy(
        trained_polar: nn.Module, synthetic: polar.DeviceDataset) -> None:
    result = polar.prune_at_valley(trained_polar, synthetic)
    threshold = polar.find_threshold(trained_polar, "valley")
    small = polar.prune(trained_polar, threshold)
    assert result.threshold == threshold
    assert result.flops_reduction == pytest.approx(polar.flops_reduction(polar.cost(trained_polar), polar.cost(small)))
    assert result.acc_pruned == polar.evaluate(small, synthetic)[1]
    flat = polar.create_model("resnet20")  # fresh γ are all 1: no valley, nothing pruned
    assert polar.prune_at_valley(flat, synthetic) == polar.ValleyPruning(None, 0.0, None)
