"""Pruning to a measured speed: named channels are pruned exactly, the latency table predicts whole networks' times,
and ``prune_to_speedup`` returns an ordinary pruned model.

Timing tests keep 2x headroom over the 10 % prediction target (the target itself is the benchmark's,
bench/latency_pruning.py) and time both networks in alternating rounds, on one thread at batch 32. What made this
test fail on correct trees, each measured: tables timed without the steady allocator (median errors 12-24 %, CI 24 %;
``latency_table`` now sets it), two threads beside another busy process (a 37 % fit), and batch 16 (speed-ups of the
same two networks 25 % apart between measurements). Each network is measured again while the median error is over
the limit: noise shrinks with repeated measurement, a wrong table does not.
"""
from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import pytest
import torch

import polar
from polar.latency_table import _sample_widths, channel_block, full_widths
from polar.speedup import closest_measured

from .conftest import polarize_randomly

BATCH = 32  # batch 16 timings vary by ~25 % between measurements on a 2-core VM


def _random_plan(model: torch.nn.Module, seed: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    plan = []
    for cs in polar.channel_sets(model):
        gone = torch.rand(cs.bns[0].num_features, generator=gen) < 0.5
        if cs.allow_empty and float(torch.rand((), generator=gen)) < 0.3:
            gone[:] = True  # a whole ResNet block goes: it becomes its shortcut
        if bool(gone.all()) and not cs.allow_empty:
            gone[0] = False
        plan.append(gone)
    return plan


@pytest.mark.parametrize("name", polar.list_models())
def test_pruning_named_channels_equals_masking_them(name: str) -> None:
    model = polarize_randomly(polar.create_model(name), seed=3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    plan = _random_plan(model, seed=len(name))
    small, masked = polar.prune_channels(model, plan).eval(), polar.mask_channels(model, plan).eval()
    x = torch.randn(2, 3, model.input_size, model.input_size)
    with torch.no_grad():
        a, b = masked(x), small(x)
    assert (a - b).abs().max().item() <= 1e-4 * max(a.abs().max().item(), 1.0)
    kept = [int((~gone).sum()) for gone in plan]
    assert polar.cost(small).macs == polar.pruned_cost(polar.mask_channels(model, plan), 0.0).macs
    assert sum(kept) < sum(full_widths(model))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the original is not touched


def test_named_channels_are_checked() -> None:
    model = polar.create_model("vgg16")
    plan = [torch.zeros(cs.bns[0].num_features, dtype=torch.bool) for cs in polar.channel_sets(model)]
    with pytest.raises(polar.ConfigError, match="one per polar.channel_sets"):
        polar.prune_channels(model, plan[:-1])
    with pytest.raises(polar.ConfigError, match="bool tensor"):
        polar.prune_channels(model, [p.float() for p in plan])
    emptied = [torch.ones_like(p) if i == 0 else p for i, p in enumerate(plan)]
    with pytest.raises(polar.ConfigError, match="at least one channel"):
        polar.prune_channels(model, emptied)


@pytest.fixture(scope="module")
def resnet20_table():
    """A ResNet-20 table timed on one thread, kept for the module's tests: two threads on two cores lose their
    timings to whatever else runs (beside a CPU-bound process the table took 130 s and fitted its own timings 37 %
    off), one thread leaves the other core to it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = polarize_randomly(polar.create_model("resnet20"), seed=1)
        t0 = time.time()
        table = polar.latency_table(model, "torch", batch_size=BATCH, cache=False)
        yield model, table, time.time() - t0
    finally:
        torch.set_num_threads(threads)


def _prediction_errors(model: torch.nn.Module, table: polar.LatencyTable, runtime: str,
                       measurements: int = 3) -> tuple[list[float], list[float]]:
    """Relative errors of the predicted speed-up of five random width vectors (not the ones the table was fitted
    on) against their measured speed-up — the median of up to ``measurements`` measurements each, a new one taken
    only while the median error is over 20 % — and the errors the MACs ratio makes as a prediction of the same."""
    full = table.predict(model, full_widths(model))
    vectors = _sample_widths(model, 9, seed=123, granularity=table.granularity)[4:]
    predicted = [full / table.predict(model, widths) for widths in vectors]
    pruned = [polar.prune_to_widths(model, widths) for widths in vectors]
    macs_ratios = [polar.cost(model).macs / polar.cost(small).macs for small in pruned]
    measured: list[list[float]] = [[] for _ in vectors]
    for _ in range(measurements):
        for times, small in zip(measured, pruned):
            times.append(polar.measured_speedup(model, small, runtime, BATCH, rounds=5))
        speedups = [statistics.median(m) for m in measured]
        errors = [abs(p - m) / m for p, m in zip(predicted, speedups)]
        if statistics.median(errors) <= 0.2:
            break
    return errors, [abs(r - m) / m for r, m in zip(macs_ratios, speedups)]


def test_the_latency_table_predicts_random_widths(resnet20_table) -> None:
    model, table, seconds = resnet20_table
    errors, macs_errors = _prediction_errors(model, table, "torch")
    print(f"\nResNet-20 torch table: {seconds:.0f} s, granularity {table.granularity}, fit error "
          f"{table.fit_error:.1%}; prediction errors {[f'{e:.1%}' for e in errors]}; the MACs ratio's "
          f"{[f'{e:.0%}' for e in macs_errors]}")
    assert statistics.median(errors) <= 0.2, errors
    assert statistics.median(errors) <= statistics.median(macs_errors) / 3, (errors, macs_errors)  # time, not FLOPs
    assert table.granularity == channel_block() in (8, 16) and table.full_ms > 0
    curve = table.curve(model, 2)
    assert curve[-1][0] == full_widths(model)[2] and all(w % table.granularity == 0 for w, _ in curve[:-1])


def test_prune_to_speedup_is_an_ordinary_pruned_model(resnet20_table, tmp_path: Path) -> None:
    model, table, _ = resnet20_table
    small = polar.prune_to_speedup(model, 1.6, table=table).eval()
    widths = polar.plan_speedup(model, 1.6, table)
    assert table.predict(model, full_widths(model)) / table.predict(model, widths) >= 1.6
    # the rule: each set keeps its largest-γ channels; pruning them equals masking them
    plan = []
    for cs, w in zip(polar.channel_sets(model), widths):
        gamma = torch.stack([bn.weight.detach().abs() for bn in cs.bns]).min(0).values
        gone = torch.ones_like(gamma, dtype=torch.bool)
        gone[gamma.argsort(descending=True)[:w]] = False
        plan.append(gone)
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        expected = polar.mask_channels(model, plan).eval()(x)
        assert (small(x) - expected).abs().max().item() <= 1e-4 * max(expected.abs().max().item(), 1.0)
    polar.save(small, tmp_path / "small.pt")
    loaded = polar.load(tmp_path / "small.pt").eval()
    with torch.no_grad():
        assert torch.equal(loaded(x), small(x))
    import onnxruntime as ort
    session = ort.InferenceSession(str(polar.export_onnx(small, tmp_path / "small.onnx")),
                                   providers=["CPUExecutionProvider"])
    onnx_out = torch.from_numpy(session.run(["logits"], {"images": x.numpy()})[0])
    assert (onnx_out - expected).abs().max().item() <= 1e-3 * max(expected.abs().max().item(), 1.0)


def test_a_measured_shortfall_is_planned_again_and_the_closest_kept() -> None:
    """The re-planning loop alone, on a machine that runs every network at 0.8 of the speed-up its plan asked for:
    asked 2x, measured 1.6x, so the next plan asks for 2.5x and measures 2.0x (within 10 %: it stops there)."""
    asked: list[float] = []

    def plan(ask: float) -> float:
        asked.append(ask)
        return ask

    assert closest_measured(plan, lambda ask: 0.8 * ask, 2.0, replans=3) == (2.5, 2.0, 2.5)
    assert asked == [2.0, 2.5]
    asked.clear()
    assert closest_measured(plan, lambda ask: 0.8 * ask, 2.0, replans=0) == (2.0, 1.6, 2.0) and asked == [2.0]

    def reaches_2_2(ask: float) -> float:  # a table that cannot predict more than 2.2x
        if ask > 2.2:
            raise polar.ConfigError("beyond what narrowing channels reaches")
        return plan(ask)

    asked.clear()  # the re-plan is out of reach: the first plan, measured, is the closest there is
    assert closest_measured(reaches_2_2, lambda ask: 0.8 * ask, 2.0, replans=3) == (2.0, 1.6, 2.0)
    with pytest.raises(polar.ConfigError, match="beyond"):
        closest_measured(reaches_2_2, lambda ask: ask, 3.0, replans=3)
    asked.clear()  # far too fast: the next ask never goes below 1 (no pruning); 10x is the closer of 20x and 10x
    assert closest_measured(plan, lambda ask: 10 * ask, 2.0, replans=1) == (1.0, 10.0, 1.0) and asked == [2.0, 1.0]


def test_pruning_for_a_speedup_measures_what_it_chose(resnet20_table) -> None:
    model, table, _ = resnet20_table
    done = polar.pruned_for_speedup(model, 1.6, batch_size=BATCH, table=table, replans=1)
    assert done.measured_speedup > 1 and done.asked_of_table >= 1
    assert done.predicted_speedup >= done.asked_of_table * (1 - 1e-9)
    assert done.widths == polar.plan_speedup(model, done.asked_of_table, table)
    assert polar.count_macs(done.model)[0] < polar.count_macs(model)[0]
    alone = polar.pruned_for_speedup(model, 1.6, batch_size=BATCH, table=table)
    assert alone.measured_speedup is None and alone.asked_of_table is None and alone.predicted_speedup >= 1.6


def test_speedup_and_table_arguments_are_checked(resnet20_table) -> None:
    model, table, _ = resnet20_table
    for bad in (0.5, float("nan"), "2"):
        with pytest.raises(polar.ConfigError, match="speedup must be"):
            polar.plan_speedup(model, bad, table)
    with pytest.raises(polar.ConfigError, match="beyond what narrowing channels reaches"):
        polar.plan_speedup(model, 1000.0, table)
    with pytest.raises(polar.ConfigError, match="unknown runtime"):
        polar.latency_table(model, "tensorrt")
    with pytest.raises(polar.ConfigError, match="another architecture"):
        table.predict(polar.create_model("resnet56"), [1] * len(polar.channel_sets(polar.create_model("resnet56"))))
    with pytest.raises(polar.ConfigError, match="one width per channel set"):
        table.predict(model, [1, 2, 3])


def test_a_table_is_cached_per_key_and_a_damaged_file_is_measured_again(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("POLAR_CACHE", str(tmp_path))
    model = polar.create_model("resnet20")
    first = polar.latency_table(model, "torch", batch_size=2, samples=8)
    files = list((tmp_path / "latency").glob("*.json"))
    assert len(files) == 1
    t0 = time.time()
    assert polar.latency_table(model, "torch", batch_size=2, samples=8) == first and time.time() - t0 < 1.0
    assert polar.latency_table(model, "torch", batch_size=3, samples=8) != first  # another batch, another table
    files[0].write_text("{ not json")
    again = polar.latency_table(model, "torch", batch_size=2, samples=8)
    assert again.key == first.key and json.loads(files[0].read_text())["key"] == first.key
