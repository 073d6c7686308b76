"""End to end in a real browser: `streamlit run` on a free port, Playwright driving Debian's Chromium.

Clicks Start, watches the histograms update, waits for polarization's split (a spike at 0, a valley, a mode away),
lets training finish, prunes, reads the FLOPs table, saves a screenshot. Wall-clock limits here keep 2x headroom
over what a 2-core CI machine measures and tests wait for conditions rather than reading one snapshot; the
explorer's tight promises (cold start 5 s, first histogram 3 s, ...) are measured as medians by
``bench/explorer_budgets.py``.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import statistics
import time
from pathlib import Path

import pytest

import polar

from .browser import (
    CHROMIUM,
    FLAGS,
    TEXT,
    Server,
    cold_start,
    playground_redraws,
    progress,
    status,
    table_rows,
    time_in_page,
)
from .conftest import DATA_DIR, cifar10_present

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists(),
                       reason="Debian's chromium is not installed (.ci/run installs it with apt-get)"),
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    server = Server(tmp_path_factory.mktemp("runs"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def browser():
    playwright = pytest.importorskip("playwright.sync_api")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        yield browser
        browser.close()


# From starting the server to an enabled Start button: 3-5 s on a quiet 2-core CPU (bench/explorer_budgets.py holds
# the 5 s promise, as a median); this limit keeps 2x headroom for a busy CI machine.
COLD_START_LIMIT_S = 10.0


@pytest.mark.parametrize("where", ["with CIFAR-10", "offline without CIFAR-10"])
def test_cold_start_to_an_enabled_start_button(where: str, browser, tmp_path: Path) -> None:
    """A classroom server is started and the first student opens the page: Start must be usable soon. Offline
    without the data (a folder with no data/, every download refused at once by a closed proxy port) the page falls
    back to synthetic data with its message, just as fast."""
    offline = where.startswith("offline")
    if not offline:  # a cold server, not a first-ever run: the JPEG folders are decoded and cached once (~6-17 s)
        if not cifar10_present():
            pytest.skip("CIFAR-10 is not in data/ (.ci/run extracts it there)")
        polar.load_images("cifar10", data_dir=DATA_DIR, download=False)
    # a second start only when the first was slow: one start of a busy machine (a process beside it, the page
    # cache evicted) is noise; a slow server is slow both times
    starts = []
    while len(starts) < 2 and (not starts or starts[-1][0] > COLD_START_LIMIT_S):
        starts.append(cold_start(browser, tmp_path / f"start{len(starts)}", offline))
    cold, fallback = min(starts)
    print(f"\ncold start ({where}): Start enabled {', '.join(f'{s:.1f}' for s, _ in starts)} s after the server "
          "was launched" + (" (synthetic fallback shown)" if fallback else ""))
    assert all(shown == offline for _, shown in starts), "the fallback message must show offline, and only then"
    assert cold <= COLD_START_LIMIT_S, f"Start enabled {cold:.1f}s after launch (limit {COLD_START_LIMIT_S:.0f} s)"


FIRST_HISTOGRAM_LIMIT_S = 15.0  # 1.9-3.4 s quiet, 7.5 s beside a busy test run (promised: 3 s, in the benchmark)
REFRESHES_PER_S_FLOOR = 0.5  # 2.6/s measured (promised: 1/s, in the benchmark)
# The default duel is deterministic per seed and thread count, but its 2 brief epochs leave a few channels on their
# way to 0 below the valley: pruning them cost polarization 2.7, -0.4, 1.5 and -0.2 points for seeds 0-3 (one training
# thread, as on CI's 2 cores; 1,000 test images; bench/duel.py --explorer) while L1 lost 57-67 points. The limits keep
# 2x headroom over that.
POLAR_DROP_LIMIT_POINTS = 5.5
L1_GAP_FLOOR_POINTS = 30.0
DONE_LIMIT_S = 540  # the default 2 epochs: ~85 s on a quiet 2-core CPU, 305 s beside a busy test run


def test_explorer_in_chromium(server: Server, browser, tmp_path: Path) -> None:
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(server.url, timeout=60_000)
    start = page.get_by_role("button", name="▶ Start")
    start.wait_for(timeout=90_000)
    page.wait_for_timeout(1000)

    page.locator(".js-plotly-plot").first.wait_for(timeout=30_000)  # γ before training, drawn on load
    # the caption under the chart arrives a moment after it (the same script run, streamed): wait, don't read once
    try:
        page.get_by_text(re.compile(r"^step 0 · split into a spike")).first.wait_for(timeout=30_000)
    except Exception:  # seen only in clean-clone CI runs: say what the page showed and what the server logged
        print(page.inner_text("body")[:3000], "\n--- server log ---\n", server.log_tail(60))
        raise
    t_load = time.time()
    page.get_by_text("Trainer ready.").wait_for(timeout=60_000)  # on a fresh server: torch imported once
    print(f"\ntrainer ready {time.time() - t_load:.1f}s after the page showed γ")

    t0 = time.time()
    first_histogram = time_in_page(page, start.click, TEXT, r"^step [1-9]\d* · split into a spike", 30)  # trained γ

    seen: list[tuple[float, str]] = []  # (time, status) whenever the status text changes
    split_at = None
    done = re.compile(r"^done · step")
    while not page.get_by_text(done).count() and time.time() - t0 < DONE_LIMIT_S:  # prune the finished networks
        shown = status(page)
        if shown and (not seen or shown != seen[-1][1]):
            seen.append((time.time() - t0, shown))
        if "polarization yes · L1 no" in shown and split_at is None:
            split_at = time.time() - t0
        page.wait_for_timeout(100)
    training = [t for t, _ in seen if t >= 5]
    refresh_per_s = (len(training) - 1) / (training[-1] - training[0]) if len(training) > 2 else 0.0
    print(f"\nfirst histogram of trained γ {first_histogram:.1f}s after Start; {refresh_per_s:.2f} refreshes/s while "
          f"training; polarization split (spike at 0, valley, mode; L1 not) "
          f"{split_at if split_at is None else round(split_at, 1)}s after Start; {len(seen)} updates seen; "
          f"{progress(page)} {time.time() - t0:.0f}s after Start")
    page.screenshot(path=str(tmp_path / "training.png"), full_page=True)

    pause = page.get_by_role("button", name="⏸ Pause")
    if pause.is_enabled():
        try:
            pause.click(timeout=5_000)
        except Exception:  # training finished between the check and the click: Pause is disabled, nothing to pause
            assert page.get_by_text(re.compile(r"^done · step")).count(), "Pause stayed disabled while training ran"
    prune = page.get_by_role("button", name="✂ Prune")
    prune.wait_for(timeout=60_000)
    prune.click()
    pruned_at = time.time() - t0
    table = page.locator("table").filter(has_text="FLOPs reduction")
    try:
        table.wait_for(timeout=120_000)
    except Exception:  # say what the page showed and what the server logged
        print(page.inner_text("body")[-3000:], "\n--- server log ---\n", server.log_tail(60))
        raise
    rows = table_rows(table)
    real = "CIFAR-10" in page.get_by_text(re.compile(r"^Data: ")).first.inner_text() and page.get_by_text(
        re.compile(r"^Start: Polar's trained")).count() > 0
    page.screenshot(path=str(tmp_path / "pruned.png"), full_page=True)
    page.close()
    shutil.copy(tmp_path / "pruned.png", tmp_path / "explorer.png")
    polar_row, l1_row = rows["Polarization"], rows["L1 (network slimming)"]
    what = "real CIFAR-10 from the trained baseline" if real else "not the baseline on CIFAR-10"
    print(f"\npruned {pruned_at:.0f}s after Start ({what}):"
          f" polarization {polar_row['acc before pruning (%)']:.1f} -> {polar_row['acc after pruning (%)']:.1f} % at "
          f"{polar_row['FLOPs reduction (%)']:.1f} % FLOPs reduction; L1 {l1_row['acc before pruning (%)']:.1f} -> "
          f"{l1_row['acc after pruning (%)']:.1f} % at {l1_row['FLOPs reduction (%)']:.1f} %")
    assert polar_row["FLOPs reduction (%)"] > 0
    assert abs(polar_row["FLOPs reduction (%)"] - l1_row["FLOPs reduction (%)"]) < 5  # matched FLOPs
    if real:  # the paper's claim, as the default settings show it: polarization keeps its accuracy, L1's collapses
        assert polar_row["FLOPs reduction (%)"] >= 40
        drop = polar_row["acc before pruning (%)"] - polar_row["acc after pruning (%)"]
        assert drop <= POLAR_DROP_LIMIT_POINTS, f"polarization lost {drop:.1f} points at its valley"
        assert l1_row["acc after pruning (%)"] <= polar_row["acc after pruning (%)"] - L1_GAP_FLOOR_POINTS
    assert len(seen) >= 2  # the histograms did update while training
    # the explorer's promises with 2x headroom (the tight figures: bench/explorer_budgets.py)
    assert first_histogram <= FIRST_HISTOGRAM_LIMIT_S, f"first histogram {first_histogram:.1f}s after Start"
    assert refresh_per_s >= REFRESHES_PER_S_FLOOR, f"{refresh_per_s:.2f} refreshes/s while training"
    assert split_at is not None, "polarization's split was never shown while training"



def _prune_flow(page, url: str) -> str:
    """Start → live histograms → Pause → Prune → the FLOPs table's text."""
    page.goto(url, timeout=60_000)
    page.get_by_text("Trainer ready.").wait_for(timeout=120_000)
    page.get_by_role("button", name="▶ Start").click()
    page.get_by_text(re.compile(r"^step [1-9]\d* · split into a spike")).first.wait_for(timeout=120_000)
    page.get_by_role("button", name="⏸ Pause").click()
    page.get_by_role("button", name="✂ Prune").click(timeout=120_000)
    table = page.locator("table").filter(has_text="FLOPs reduction")
    table.wait_for(timeout=180_000)
    return table.inner_text()


