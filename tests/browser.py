"""Driving the explorer in a real browser: a ``streamlit run app/serve.py`` server on a free port and the page reads
the browser tests and the budget benchmark (``bench/explorer_budgets.py``) share.

The tests keep wall-clock limits with 2x headroom over what a 2-core CI machine measures; the tight targets are the
benchmark's, as medians.
"""
from __future__ import annotations

import ctypes
import os
import re
import resource
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
# without the background-networking flags Chromium keeps trying outside addresses a closed network refuses
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]
OFFLINE = {"http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9",  # a closed port: refused at once
           "HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _server_limits() -> None:
    """In the server's process before it starts: ``ulimit -n 1024``, and a SIGTERM when the process that started it
    (its thread: tests and benchmarks start servers from their main thread) dies, on Linux: a benchmark or test
    killed by its timeout leaves no server behind to load the machine."""
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))
    if sys.platform == "linux":
        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class Server:
    """``streamlit run app/serve.py`` on a free port, under ``ulimit -n 1024`` (a common default): what a class
    of users would reach."""

    def __init__(self, runs: Path, cwd: Path = REPO, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "POLAR_RUNS": str(runs), **(env or {})}
        runs.mkdir(parents=True, exist_ok=True)
        self.log = runs / "server.log"  # the server's and its trainers' output, quoted when a test fails
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "streamlit", "run", str(REPO / "app" / "serve.py"), "--server.port",
                 str(self.port), "--server.headless", "true"], cwd=cwd, env=env, stdout=log,
                stderr=subprocess.STDOUT, preexec_fn=_server_limits)
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.3)

    def health(self, timeout: float = 10.0) -> float:
        """Seconds the server takes to answer its health check. Asked directly, never through a proxy the
        environment names (a CI machine's package-registry proxy need not reach this machine's loopback)."""
        direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        t0 = time.time()
        with direct.open(f"{self.url}/_stcore/health", timeout=timeout) as response:
            response.read()
        return time.time() - t0

    def open_fds(self) -> int:
        return len(os.listdir(f"/proc/{self.proc.pid}/fd"))

    def trainer_pids(self) -> list[int]:
        """Trainer processes this server started (prepared, running or spare)."""
        pids = []
        for pid in os.listdir("/proc"):
            try:
                if pid.isdigit() and b"polar.duel_process" in Path(f"/proc/{pid}/cmdline").read_bytes() \
                        and int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1]) == self.proc.pid:
                    pids.append(int(pid))
            except (OSError, ValueError, IndexError):
                pass
        return pids

    def trainers(self) -> int:
        return len(self.trainer_pids())

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        """Stop the server and wait (up to 30 s) until its trainers have exited too: a trainer still importing torch
        when its server stops only notices at its first poll, and the next measurement must not pay for it."""
        trainers = self.trainer_pids()
        self.proc.terminate()
        self.proc.wait(timeout=30)
        deadline = time.time() + 30
        while any(Path(f"/proc/{pid}").exists() for pid in trainers) and time.time() < deadline:
            time.sleep(0.1)


def cold_start(browser, runs: Path, offline: bool) -> tuple[float, bool]:
    """Seconds from launching a server to an enabled Start button in a new page, and whether the page showed the
    synthetic fallback. ``offline``: a folder without data/ and every download refused at once."""
    t0 = time.time()
    server = Server(runs, cwd=runs if offline else REPO, env=OFFLINE if offline else None)
    try:
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(server.url, timeout=60_000)
        start = page.get_by_role("button", name="▶ Start")
        start.wait_for(timeout=60_000)
        while not start.is_enabled() and time.time() - t0 < 60:
            page.wait_for_timeout(50)
        seconds = time.time() - t0
        fallback = page.get_by_text(re.compile(r"cifar10 is not available here")).count() > 0
        page.close()
    finally:
        server.stop()
    return seconds, fallback


