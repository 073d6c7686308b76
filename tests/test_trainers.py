"""The explorer's trainer pool without a browser: every CIFAR model trains in a trainer process, the pool bounds
its processes and running duels, orphaned duels stop, a reload adopts its duel."""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import polar

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "app"))
from trainers import TrainerPool  # noqa: E402

CIFAR_MODELS = [m for m in polar.list_models() if not m.endswith("imagenet")]
DATA_ARGS = {"name": "synthetic", "subset": 16}


class Owners:
    """Which fake browser sessions are connected."""

    def __init__(self) -> None:
        self.alive: set[str] = set()

    def __call__(self, session: str) -> bool:
        return session in self.alive


@pytest.fixture
def owners() -> Owners:
    return Owners()


@pytest.fixture
def pool(owners: Owners):
    pool = TrainerPool(owners, max_running=1, max_processes=3, orphan_grace_s=1.0, threads_per_trainer=1)
    yield pool
    pool.close()


@pytest.fixture(scope="module")
def data() -> polar.DeviceDataset:
    return polar.load_dataset(**DATA_ARGS)


def _cfgs(model: str = "resnet20", epochs: int = 1, batch_size: int = 16) -> dict[str, polar.TrainConfig]:
    base = dict(model=model, dataset="synthetic", subset=16, epochs=epochs, batch_size=batch_size, lr=0.05,
                lr_schedule="constant", device="cpu")
    return {"polar": polar.TrainConfig(**base, reg="polar", lam=0.01, t=1.2),
            "l1": polar.TrainConfig(**base, reg="l1", lam=0.01)}


def _wait(condition, timeout: float = 90.0, what: str = "") -> None:
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


@pytest.mark.parametrize("model", CIFAR_MODELS)
def test_every_cifar_model_prepares_steps_and_parks_in_a_trainer(pool: TrainerPool, owners: Owners,
                                                               data: polar.DeviceDataset, tmp_path: Path,
                                                               model: str) -> None:
    owners.alive.add("me")
    duel = pool.new_duel(_cfgs(model), DATA_ARGS, data, tmp_path / "runs", owner="me")
    before = {m: polar.gamma_snapshot(net) for m, net in duel.models.items()}
    duel.prepare()
    _wait(lambda: duel.snapshot().ready or duel.snapshot().state == "error", what="the trainer to get ready")
    assert duel.snapshot().state == "idle", duel.snapshot().message
    duel.step_epoch()
    _wait(lambda: duel.snapshot().state not in ("running", "queued"), what="one epoch")
    snap = duel.snapshot()
    assert snap.state == "paused" and snap.epoch == 1, snap.message
    assert {e["method"] for e in snap.epochs} == {"polar", "l1"}
    assert snap.start_acc is not None and 0 <= snap.start_acc <= 1  # the accuracy curves' point at epoch 0
    assert duel.idle()
    after = {m: polar.gamma_snapshot(net) for m, net in duel.models.items()}  # the trained weights came back
    assert all(not torch.equal(before[m][k], after[m][k]) for m in after for k in after[m])
    assert (tmp_path / "runs" / "polar" / "checkpoint.pt").is_file()
    duel.stop()
    assert not duel.has_trainer()


def test_running_duels_are_capped_and_queued_duels_start_when_a_slot_frees(pool: TrainerPool, owners: Owners,
                                                                          data: polar.DeviceDataset,
                                                                          tmp_path: Path) -> None:
    owners.alive.update({"a", "b"})
    first = pool.new_duel(_cfgs(epochs=2), DATA_ARGS, data, tmp_path / "a", owner="a")
    second = pool.new_duel(_cfgs(epochs=2), DATA_ARGS, data, tmp_path / "b", owner="b")
    first.start()
    second.start()
    _wait(lambda: second.snapshot().queue_position == 1, what="the second duel to queue")
    assert first.snapshot().state == "running" and second.snapshot().state == "queued"
    _wait(lambda: first.snapshot().state == "done" and second.snapshot().state == "done", timeout=180,
          what="both duels to finish")
    assert first.snapshot().epoch == second.snapshot().epoch == 2
    assert pool.running_count() == 0


