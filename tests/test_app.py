"""The explorer's flow through Streamlit's AppTest: it renders, trains both networks live, prunes, reports errors
in the page. Uses the synthetic dataset (set through the URL, as a shared link would)."""
from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from polar.saving import read_weights

from .conftest import requires_cifar10

APP = str(Path(__file__).resolve().parents[1] / "app" / "Home.py")


@pytest.fixture
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("POLAR_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("POLAR_CACHE", str(tmp_path / "cache"))  # latency tables: measured afresh, kept out of ~
    at = AppTest.from_file(APP, default_timeout=120)
    yield at
    duel = at.session_state["duel"] if "duel" in at.session_state else None
    if duel is not None:
        duel.stop()  # frees its trainer process now (a browser session would be reaped once it closes)


def _status(at: AppTest) -> str:
    return next((c.value for c in at.caption if "split into a spike" in c.value), "")


def _wait_for(condition: Callable[[], bool], timeout: float, state: Callable[[], str] = lambda: "") -> None:
    """Wait (checking every second) until ``condition()`` holds: training runs at the machine's pace, so a test
    waits for what it needs instead of reading one snapshot. ``timeout`` keeps ample headroom over a 2-core CPU."""
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, f"not reached within {timeout} s: {state()}"
        time.sleep(1)


def test_default_page_renders(app: AppTest) -> None:
    app.query_params["dataset"] = "synthetic"
    app.run()
    assert not app.exception
    assert app.title[0].value.startswith("Polarization vs. L1")
    assert app.sidebar.number_input(key="lam").value == 0.02 and app.sidebar.selectbox(key="model").value == "resnet20"
    assert any("device" in c.value for c in app.caption)
    assert [b.label for b in app.button][:4] == ["▶ Start", "⏸ Pause", "⏭ Step one epoch", "⟲ Reset"]
    assert app.query_params["l1_lam"] in ("0.004", ["0.004"])  # the L1 rule's (t − 1)·λ, without binary noise


def test_training_splits_polarization_but_not_l1_then_pruning_fills_the_table(app: AppTest) -> None:
    app.query_params.update(dataset="synthetic", start="scratch", subset="100", epochs="3", batch_size="32", lr="0.1",
                            l1_lam="0.02")
    app.run()
    app.sidebar.number_input(key="lam").set_value(0.02)
    app.sidebar.slider(key="t").set_value(1.3)
    app.run()
    assert app.query_params["lam"] in ("0.02", ["0.02"]) and app.query_params["t"] in ("1.3", ["1.3"])  # URL follows
    app.button[0].click().run()
    assert not app.exception and not app.error
    duel = app.session_state["duel"]
    # the split shows in a histogram published between the two methods' steps, before any loss point: wait for the
    # split and for a timeline of two points (the loss curves and γ over time have something to draw)
    _wait_for(lambda: "polarization yes · L1 no" in _status(app.run()) and len(duel.snapshot().timeline) >= 2, 300,
              lambda: f"{_status(app)}; {len(duel.snapshot().timeline)} timeline points")
    charts_before = len(app.get("plotly_chart"))
    app.toggle(key="show_timeline").set_value(True).run()  # γ over time: one more figure, from the timeline
    assert len(app.get("plotly_chart")) == charts_before + 1 and not app.exception
    snap = duel.snapshot()  # one snapshot per check: training goes on between reads
    assert len(snap.timeline) >= 2 and set(snap.timeline[-1]) == {"step", "polar", "l1", "near_zero"}
    app.toggle(key="show_layers").set_value(True).run()  # per layer: now, and over time
    assert len(app.get("plotly_chart")) == charts_before + 3 and not app.exception

    def spikes_per_layer() -> bool:  # polarization's spikes, per layer, in the latest point of the timeline
        last = duel.snapshot().timeline[-1]["near_zero"]
        return max(last["polar"]) > max(last["l1"])

    _wait_for(spikes_per_layer, 120, lambda: f"latest point {duel.snapshot().timeline[-1]}")
    snap = duel.snapshot()
    assert len(snap.timeline[-1]["near_zero"]["polar"]) == len(snap.hist["polar"]["layers"]) == 18
    assert snap.hist["polar"]["counts"] != snap.hist["l1"]["counts"]  # same start, different shapes now
    assert sum(snap.hist["polar"]["counts"]) == sum(snap.hist["l1"]["counts"])  # same channels, binned (not raw γ)
    app.button[1].click().run()  # pause
    assert duel.snapshot().state == "paused"
    prune = next(b for b in app.button if b.label == "✂ Prune")
    prune.click().run()
    _finish_task(app, "prune")  # in a worker process, not the server
    table = app.table[0].value
    assert list(table.index) == ["Polarization", "L1 (network slimming)"]
    assert (table["FLOPs reduction (%)"] > 0).all() and (table["MACs (M)"] < 40.56).all()
    reductions = table["FLOPs reduction (%)"].tolist()
    assert abs(reductions[0] - reductions[1]) < 15  # L1 pruned to the matching FLOPs reduction
    next(b for b in app.button if b.label == "Export it to ONNX").click().run()
    assert _finish_task(app, "export").result["onnx"][:8]  # the .onnx bytes to download
    assert any(b.label == "Download polar_pruned.onnx" for b in app.get("download_button"))
    next(b for b in app.button if b.label.startswith("Measure latency")).click().run()
    latency = _finish_task(app, "latency").result["latency"]
    assert sorted({row["runtime"] for row in latency}) == ["ONNX Runtime", "PyTorch"]
    app.number_input(key="speedup_target").set_value(1.3)
    app.selectbox(key="speedup_batch").set_value(16)  # a smaller latency table to measure than batch 64's
    next(b for b in app.button if b.label == "Prune to this speed-up").click().run()
    done = _finish_task(app, "speedup").result
    speed, threshold = done["rows"]
    assert (speed["pruning"], threshold["pruning"]) == ("speed-up target", "FLOPs threshold (Prune)")
    # measured and re-planned: the plan kept asked the table for its own speed-up (1.3x, or less or more for what
    # the measurement showed), and the table predicts at least that for it
    assert done["asked_of_table"] >= 1 and speed["predicted_speedup"] >= done["asked_of_table"] * (1 - 1e-9)
    assert speed["macs"] < 40.56e6 and threshold["predicted_speedup"] is None
    assert all(row["measured_speedup"] > 0 and 0 <= row["acc_pruned"] <= 1 for row in (speed, threshold))
    download = next(b for b in app.get("download_button") if b.label.startswith("Download the speed-pruned"))
    assert download is not None and not app.exception
    charts_before = len(app.get("plotly_chart"))
    next(b for b in app.button if b.label.startswith("Trade-off curve")).click().run()
    curves = _finish_task(app, "tradeoff").result["curves"]
    assert len(app.get("plotly_chart")) == charts_before + 1
    assert set(curves) == {"polar", "l1"}  # from scratch: no baseline curve
    next(b for b in app.button if b.label.startswith("Fine-tune both")).click().run()
    accuracy = _finish_task(app, "finetune").result["accuracy"]
    assert set(accuracy) == {"polar", "l1"} and not app.table[0].value["acc after fine-tune (%)"].isna().any()
    runs = list((Path(app.session_state["duel"].run_root)).glob("*/config.json"))
    assert len(runs) == 2  # both runs are kept on disk


@requires_cifar10  # the trained baseline learned CIFAR-10: a duel starts from it only there
def test_a_tradeoff_reuses_the_baseline_curve_the_server_measured_for_an_identical_start(app: AppTest) -> None:
    """In a class every student's "no regularizer" curve is the same trained baseline pruned on the same test images:
    the server sweeps it once (shared.measured_curves), and a later trade-off sweeps only the two trained networks
    and still draws all three curves."""
    sys.path.insert(0, str(Path(APP).parent))
    import shared

    shared.measured_curves.clear()  # what other tests in this process may have measured
    app.query_params.update(subset="30", epochs="2", batch_size="32")  # CIFAR-10, from the trained baseline
    app.run()
    app.button[2].click().run()  # one epoch, then paused: the trainer hosts the trade-offs
    duel = app.session_state["duel"]
    _wait_for(lambda: duel.snapshot().state == "paused" and duel.snapshot().epoch == 1, 300,
              lambda: str(duel.snapshot().state))
    app.run()

    def tradeoff_button():
        return next(b for b in app.button if b.label.startswith("Trade-off curve"))

    tradeoff_button().click().run()
    first = _finish_task(app, "tradeoff").result["curves"]
    assert set(first) == {"polar", "l1", "none"}
    tradeoff_button().click().run()
    task = duel.tasks["tradeoff"]
    assert set(read_weights(task.spec["models"])) == {"polar", "l1"}  # the baseline is not swept again
    second = _finish_task(app, "tradeoff").result["curves"]
    assert set(second) == {"polar", "l1"} and task.spec["reused_curves"] == {"none": first["none"]}
    figure = app.get("plotly_chart")[-1].proto.spec
    assert all(name in figure for name in ("Polarization", "L1 (network slimming)", "No regularizer (the baseline)"))


def _finish_task(app: AppTest, kind: str):
    """Wait until the duel's ``kind`` task (run in a worker) has finished, redraw the page, and return its snapshot
    (failing with its message when it did not succeed)."""
    task = app.session_state["duel"].tasks[kind]
    _wait_for(lambda: not task.active(), 300, lambda: str(task.snapshot()))
    app.run()
    snap = task.snapshot()
    assert snap.state == "done" and not app.exception, f"{kind}: {snap.state} {snap.message}"
    return snap


def test_bad_input_is_reported_in_the_page(app: AppTest) -> None:
    app.query_params.update(dataset="synthetic", lam="-1", epochs="many")
    app.run()
    assert not app.exception
    ignored = " ".join(t.value for t in app.text)
    assert "Ignored URL settings" in app.warning[0].value and "lam=-1" in ignored and "epochs=many" in ignored
    assert app.sidebar.number_input(key="lam").value == 0.02  # the default replaced the bad value
    for _ in range(2):  # reruns (the trainer becoming ready triggers one) keep the warning
        app.run()
        assert app.warning and "Ignored URL settings" in app.warning[0].value
    app.sidebar.number_input(key="subset").set_value(1)
    app.sidebar.number_input(key="batch_size").set_value(64)
    app.run()
    assert not any("Ignored URL settings" in w.value for w in app.warning)  # the user changed a setting
    app.button[0].click().run()  # 10 images cannot make a batch of 64
    assert not app.exception
    assert any("make no batch" in e.value for e in app.error)


def test_the_ignored_url_settings_warning_stays_until_dismissed(app: AppTest) -> None:
    app.query_params.update(dataset="synthetic", t="9")
    app.run()
    time.sleep(3)  # a trainer gets ready meanwhile; its rerun must not drop the warning
    app.run()
    assert "Ignored URL settings" in app.warning[0].value and "t=9" in " ".join(t.value for t in app.text)
    app.button(key="dismiss_url_errors").click().run()
    assert not any("Ignored URL settings" in w.value for w in app.warning)


URL_SETTINGS = ["subset", "epochs", "batch_size", "lr", "seed", "lam", "t", "l1_lam"]


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_nan_and_infinity_in_the_url_are_refused_for_every_setting(app: AppTest, value: str) -> None:
    app.query_params.update({"dataset": "synthetic", **{key: value for key in URL_SETTINGS}})
    app.run()
    assert not app.exception and not app.error
    ignored = " ".join(t.value for t in app.text)
    assert all(f"{key}={value}" in ignored for key in URL_SETTINGS), ignored
    assert app.sidebar.number_input(key="lam").value == 0.02 and app.sidebar.slider(key="t").value == 1.2


def test_url_values_are_shown_as_text_never_as_markdown(app: AppTest) -> None:
    image, link = "![x](https://example.invalid/p.png)", "[click](https://example.invalid)"
    app.query_params.update(dataset="synthetic", model=image, lam=link)
    app.run()
    assert not app.exception
    shown = [t.value for t in app.text]
    assert any(image in v and link in v for v in shown)  # verbatim, in a plain-text element
    rendered = [m.value for m in app.markdown] + [w.value for w in app.warning] + [c.value for c in app.caption]
    assert not any("example.invalid" in v for v in rendered)


def _saved_run(tmp_path: Path, name: str, config_json: str) -> Path:
    """A run folder of the explorer's layout (polar/ and l1/) whose config.json files hold ``config_json``."""
    run = tmp_path / "runs" / "app" / name
    for method in ("polar", "l1"):
        (run / method).mkdir(parents=True)
        (run / method / "config.json").write_text(config_json)
    return run


def _open_saved_runs(app: AppTest) -> None:
    app.query_params["dataset"] = "synthetic"
    app.run()
    app.switch_page("app_pages/runs.py").run()
    assert not app.exception


def test_saved_runs_page_lists_runs_and_reports_damage(app: AppTest, tmp_path: Path) -> None:
    _saved_run(tmp_path, "20260101-000000-resnet20-broken", "{not json")
    _open_saved_runs(app)
    assert any("unreadable" in e.value for e in app.error)


def test_one_damaged_run_does_not_break_the_saved_runs_page(app: AppTest, tmp_path: Path) -> None:
    cfg = __import__("polar").TrainConfig(model="resnet20", dataset="synthetic", epochs=1)
    good = _saved_run(tmp_path, "20260101-000000-resnet20-good", cfg.to_json())
    _saved_run(tmp_path, "20260202-000000-resnet20-empty", "{}")  # selected by default: newest first
    _open_saved_runs(app)
    assert any("damaged run" in e.value for e in app.error)
    app.multiselect[0].select(good.name).run()
    assert not app.exception
    assert set(app.dataframe[0].value["run"]) == {good.name}


def test_a_stray_file_among_a_runs_gammas_leaves_the_saved_runs_page_whole(app: AppTest, tmp_path: Path) -> None:
    import torch

    cfg = __import__("polar").TrainConfig(model="resnet20", dataset="synthetic", epochs=1)
    run = _saved_run(tmp_path, "20260101-000000-resnet20-stray", cfg.to_json())
    for method in ("polar", "l1"):
        (run / method / "gammas").mkdir()
        torch.save({"layer": torch.rand(16)}, run / method / "gammas" / "epoch_0001.pt")
    (run / "polar" / "gammas" / "epoch_abc.pt").write_text("a user's copy")
    _open_saved_runs(app)
    assert not app.exception and not app.error
    assert len(app.get("plotly_chart")) == 1  # the γ histograms of the run's last snapshot


def test_playground_redraws_within_a_second_when_a_slider_moves(app: AppTest) -> None:
    app.query_params["dataset"] = "synthetic"
    app.run()
    app.switch_page("app_pages/playground.py").run()
    assert not app.exception
    before = app.dataframe[0].value
    start = time.perf_counter()
    app.slider(key="pg_t").set_value(1.6).run()
    # 0.4 s on a quiet 2-core CPU; the 1 s promise is the browser benchmark's (bench/explorer_budgets.py), this
    # limit keeps 2x headroom over it for a busy CI machine
    assert time.perf_counter() - start < 2.0 and not app.exception
    after = app.dataframe[0].value
    assert after.iloc[0]["share of γ at 0"] > before.iloc[0]["share of γ at 0"]  # larger t: more γ at 0
    assert "Theorem 3.2" in " ".join(c.value for c in app.caption) and "90%" in " ".join(c.value for c in app.caption)


def test_sweep_page_runs_a_grid_live_and_a_reload_finds_it(app: AppTest) -> None:
    app.query_params.update(dataset="synthetic", start="scratch", subset="30", epochs="1", batch_size="32")
    app.switch_page("app_pages/sweep.py").run()
    assert not app.exception and app.title[0].value.startswith("t and λ sweep")
    app.text_input(key="grid_lams").set_value("0.01, 0.05").run()
    app.text_input(key="grid_ts").set_value("1.2").run()
    run = next(b for b in app.button if b.label.startswith("▶ Run the 2 missing"))
    run.click().run()
    _wait_for(lambda: any("2 of 2 points done" in c.value for c in app.run().caption), 360,
              lambda: str([c.value for c in app.caption]))
    assert not app.exception and len(app.get("plotly_chart")) >= 1
    table = app.dataframe[0].value
    assert sorted(table["lam"]) == [0.01, 0.05]
    app.run()  # a reload with the same settings: the points come from the cache, nothing is left to run
    assert not [b for b in app.button if b.label.startswith("▶ Run the")]
    app.text_input(key="grid_lams").set_value("0.01, -1").run()
    assert any("Fix the grid" in e.value for e in app.error)
    app.text_input(key="grid_lams").set_value("0.02, 0.02").run()  # a point twice would never be "done"
    assert any("λ values lists 0.02 twice" in e.value for e in app.error)
    app.text_input(key="grid_lams").set_value(", ".join(f"{i / 1e4:g}" for i in range(1, 10_001))).run()
    assert any("10000 points" in e.value and "at most 36" in e.value for e in app.error)
    assert not [b for b in app.button if b.label.startswith("▶ Run the")]


def test_a_grid_queues_in_the_pool_and_its_owner_can_stop_it(app: AppTest) -> None:
    app.query_params.update(dataset="synthetic", start="scratch", subset="30", epochs="3", batch_size="16")
    app.switch_page("app_pages/sweep.py").run()
    app.text_input(key="grid_lams").set_value("0.01, 0.02, 0.03, 0.04").run()
    app.text_input(key="grid_ts").set_value("1.3").run()
    next(b for b in app.button if b.label.startswith("▶ Run the 4 missing")).click().run()
    _wait_for(lambda: any(b.key == "stop_grid" for b in app.run().button), 60, lambda: str(app.caption))
    assert any("points done" in p.proto.text for p in app.get("progress"))
    app.button(key="stop_grid").click().run()
    _wait_for(lambda: any("was stopped" in i.value for i in app.run().info), 30, lambda: str(app.info))
    assert not app.exception and any(b.label.startswith("▶ Run the") for b in app.button)  # Run resumes the rest


def test_uniform_width_points_summarize_a_studys_seeds(tmp_path: Path) -> None:
    sys.path.insert(0, str(Path(APP).parent))
    import charts

    rows = ["method,lam,t,seed,target,flops_reduction,acc_finetuned"]
    rows += [f"ucs,,,{seed},50%,0.51,{acc}" for seed, acc in enumerate((0.80, 0.82, 0.84))]
    rows += ["polar,0.01,1.2,0,50%,0.5,0.9", "ucs,,,0,70%,0.70,0.75"]
    (tmp_path / "points.csv").write_text("\n".join(rows) + "\n")
    points = {p["target"]: p for p in charts.uniform_width_points(tmp_path / "points.csv")}
    assert points["50%"]["seeds"] == 3 and points["50%"]["acc"] == pytest.approx(0.82)
    assert points["50%"]["acc_std"] == pytest.approx(0.02) and points["70%"]["acc_std"] == 0.0
    assert charts.uniform_width_points(tmp_path / "missing.csv") == []
    figure = charts.tradeoff({}, list(points.values()))
    assert [trace.name for trace in figure.data] == ["uniform width (trained at that width)"]


def test_accuracy_curves_start_at_the_starts_accuracy() -> None:
    sys.path.insert(0, str(Path(APP).parent))
    import charts

    epochs = [{"method": m, "epoch": 1, "test_acc": acc} for m, acc in (("polar", 0.8), ("l1", 0.85))]
    figure = charts.curves([], epochs, start_acc=0.88)
    accuracy = [trace for trace in figure.data if trace.mode == "lines+markers"]
    assert [list(t.x) for t in accuracy] == [[0, 1], [0, 1]] and [t.y[0] for t in accuracy] == [0.88, 0.88]
