"""The explorer's trainer processes: one server-wide pool, one handle per duel, no Streamlit in here.

Each duel trains in its own ``python -m polar.duel_process`` child (see that module for why not fork), which gets
one pickled job and reports snapshots over a socket. The pool, shared by every browser session of one server:
- keeps one spare child that has already imported torch, so a page gets a trainer that is ready within ~1 s;
- lets at most ``max_running`` duels train at once; the others wait in a queue and the page says how many are
  ahead ("busy");
- caps all trainer processes (prepared or running) at ``max_processes``: a page that cannot prepare one prepares it
  when Start is pressed instead;
- stops the trainers of sessions that have gone (a closed tab) once they have been gone for ``orphan_grace_s``;
  within that time a reload of the same URL (``?duel=ID``) adopts its duel again (:meth:`TrainerPool.adopt`);
- keeps at most ``max_paused`` trainers of paused duels alive: beyond that, the one paused longest hands its
  training state (``polar.TrainState``: momentum, position in the epoch, metrics) to the server and exits, and its
  next Start continues it exactly in a new trainer (:meth:`DuelHandle.evict`). A paused trainer holds ~0.6 GB (a
  ResNet-20 and the demo's data); a class of 30 that kept every one of them left 0.9 GB of 24 GiB free.
Run directories are written by ``polar.train`` itself, atomically, so stopping at any moment loses nothing saved.

The steps after training (prune, fine-tune, trade-off, export, latency: ``polar.after_training``) run the same way,
as a :class:`TaskHandle` of the duel: it takes a slot like a training duel (or waits in the same queue), reports its
progress and its result, and a duel that stops (its tab gone) cancels its tasks. A paused duel's trainer runs its
prune, fine-tune and trade-off itself (``HOSTED_TASKS``: its data is loaded and its kernels are built, which a fresh
worker would spend seconds on); otherwise, and for export and latency, a spare child is sent the task instead of a
job and exits after it. Cancelling stops a worker, or tells the trainer to abandon its task. Resuming training
cancels the trainer's task (the page hides the steps after training while the weights move). A task runs with
all the cores a slot stands for while its page is the only one open, and with a trainer's threads while several are
(:meth:`TrainerPool.task_threads`). The server itself never runs a forward pass over a dataset.
"""
from __future__ import annotations

import copy
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path

import torch

import polar
from polar.after_training import HOSTED_TASKS
from polar.duel_process import NICENESS, make_job
from polar.machine import OthersLoad, memory_gib
from polar.saving import read_weights

REPO = Path(__file__).resolve().parents[1]
STATE_LOG_S = 5.0  # how often the pool writes its state to $POLAR_POOL_LOG, when set
NICE = shutil.which("nice")  # coreutils' nice, to start trainers at low priority (None: they nice themselves)


@dataclass
class Snapshot:
    """The latest published state of a duel; plain lists and numbers only."""

    state: str = "idle"  # idle | queued | running | paused | done | stopped | error
    ready: bool = False  # a trainer process has the models built and its kernels warmed up
    step: int = 0
    total_steps: int = 0
    epoch: int = 0
    seconds_per_epoch: float = 0.0
    published_at: float = 0.0
    queue_position: int = 0  # while queued: duels ahead of this one
    hist: dict[str, dict] = field(default_factory=dict)  # method -> polar.gamma_summary(...)
    steps: list[dict] = field(default_factory=list)  # per published step: step, method losses
    timeline: list[dict] = field(default_factory=list)  # γ over time: step, each method's counts and per-layer
    # share near 0 ("near_zero"), thinned
    epochs: list[dict] = field(default_factory=list)  # per epoch and method: metrics + γ summary (for replay)
    accuracy: dict = field(default_factory=dict)  # after a pause: {"step", "acc": {method: test accuracy}}
    start_acc: float | None = None  # the start's test accuracy (measured after the first epoch)
    message: str = ""

    def known_accuracies(self) -> dict[str, float]:
        """Each network's test accuracy at its current weights where the trainer measured it (an epoch's end or
        a pause), so pruning need not evaluate the unpruned networks again."""
        at_epoch = {e["method"]: e["test_acc"] for e in self.epochs if e["step"] == self.step}
        return {**at_epoch, **(self.accuracy.get("acc", {}) if self.accuracy.get("step") == self.step else {})}


@dataclass
class TaskSnapshot:
    """The latest state of one task; ``result`` holds plain data and bytes once it is done."""

    kind: str
    state: str = "queued"  # queued | running | done | error | cancelled
    share: float = 0.0  # of the work done, for a progress bar
    text: str = "waiting for a free worker"
    queue_position: int = 0
    result: dict | None = None
    partial: dict | None = None  # a first part of the result, shown while the rest is measured (Prune's table)
    message: str = ""
    requested_at: float = field(default_factory=time.time)
    first_progress_at: float = 0.0
    progress_at: float = 0.0  # the latest progress report
    finished_at: float = 0.0