@pytest.mark.parametrize("model", ["resnet56", "mobilenet_v2"])
def test_the_papers_model_and_mobilenet_train_and_prune_in_the_page(server: Server, browser, model: str) -> None:
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    text = _prune_flow(page, f"{server.url}/?model={model}&subset=20&batch_size=16&epochs=2")
    assert not page.get_by_text("Traceback").count() and not page.locator(".stException").count()
    page.close()
    assert "Polarization" in text and "L1 (network slimming)" in text


def _wait_for(condition, timeout: float, state=lambda: "") -> float:
    t0 = time.time()
    while not condition():
        assert time.time() - t0 < timeout, f"timed out after {timeout}s: {state()}"
        time.sleep(0.5)
    return time.time() - t0


def test_thirty_sessions_open_and_close_without_leaking(server: Server, browser) -> None:
    """Each visit prepares a trainer; closed tabs must give theirs back (ulimit -n 1024 on the server).

    Descriptors: our trainers hold one socket each while they live. Streamlit itself keeps every closed session
    (an asyncio loop: a socket pair and an epoll, 3 descriptors) for its 2-minute reconnect window, at most 128
    sessions, so the server's count is bounded by ~3 per recent session, not by trainers (measured: +2.6 per
    session, none of them ours)."""
    fds_before = 0
    for i in range(30):
        if i == 1:  # the server has served one session: what it holds for itself from now on
            _wait_for(lambda: server.trainers() <= 1, timeout=60)
            fds_before = server.open_fds()
        context = browser.new_context()
        page = context.new_page()
        page.goto(f"{server.url}/?dataset=synthetic&subset=20", timeout=60_000)
        try:
            page.get_by_role("button", name="▶ Start").wait_for(timeout=60_000)
        except Exception:  # seen once in a clean-clone CI (visit unknown, no server error): say what the page
            # showed, then do what a student would — reload — and require the page then
            print(f"\nvisit {i + 1}: no Start after 60 s; the page: {page.inner_text('body')[-1500:]!r}\n--- server "
                  f"log ---\n{server.log_tail(30)}")
            page.reload(timeout=60_000)
            page.get_by_role("button", name="▶ Start").wait_for(timeout=60_000)
        if i == 29:  # the 30th visit works: it trains
            page.get_by_text(re.compile(r"Trainer ready|The server is busy")).first.wait_for(timeout=60_000)
            page.get_by_role("button", name="⏭ Step one epoch").click()
            page.get_by_text(re.compile(r"paused · step [1-9]")).first.wait_for(timeout=120_000)
        context.close()
    peak = server.trainers()
    settle = _wait_for(lambda: server.trainers() <= 1 and server.open_fds() <= fds_before + 3 * 29 + 15, timeout=60,
                       state=lambda: f"{server.trainers()} trainers, {server.open_fds()} fds (was {fds_before})")
    print(f"\n30 sessions: {peak} trainer processes right after the last closed, back to {server.trainers()} "
          f"(the spare) and {server.open_fds()} open descriptors (was {fds_before}) {settle:.1f}s later")