# where Streamlit puts text: a caption, or a message's or a progress bar's markdown
TEXT = "[data-testid='stCaptionContainer'], [data-testid='stMarkdownContainer']"
# A reading the page takes itself: a MutationObserver notes, on the page's own clock, the first change after the
# user's input that makes the condition true. Polling the page from here every 20 ms instead (a text query over the
# whole DOM each time) cost Chromium about a quarter of a core, taken from the worker being timed: one trade-off
# read 10.3-12.9 s that way and 8.5 s when polled every 200 ms (bench/explorer_budgets.py, one run each, same tree).
_WATCH = """([selector, pattern, sameInput]) => {
  const first = () => document.querySelector(selector);
  const before = first() === null ? null : first().textContent;
  const re = pattern === null ? null : new RegExp(pattern);
  const hit = () => re === null
    ? first() !== null && first().textContent !== before
    : Array.from(document.querySelectorAll(selector)).some(e => re.test(e.textContent.trim()));
  // sameInput: a later condition of the input the previous watch timed (its start is kept, its flag replaced)
  const watch = {start: sameInput ? window.__polarWatch.start : null, seen: null};
  window.__polarWatch = watch;
  const begin = () => { if (watch.start === null) watch.start = performance.now(); };
  if (!sameInput)
    for (const type of ["pointerdown", "keydown"]) document.addEventListener(type, begin, {capture: true, once: true});
  else if (hit()) { watch.seen = performance.now(); return; }
  const observer = new MutationObserver(() => {
    if (watch.start !== null && hit()) { watch.seen = performance.now(); observer.disconnect(); }
  });
  observer.observe(document.body, {subtree: true, childList: true, characterData: true});
}"""


def time_in_page(page, action: Callable[[], None], selector: str, pattern: str | None = None,
                 timeout_s: float = 300) -> float:
    """Seconds from the input ``action`` sends (its pointerdown or keydown, as the page receives it) until an element
    matching the CSS ``selector`` has text matching ``pattern`` (a JavaScript regular expression, tested on the
    trimmed text), or with ``pattern=None`` until the first such element's text differs from what it was before.
    Measured in the page (see ``_WATCH``); this side only checks a flag four times a second."""
    page.evaluate(_WATCH, [selector, pattern, False])
    action()
    return _seen(page, timeout_s)


def _seen(page, timeout_s: float) -> float:
    page.wait_for_function("() => window.__polarWatch.seen !== null", timeout=timeout_s * 1000, polling=250)
    return page.evaluate("() => (window.__polarWatch.seen - window.__polarWatch.start) / 1000")


def later_in_page(page, selector: str, pattern: str, timeout_s: float = 300) -> float:
    """After :func:`time_in_page`: seconds from that same input until an element matching ``selector`` has text
    matching ``pattern`` (a second, later condition of one click, e.g. a table complete after its first part)."""
    page.evaluate(_WATCH, [selector, pattern, True])
    return _seen(page, timeout_s)


def status(page) -> str:
    """The caption under the histograms: step, and whether each method's γ show the split."""
    caption = page.get_by_text(re.compile(r"split into a spike at 0 and a mode away: polarization"))
    return caption.first.inner_text() if caption.count() else ""


def progress(page) -> str:
    """The page's progress line (state · step · epoch), or what the page shows instead."""
    line = page.get_by_text(re.compile(r"^(idle|queued|running|paused|done|stopped|error) · step"))
    return line.first.inner_text() if line.count() else "no progress line"


def table_rows(table) -> dict[str, dict[str, float]]:
    """The pruning table's cells: row name -> column -> number (NaN for '–')."""
    header = [h.inner_text().strip() for h in table.locator("thead th").all()][1:]
    rows = {}
    for tr in table.locator("tbody tr").all():
        name = tr.locator("th").first.inner_text().strip()
        cells = [td.inner_text().strip() for td in tr.locator("td").all()]
        rows[name] = {h: float(c) if c not in ("–", "") else float("nan") for h, c in zip(header, cells)}
    return rows


def playground_redraws(page, url: str, moves: int = 4) -> tuple[list[float], str]:
    """Open the playground, press → on its first slider ``moves`` times, and time each redraw of the Theorem 3.2
    caption (the first move after the page loads is not counted). Returns the times and the caption shown last."""
    page.goto(f"{url}/playground", timeout=60_000)
    caption = page.get_by_text(re.compile(r"^Theorem 3\.2: for the regularizer alone")).first
    caption.wait_for(timeout=60_000)
    thumb = page.locator("section.main, [data-testid='stMain']").get_by_role("slider").first
    thumb.focus()
    redraws = []
    for _ in range(moves):  # t from 1.2 by 0.05 per key press
        before = caption.inner_text()
        t0 = time.time()
        page.keyboard.press("ArrowRight")
        page.wait_for_function("([el, text]) => el.innerText !== text", arg=[caption.element_handle(), before],
                               timeout=10_000)
        redraws.append(time.time() - t0)
    return redraws[1:], caption.inner_text()