class _Child:
    """One ``python -m polar.duel_process`` process and our end of its socket."""

    def __init__(self) -> None:
        ours, theirs = socket.socketpair()
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
        # niced from its first instruction: importing torch (~2 s of a core) must not slow a running task or duel
        nice = [NICE, "-n", str(NICENESS)] if NICE else []
        self.process = subprocess.Popen([*nice, sys.executable, "-m", "polar.duel_process", str(theirs.fileno())],
                                        pass_fds=[theirs.fileno()], cwd=REPO, env=env, stdin=subprocess.DEVNULL)
        theirs.close()
        self.conn = Connection(ours.detach())
        self.send_lock = threading.Lock()

    def alive(self) -> bool:
        return self.process.poll() is None

    def send(self, message: tuple) -> bool:
        with self.send_lock:
            try:
                self.conn.send(message)
                return True
            except OSError:
                return False

    def send_reserved(self, message: tuple) -> None:
        """Send ``message`` under the send lock the caller took beforehand (``send_lock.acquire()``, where the order
        of messages was decided), then release it. Called from a thread for a big message (a job's or a task's
        weights): a child that is busy reads late and the message overflows the socket's buffer, and the page must
        not wait on that. A child that is gone is reported by whoever listens to it."""
        try:
            self.conn.send(message)
        except OSError:
            pass
        finally:
            self.send_lock.release()

    def kill(self, timeout: float = 5.0) -> None:
        """Ask nicely (stop), then terminate; always reaps the process and closes the socket."""
        if self.alive():
            self.send(("stop", None))
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.conn.close()

    def terminate(self) -> None:
        """Stop it now, whatever it is doing (a cancelled task); reaps the process and closes the socket."""
        if self.alive():
            self.process.kill()
        self.process.wait()
        self.conn.close()