def test_a_reload_during_training_reattaches_and_a_closed_tab_stops_training(server: Server, browser) -> None:
    context = browser.new_context()
    page = context.new_page()
    page.goto(f"{server.url}/?dataset=synthetic&subset=50&batch_size=16&epochs=100", timeout=60_000)
    page.get_by_text("Trainer ready.").wait_for(timeout=120_000)
    page.get_by_role("button", name="▶ Start").click()
    page.get_by_text(re.compile(r"running · step [1-9]")).first.wait_for(timeout=60_000)
    duel_id = re.search(r"duel=(\w+)", page.url).group(1)
    page.reload()
    page.get_by_text(re.compile(r"running · step [1-9]")).first.wait_for(timeout=60_000)
    assert re.search(r"duel=(\w+)", page.url).group(1) == duel_id  # the same duel, still training
    assert server.trainers() <= 3  # the reload made no second trainer (one running, spares)
    context.close()
    stopped = _wait_for(lambda: server.trainers() <= 1, timeout=60, state=lambda: f"{server.trainers()} trainers")
    print(f"\nclosed tab: its training stopped {stopped:.1f}s later")


def test_prune_appears_by_itself_once_a_slow_trainer_sends_its_weights_back(server: Server, browser) -> None:
    """A trainer reads Pause only after the step or epoch-end evaluation it is in; on a loaded machine that outlasts
    the page's waits (two students of the N = 30 class waited 300 s for a Prune button that never came). Here the
    trainers are held (SIGSTOP) through Pause and the page's waits, then let go: Prune must appear by itself."""
    page = browser.new_context().new_page()
    page.goto(f"{server.url}/?dataset=synthetic&subset=50&batch_size=16&epochs=100", timeout=60_000)
    page.get_by_text("Trainer ready.").wait_for(timeout=120_000)
    page.get_by_role("button", name="▶ Start").click()
    page.get_by_text(re.compile(r"running · step [1-9]")).first.wait_for(timeout=60_000)
    held = server.trainer_pids()
    for pid in held:
        os.kill(pid, signal.SIGSTOP)
    try:
        page.get_by_role("button", name="⏸ Pause").click()
        # Pause waits 30 s for the weights, the Prune section 5 s more: then the page says they are on their way
        page.get_by_text("the weights are moving").wait_for(timeout=120_000)
    finally:
        for pid in held:
            os.kill(pid, signal.SIGCONT)
    let_go = time.time()
    page.get_by_role("button", name="✂ Prune").wait_for(timeout=60_000)
    print(f"\nheld trainer let go: Prune shown {time.time() - let_go:.1f}s later, without a click")
    page.context.close()


