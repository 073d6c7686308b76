"""A :class:`polar.Duel` in its own process, driven by commands and reporting small snapshots.

    python -m polar.duel_process FD        # FD: this end of a socket pair, inherited from the parent

Why a separate interpreter (not fork or forkserver): a process forked from a web server inherits its threads and
its ``__main__`` (Streamlit's page script, which multiprocessing re-imports in every child), and sending two models'
tensors through ``torch.multiprocessing`` costs one file descriptor per tensor (ResNet-56: 664, over what a fork
server accepts). Here the parent sends one pickled job — configs, where the data is, the start's weights as one
``torch.save`` blob — and the child builds everything itself. It imports torch at start-up, before any job, so a
parent keeps one such process ready and a job's first step follows within about a second.

Protocol (pickled tuples over a ``multiprocessing.connection.Connection``, between processes of one user):
  parent → child: ``("job", dict)``, then ``("go", until_epoch | None)``, ``("pause", threads | None)``
                  (threads: to measure the paused networks' accuracy with; None: training's), ``("stop", None)``,
                  ``("evict", None)`` (paused only: hand the duel back and exit)
  child → parent: ``("ready", info)``, ``("step", info)``, ``("epoch", info)``,
                  ``("parked", {"state", "message", "read", "step", "weights"})`` (weights: one ``torch.save``
                  blob), ``("accuracy", {"step", "acc"})`` (after a pause: each network's test accuracy),
                  ``("start_acc", accuracy)`` (the start's, once, after the first epoch),
                  ``("failed", message)`` (the job could not be set up),
                  ``("evicted", {"states"})`` (each method's ``polar.TrainState`` as bytes, after ``evict``).
The child exits after ``stop`` or ``evict``, when training is done, or when the parent goes away (its socket closes).
A job may carry a paused duel's weights and states (``models``, ``states``): the child then continues that duel
exactly where the evicted trainer left it.

A child may instead be sent one task (``polar.after_training``: prune, fine-tune, trade-off, export, latency):
  parent → child: ``("task", {"kind", "data", "threads", ...})``
  child → parent: ``("progress", {"share", "text", "partial"})``, then ``("result", dict)`` or ``("failed", message)``;
then it exits. The parent cancels a task by stopping the process.

A *paused* trainer runs its own duel's prune, fine-tune and trade-off (``polar.after_training.HOSTED_TASKS``) on
the data it holds, between commands:
  parent → child: ``("host", {"id", "kind", "threads", ...})``, and ``("cancel", id)`` to abandon it
  child → parent: ``("task_progress", {"id", "share", "text", "partial"})``, then
                  ``("task_end", {"id", "state", "result" | "message"})`` with state done, error or cancelled.
A hosted task leaves the duel as it was (models, torch threads, the global random state); commands that arrive
while it runs are kept and obeyed after it. Neither message counts as a command read.
"""
from __future__ import annotations

import copy
import ctypes
import gc
import os
import sys
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from multiprocessing.connection import Connection
from typing import Any

import torch

from .config import TrainConfig
from .datasets import load_dataset
from .device import autocast, resolve_device
from .duel import Duel
from .evaluate import evaluate
from .gamma_stats import gamma_summary
from .saving import read_weights, weights_blob
from .train import EpochEvent, StepEvent, TrainState, gamma_snapshot

__all__ = ["serve", "make_job", "one_line"]

NICENESS = 10  # a web server and its browser go first; training takes the CPU time they leave
IDLE_EXIT_S = 30 * 60  # a child nobody sends a job to (its parent forgot it) leaves after this long


def one_line(err: BaseException, limit: int = 300) -> str:
    """An error as the page shows it: its type and the first line of its message, at most ``limit`` characters
    (torch's exporter and unpickler write paragraphs; the page shows one line, never a traceback)."""
    first = next((line.strip() for line in str(err).splitlines() if line.strip()), "")
    text = f"{type(err).__name__}: {first}" if first else type(err).__name__
    return text if len(text) <= limit else text[:limit - 1] + "…"


def make_job(cfgs: dict[str, TrainConfig], data: dict[str, Any], start: torch.nn.Module | None = None,
             run_root: str | None = None, publish_every: float = 0.25, threads: int = 1,
             models: dict[str, torch.nn.Module] | None = None, states: dict[str, bytes] | None = None
             ) -> dict[str, Any]:
    """A job for :func:`serve`: the duel's configs, the arguments of ``polar.load_dataset`` (``data``), the start
    model (None: fresh weights from the first config's seed; its accuracy is measured after the first epoch), where
    run directories go, how often to publish and the threads to train with. ``models`` and ``states`` (an evicted
    trainer's ``"evicted"`` report): continue that duel instead of starting one."""
    return {"cfgs": {m: c.to_dict() for m, c in cfgs.items()}, "data": data, "run_root": run_root,
            "start": weights_blob({"start": start}) if start is not None else None,
            "models": weights_blob(models) if models is not None else None, "states": states,
            "publish_every": publish_every, "threads": threads}