class DuelHandle:
    """One duel of one browser session: its configs, its latest snapshot, its models when parked.

    ``models`` hold the weights of the last time training parked; read them only while :meth:`idle`.
    """

    def __init__(self, pool: TrainerPool, cfgs: dict[str, polar.TrainConfig], data_args: dict,
                 data: polar.DeviceDataset, run_root: Path, owner: str, start: torch.nn.Module | None = None) -> None:
        self.id = uuid.uuid4().hex[:10]
        self.pool, self.cfgs, self.data_args, self.run_root, self.owner = pool, cfgs, data_args, Path(run_root), owner
        self.first = next(iter(cfgs.values()))  # the settings both methods share (model, data, schedule)
        self.upper = self.first.upper
        start_model = start if start is not None else polar.initial_model(self.first, data.num_classes)
        self.start_model = start_model
        self.models = {m: copy.deepcopy(start_model) for m in cfgs}
        self.steps_per_epoch = data.steps_per_epoch(self.first.batch_size)
        if self.steps_per_epoch < 1:
            raise ValueError(f"{data.num_train} training images make no batch of {self.first.batch_size}: raise the "
                             "images per class or lower the batch size")
        self._lock = threading.Lock()
        self._parked = threading.Event()  # set while the child waits for a command with its weights copied back
        self._parked.set()
        self._child: _Child | None = None
        self._sent = 0  # commands sent since the job; a "parked" report counts once the child has read them all
        self._pending: tuple | None = None  # the command a queued duel sends once it gets a slot
        self.tasks: dict[str, TaskHandle] = {}  # the latest task of each kind (prune, finetune, ...)
        self._hosted: TaskHandle | None = None  # the task this duel's own trainer runs now
        self._states: dict[str, bytes] | None = None  # an evicted trainer's training states, until a new one
        self._evicting = False  # "evict" sent, the trainer's states not yet back
        self._go_after_eviction = False  # Start came while evicting: the new trainer starts once they are back
        self.paused_at = 0.0  # when the trainer last parked paused or finished a hosted task: eviction goes by it
        hist = {m: polar.gamma_summary(polar.gamma_snapshot(model), self.upper) for m, model in self.models.items()}
        self._snapshot = Snapshot(total_steps=self.first.epochs * self.steps_per_epoch, hist=hist,
                                  published_at=time.time())

    # ---------------------------------------------------------------- controls (called from the page)

    def prepare(self) -> None:
        """Give this duel a trainer now (if the pool has room), so the first step follows Start within a second."""
        self.pool.attach(self)

    def start(self) -> None:
        """Start, or resume after a pause (queued while the server trains as many duels as it may)."""
        self._command(("go", None))

    def step_epoch(self) -> None:
        """Train until the next epoch ends, then pause."""
        self._command(("go", self.snapshot().epoch + 1))

    def pause(self, timeout: float = 30.0) -> None:
        """Pause and wait until the child has finished its current step and sent its weights back."""
        state = self.snapshot().state
        if state == "queued":
            self.pool.dequeue(self)
            self._set(state="paused" if self.snapshot().step else "idle")
            return
        with self._lock:
            if self._go_after_eviction:  # its new trainer was not started yet: it stays paused
                self._go_after_eviction, self._pending, self._snapshot.state = False, None, "paused"
                self.pool.wake()
                return
        if state != "running" or self._child is None:
            return
        self._set(state="paused")
        self._send(("pause", self.pool.task_threads()))  # the threads to measure the paused accuracies with
        self._parked.wait(timeout)
        self.pool.wake()

    def run_task(self, kind: str, spec: dict) -> TaskHandle:
        """Queue a task of ``kind`` (``polar.after_training.TASKS``) for a worker; an earlier one of that kind is
        cancelled. ``spec`` carries the task's inputs (weights as ``weights_blob`` bytes)."""
        previous = self.tasks.get(kind)
        if previous is not None:
            previous.cancel()
        task = TaskHandle(self.pool, {**spec, "kind": kind, "data": self.data_args, "device": self.first.device},
                          host=self)  # its threads are chosen when it gets its slot
        self.tasks[kind] = task
        self.pool.request_slot(task)
        return task

    def host(self, task: TaskHandle) -> bool:
        """Send ``task`` to this duel's own trainer if it can take it: a hosted kind, the trainer alive, paused with
        its weights parked, and no other task of this duel in it. False: the task needs a worker."""
        with self._lock:
            child = self._parked_idle_child()
            if task.spec["kind"] not in HOSTED_TASKS or child is None:
                return False
            self._hosted = task
            task.in_trainer = True
            message = ("host", {**task.spec, "id": task.id, "step": self._snapshot.step})
        child.send_lock.acquire()  # held until the task is sent: a later command (Start, cancel) follows it
        # from a thread: the trainer may still be measuring the paused accuracies (_listen ends the task if it is gone)
        threading.Thread(target=child.send_reserved, args=(message,), name=f"polar-host-{self.id}",
                         daemon=True).start()
        return True

    def _parked_idle_child(self) -> _Child | None:
        """This duel's trainer where it is alive, paused with its weights parked, hosting no task and not being
        evicted: the one state in which it can take a task or hand its duel back. Called under ``_lock``."""
        child = self._child
        if (child is None or not child.alive() or self._evicting or self._hosted is not None
                or self._snapshot.state != "paused" or not self._parked.is_set()):
            return None
        return child

    def abandon(self, task: TaskHandle) -> None:
        """Tell the trainer to drop ``task`` at its next progress report (it keeps training's commands)."""
        with self._lock:
            if self._hosted is not task:
                return
            self._hosted = None
        child = self._child
        if child is not None:
            child.send(("cancel", task.id))

    def stop(self) -> None:
        """Stop for good and free the trainer (and any task's worker); the run directories keep their last
        complete epoch."""
        for task in list(self.tasks.values()):
            task.cancel()
        self.pool.dequeue(self)
        self.pool.forget(self)
        child, self._child = self._child, None
        if child is not None:
            child.kill()
        if self.snapshot().state not in ("done", "error"):
            self._set(state="stopped")
        self._parked.set()

    def snapshot(self) -> Snapshot:
        with self._lock:
            return copy.copy(self._snapshot)

    def idle(self, wait: float = 5.0) -> bool:
        """True when the models are not being trained right now and hold the latest weights (safe to prune),
        waiting up to ``wait`` seconds for a paused trainer to send them back."""
        if self.snapshot().state in ("running", "queued"):
            return False
        return self._parked.wait(wait)

    def has_trainer(self) -> bool:
        return self._child is not None and self._child.alive()

    # ---------------------------------------------------------------- the pool's side

    def _command(self, command: tuple) -> None:
        if self.snapshot().state in ("done", "stopped", "error", "running", "queued"):
            return
        hosted = self._hosted
        if hosted is not None:  # training resumes: the trainer drops the task it runs for the paused weights
            hosted.cancel()
        self._pending = command
        self._set(state="queued")
        self.pool.request_slot(self)

    def evict(self) -> bool:
        """Ask this paused duel's trainer for its training states and let it exit (the pool's ``max_paused``);
        False where it is not parked paused with nothing hosted. The models here already hold its weights, so
        pruning and the other steps after training go on meanwhile (in workers); the next Start continues the
        duel exactly in a new trainer."""
        with self._lock:
            child = self._parked_idle_child()
            if child is None:
                return False
            self._evicting = True
        if not child.send(("evict", None)):
            with self._lock:
                self._evicting = False
            return False
        return True

    def granted(self) -> None:
        """The pool lets this duel train: make sure it has a trainer, then send the pending command (once an evicted
        trainer's states are back)."""
        with self._lock:
            if self._evicting:
                self._go_after_eviction = True
                self._snapshot.state, self._snapshot.queue_position = "running", 0
                return
        self._go()

    def _go(self) -> None:
        if not self.has_trainer() and not self.pool.attach(self, force=True):
            self._set(state="error", message="no trainer process could be started")
            return
        command, self._pending = self._pending, None
        self._set(state="running", queue_position=0)
        self._send(command or ("go", None))

    def adopt_child(self, child: _Child) -> None:
        """Give this duel a fresh child: send the job (a new duel's, or an evicted one's weights and states) and
        listen to it. A duel that has trained keeps its child until it stops or is evicted; if that child dies the
        duel ends in the error state."""
        snap = self.snapshot()
        if snap.step and self._states is None:
            raise RuntimeError("a duel that has trained keeps its trainer until it stops or is evicted")
        resumed = self._states is not None
        job = make_job(self.cfgs, self.data_args, run_root=str(self.run_root), threads=self.pool.threads_per_trainer,
                       start=self.start_model if snap.start_acc is None else None,  # measured once, after epoch 1
                       models=self.models if resumed else None, states=self._states)
        with self._lock:
            self._child, self._sent, self._states = child, 0, None
            self._snapshot.ready = False
        child.send_lock.acquire()  # held until the job is sent: no command can overtake it
        threading.Thread(target=self._send_job_and_listen, args=(child, job), name=f"polar-duel-{self.id}",
                         daemon=True).start()

    def _send_job_and_listen(self, child: _Child, job: dict) -> None:
        """Send the job, then listen. A fresh child reads nothing until it has imported torch (~1.5 s) and the job's
        weights overflow the socket's buffer: sending from here keeps the page from waiting on that."""
        child.send_reserved(("job", job))  # a child that is gone: _listen reports it
        self._listen(child)

    def release_child(self) -> None:
        """Take the prepared (never started) trainer away; a later Start gets another."""
        child, self._child = self._child, None
        if child is not None:
            child.kill()
        self._set(ready=False)

    def _send(self, command: tuple) -> None:
        child = self._child
        if child is None:
            return
        with self._lock:
            self._sent += 1
            self._parked.clear()
        if not child.send(command):
            self._set(state="error", message="the training process is gone")
            self._parked.set()

    def set_queue_position(self, position: int) -> None:
        """The pool numbers its queue: ``position`` waiters are ahead (0 once running)."""
        self._set(queue_position=position)

    def _set(self, **changes) -> None:
        with self._lock:
            for k, v in changes.items():
                setattr(self._snapshot, k, v)

    def _listen(self, child: _Child) -> None:
        """Folds the child's messages into the snapshot until the child is gone."""
        while True:
            try:
                kind, payload = child.conn.recv()
            except (EOFError, OSError):
                if self._child is child and self.snapshot().state in ("running", "paused", "queued"):
                    self._set(state="error", message=f"the training process exited ({child.process.poll()})")
                with self._lock:
                    hosted, self._hosted = self._hosted, None
                if hosted is not None:
                    hosted.report("task_end", {"state": "error", "message": "the training process exited"})
                self._parked.set()
                self.pool.wake()
                return
            if kind in ("task_progress", "task_end"):  # of the task this trainer hosts (not an abandoned one)
                with self._lock:
                    hosted = self._hosted if self._hosted is not None and self._hosted.id == payload["id"] else None
                    if hosted is not None and kind == "task_end":
                        self._hosted, self.paused_at = None, time.time()
                if hosted is not None:
                    hosted.report(kind, payload)
                continue
            if kind == "evicted":
                with self._lock:
                    self._states, self._evicting, self._snapshot.ready = payload["states"], False, False
                    if self._child is child:
                        self._child = None
                    go = self._go_after_eviction and self._snapshot.state == "running"  # not stopped meanwhile
                    self._go_after_eviction = False
                child.kill()  # it exits by itself: reap it and close our end
                self.pool.wake()
                if go:
                    self._go()
                return
            if kind == "ready":
                self._set(ready=True, hist=payload["hist"], published_at=time.time())
            elif kind == "failed":
                self._set(state="error", message=payload)
                self._parked.set()
            elif kind == "step":
                with self._lock:
                    s = self._snapshot
                    s.step, s.hist, s.published_at = payload["step"], {**s.hist, **payload["hist"]}, time.time()
                    if "losses" in payload:  # sent once both models took the step
                        s.steps = s.steps + [{"step": payload["step"], **payload["losses"]}]
                        s.timeline = _thinned(s.timeline + [{"step": payload["step"], **{
                            m: h["counts"] for m, h in s.hist.items()}, "near_zero": {
                            m: _near_zero(h["layers"]) for m, h in s.hist.items()}}])
            elif kind == "accuracy":
                self._set(accuracy=payload)
            elif kind == "start_acc":
                self._set(start_acc=payload)
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
                    for m, model in read_weights(payload["weights"]).items():
                        self.models[m].load_state_dict(model.state_dict())
                    self._snapshot.step = payload["step"] or self._snapshot.step  # the step these weights are at
                    if self._snapshot.state != "stopped":
                        self._snapshot.state, self._snapshot.message = payload["state"], payload["message"]
                    self.paused_at = time.time()
                    self._parked.set()
                self.pool.wake()
                if final:
                    return