def test_two_users_training_at_once_both_finish(server: Server, browser) -> None:
    pages = [browser.new_context().new_page() for _ in range(2)]
    try:
        for page in pages:
            page.goto(f"{server.url}/?dataset=synthetic&subset=20&batch_size=16&epochs=2", timeout=60_000)
            # as a user would: press Start once the page says the trainer is ready (or that the server is busy)
            page.get_by_text(re.compile(r"Trainer ready|The server is busy")).first.wait_for(timeout=120_000)
        for page in pages:
            page.get_by_role("button", name="▶ Start").click()
        for user, page in enumerate(pages, start=1):  # the URL's settings hold: 200 images / 16 x 2 epochs = 24 steps
            try:
                page.get_by_text(re.compile(r"^(queued|running|done) · step \d+/24 ")).first.wait_for(timeout=60_000)
            except Exception:
                pytest.fail(f"user {user} is not training the URL's settings: {[progress(p) for p in pages]}")
        deadline = time.time() + 240
        for user, page in enumerate(pages, start=1):
            try:
                page.get_by_text(re.compile(r"^done · ")).first.wait_for(timeout=max(1, deadline - time.time()) * 1000)
            except Exception:
                pytest.fail(f"user {user} never finished: {[progress(p) for p in pages]}; "
                            f"{server.trainers()} trainers; server log:\n{server.log_tail()}")
    finally:
        for page in pages:
            page.context.close()