def test_a_closed_session_stops_its_training_and_a_reload_adopts_it(pool: TrainerPool, owners: Owners,
                                                                    data: polar.DeviceDataset,
                                                                    tmp_path: Path) -> None:
    owners.alive.add("tab")
    duel = pool.new_duel(_cfgs(epochs=50), DATA_ARGS, data, tmp_path / "runs", owner="tab")
    duel.start()
    _wait(lambda: duel.snapshot().step > 0, what="training to start")
    assert pool.adopt(duel.id, "intruder") is None  # its owner is connected: nobody else can take it
    owners.alive.discard("tab")  # a reload: the old session is gone, the new one names the duel in its URL
    owners.alive.add("reloaded")
    assert pool.adopt(duel.id, "reloaded") is duel
    time.sleep(2 * pool.orphan_grace_s)
    assert duel.snapshot().state == "running"  # adopted in time: still training
    owners.alive.discard("reloaded")  # the tab is closed for good
    t0 = time.time()
    _wait(lambda: duel.snapshot().state == "stopped", timeout=30, what="the orphaned duel to stop")
    print(f"\norphaned duel stopped {time.time() - t0:.1f}s after its session closed "
          f"(grace {pool.orphan_grace_s}s)")
    assert not duel.has_trainer()
    assert pool.adopt(duel.id, "later") is None  # forgotten once stopped


def test_process_count_stays_bounded_when_many_sessions_come_and_go(pool: TrainerPool, owners: Owners,
                                                                   data: polar.DeviceDataset,
                                                                   tmp_path: Path) -> None:
    for i in range(8):
        owners.alive.add(f"s{i}")
        pool.new_duel(_cfgs(), DATA_ARGS, data, tmp_path / str(i), owner=f"s{i}").prepare()
        assert pool.process_count() <= pool.max_processes
        owners.alive.discard(f"s{i}")
    _wait(lambda: pool.process_count() <= pool.spares and not pool._duels, timeout=30,
          what="orphaned trainers to be released")


def _trained_duel(pool: TrainerPool, data: polar.DeviceDataset, path: Path, owner: str):
    """A duel trained to its end: its trainer has exited, so its tasks run in worker processes."""
    duel = pool.new_duel(_cfgs(), DATA_ARGS, data, path, owner=owner)
    duel.start()
    _wait(lambda: duel.snapshot().state not in ("running", "queued"), what="one epoch")
    assert duel.snapshot().state == "done" and duel.idle(), duel.snapshot().message
    _wait(lambda: not duel.has_trainer(), what="the trainer to exit")
    return duel


