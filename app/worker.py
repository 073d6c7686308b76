"""Background training for the explorer, with no Streamlit in it.

One thread trains the polarization model and the L1 model in lockstep — the same initial weights, the same data
order, one step of each in turn — and publishes small snapshots (binned γ counts, curves) under a lock. The page
polls the latest snapshot from a fragment; the thread never touches Streamlit. Run directories are written by
``polar.train`` itself (atomically, every epoch), so stopping or reloading never corrupts a saved run.
"""
from __future__ import annotations

import copy
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

import polar
from polar import count_modes, gamma_histogram, is_polarized

METHODS = ("polar", "l1")
BINS = 50  # histogram bins over [0, upper]: what the charts receive instead of raw γ
LAYER_BINS = 20


def binned(gammas: dict[str, torch.Tensor], upper: float) -> dict:
    """What the page draws for one model: overall and per-layer counts, the number of modes, and whether γ show
    the split (a spike at 0, a valley, a mode away)."""
    counts = gamma_histogram(gammas, BINS, upper)[0]
    return {"counts": counts.tolist(),
            "layers": {name: gamma_histogram(g, LAYER_BINS, upper)[0].tolist() for name, g in gammas.items()},
            "modes": count_modes(gamma_histogram(gammas, 20, upper)[0]), "split": is_polarized(gammas, upper)}


@dataclass
class Snapshot:
    """The latest published state of a duel; plain lists and numbers only."""

    state: str = "idle"  # idle | running | paused | done | stopped | error
    step: int = 0
    total_steps: int = 0
    epoch: int = 0
    seconds_per_epoch: float = 0.0
    published_at: float = 0.0
    hist: dict[str, dict] = field(default_factory=dict)  # method -> binned(...)
    steps: list[dict] = field(default_factory=list)  # per published step: step, method losses
    epochs: list[dict] = field(default_factory=list)  # per epoch and method: metrics + binned γ (for replay)
    message: str = ""


class DuelTrainer:
    """Trains ``cfgs['polar']`` and ``cfgs['l1']`` from one initial model in a background thread."""

    def __init__(self, cfgs: dict[str, polar.TrainConfig], data: polar.DeviceDataset, run_root: Path,
                 publish_every: float = 0.25) -> None:
        self.cfgs, self.data, self.run_root = cfgs, data, Path(run_root)
        self.upper = cfgs["polar"].upper
        first = polar.initial_model(cfgs["polar"], data.num_classes)
        self.models = {"polar": first, "l1": copy.deepcopy(first)}  # the same initial weights
        self.steps_per_epoch = data.steps_per_epoch(cfgs["polar"].batch_size)
        if self.steps_per_epoch < 1:
            raise ValueError(f"{data.num_train} training images make no batch of {cfgs['polar'].batch_size}: "
                             "raise the images per class or lower the batch size")
        self._publish_every = publish_every
        self._lock = threading.Lock()
        self._go = threading.Event()
        self._parked = threading.Event()  # set while the thread waits for _go
        self._stop = threading.Event()
        self._pause_after_epoch: int | None = None
        self._thread: threading.Thread | None = None
        self._snapshot = Snapshot(total_steps=cfgs["polar"].epochs * self.steps_per_epoch)
        self._publish_initial()

    # ---------------------------------------------------------------- controls (called from the page)

    def start(self) -> None:
        """Start, or resume after a pause."""
        self._pause_after_epoch = None
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="polar-duel", daemon=True)
            self._set(state="running")
            self._thread.start()
        elif self.snapshot().state == "paused":
            self._set(state="running")
        self._go.set()

    def pause(self, timeout: float = 30.0) -> None:
        """Pause and wait until the thread has finished its current step (then the weights stand still)."""
        self._request_pause()
        if self._thread is not None and self._thread.is_alive():
            self._parked.wait(timeout)

    def _request_pause(self) -> None:
        self._go.clear()
        if self.snapshot().state == "running":
            self._set(state="paused")

    def step_epoch(self) -> None:
        """Train until the next epoch ends, then pause."""
        self._pause_after_epoch = self.snapshot().epoch + 1
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="polar-duel", daemon=True)
            self._thread.start()
        self._set(state="running")
        self._go.set()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop for good; the run directories keep their last complete epoch."""
        self._stop.set()
        self._go.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if self.snapshot().state not in ("done", "error"):
            self._set(state="stopped")

    def snapshot(self) -> Snapshot:
        with self._lock:
            return copy.copy(self._snapshot)

    def idle(self) -> bool:
        """True when the models are not being trained right now (safe to prune)."""
        state = self.snapshot().state
        if state == "paused":  # the thread parks right after its current step
            return self._parked.wait(5.0)
        return state in ("idle", "done", "stopped", "error")

    # ---------------------------------------------------------------- the thread

    def _set(self, **changes) -> None:
        with self._lock:
            for k, v in changes.items():
                setattr(self._snapshot, k, v)

    def _publish_initial(self) -> None:
        hist = {m: binned(polar.gamma_snapshot(model), self.upper) for m, model in self.models.items()}
        self._set(hist=hist, published_at=time.time())

    def _run(self) -> None:
        try:
            gens = {m: polar.train(self.cfgs[m], run_dir=self.run_root / m, model=self.models[m], data=self.data)
                    for m in METHODS}
            last_publish = 0.0
            losses: dict[str, float] = {}
            while not self._stop.is_set():
                if not self._go.is_set():
                    self._parked.set()
                    self._go.wait()
                    self._parked.clear()
                if self._stop.is_set():
                    break
                finished_epoch = None
                for m in METHODS:
                    event = next(gens[m], None)
                    if event is None:
                        self._set(state="done")
                        return
                    if isinstance(event, polar.StepEvent):
                        losses[m] = float(event.loss)  # CPU-GPU sync, once per step for the curves
                        step = event.step
                    else:
                        finished_epoch = event.epoch
                        self._record_epoch(m, event)
                if finished_epoch is None and time.time() - last_publish >= self._publish_every:
                    self._publish_step(step, losses)
                    last_publish = time.time()
                time.sleep(0)  # let the page's thread take the GIL between steps
                if finished_epoch is not None and self._pause_after_epoch == finished_epoch:
                    self._pause_after_epoch = None
                    self._request_pause()
            for gen in gens.values():
                gen.close()
        except Exception as err:  # shown in the page, never as a traceback
            self._set(state="error", message=f"{type(err).__name__}: {err}")

    def _publish_step(self, step: int, losses: dict[str, float]) -> None:
        hist = {m: binned(polar.gamma_snapshot(model), self.upper) for m, model in self.models.items()}
        with self._lock:
            s = self._snapshot
            s.step, s.hist, s.published_at = step, hist, time.time()
            s.steps = s.steps + [{"step": step, **{f"loss_{m}": v for m, v in losses.items()}}]

    def _record_epoch(self, method: str, event: polar.EpochEvent) -> None:
        row = {"method": method, **event.metrics(), **binned(event.gammas, self.upper)}
        with self._lock:
            s = self._snapshot
            s.epochs = s.epochs + [row]
            s.epoch = max(s.epoch, event.epoch)
            s.seconds_per_epoch = event.seconds
            s.hist = {**s.hist, method: binned(event.gammas, self.upper)}
            s.published_at = time.time()
