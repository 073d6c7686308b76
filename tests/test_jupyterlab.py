"""Notebook 02 opened in JupyterLab in a real browser: its live FigureWidget histogram renders and updates.

The suite also runs every notebook headless (tests/test_notebooks.py); this checks what a student sees: JupyterLab
(pinned in requirements.txt) serving a copy of notebook 02, Chromium running all cells, the γ histogram drawn by the
widget's front end and its bars moving as the duel trains.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists(),
                       reason="Debian's chromium is not installed (.ci/run installs it with apt-get)"),
]

# JupyterLab 4 detaches cells scrolled out of view ("windowing"): keep every output in the page, and no news pop-up
SETTINGS = {"@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
            "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false",
                                                                                 "checkForUpdates": False}}
BARS = """() => [...document.querySelectorAll('.jp-OutputArea .js-plotly-plot')].map(
    gd => (gd.data || []).map(trace => Array.from(trace.y || [])))"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def lab(tmp_path: Path):
    """``jupyter lab`` on a free port serving a copy of notebook 02 (its autosave must not touch the repo's)."""
    root = tmp_path / "lab"
    root.mkdir()
    shutil.copy(REPO / "notebooks" / "02_train_prune_finetune.ipynb", root / "02.ipynb")
    settings = tmp_path / "settings"
    for plugin, values in SETTINGS.items():
        (settings / plugin).parent.mkdir(parents=True, exist_ok=True)
        (settings / plugin).write_text(json.dumps(values))
    port = _free_port()
    env = {**os.environ, "POLAR_NOTEBOOK_FAST": "1", "POLAR_RUNS": str(tmp_path / "runs"),
           "JUPYTER_CONFIG_DIR": str(tmp_path / "config"), "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "ws"),
           "JUPYTERLAB_SETTINGS_DIR": str(settings)}
    log = open(tmp_path / "lab.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}",
                             "--IdentityProvider.token=", "--ServerApp.password=", f"--ServerApp.root_dir={root}",
                             "--ServerApp.ip=127.0.0.1", "--allow-root", "--LabApp.extension_manager=readonly"],
                            cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.3)
    yield f"http://127.0.0.1:{port}", tmp_path / "lab.log"
    proc.terminate()
    proc.wait(timeout=30)
    log.close()


def test_notebook_02_live_histogram_renders_and_updates_in_jupyterlab(lab) -> None:
    playwright = pytest.importorskip("playwright.sync_api")
    url, log = lab
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"{url}/lab/tree/02.ipynb", timeout=60_000)
            page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
            page.get_by_text("Python 3 (ipykernel) | Idle").wait_for(timeout=90_000)  # the kernel is connected
            for _ in range(3):  # a click while the kernel session still settles can be dropped: try again
                page.get_by_role("menuitem", name="Run", exact=True).click()
                page.get_by_text("Run All Cells", exact=True).click()
                try:
                    page.wait_for_selector(".jp-InputPrompt:has-text('[*]'), .jp-InputPrompt:has-text('[1]')",
                                           timeout=15_000)
                    break
                except playwright.TimeoutError:
                    continue
            page.wait_for_function(f"() => ({BARS})().length > 0 && ({BARS})()[0].length == 2", timeout=120_000)
            assert sum(page.evaluate(BARS)[0][0]) > 0, "the widget drew no bars"
            page.wait_for_selector(".jp-OutputArea-output:has-text('of the FLOPs removed')", timeout=240_000)
            polar_bars, l1_bars = page.evaluate(BARS)[0]
            # every γ starts at 0.5 (one bar); after the duel's steps the browser's bars are spread out: the widget
            # received the updates, not only its first state
            assert sum(1 for c in polar_bars if c) > 1 and sum(1 for c in l1_bars if c) > 1, (polar_bars, l1_bars)
            assert sum(polar_bars) == sum(l1_bars)  # the same channels, binned
            page.locator(".jp-OutputArea .js-plotly-plot").first.scroll_into_view_if_needed()
            page.screenshot(path=str(log.parent / "jupyterlab.png"))
        except Exception:
            page.screenshot(path=str(log.parent / "failed.png"))  # what the browser showed, beside lab.log
            print(log.read_text(errors="replace")[-3000:])
            raise
        finally:
            browser.close()
