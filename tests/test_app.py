"""The explorer's flow through Streamlit's AppTest: it renders, trains both networks live, prunes, reports errors
in the page. Uses the synthetic dataset (set through the URL, as a shared link would)."""
from __future__ import annotations

import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parents[1] / "app" / "Home.py")


@pytest.fixture
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("POLAR_RUNS", str(tmp_path / "runs"))
    at = AppTest.from_file(APP, default_timeout=120)
    yield at
    duel = at.session_state["duel"] if "duel" in at.session_state else None
    if duel is not None:
        duel.stop()  # frees its trainer process now (a browser session would be reaped once it closes)


def _status(at: AppTest) -> str:
    return next((c.value for c in at.caption if "split into a spike" in c.value), "")


def test_default_page_renders(app: AppTest) -> None:
    app.query_params["dataset"] = "synthetic"
    app.run()
    assert not app.exception
    assert app.title[0].value.startswith("Polarization vs. L1")
    assert app.sidebar.number_input(key="lam").value == 0.02 and app.sidebar.selectbox(key="model").value == "resnet20"
    assert any("device" in c.value for c in app.caption)
    assert [b.label for b in app.button][:4] == ["▶ Start", "⏸ Pause", "⏭ Step one epoch", "⟲ Reset"]


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
    deadline = time.time() + 150
    while "polarization yes · L1 no" not in _status(app) and time.time() < deadline:
        time.sleep(1)
        app.run()
    assert "polarization yes · L1 no" in _status(app), _status(app)
    charts_before = len(app.get("plotly_chart"))
    app.toggle(key="show_timeline").set_value(True).run()  # γ over time: one more figure, from the timeline
    assert len(app.get("plotly_chart")) == charts_before + 1 and not app.exception
    duel = app.session_state["duel"]
    assert len(duel.snapshot().timeline) >= 2 and set(duel.snapshot().timeline[-1]) == {"step", "polar", "l1",
                                                                                         "near_zero"}
    app.toggle(key="show_layers").set_value(True).run()  # per layer: now, and over time
    assert len(app.get("plotly_chart")) == charts_before + 3 and not app.exception
    last = duel.snapshot().timeline[-1]
    assert len(last["near_zero"]["polar"]) == len(duel.snapshot().hist["polar"]["layers"]) == 18
    assert max(last["near_zero"]["polar"]) > max(last["near_zero"]["l1"])  # polarization's spikes, per layer
    hist = duel.snapshot().hist
    assert hist["polar"]["counts"] != hist["l1"]["counts"]  # same start, different shapes now
    assert sum(hist["polar"]["counts"]) == sum(hist["l1"]["counts"])  # same channels, binned (not raw γ)
    app.button[1].click().run()  # pause
    assert duel.snapshot().state == "paused"
    prune = next(b for b in app.button if b.label == "✂ Prune")
    prune.click().run()
    assert not app.exception
    table = app.table[0].value
    assert list(table.index) == ["Polarization", "L1 (network slimming)"]
    assert (table["FLOPs reduction (%)"] > 0).all() and (table["MACs (M)"] < 40.56).all()
    reductions = table["FLOPs reduction (%)"].tolist()
    assert abs(reductions[0] - reductions[1]) < 15  # L1 pruned to the matching FLOPs reduction
    next(b for b in app.button if b.label == "Export it to ONNX").click().run()
    assert not app.exception and app.session_state["prune_result"]["onnx"][:8]  # the .onnx bytes to download
    next(b for b in app.button if b.label.startswith("Measure latency")).click().run()
    assert not app.exception
    assert list(app.session_state["prune_result"]["latency"]["runtime"].unique()) == ["PyTorch", "ONNX Runtime"]
    charts_before = len(app.get("plotly_chart"))
    next(b for b in app.button if b.label.startswith("Trade-off curve")).click().run()
    assert not app.exception and len(app.get("plotly_chart")) == charts_before + 1
    assert set(app.session_state["tradeoff"]) == {"polar", "l1"}  # from scratch: no baseline curve
    runs = list((Path(app.session_state["duel"].run_root)).glob("*/config.json"))
    assert len(runs) == 2  # both runs are kept on disk


def test_bad_input_is_reported_in_the_page(app: AppTest) -> None:
    app.query_params.update(dataset="synthetic", lam="-1", epochs="many")
    app.run()
    assert not app.exception
    ignored = " ".join(t.value for t in app.text)
    assert "Ignored URL settings" in app.warning[0].value and "lam=-1" in ignored and "epochs=many" in ignored
    assert app.sidebar.number_input(key="lam").value == 0.02  # the default replaced the bad value
    app.sidebar.number_input(key="subset").set_value(1)
    app.sidebar.number_input(key="batch_size").set_value(64)
    app.run()
    app.button[0].click().run()  # 10 images cannot make a batch of 64
    assert not app.exception
    assert any("make no batch" in e.value for e in app.error)


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


def test_playground_redraws_within_a_second_when_a_slider_moves(app: AppTest) -> None:
    app.query_params["dataset"] = "synthetic"
    app.run()
    app.switch_page("app_pages/playground.py").run()
    assert not app.exception
    before = app.dataframe[0].value
    start = time.perf_counter()
    app.slider(key="pg_t").set_value(1.6).run()
    assert time.perf_counter() - start < 1.0 and not app.exception
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
    deadline = time.time() + 180
    while not any("2 of 2 points done" in c.value for c in app.caption) and time.time() < deadline:
        time.sleep(1)
        app.run()
    assert any("2 of 2 points done" in c.value for c in app.caption), [c.value for c in app.caption]
    assert not app.exception and len(app.get("plotly_chart")) >= 1
    table = app.dataframe[0].value
    assert sorted(table["lam"]) == [0.01, 0.05]
    app.run()  # a reload with the same settings: the points come from the cache, nothing is left to run
    assert not [b for b in app.button if b.label.startswith("▶ Run the")]
    app.text_input(key="grid_lams").set_value("0.01, -1").run()
    assert any("Fix the grid" in e.value for e in app.error)


def test_uniform_width_points_summarize_a_studys_seeds(tmp_path: Path) -> None:
    import sys

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