TIMELINE_POINTS = 240  # γ histograms kept for the "γ over time" heat map: every other one goes when full


def _near_zero(layers: dict[str, list[int]]) -> list[float]:
    """Each layer's share of γ in its lowest bin (within 5 % of the range from 0): its spike, for the per-layer
    "γ over time" heat map (one number per layer keeps 240 points of a ResNet-56 small)."""
    return [row[0] / max(1, sum(row)) for row in layers.values()]


def _thinned(timeline: list[dict]) -> list[dict]:
    """Keep the first histogram and the latest, and at most TIMELINE_POINTS evenly thinned between them."""
    return timeline if len(timeline) <= TIMELINE_POINTS else timeline[:-1:2] + timeline[-1:]


class TaskHandle:
    """One step after training (``polar.after_training``) in a worker process of the pool, or in its duel's own
    paused trainer (``host``; see :meth:`DuelHandle.host`)."""

    def __init__(self, pool: TrainerPool, spec: dict, on_finish: Callable[[TaskHandle], None] | None = None,
                 host: DuelHandle | None = None) -> None:
        self.pool, self.spec, self.on_finish, self.host = pool, spec, on_finish, host
        self.id = uuid.uuid4().hex[:10]
        self.in_trainer = False  # set by the host duel when its trainer took the task
        self._lock = threading.Lock()
        self._child: _Child | None = None
        self._snapshot = TaskSnapshot(kind=spec["kind"])

    def snapshot(self) -> TaskSnapshot:
        with self._lock:
            return copy.copy(self._snapshot)

    def active(self) -> bool:
        return self.snapshot().state in ("queued", "running")

    def cancel(self) -> None:
        """Stop the task now: out of the queue, its worker killed, or its host trainer told to drop it."""
        self.pool.dequeue(self)
        with self._lock:
            child, self._child = self._child, None
            if self._snapshot.state in ("queued", "running"):
                self._snapshot.state, self._snapshot.finished_at = "cancelled", time.time()
        if child is not None:
            child.terminate()
        if self.in_trainer and self.host is not None:
            self.host.abandon(self)
        self.pool.wake()

    def has_trainer(self) -> bool:
        return self._child is not None and self._child.alive()

    def set_queue_position(self, position: int) -> None:
        """The pool numbers its queue: ``position`` waiters are ahead (0 once running)."""
        self._set(queue_position=position)

    def _set(self, **changes) -> None:
        with self._lock:
            for k, v in changes.items():
                setattr(self._snapshot, k, v)

    def granted(self) -> None:
        """A slot is free: hand the task to its duel's paused trainer, or else take a worker (a spare, which has
        torch imported) and send it the task."""
        with self._lock:
            if self._snapshot.state != "queued":
                return
            self._snapshot.state, self._snapshot.queue_position, self._snapshot.text = "running", 0, "starting"
        self.spec.setdefault("threads", self.pool.task_threads())  # a grid's point trains with a trainer's
        if self.host is not None and self.host.host(self):
            return
        child = self.pool.new_child()
        with self._lock:
            if self._snapshot.state != "running":  # cancelled meanwhile
                child.terminate()
                return
            self._child = child
        child.send_lock.acquire()  # held until the task is sent, as for a duel's job
        threading.Thread(target=self._send_and_listen, args=(child,), name=f"polar-task-{self.spec['kind']}",
                         daemon=True).start()

    def _send_and_listen(self, child: _Child) -> None:
        child.send_reserved(("task", self.spec))  # a worker that is gone (cancelled): the loop below reports it
        while True:
            try:
                kind, payload = child.conn.recv()
            except (EOFError, OSError):
                self._finish(child, "error", message="the worker process exited before it finished")
                return
            if kind == "progress":
                self._progress(payload)
            elif kind == "result":
                self._finish(child, "done", result=payload, share=1.0, text="done")
                return
            elif kind == "failed":
                self._finish(child, "error", message=payload)
                return

    def report(self, kind: str, payload: dict) -> None:
        """A message about this task from the duel's trainer that hosts it: progress, or its end."""
        if kind == "task_progress":
            self._progress(payload)
        elif payload["state"] == "done":
            self._finish(None, "done", result=payload["result"], share=1.0, text="done")
        else:
            self._finish(None, payload["state"], message=payload.get("message", ""))

    def _progress(self, payload: dict) -> None:
        now = time.time()
        with self._lock:
            self._snapshot.share, self._snapshot.text = float(payload["share"]), payload["text"]
            self._snapshot.partial = payload.get("partial") or self._snapshot.partial
            self._snapshot.first_progress_at = self._snapshot.first_progress_at or now
            self._snapshot.progress_at = now

    def _finish(self, child: _Child | None, state: str, **changes) -> None:
        """The task ended (``child``: its worker, None when a trainer hosted it); kept as cancelled if it was."""
        with self._lock:
            if self._child is child and self._snapshot.state == "running":  # not cancelled meanwhile
                for k, v in {"state": state, "finished_at": time.time(), **changes}.items():
                    setattr(self._snapshot, k, v)
            self._child = None if self._child is child else self._child
        if child is not None:
            child.kill(timeout=10.0)  # it exits by itself after its result; reap it
        self.pool.wake()
        if self.on_finish is not None and self.snapshot().state != "cancelled":
            self.on_finish(self)