def serve(conn: Connection) -> None:
    """Wait for one job, then train it as the parent commands."""
    if not conn.poll(IDLE_EXIT_S):
        return
    try:
        kind, job = conn.recv()
    except OSError:  # the server stopped while sending (the pipe closed mid-message): nobody to train for
        return
    if kind == "task":
        _serve_task(conn, job)
        return
    if kind != "job":
        return
    try:
        torch.set_num_threads(max(1, int(job["threads"])))
        cfgs = {m: TrainConfig.from_dict(c) for m, c in job["cfgs"].items()}
        first = next(iter(cfgs.values()))
        data = load_dataset(**job["data"], device=resolve_device(first.device))
        start = read_weights(job["start"])["start"] if job["start"] else None
        models = read_weights(job["models"]) if job.get("models") else None
        states = {m: TrainState.from_bytes(b) for m, b in job["states"].items()} if job.get("states") else None
        duel = Duel(cfgs, data, start=start, run_root=job["run_root"], models=models, states=states)
        _warm_up(next(iter(duel.models.values())), data, first)
    except Exception as err:  # reported in the page as one line
        conn.send(("failed", one_line(err)))
        return
    upper = first.upper
    conn.send(("ready", {"hist": {m: gamma_summary(gamma_snapshot(model), upper) for m, model in duel.models.items()},
                         "total_steps": first.epochs * duel.steps_per_epoch}))
    _run(conn, duel, upper, float(job["publish_every"]), start)


def _serve_task(conn: Connection, spec: dict[str, Any]) -> None:
    """Run one ``polar.after_training`` task, reporting progress; any failure reaches the page as one line."""
    from .after_training import run_task, task_data  # only a worker needs it (and ONNX Runtime behind it)

    try:
        torch.set_num_threads(max(1, int(spec["threads"])))
        data = load_dataset(**task_data(spec), device=resolve_device(spec.get("device", "auto")))
        result = run_task(spec, data, lambda share, text, partial=None: conn.send(
            ("progress", {"share": share, "text": text, "partial": partial})))
    except (EOFError, BrokenPipeError, ConnectionResetError):
        return  # the parent is gone (or cancelled): nobody to report to
    except Exception as err:  # shown in the page as one line, never as a traceback
        conn.send(("failed", one_line(err)))
        return
    conn.send(("result", result))


def _run(conn: Connection, duel: Duel, upper: float, publish_every: float,
         start: torch.nn.Module | None = None) -> None:
    """The command loop: train while running, publish at most every ``publish_every`` seconds, park on command.
    ``start``'s test accuracy is measured once, after the first epoch's (not before Start: the first step must
    follow at once), and sent as the accuracy curves' starting point."""
    read = 0  # commands read so far: the parent trusts a "parked" report only once all its commands were read
    methods = list(duel.models)

    def park(state: str, message: str = "") -> None:
        conn.send(("parked", {"state": state, "message": message, "read": read, "step": step,
                              "weights": weights_blob(duel.models)}))

    measured: dict[str, Any] = {}  # the last accuracies measured while paused: {"step", "acc"}

    def measure(threads: int | None) -> None:
        """Each network's test accuracy at the weights just parked (as the epoch's evaluation measures it), while
        the user looks at the paused page: pruning then evaluates only the pruned networks. With the pause's
        ``threads`` (the server's choice for a task now: a Prune clicked meanwhile waits for this), else
        training's."""
        with _threads(threads or torch.get_num_threads()):
            measured.update(step=step, acc={m: evaluate(model, duel.data)[1] for m, model in duel.models.items()})
        conn.send(("accuracy", dict(measured)))

    def summaries() -> dict[str, dict]:
        return {m: gamma_summary(gamma_snapshot(model), upper) for m, model in duel.models.items()}

    events = iter(duel)
    running, pause_after, losses, step = False, None, {}, next(iter(duel.states.values())).step
    # any publication (a histogram after either method's step), and the last one with both losses: the second has
    # its own clock, or steps of 1/2 to 1 publish interval would publish only between methods, never the losses
    last_publish = last_losses = 0.0
    kept: deque[tuple] = deque()  # commands that arrived while a hosted task ran, obeyed after it
    try:
        while True:
            if not running or kept or conn.poll():
                kind, arg = kept.popleft() if kept else conn.recv()
                if kind == "host":
                    _host(conn, duel, arg, kept, measured)
                    _give_back_free_memory()
                    continue
                if kind == "cancel":  # for a hosted task that has ended already
                    continue
                if kind == "evict":  # paused: the parent keeps the weights parked; it gets the rest and we go
                    conn.send(("evicted", {"states": {m: state.to_bytes() for m, state in duel.states.items()}}))
                    return
                read += 1
                if kind == "stop":
                    park("stopped")
                    return
                if kind == "pause":
                    running = False
                    park("paused")
                    measure(arg)
                    _give_back_free_memory()
                    continue
                if kind == "go":
                    running, pause_after = True, arg
                continue
            finished_epoch = None
            for _ in methods:  # one step (or epoch end) of each method
                event = next(events, None)
                if event is None:
                    park("done")
                    return
                m, event = event
                if isinstance(event, StepEvent):
                    losses[f"loss_{m}"] = event.loss  # a device tensor: read (a GPU sync) only when published
                    step = event.step
                    if m != methods[-1] and time.time() - last_publish >= publish_every:
                        # between methods too: each histogram is redrawn as soon as its model has moved
                        conn.send(("step", {"step": step, "hist": summaries()}))
                        last_publish = time.time()
                elif isinstance(event, EpochEvent):
                    finished_epoch = event.epoch
                    if start is not None and m == methods[-1]:
                        conn.send(("start_acc", evaluate(start, duel.data)[1]))
                        start = None
                    summary = gamma_summary(event.gammas, upper)
                    conn.send(("epoch", {"row": {"method": m, **event.metrics(), **summary}, "hist": summary,
                                         "seconds": event.seconds}))
            if finished_epoch is None and time.time() - last_losses >= publish_every:
                conn.send(("step", {"step": step, "losses": {k: float(v) for k, v in losses.items()},
                                    "hist": summaries()}))
                last_publish = last_losses = time.time()
            if finished_epoch is not None and pause_after == finished_epoch:
                running, pause_after = False, None
                park("paused")  # at an epoch's end: its evaluation measured the accuracies
    except (EOFError, BrokenPipeError, ConnectionResetError):
        return  # the parent is gone: nobody to train for
    except Exception as err:  # shown in the page as one line, never as a traceback
        park("error", one_line(err))
    finally:
        duel.close()