def test_steps_after_training_run_in_workers_queue_for_a_slot_and_can_be_cancelled(
        pool: TrainerPool, owners: Owners, data: polar.DeviceDataset, tmp_path: Path) -> None:
    """A finished duel's prune, then a trade-off while another duel trains: the task waits for the one slot ('1
    ahead'), runs in a worker process when the slot frees, reports progress and its result; a cancelled task's
    worker is gone."""
    from polar.saving import read_weights, weights_blob

    owners.alive.update({"a", "b"})
    pool.state_log = tmp_path / "pool.jsonl"  # as $POLAR_POOL_LOG sets it
    duel = _trained_duel(pool, data, tmp_path / "a", "a")
    threshold = polar.find_threshold(duel.models["polar"], "percent", value=0.3)
    prune = duel.run_task("prune", {"models": weights_blob(duel.models), "threshold": threshold, "reference": "polar"})
    _wait(lambda: not prune.active(), what="the prune task")
    result = prune.snapshot().result
    assert prune.snapshot().state == "done" and [r["method"] for r in result["table"]] == ["polar", "l1"]
    small = read_weights(result["pruned"])
    assert polar.cost(small["polar"]).macs == result["table"][0]["macs"] < polar.cost(duel.models["polar"]).macs
    # the worker read one training image per class (it only evaluates): its accuracies are those of the whole data
    here, _ = polar.matched_flops(duel.models, data, threshold=threshold, reference="polar")
    assert [r["acc_pruned"] for r in result["table"]] == here["acc_pruned"].tolist()
    # the table came first without its β-dropped column (the page shows it while that is measured), else the same
    first = prune.snapshot().partial["table"]
    assert all(math.isnan(r.pop("acc_zero_beta")) for r in first)
    assert first == [{k: v for k, v in r.items() if k != "acc_zero_beta"} for r in result["table"]]

    other = pool.new_duel(_cfgs(epochs=50), DATA_ARGS, data, tmp_path / "b", owner="b")
    other.start()
    _wait(lambda: other.snapshot().state == "running", what="the other duel to train")
    sweep = duel.run_task("tradeoff", {"models": weights_blob(duel.models), "reductions": [0.2, 0.4]})
    _wait(lambda: sweep.snapshot().queue_position == 1, what="the task to queue behind the training")
    assert sweep.snapshot().state == "queued" and pool.running_count() == 1
    state = pool.state()  # what a teacher's log says meanwhile
    assert state["queue"] == [sweep.id] and state["running"] == 1
    assert {d["id"]: d["state"] for d in state["duels"]} == {duel.id: "done", other.id: "running"}
    assert {(t["id"], t["kind"], t["state"]) for t in state["tasks"]} == {(prune.id, "prune", "done"),
                                                                         (sweep.id, "tradeoff", "queued")}
    other.pause()
    _wait(lambda: not sweep.active(), timeout=120, what="the trade-off")
    snap = sweep.snapshot()
    assert snap.state == "done" and snap.first_progress_at > 0, snap.message
    assert set(snap.result["curves"]) == {"polar", "l1"} and all(len(c) == 2 for c in snap.result["curves"].values())

    slow = duel.run_task("finetune", {"pruned": result["pruned"], "epochs": 20, "lr": 0.01,
                                      "cfgs": {m: c.to_dict() for m, c in duel.cfgs.items()}})
    _wait(lambda: slow.snapshot().first_progress_at > 0, what="the fine-tune's first progress")
    worker = slow._child.process
    slow.cancel()
    assert slow.snapshot().state == "cancelled" and worker.poll() is not None  # its process is gone
    _wait(lambda: pool.running_count() == 0, what="the slot to free")

    def logged_kinds() -> set[str]:  # the pool writes its state every 5 s
        lines = pool.state_log.read_text().splitlines() if pool.state_log.exists() else []
        return {t["kind"] for line in lines for t in json.loads(line).get("tasks", [])}
    _wait(lambda: {"prune", "tradeoff", "finetune"} <= logged_kinds(), timeout=30, what="the pool's state log")


def test_a_closed_tab_cancels_its_running_task(pool: TrainerPool, owners: Owners, data: polar.DeviceDataset,
                                               tmp_path: Path) -> None:
    from polar.saving import weights_blob

    owners.alive.add("tab")
    duel = _trained_duel(pool, data, tmp_path / "a", "tab")
    task = duel.run_task("tradeoff", {"models": weights_blob(duel.models), "reductions": [0.1 * i for i in range(9)]})
    _wait(lambda: task.snapshot().state == "running", what="the task to start")
    owners.alive.discard("tab")  # the tab is closed: duel and task go once the grace period is over
    _wait(lambda: task.snapshot().state == "cancelled", timeout=30, what="the orphaned task to be cancelled")
    _wait(lambda: pool.process_count() <= pool.spares, timeout=30, what="its worker to exit")