@dataclass
class GridSnapshot:
    """Where a t/λ grid is: its points done, and its current point's task."""

    state: str = "queued"  # queued | running | done | error | cancelled
    done: int = 0
    total: int = 0
    queue_position: int = 0
    text: str = ""
    message: str = ""


class GridHandle:
    """A t/λ grid of one browser session, run one point at a time as pool tasks (``grid_point``): each point queues
    for a slot like any task, so a grid never holds the server's slots for longer than one point while others
    wait. Points are cached in ``folder`` as they finish; a cancelled grid keeps them."""

    def __init__(self, pool: TrainerPool, owner: str, folder: Path, points: list[dict], spec: dict) -> None:
        self.pool, self.owner, self.folder, self.spec = pool, owner, Path(folder), spec
        self._points = points  # {"lam", "t", "seed"} not yet done, in order
        self._lock = threading.Lock()
        self._task: TaskHandle | None = None
        self._snapshot = GridSnapshot(total=len(points))

    def snapshot(self) -> GridSnapshot:
        with self._lock:
            snap = copy.copy(self._snapshot)
            task = self._task
        if task is not None and snap.state in ("queued", "running"):
            now = task.snapshot()
            snap.state = now.state if now.state in ("queued", "running") else snap.state
            snap.queue_position, snap.text = now.queue_position, now.text
        return snap

    def active(self) -> bool:
        return self.snapshot().state in ("queued", "running")

    def task(self) -> TaskHandle | None:
        return self._task

    def cancel(self) -> None:
        """Stop the grid: its point in training is lost, the finished ones stay in its folder."""
        with self._lock:
            if self._snapshot.state in ("queued", "running"):
                self._snapshot.state = "cancelled"
            task = self._task
        if task is not None:
            task.cancel()

    def _next(self, finished: TaskHandle | None = None) -> None:
        """Queue the next point (called when the previous one finished)."""
        with self._lock:
            if finished is not None:
                snap = finished.snapshot()
                if snap.state == "error":
                    self._snapshot.state, self._snapshot.message = "error", snap.message
                    return
                self._snapshot.done += 1
            if self._snapshot.state not in ("queued", "running"):
                return
            if not self._points:
                self._snapshot.state = "done"
                return
            point = self._points.pop(0)
            self._task = TaskHandle(self.pool, {**self.spec, **point, "kind": "grid_point",
                                                "folder": str(self.folder)}, on_finish=self._next)
            task = self._task
        self.pool.request_slot(task)