def test_playground_redraws_soon_after_a_slider_move(server: Server, browser) -> None:
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    redraws, shown = playground_redraws(page, server.url)
    page.close()
    print(f"\nplayground: redrawn {', '.join(f'{r:.2f}' for r in redraws)} s after each slider move (first untimed)")
    assert "85%" in shown  # Theorem 3.2 at t = 1.4: 1/2 + t/4
    assert statistics.median(redraws) < 2.0  # 0.4 s measured; the 1 s promise is the benchmark's


def test_a_tradeoff_runs_in_a_worker_while_a_second_tab_stays_responsive(server: Server, browser) -> None:
    """The trade-off curve (ResNet-56: 22 evaluations and 20 prunings) runs outside the server — in the duel's
    paused trainer process, which hosts its own steps after training — with progress on its page; meanwhile another
    student's playground redraws as fast as on an idle server, and the server process itself stays nearly idle."""
    page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
    page.goto(f"{server.url}/?dataset=synthetic&model=resnet56&subset=20&batch_size=16&epochs=1&start=scratch",
              timeout=60_000)
    page.get_by_text(re.compile(r"Trainer ready|The server is busy")).first.wait_for(timeout=120_000)
    page.get_by_role("button", name="⏭ Step one epoch").click()
    page.get_by_text(re.compile(r"^(paused|done) · step [1-9]")).first.wait_for(timeout=180_000)
    page.get_by_text(re.compile(r"^Also the β-dropped curves")).click()  # the slower curve: outlasts the timing
    page.get_by_role("button", name="Trade-off curve (accuracy vs. FLOPs reduction)").click()
    page.get_by_text(re.compile(r"^Trade-off curve: ")).first.wait_for(timeout=60_000)  # its progress bar
    workers = server.trainers()
    server_cpu = _cpu_seconds(server.proc.pid)
    other = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
    redraws, _ = playground_redraws(other, server.url)
    still_running = page.get_by_text(re.compile(r"^Trade-off curve: ")).count() > 0
    server_cpu = _cpu_seconds(server.proc.pid) - server_cpu
    page.get_by_text(re.compile(r"^Each point prunes to a FLOPs target")).wait_for(timeout=300_000)
    assert not page.get_by_text("Traceback").count() and not page.locator(".stException").count()
    other.context.close()
    page.context.close()
    print(f"\nwhile the trade-off ran outside the server ({workers} trainer/worker processes): playground redrawn "
          f"{', '.join(f'{r:.2f}' for r in redraws)} s after each move; the server used {server_cpu:.1f} CPU-s")
    assert still_running, "the trade-off finished before the second tab was timed: make it longer"
    assert statistics.median(redraws) < 2.0  # 0.3 s on an idle server


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