def test_a_grid_runs_point_by_point_in_the_queue_and_stops_with_its_tab(pool: TrainerPool, owners: Owners,
                                                                       data: polar.DeviceDataset,
                                                                       tmp_path: Path) -> None:
    """Each grid point is a task: behind a training duel it waits ('1 ahead'); once the slot frees the points run
    one after another, each written to the grid's folder; a reload (another session, the old one gone) takes the
    grid over, and a grid whose tab is gone is stopped with its finished points kept."""
    owners.alive.update({"trainer", "student"})
    other = pool.new_duel(_cfgs(epochs=50), DATA_ARGS, data, tmp_path / "duel", owner="trainer")
    other.start()
    _wait(lambda: other.snapshot().state == "running", what="the duel to train")
    cfg = _cfgs()["polar"].to_dict()
    points = [{"lam": lam, "t": 1.2, "seed": 0} for lam in (0.01, 0.02, 0.03, 0.04, 0.05, 0.06)]
    folder = tmp_path / "grid"
    grid = pool.start_grid(folder, points, {"cfg": cfg, "data": DATA_ARGS, "device": "cpu"}, owner="student")
    assert pool.start_grid(folder, points, {"cfg": cfg, "data": DATA_ARGS}, owner="student") is grid  # one per folder
    _wait(lambda: grid.snapshot().queue_position == 1, what="the grid to queue behind the duel")
    other.pause()
    _wait(lambda: grid.snapshot().done >= 2, timeout=120, what="two grid points")
    assert len(polar.read_grid(folder)) >= 2 and grid.active()

    owners.alive.discard("student")  # a reload: the old session is gone, a new one with the same settings comes
    owners.alive.add("reloaded")
    assert pool.grid(folder, "reloaded") is grid and grid.owner == "reloaded"
    owners.alive.discard("reloaded")  # now the tab is closed for good
    _wait(lambda: grid.snapshot().state == "cancelled", timeout=30, what="the orphaned grid to stop")
    kept = len(polar.read_grid(folder))
    assert 2 <= kept < len(points)
    _wait(lambda: pool.running_count() == 0, timeout=30, what="the slot to free")


def test_a_failing_task_reaches_the_page_as_one_line(pool: TrainerPool, owners: Owners, data: polar.DeviceDataset,
                                                     tmp_path: Path) -> None:
    """A worker's error (here torch's unpickler refusing a blob that is not Polar weights: a paragraph of text)
    ends the task in the error state with one line of at most 300 characters, never a traceback."""
    import pickle

    owners.alive.add("tab")
    duel = pool.new_duel(_cfgs(), DATA_ARGS, data, tmp_path / "a", owner="tab")
    task = duel.run_task("export", {"pruned": pickle.dumps({"polar": {"not": "weights"}}, protocol=4),
                                    "reference": "polar"})
    _wait(lambda: not task.active(), what="the task to fail")
    snap = task.snapshot()
    assert snap.state == "error" and snap.message.startswith("UnpicklingError: Weights only load failed")
    assert "\n" not in snap.message and len(snap.message) <= 300 and "Traceback" not in snap.message