def _env_int(name: str) -> int:
    """A positive integer from the environment, or 0 (use the default) when unset or malformed."""
    try:
        return max(0, int(os.environ.get(name, "0")))
    except ValueError:
        print(f"polar trainer pool: ignoring {name}={os.environ[name]!r} (not an integer)", file=sys.stderr)
        return 0


PAUSED_TRAINER_GIB = 1.5  # memory allowed per paused trainer (~0.6 GB each, measured) when choosing max_paused


def _default_max_paused() -> int:
    """Paused trainers kept alive: one per 1.5 GiB of the machine's memory beyond 3 GiB (the server, the browser
    and the running duels), at least one; 14 on a 24 GiB machine."""
    gib = memory_gib()
    return 4 if gib is None else max(1, int((gib - 3) / PAUSED_TRAINER_GIB))


def _default_max_running() -> int:
    """Duels that may train at once: one per two cores (each trainer uses the cores the page leaves it)."""
    return max(1, (os.cpu_count() or 2) // 2)


class TrainerPool:
    """All trainer processes of one server (see the module docstring)."""

    def __init__(self, is_alive: Callable[[str], bool], max_running: int | None = None,
                 max_processes: int | None = None, orphan_grace_s: float = 10.0, spares: int = 1,
                 threads_per_trainer: int | None = None, max_paused: int | None = None) -> None:
        self.is_alive = is_alive
        self.max_running = max_running or _env_int("POLAR_MAX_TRAINERS") or _default_max_running()
        self.max_processes = max_processes or self.max_running + 3
        self.max_paused = max_paused or _env_int("POLAR_MAX_PAUSED_TRAINERS") or _default_max_paused()
        self.orphan_grace_s, self.spares = orphan_grace_s, spares
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 2)
        # one core fewer than the machine has (shared by the running duels): OpenMP threads that keep being
        # preempted by the page stall each other at every barrier
        self.threads_per_trainer = threads_per_trainer or max(1, (cores - 1) // self.max_running)
        # a task alone: all the cores of its slot (see task_threads)
        self.threads_per_task = max(self.threads_per_trainer, cores // self.max_running)
        self.cores, self.others_load = cores, OthersLoad()  # what other programs keep busy (see task_threads)
        self._lock = threading.RLock()
        self._duels: dict[str, DuelHandle] = {}
        self._grids: dict[str, GridHandle] = {}  # by cache folder
        self._queue: list[DuelHandle | TaskHandle] = []  # waiting for a slot, in order
        self._spare: list[_Child] = []
        self._orphaned_since: dict[str, float] = {}
        self._closed = threading.Event()
        self._wake = threading.Event()
        # a line of JSON every STATE_LOG_S seconds: what the pool is doing, for a teacher (or a benchmark) asking
        # why a page waits
        self.state_log = Path(os.environ["POLAR_POOL_LOG"]) if os.environ.get("POLAR_POOL_LOG") else None
        threading.Thread(target=self._loop, name="polar-trainer-pool", daemon=True).start()

    # ---------------------------------------------------------------- what pages call

    def new_duel(self, cfgs: dict[str, polar.TrainConfig], data_args: dict, data: polar.DeviceDataset,
                 run_root: Path, owner: str, start: torch.nn.Module | None = None) -> DuelHandle:
        duel = DuelHandle(self, cfgs, data_args, data, run_root, owner, start)
        with self._lock:
            self._duels[duel.id] = duel
        return duel

    def adopt(self, duel_id: str, owner: str) -> DuelHandle | None:
        """The duel ``duel_id`` for a new session of the same browser tab (a reload), if its old session is gone."""
        with self._lock:
            duel = self._duels.get(duel_id)
            if duel is None or (duel.owner != owner and self.is_alive(duel.owner)):
                return None
            duel.owner = owner
            self._orphaned_since.pop(duel_id, None)
            return duel

    def attach(self, duel: DuelHandle, force: bool = False) -> bool:
        """Give ``duel`` a trainer process (a spare when there is one). Without ``force`` only when the server is
        below ``max_processes``; with it (the duel got a slot to train) a prepared-but-idle trainer of another
        duel is released to make room."""
        with self._lock:
            if duel.has_trainer():
                return True
            if self.process_count() >= self.max_processes and not force:
                return False
            duel.adopt_child(self.new_child(duel))
        return True

    def start_grid(self, folder: Path, points: list[dict], spec: dict, owner: str) -> GridHandle:
        """Run ``points`` ({"lam", "t", "seed"}) of the grid cached in ``folder``, one task each; ``spec`` holds
        what every point needs ("cfg": the base config as a dict, "data": ``polar.load_dataset`` arguments,
        "device"). A grid of the same folder that still runs is returned instead of a second one."""
        with self._lock:
            running = self._grids.get(str(folder))
            if running is not None and running.active():
                return running
            grid = GridHandle(self, owner, folder, points, {**spec, "threads": self.threads_per_trainer})
            self._grids[str(folder)] = grid
        grid._next()
        return grid

    def grid(self, folder: Path, owner: str) -> GridHandle | None:
        """The grid of ``folder`` (running or ended), adopted by ``owner`` when its own session is gone (a
        reload)."""
        with self._lock:
            grid = self._grids.get(str(folder))
            if grid is not None and grid.owner != owner and not self.is_alive(grid.owner):
                grid.owner = owner
                self._orphaned_since.pop("grid:" + str(folder), None)
            return grid

    def new_child(self, for_duel: DuelHandle | None = None) -> _Child:
        """A process for a duel or a task that got a slot: a spare if there is one. At ``max_processes`` a
        prepared-but-idle trainer of another duel is released to make room."""
        with self._lock:
            if self.process_count() >= self.max_processes:
                idle = [d for d in self._duels.values() if d is not for_duel and d.has_trainer()
                        and d.snapshot().state == "idle"]
                if idle:
                    idle[0].release_child()
            child = self._spare.pop() if self._spare else _Child()
        self.wake()  # make a new spare
        return child

    def request_slot(self, waiter: DuelHandle | TaskHandle) -> None:
        with self._lock:
            if waiter not in self._queue:
                self._queue.append(waiter)
        self._schedule()

    def dequeue(self, waiter: DuelHandle | TaskHandle) -> None:
        with self._lock:
            if waiter in self._queue:
                self._queue.remove(waiter)
        self.wake()

    def forget(self, duel: DuelHandle) -> None:
        with self._lock:
            self._duels.pop(duel.id, None)
            self._orphaned_since.pop(duel.id, None)
        self.wake()

    def wake(self) -> None:
        self._wake.set()

    def _tasks(self) -> list[TaskHandle]:
        tasks = [t for d in list(self._duels.values()) for t in list(d.tasks.values())]
        return tasks + [t for g in list(self._grids.values()) if (t := g.task()) is not None]

    def task_threads(self) -> int:
        """Threads for a task that starts now. While one page is open: all the cores of its slot — someone waits
        for it and the page mostly sleeps (a ResNet-20 prune on the 2-core CPU: 4.7 s on one thread, 2.3 s on
        two). While several are: a trainer's, leaving a core to the server and the pages it draws, because OpenMP
        threads that keep being preempted stall each other at every barrier (an evaluation of 1,000 CIFAR-10 images
        by a ResNet-20 at the trainers' niceness, beside 1.1 cores of other work: 1.6 s on one thread, 4.6 s on
        two; in a class of ten whose tabs shared the machine, a trade-off point took ~20 s instead of ~1). Never
        more than the cores other programs leave, for the same reason (a ResNet-20 latency table beside one busy
        loop at normal priority: 16 s on one thread, over 300 s on two): a core counts as taken when another
        program kept it at least 90 % busy for the last few seconds. Less does not: the page's own renderer, on
        the same machine, keeps ~0.75 of a core busy while training draws, and stops at the pause."""
        with self._lock:
            owners = {duel.owner for duel in self._duels.values()}
        threads = self.threads_per_task if sum(map(self.is_alive, owners)) <= 1 else self.threads_per_trainer
        taken = int(self.others_load.cores() + 0.1)
        return max(1, min(threads, self.cores - taken))

    def running_count(self) -> int:
        """Duels training and tasks running: each holds a slot."""
        return (sum(d.snapshot().state == "running" for d in list(self._duels.values()))
                + sum(t.snapshot().state == "running" for t in self._tasks()))

    def process_count(self) -> int:
        return (len(self._spare) + sum(d.has_trainer() for d in list(self._duels.values()))
                + sum(t.has_trainer() for t in self._tasks()))

    def state(self) -> dict:
        """What the pool does now: its queue, each duel's and each task's state (a task's ``quiet_s``: seconds since
        its latest progress report). ``pool_lock_busy``: the pool's lock was held for over a second (a stuck
        scheduler would show here first)."""
        now = time.time()
        if not self._lock.acquire(timeout=1.0):
            return {"t": now, "pool_lock_busy": True}
        try:
            queue = [waiter.id for waiter in self._queue]
            duels, grids = list(self._duels.values()), list(self._grids.values())
        finally:
            self._lock.release()
        tasks = []
        for duel in duels:
            for task in list(duel.tasks.values()):
                snap = task.snapshot()
                tasks.append({"id": task.id, "duel": duel.id, "kind": snap.kind, "state": snap.state,
                              "share": round(snap.share, 3), "text": snap.text, "in_trainer": task.in_trainer,
                              "worker": task.has_trainer(),
                              "quiet_s": round(now - (snap.progress_at or snap.requested_at), 1)})
        return {"t": now, "running": self.running_count(), "max_running": self.max_running,
                "max_paused": self.max_paused, "processes": self.process_count(), "queue": queue,
                "duels": [{"id": d.id, "state": (snap := d.snapshot()).state, "step": snap.step,
                           "trainer": d.has_trainer(), "hosted": getattr(d._hosted, "id", None)} for d in duels],
                "tasks": tasks,
                "grids": [{"folder": g.folder.name, "state": (snap := g.snapshot()).state, "done": snap.done,
                           "total": snap.total} for g in grids]}

    def close(self) -> None:
        """Stop every duel and spare (the server is shutting down, or a test ends)."""
        self._closed.set()
        self.wake()
        for duel in list(self._duels.values()):
            duel.stop()
        for grid in list(self._grids.values()):
            grid.cancel()
        with self._lock:
            spares, self._spare = self._spare, []
        for child in spares:
            child.kill()

    # ---------------------------------------------------------------- the pool's own thread

    def _schedule(self) -> None:
        """Grant slots in queue order while fewer than ``max_running`` duels train; number the rest."""
        with self._lock:
            while self._queue and self.running_count() < self.max_running:
                self._queue.pop(0).granted()
            for position, waiter in enumerate(self._queue, start=1):
                waiter.set_queue_position(position)

    def _reap_orphans(self) -> None:
        now = time.time()
        for duel in list(self._duels.values()):
            if self.is_alive(duel.owner):
                self._orphaned_since.pop(duel.id, None)
            elif now - self._orphaned_since.setdefault(duel.id, now) >= self.orphan_grace_s:
                duel.stop()  # nobody owns it any more: free its core and memory (its runs keep their epochs)
        for folder, grid in list(self._grids.items()):
            key = "grid:" + folder
            if not grid.active() or self.is_alive(grid.owner):
                self._orphaned_since.pop(key, None)
            elif now - self._orphaned_since.setdefault(key, now) >= self.orphan_grace_s:
                grid.cancel()  # its finished points stay cached

    def _evict_paused(self) -> None:
        """Beyond ``max_paused`` paused trainers, evict the ones paused longest (see the module doc)."""
        with self._lock:
            paused = [d for d in self._duels.values() if d.has_trainer() and d.snapshot().state == "paused"
                      and not d._evicting]
        for duel in sorted(paused, key=lambda d: d.paused_at)[:max(0, len(paused) - self.max_paused)]:
            duel.evict()

    def _keep_spares(self) -> None:
        """Keep ``spares`` children with torch imported — but not while a task runs: importing torch takes ~2 s of
        a core, which a task someone is waiting for would lose (the spare follows once the task is done)."""
        if any(t.snapshot().state == "running" for t in self._tasks()):
            return
        with self._lock:
            self._spare = [c for c in self._spare if c.alive()]
            missing = min(self.spares - len(self._spare), self.max_processes - self.process_count())
        for _ in range(max(0, missing)):
            child = _Child()
            with self._lock:
                self._spare.append(child)

    def _log_state(self) -> None:
        with open(self.state_log, "a") as log:  # one line per write: a reader sees whole lines
            log.write(json.dumps(self.state()) + "\n")

    def _loop(self) -> None:
        logged = 0.0
        while not self._closed.is_set():
            self._wake.wait(1.0)
            self._wake.clear()
            if self._closed.is_set():
                return
            try:
                self.others_load.sample()
                self._reap_orphans()
                self._evict_paused()
                self._schedule()
                self._keep_spares()
                if self.state_log is not None and time.time() - logged >= STATE_LOG_S:
                    logged = time.time()
                    self._log_state()
            except Exception as err:  # the pool must outlive any one duel's failure
                print(f"polar trainer pool: {type(err).__name__}: {err}", file=sys.stderr)