class _Cancelled(Exception):
    """The parent abandoned the hosted task (raised from its progress callback)."""


@contextmanager
def _threads(count: int) -> Iterator[None]:
    """torch's intra-op threads at ``count`` for a while, then back to what training uses."""
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, int(count)))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _host(conn: Connection, duel: Duel, spec: dict[str, Any], kept: deque[tuple], measured: dict[str, Any]) -> None:
    """Run one of this duel's after-training tasks here, while paused (``polar.after_training.HOSTED_TASKS``).

    It reads only the weights its spec carries (the parked ones, at ``spec["step"]``) and runs with the task's
    threads; the accuracies this trainer ``measured`` at that step are added to the spec's (a Prune clicked while
    they were being measured need not evaluate the unpruned networks again). The global random state (which
    building a model from weights draws from) is restored after it, so training resumes exactly as it would have.
    Messages that arrive meanwhile are read at each progress report: this task's cancel ends it there, commands
    wait in ``kept``."""
    from .after_training import HOSTED_TASKS, run_task

    task_id = spec["id"]
    if measured and spec.get("step") == measured["step"]:
        spec = {**spec, "accuracies": {**measured["acc"], **(spec.get("accuracies") or {})}}

    def progress(share: float, text: str, partial: dict[str, Any] | None = None) -> None:
        while conn.poll():
            message = conn.recv()
            if message == ("cancel", task_id):
                raise _Cancelled
            if message[0] != "cancel":
                kept.append(message)
        conn.send(("task_progress", {"id": task_id, "share": share, "text": text, "partial": partial}))

    try:
        if spec.get("kind") not in HOSTED_TASKS:
            raise ValueError(f"a trainer does not host {spec.get('kind')!r} tasks")
        with _threads(spec["threads"]), torch.random.fork_rng(devices=[]):
            result = run_task(spec, duel.data, progress)
    except _Cancelled:
        conn.send(("task_end", {"id": task_id, "state": "cancelled"}))
    except (EOFError, BrokenPipeError, ConnectionResetError):
        raise  # the parent is gone: the command loop ends
    except Exception as err:  # shown in the page as one line, never as a traceback
        conn.send(("task_end", {"id": task_id, "state": "error", "message": one_line(err)}))
    else:
        conn.send(("task_end", {"id": task_id, "state": "done", "result": result}))


def _give_back_free_memory() -> None:
    """Hand the heap's free pages back to the system while this trainer waits, paused: glibc keeps what training's
    activations and an evaluation's batches freed for reuse, and a class's paused trainers (one per student, each
    waiting for its page) would hold it all. No-op where the C library is not glibc."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _warm_up(model: torch.nn.Module, data, cfg: TrainConfig) -> None:
    """One throwaway forward and backward pass on a copy, in the training's memory format and precision: oneDNN
    builds its kernels for these shapes now rather than in the first step after Start (~1 s on a 2-core CPU)."""
    spare = copy.deepcopy(model).to(data.device).train()
    x = data.test_x[: cfg.batch_size]
    if cfg.channels_last:
        spare, x = spare.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    with autocast(data.device, cfg.amp):
        out = spare(x)
    out.float().sum().backward()


def main(argv: list[str]) -> None:
    try:
        os.nice(max(0, NICENESS - os.nice(0)))  # a parent may have started it niced already (see app/trainers.py)
    except OSError:  # not permitted on some systems: train at normal priority
        pass
    import pandas  # noqa: F401 -- the prune and trade-off tables: ~0.4 s now rather than after someone's click

    conn = Connection(int(argv[1]))
    try:
        serve(conn)
    except (EOFError, BrokenPipeError, ConnectionResetError, KeyboardInterrupt):
        pass
    finally:
        conn.close()


if __name__ == "__main__":
    main(sys.argv)