def test_a_paused_trainer_runs_its_own_tasks_and_trains_on_exactly_as_without_them(
        pool: TrainerPool, owners: Owners, data: polar.DeviceDataset, tmp_path: Path) -> None:
    """Paused, a duel's own trainer runs its prune, trade-off and fine-tune (no worker process is started): the
    results equal the same steps in this process, a cancelled fine-tune ends at once while the trainer lives on,
    Start cancels a task still running, and the next epoch's weights equal those of a twin duel that ran no task
    (a hosted task leaves the models, threads and random state as they were)."""
    from polar.saving import read_weights, weights_blob

    owners.alive.update({"a", "twin"})
    duels = {name: pool.new_duel(_cfgs(epochs=3), DATA_ARGS, data, tmp_path / name, owner=name)
             for name in ("a", "twin")}
    for duel in duels.values():
        duel.step_epoch()
        _wait(lambda: duel.snapshot().state == "paused", what="one epoch")
    duel = duels["a"]
    trainer, processes = duel._child.process, pool.process_count()

    threshold = polar.find_threshold(duel.models["polar"], "percent", value=0.3)
    prune = duel.run_task("prune", {"models": weights_blob(duel.models), "threshold": threshold, "reference": "polar"})
    _wait(lambda: not prune.active(), what="the hosted prune")
    snap = prune.snapshot()
    assert snap.state == "done" and prune.in_trainer and prune._child is None, snap.message
    here, _ = polar.matched_flops(duel.models, data, threshold=threshold, reference="polar")
    assert [r["acc_pruned"] for r in snap.result["table"]] == here["acc_pruned"].tolist()
    assert [r["macs"] for r in snap.result["table"]] == here["macs"].tolist()
    # the unpruned accuracies: the ones the trainer measured when it paused (the spec carried none), equal to these
    assert [r["acc_unpruned"] for r in snap.result["table"]] == here["acc_unpruned"].tolist()
    assert [r["acc_pruned"] for r in snap.partial["table"]] == here["acc_pruned"].tolist()  # reported on the way

    sweep = duel.run_task("tradeoff", {"models": weights_blob(duel.models), "reductions": [0.2, 0.4]})
    _wait(lambda: not sweep.active(), what="the hosted trade-off")
    assert sweep.snapshot().state == "done" and sweep.in_trainer
    assert [len(c) for c in sweep.snapshot().result["curves"].values()] == [2, 2]

    finetune = {"pruned": snap.result["pruned"], "epochs": 50, "lr": 0.01,
                "cfgs": {m: c.to_dict() for m, c in duel.cfgs.items()}}
    slow = duel.run_task("finetune", finetune)
    _wait(lambda: slow.snapshot().first_progress_at > 0, what="the hosted fine-tune's first progress")
    assert slow.in_trainer and pool.process_count() == processes  # no worker was started for it
    slow.cancel()
    assert slow.snapshot().state == "cancelled"
    _wait(lambda: pool.running_count() == 0, what="the slot to free")
    again = duel.run_task("finetune", finetune)  # the trainer drops the cancelled one and takes this one
    _wait(lambda: again.snapshot().first_progress_at > 0, what="the next fine-tune's first progress")
    duel.step_epoch()  # resuming training cancels the task the trainer runs for the paused weights
    assert again.snapshot().state == "cancelled"
    _wait(lambda: duel.snapshot().state == "paused" and duel.snapshot().epoch == 2, what="the second epoch")
    assert duel._child.process is trainer and trainer.poll() is None

    twin = duels["twin"]
    twin.step_epoch()
    _wait(lambda: twin.snapshot().state == "paused" and twin.snapshot().epoch == 2, what="the twin's second epoch")
    for m in duel.models:
        assert all(torch.equal(a, b) for a, b in zip(duel.models[m].state_dict().values(),
                                                      twin.models[m].state_dict().values())), m
    assert read_weights(snap.result["pruned"])  # the blob is an ordinary weights blob


