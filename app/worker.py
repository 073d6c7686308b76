"""Background training for the explorer, with no Streamlit in it.

A child process trains the polarization model and the L1 model in lockstep — the same initial weights, the same
data order, one step of each in turn — and sends small snapshots (binned γ counts, losses, per-epoch metrics) back
through a queue; a listener thread in the app folds them into the latest ``Snapshot``, which the page polls from a
fragment. Training runs in its own process, at a lower CPU priority, because in the app's process its Python loop
and its threads starved Streamlit's server: the page redrew once every ~10 s on a 2-core CPU. When training parks
(pause, step done, finished, stopped) the child sends both models' weights, so the page prunes what was trained.
Run directories are written by ``polar.train`` itself (atomically, every epoch), so stopping or reloading never
corrupts a saved run.
"""
from __future__ import annotations

import copy
import io
import os
import queue
import threading
import time
from dataclasses import dataclass, field
from multiprocessing import forkserver
from pathlib import Path

import torch
import torch.multiprocessing as mp  # the standard library's, with torch's tensor sharing registered

import polar
from polar import count_modes, gamma_histogram, is_polarized

METHODS = ("polar", "l1")
BINS = 50  # histogram bins over [0, upper]: what the charts receive instead of raw γ
LAYER_BINS = 20
TRAINER_NICENESS = 10  # the server and the browser go first; training takes the CPU time they leave
IDLE_EXIT_S = 15 * 60  # a prepared trainer nobody started (a closed tab) leaves after this long


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
    ready: bool = False  # the trainer process has its models built and its kernels warmed up
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
    """Trains ``cfgs['polar']`` and ``cfgs['l1']`` from one initial model in a child process.

    ``models`` always hold the weights of the last time training parked; read them only while ``idle()``.
    """

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
        self._parked = threading.Event()  # set while the child waits for a command, its weights copied back
        self._parked.set()
        self._process: mp.Process | None = None
        self._commands: mp.Queue | None = None
        self._sent = 0  # commands sent; a "parked" report counts only once the child has read them all
        self._snapshot = Snapshot(total_steps=cfgs["polar"].epochs * self.steps_per_epoch)
        hist = {m: binned(polar.gamma_snapshot(model), self.upper) for m, model in self.models.items()}
        self._set(hist=hist, published_at=time.time())

    # ---------------------------------------------------------------- controls (called from the page)

    def prepare(self) -> None:
        """Start the child now, before Start is pressed: it builds the models and warms the conv kernels up, so
        that the first step follows Start within a second."""
        with self._lock:
            if self._process is not None and self._process.is_alive():
                return
            ctx = process_context()
            self._snapshot.ready = False
            self._commands, updates = ctx.Queue(), ctx.Queue()
            self._process = ctx.Process(target=_train_duel, name="polar-duel", daemon=True, args=(
                self.cfgs, self.data, self.run_root, {m: model.state_dict() for m, model in self.models.items()},
                self._commands, updates, self._publish_every))
            self._process.start()
        threading.Thread(target=self._listen, args=(self._process, updates), name="polar-duel-listener",
                         daemon=True).start()

    def start(self) -> None:
        """Start, or resume after a pause."""
        self._command(("go", None))

    def step_epoch(self) -> None:
        """Train until the next epoch ends, then pause."""
        self._command(("go", self.snapshot().epoch + 1))

    def pause(self, timeout: float = 30.0) -> None:
        """Pause and wait until the child has finished its current step and sent its weights back."""
        if self._process is None or self.snapshot().state != "running":
            return
        self._set(state="paused")
        self._send(("pause", None))
        self._parked.wait(timeout)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop for good; the run directories keep their last complete epoch."""
        if self._process is not None and self._process.is_alive():
            self._send(("stop", None))
            self._process.join(timeout)
            if self._process.is_alive():
                self._process.terminate()
        if self.snapshot().state not in ("done", "error"):
            self._set(state="stopped")

    def snapshot(self) -> Snapshot:
        with self._lock:
            return copy.copy(self._snapshot)

    def idle(self) -> bool:
        """True when the models are not being trained right now and hold the latest weights (safe to prune)."""
        if self.snapshot().state == "running":
            return False
        return self._parked.wait(5.0)

    # ---------------------------------------------------------------- the app's side of the child

    def _command(self, command: tuple[str, int | None]) -> None:
        if self.snapshot().state in ("done", "stopped", "error"):
            return
        self.prepare()
        self._set(state="running")
        self._send(command)

    def _send(self, command: tuple[str, int | None]) -> None:
        assert self._commands is not None
        with self._lock:
            self._sent += 1
            self._parked.clear()
        self._commands.put(command)

    def _set(self, **changes) -> None:
        with self._lock:
            for k, v in changes.items():
                setattr(self._snapshot, k, v)

    def _listen(self, process: mp.Process, updates: mp.Queue) -> None:
        """Folds the child's messages into the snapshot until the child is gone."""
        while True:
            try:
                kind, payload = updates.get(timeout=1.0)
            except queue.Empty:
                if not process.is_alive():  # idle for too long (prepare() makes a new one), or died
                    if self.snapshot().state in ("running", "paused"):
                        self._set(state="error", message=f"the training process exited ({process.exitcode})")
                    self._parked.set()
                    return
                continue
            if kind == "ready":
                self._set(ready=True)
            elif kind == "step":
                with self._lock:
                    s = self._snapshot
                    s.step, s.hist, s.published_at = payload["step"], payload["hist"], time.time()
                    if "losses" in payload:  # sent once both models took the step
                        s.steps = s.steps + [{"step": payload["step"], **payload["losses"]}]
            elif kind == "epoch":
                with self._lock:
                    s = self._snapshot
                    s.epochs = s.epochs + [payload["row"]]
                    s.epoch = max(s.epoch, payload["row"]["epoch"])
                    s.seconds_per_epoch = payload["seconds"]
                    s.hist = {**s.hist, payload["row"]["method"]: payload["hist"]}
                    s.published_at = time.time()
            elif kind == "parked":  # the child rests: its weights, its state, and how many commands it has read
                final = payload["state"] in ("done", "stopped", "error")
                with self._lock:
                    if payload["read"] < self._sent and not final:
                        continue  # a newer command (e.g. Start right after a step) is on its way: not parked
                    weights = torch.load(io.BytesIO(payload["weights"]), map_location="cpu", weights_only=True)
                    for m, state in weights.items():
                        self.models[m].load_state_dict(state)
                    self._snapshot.state, self._snapshot.message = payload["state"], payload["message"]
                    self._parked.set()
                if final:
                    return


# ---------------------------------------------------------------- the child process

def process_context() -> mp.context.BaseContext:
    """Where trainers are started: a fork server that has imported torch, polar and this module once, so a new
    trainer takes its first step within ~0.5 s instead of the ~5 s a fresh interpreter needs for its imports
    (and forking the app's own process, which runs threads, is unsafe). Spawn where there is no fork server."""
    if "forkserver" not in mp.get_all_start_methods():
        return mp.get_context("spawn")
    ctx = mp.get_context("forkserver")
    # torch._dynamo: the first optimizer a process builds imports it, another 2.5 s on a 2-core CPU
    ctx.set_forkserver_preload(["torch", "torch._dynamo", "polar", __name__])
    return ctx


def warm_up() -> None:
    """Start the fork server now (it imports torch in the background), so that the first Start is fast too."""
    if "forkserver" in mp.get_all_start_methods():
        process_context()
        threading.Thread(target=forkserver.ensure_running, name="polar-forkserver", daemon=True).start()


def _train_duel(cfgs: dict[str, polar.TrainConfig], data: polar.DeviceDataset, run_root: Path,
                weights: dict[str, dict], commands: mp.Queue, updates: mp.Queue, publish_every: float) -> None:
    """Trains both models in lockstep; obeys ``commands``; reports on ``updates``."""
    try:
        os.nice(TRAINER_NICENESS)
    except OSError:  # not permitted on some systems: train at normal priority
        pass
    # one core fewer than the machine has: OpenMP threads that keep being preempted by the page stall each other
    # at every barrier (on 2 cores, 2 threads trained at a third of the speed of 1 while the browser drew)
    torch.set_num_threads(max(1, len(os.sched_getaffinity(0)) - 1) if hasattr(os, "sched_getaffinity")
                          else max(1, (os.cpu_count() or 2) - 1))
    models = {}
    for m in METHODS:
        models[m] = polar.initial_model(cfgs[m], data.num_classes)
        models[m].load_state_dict(weights[m])
    upper = cfgs["polar"].upper

    read = 0  # commands read so far

    def park(state: str, message: str = "") -> None:
        weights = io.BytesIO()  # plain bytes: shared-memory tensors would not outlive this process
        torch.save({m: model.state_dict() for m, model in models.items()}, weights)
        updates.put(("parked", {"state": state, "message": message, "read": read, "weights": weights.getvalue()}))

    def hist_now() -> dict[str, dict]:
        return {m: binned(polar.gamma_snapshot(model), upper) for m, model in models.items()}

    _warm_up(models["polar"], data, cfgs["polar"])
    updates.put(("ready", None))
    gens = {m: polar.train(cfgs[m], run_dir=run_root / m, model=models[m], data=data) for m in METHODS}
    running, pause_after, last_publish, losses, step = False, None, 0.0, {}, 0
    try:
        while True:
            try:
                kind, arg = commands.get(block=not running, timeout=None if read else IDLE_EXIT_S)
            except queue.Empty:
                if not read:
                    return  # prepared, never started: nothing to report
                kind, arg = None, None
            read += kind is not None
            if kind == "stop":
                park("stopped")
                return
            if kind == "pause":
                running = False
                park("paused")
                continue
            if kind == "go":
                running, pause_after = True, arg
            finished_epoch = None
            for m in METHODS:
                event = next(gens[m], None)
                if event is None:
                    park("done")
                    return
                if isinstance(event, polar.StepEvent):
                    losses[f"loss_{m}"] = float(event.loss)  # CPU-GPU sync, once per step for the curves
                    step = event.step
                    if m != METHODS[-1] and time.time() - last_publish >= publish_every:
                        # between the two models' steps too: each histogram is redrawn as soon as its model moved
                        updates.put(("step", {"step": step, "hist": hist_now()}))
                        last_publish = time.time()
                else:
                    finished_epoch = event.epoch
                    hist = binned(event.gammas, upper)
                    updates.put(("epoch", {"row": {"method": m, **event.metrics(), **hist}, "hist": hist,
                                           "seconds": event.seconds}))
            if finished_epoch is None and time.time() - last_publish >= publish_every:
                updates.put(("step", {"step": step, "losses": dict(losses), "hist": hist_now()}))
                last_publish = time.time()
            if finished_epoch is not None and pause_after == finished_epoch:
                running, pause_after = False, None
                park("paused")
    except Exception as err:  # shown in the page, never as a traceback
        park("error", f"{type(err).__name__}: {err}")
    finally:
        for gen in gens.values():
            gen.close()


def _warm_up(model: torch.nn.Module, data: polar.DeviceDataset, cfg: polar.TrainConfig) -> None:
    """One throwaway forward and backward pass on a copy, in the training's memory format: oneDNN builds its
    kernels for these shapes now rather than in the first step after Start (~1 s on a 2-core CPU)."""
    spare = copy.deepcopy(model).train()
    x = data.test_x[: cfg.batch_size]
    if cfg.channels_last and x.device.type in ("cpu", "cuda"):
        spare, x = spare.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    spare(x).sum().backward()