def test_beyond_max_paused_the_longest_paused_trainer_hands_its_duel_back_and_it_continues_exactly(
        owners: Owners, data: polar.DeviceDataset, tmp_path: Path) -> None:
    """A class pauses more duels than the server keeps trainers for (``max_paused``): the duel paused longest hands
    its training state to the server and its trainer exits; its Prune runs in a worker meanwhile; its next Start
    continues it mid-epoch in a new trainer, and the epoch ends with the weights and metrics of a twin that never
    stopped."""
    from polar.saving import weights_blob

    pool = TrainerPool(owners, max_running=1, max_processes=3, orphan_grace_s=1.0, threads_per_trainer=1,
                       max_paused=1)
    try:
        owners.alive.update({"a", "b", "twin"})
        cfgs = _cfgs(epochs=2, batch_size=4)  # 40 steps an epoch: a pause lands mid-epoch
        a, b, twin = (pool.new_duel(cfgs, DATA_ARGS, data, tmp_path / n, owner=n) for n in ("a", "b", "twin"))
        for duel in (a, b):
            duel.start()
            _wait(lambda: duel.snapshot().step >= 3, what="a few steps")
            duel.pause()
        steps_per_epoch = data.steps_per_epoch(4)
        assert a.snapshot().state == "paused" and 0 < a.snapshot().step < steps_per_epoch
        _wait(lambda: not a.has_trainer(), what="the longest-paused trainer to hand its duel back")
        assert a.snapshot().state == "paused" and b.has_trainer() and pool.state()["max_paused"] == 1

        threshold = polar.find_threshold(a.models["polar"], "percent", value=0.3)
        prune = a.run_task("prune", {"models": weights_blob(a.models), "threshold": threshold, "reference": "polar"})
        _wait(lambda: not prune.active(), what="the prune of the evicted duel")
        assert prune.snapshot().state == "done" and not prune.in_trainer, prune.snapshot().message

        a.step_epoch()  # continues in a new trainer from where the old one stood
        _wait(lambda: a.snapshot().state == "paused" and a.snapshot().epoch == 1, what="the continued epoch")
        twin.step_epoch()
        _wait(lambda: twin.snapshot().state == "paused" and twin.snapshot().epoch == 1, what="the twin's epoch")
        for m in a.models:
            assert all(torch.equal(x, y) for x, y in zip(a.models[m].state_dict().values(),
                                                         twin.models[m].state_dict().values())), m
        keys = ("method", "epoch", "train_loss", "train_acc", "reg", "test_acc")
        assert [{k: r[k] for k in keys} for r in a.snapshot().epochs] == \
            [{k: r[k] for k in keys} for r in twin.snapshot().epochs]
        assert a.snapshot().start_acc == twin.snapshot().start_acc is not None
    finally:
        pool.close()


def test_a_task_takes_the_whole_slot_only_while_its_page_is_the_only_one_open(pool: TrainerPool, owners: Owners,
                                                                            data: polar.DeviceDataset,
                                                                            tmp_path: Path) -> None:
    """One page open: a task (and the paused trainer's accuracy measurement) uses all the cores of its slot; several:
    a trainer's threads, leaving a core to the server and the pages (OpenMP threads preempted stall each other).
    Other programs' load is the next test's: here it reads none, so that a busy machine cannot change the answer."""
    pool.others_load.cores = lambda: 0.0
    owners.alive.add("a")
    pool.new_duel(_cfgs(), DATA_ARGS, data, tmp_path / "a", owner="a")
    assert pool.task_threads() == pool.threads_per_task
    owners.alive.add("b")
    pool.new_duel(_cfgs(), DATA_ARGS, data, tmp_path / "b", owner="b")
    assert pool.task_threads() == pool.threads_per_trainer == 1
    owners.alive.discard("b")  # its tab closed
    assert pool.task_threads() == pool.threads_per_task


@pytest.mark.skipif(not Path("/proc/stat").exists(), reason="other programs' load is read from Linux's /proc")
def test_a_task_leaves_the_cores_another_program_keeps_busy(pool: TrainerPool, owners: Owners,
                                                           data: polar.DeviceDataset, tmp_path: Path) -> None:
    """A CPU-bound program outside the server's process tree (here a busy loop the shell starts and leaves behind)
    counts within a few seconds and a task started then gets one thread fewer; it stops counting once it ends."""
    if pool.threads_per_task < 2:
        pytest.skip("one core: a task has one thread anyway")
    owners.alive.add("me")
    pool.new_duel(_cfgs(), DATA_ARGS, data, tmp_path / "runs", owner="me")
    _wait(lambda: len(pool.others_load._recent) >= 2, 30, "two load samples")
    before = pool.others_load.cores()
    busy = subprocess.run(["sh", "-c", f"{sys.executable} -c 'while True: pass' >/dev/null 2>&1 & echo $!"],
                          capture_output=True, text=True, check=True)
    pid = int(busy.stdout)
    try:
        _wait(lambda: pool.others_load.cores() >= before + 0.8 and pool.task_threads() < pool.threads_per_task,
              30, "the busy loop's core to count and a task to leave it")
    finally:
        os.kill(pid, signal.SIGKILL)
    loaded = pool.others_load.cores()
    _wait(lambda: pool.others_load.cores() <= loaded - 0.7, 30, "the busy loop's core to stop counting")
