"""The one training loop: a generator of events that the CLI, the app and the notebooks all consume.

    for event in polar.train(cfg, run_dir="runs/r56"):
        if isinstance(event, polar.EpochEvent): print(event.test_acc)

Each step: forward, cross-entropy + reg(model), backward, SGD step, clamp γ (polarization), zero_grad — then a
StepEvent. Each epoch: evaluation, a snapshot of every sparse γ, an atomic checkpoint — then an EpochEvent.
Distributed data parallel runs when launched with torchrun (one process per GPU, or gloo on CPU).

A :class:`TrainState` passed in is kept up to date between steps; passed to another ``train`` with the model's
weights it continues the training exactly where it stood, even mid-epoch (the explorer hands a paused duel to a
new process this way).
"""
from __future__ import annotations

import io
import itertools
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from .channel_cost import flops_layer_weights
from .config import ConfigError, TrainConfig
from .datasets import load_training_data
from .device import autocast, init_distributed, rank_world, synchronize
from .device_dataset import DeviceDataset
from .evaluate import evaluate, to_input
from .models import sparse_bns, unwrap
from .pretrained import initial_model
from .regularizers import Regularizer, make_regularizer
from .runs import CheckpointError, RunDir
from .schedule import lr_at

__all__ = ["StepEvent", "EpochEvent", "TrainState", "train", "lr_at", "gamma_snapshot", "build_optimizer"]


@dataclass
class StepEvent:
    """One optimizer step. ``loss`` (cross-entropy) and ``reg`` are detached 0-dim tensors on the training device:
    turning them into floats is a CPU-GPU sync, so consumers do it only when they display them."""

    epoch: int  # 1-based epoch this step belongs to
    step: int  # 1-based global step
    steps_per_epoch: int
    lr: float
    loss: Tensor
    reg: Tensor


@dataclass
class EpochEvent:
    """The end of an epoch: accuracies in [0, 1], wall time, and every sparse γ per layer (CPU copies)."""

    epoch: int
    step: int
    lr: float
    train_loss: float
    train_acc: float
    reg: float
    test_loss: float
    test_acc: float
    seconds: float
    images_per_s: float
    gammas: dict[str, Tensor]

    def metrics(self) -> dict[str, float | int]:
        """The row written to metrics.csv."""
        all_gamma = torch.cat(list(self.gammas.values()))
        return {"epoch": self.epoch, "step": self.step, "lr": self.lr, "train_loss": self.train_loss,
                "train_acc": self.train_acc, "reg": self.reg, "test_loss": self.test_loss, "test_acc": self.test_acc,
                "seconds": self.seconds, "images_per_s": self.images_per_s,
                "gamma_below_0.01": float((all_gamma < 0.01).float().mean()),
                "gamma_in_0.1_0.4": float(((all_gamma > 0.1) & (all_gamma < 0.4)).float().mean())}


@dataclass
class TrainState:
    """Where one training stands between two steps: with the model's weights, all it takes to continue it exactly.

    ``polar.train(cfg, model=model, state=state)`` updates a state after every step and epoch; ``to_bytes()`` then
    captures it (the optimizer's momentum, the steps taken, the current epoch's partial sums, the metrics so far,
    the global random state), and a ``train`` given ``TrainState.from_bytes(blob)`` and a model holding the same
    weights takes the same steps as the first would have. The epoch checkpoint cannot do this: it is written at an
    epoch's end, and a duel paused in the explorer is usually in the middle of one. One process only (no torchrun).
    """

    step: int = 0  # optimizer steps taken
    epochs_done: int = 0  # epochs whose evaluation and checkpoint are done
    epoch_sums: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])  # this epoch's loss, reg, correct sums
    epoch_count: int = 0  # this epoch's images so far
    epoch_seconds: float = 0.0  # this epoch's training time so far
    history: list[dict] = field(default_factory=list)  # metrics.csv rows of the epochs done
    optimizer: dict | None = None  # the optimizer's state_dict, once captured or read back
    rng: Tensor | None = None  # the global CPU random state when captured
    _live: torch.optim.Optimizer | None = field(default=None, repr=False, compare=False)  # while training

    def to_bytes(self) -> bytes:
        """This state as one ``torch.save`` blob (tensors, numbers and strings only: read back without unpickling
        code)."""
        optimizer = self._live.state_dict() if self._live is not None else self.optimizer
        buffer = io.BytesIO()
        torch.save({"step": self.step, "epochs_done": self.epochs_done,
                    "epoch_sums": [float(v) for v in self.epoch_sums],  # a device tensor while training
                    "epoch_count": self.epoch_count, "epoch_seconds": self.epoch_seconds, "history": self.history,
                    "optimizer": optimizer, "rng": torch.get_rng_state()}, buffer)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, blob: bytes) -> TrainState:
        saved = torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
        return cls(**saved)


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.SGD:
    """SGD with momentum; BatchNorm γ and β are exempt from weight decay unless ``bn_wd`` (the paper's --bn-wd)."""
    bn_params = {id(p) for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
                 for p in m.parameters(recurse=False)}
    decay = [p for p in model.parameters() if cfg.bn_wd or id(p) not in bn_params]
    no_decay = [p for p in model.parameters() if not cfg.bn_wd and id(p) in bn_params]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum)


def gamma_snapshot(model: nn.Module) -> dict[str, Tensor]:
    """Every sparse BN's γ by module name, as float32 CPU copies (for histograms and the run directory)."""
    inner = unwrap(model)
    names = {id(m): name for name, m in inner.named_modules()}
    return {names[id(bn)]: bn.weight.detach().float().cpu().clone() for bn in sparse_bns(inner)}


def train(cfg: TrainConfig, run_dir: str | Path | None = None, resume: bool = False,
          model: nn.Module | None = None, data: DeviceDataset | None = None,
          reg: Regularizer | None = None, state: TrainState | None = None) -> Iterator[StepEvent | EpochEvent]:
    """Train ``cfg.model`` on ``cfg.dataset``, yielding a StepEvent per step and an EpochEvent per epoch.

    Args:
        cfg: the run's settings.
        run_dir: where config.json, metrics.csv, γ snapshots and checkpoint.pt go (None: keep nothing on disk).
        resume: continue from ``run_dir``'s checkpoint (its config must match ``cfg``'s model and data).
        model: train this model instead of building one (its weights are updated in place).
        data: reuse an already loaded dataset (the app trains two models on one copy).
        reg: a regularizer object instead of the one ``cfg.reg``/``lam``/``t`` describe.
        state: kept up to date as training goes (see :class:`TrainState`); one that has taken steps continues from
            where it stood (``model`` must hold the weights it was captured with; ``run_dir`` the run it belongs to).
    """
    device = init_distributed(cfg.device)
    rank, world = rank_world()
    if cfg.compile and device.type != "cuda":
        raise ConfigError("compile is for CUDA (it captures the step in CUDA graphs); on a CPU compiling a ResNet-20 "
                          "took over 15 minutes here, far more than it saves: leave it off")
    data = data if data is not None else load_training_data(cfg, device)
    model = model if model is not None else initial_model(cfg, data.num_classes)
    if reg is None:
        weight_range = cfg.flops_weight_range()
        layer_weights = flops_layer_weights(model, *weight_range) if weight_range and cfg.reg != "none" else None
        reg = make_regularizer(cfg.reg, cfg.lam, cfg.t, cfg.upper, layer_weights)
    channels_last = cfg.channels_last and device.type in ("cpu", "cuda")
    model.to(device, memory_format=torch.channels_last if channels_last else torch.preserve_format)
    optimizer = build_optimizer(model, cfg)
    runs = RunDir(run_dir) if run_dir is not None else None
    history: list[dict] = []
    start_epoch = 0
    state = state if state is not None else TrainState()
    continuing = state.step > 0 or state.epochs_done > 0
    if continuing and (resume or world > 1):
        raise ConfigError("a TrainState continues a training by itself: pass it without resume=True, in one process")
    if runs is not None and rank == 0:
        runs.remove_stale_temporaries()  # left by a write that was killed outright (kill -9); saved files stay
    if continuing:
        start_epoch, history = _continue(state, optimizer)
    elif resume:
        if runs is None or not runs.checkpoint_path.is_file():
            raise CheckpointError(f"nothing to resume: {run_dir}/checkpoint.pt does not exist")
        start_epoch, history = _restore(runs, cfg, model, optimizer)
    elif runs is not None and rank == 0:
        if runs.checkpoint_path.is_file():
            raise CheckpointError(f"{run_dir} already holds a run; pass --resume to continue it or choose another "
                                  "--out")
        runs.write_config(cfg.to_dict())
    device_ids = [device.index] if device.type == "cuda" else None
    ddp_model = nn.parallel.DistributedDataParallel(model, device_ids=device_ids) if world > 1 else model
    # A ResNet-20 step at batch 128 is ~60 small kernels: on a GPU, Python and kernel launches bound it, which CUDA
    # graphs ("reduce-overhead") remove. Evaluation stays eager (eval mode would be a second graph).
    forward = torch.compile(ddp_model, mode="reduce-overhead") if cfg.compile else ddp_model

    steps_per_epoch = data.steps_per_epoch(cfg.batch_size, world)
    if steps_per_epoch < 1:
        raise ConfigError(f"batch_size {cfg.batch_size} x {world} process(es) exceeds the {data.num_train} "
                          "training images; lower it or enlarge the subset")
    total_steps = cfg.epochs * steps_per_epoch
    step = state.step if continuing else start_epoch * steps_per_epoch
    state.step, state.epochs_done, state.history, state._live = step, start_epoch, history, optimizer
    model.train()
    for epoch in range(start_epoch + 1, cfg.epochs + 1):
        synchronize(device)
        t0 = time.perf_counter()
        sums = torch.zeros(3, device=device, dtype=torch.float64)  # loss, reg, correct: summed on the device
        # this epoch's images, its steps taken before this call and their seconds (a continued state)
        count, done_before, carried_s = 0, 0, 0.0
        if continuing and epoch == start_epoch + 1:
            sums += torch.tensor(state.epoch_sums, device=device, dtype=torch.float64)
            count, done_before, carried_s = state.epoch_count, step - start_epoch * steps_per_epoch, state.epoch_seconds
        batches = data.train_batches(cfg.batch_size, seed=cfg.seed * 10_000 + epoch, rank=rank, world_size=world)
        lr = lr_at(max(0, step - 1), total_steps, cfg, steps_per_epoch)  # the last step's, if none is left
        # the steps already taken: their batches are drawn and dropped, so the augmentation's generator is where
        # the first training left it
        for x, y in itertools.islice(batches, done_before, None):
            x, y = to_input(x, y, device, channels_last)
            lr = lr_at(step, total_steps, cfg, steps_per_epoch)
            for group in optimizer.param_groups:
                group["lr"] = lr
            with autocast(device, cfg.amp):
                logits = forward(x)
            loss = F.cross_entropy(logits.float(), y)
            penalty = reg(model)
            (loss + penalty).backward()
            optimizer.step()
            reg.clamp_(model)
            optimizer.zero_grad(set_to_none=True)
            step += 1
            loss, penalty = loss.detach(), penalty.detach()
            sums += torch.stack([loss.double() * len(y), penalty.double() * len(y),
                                 (logits.detach().argmax(1) == y).sum().double()])
            count += len(y)
            state.step, state.epoch_sums, state.epoch_count = step, sums, count
            state.epoch_seconds = carried_s + time.perf_counter() - t0
            yield StepEvent(epoch, step, steps_per_epoch, lr, loss, penalty)
        if world > 1:
            sums = torch.cat([sums, sums.new_tensor([count])])
            dist.all_reduce(sums)
            sums, count = sums[:3], int(sums[3])
        synchronize(device)
        seconds = carried_s + time.perf_counter() - t0
        # in fp32 even when training in bf16: the accuracy reported is the one polar.evaluate(model) reproduces
        test_loss, test_acc = evaluate(ddp_model, data, channels_last=channels_last)
        loss_sum, reg_sum, correct = sums.tolist()  # CPU-GPU sync, once per epoch
        event = EpochEvent(epoch, step, lr, loss_sum / count, correct / count, reg_sum / count, test_loss, test_acc,
                           seconds, count / seconds, gamma_snapshot(model))
        history.append(event.metrics())
        if runs is not None and rank == 0:
            runs.save_gammas(epoch, event.gammas)
            runs.write_metrics(history)
            runs.save_checkpoint({"model": unwrap(model).name, "spec": unwrap(model).spec(),
                                  "state_dict": unwrap(model).state_dict(), "optimizer": optimizer.state_dict(),
                                  "epoch": epoch, "step": step, "config": cfg.to_dict(),
                                  "rng": torch.get_rng_state()})
        state.epochs_done, state.history = epoch, history
        state.epoch_sums, state.epoch_count, state.epoch_seconds = [0.0, 0.0, 0.0], 0, 0.0
        yield event


def _continue(state: TrainState, optimizer: torch.optim.Optimizer) -> tuple[int, list]:
    """Load a captured :class:`TrainState` into ``optimizer`` and the global random state; return the epochs done
    and the metrics so far."""
    if state.optimizer is not None:
        optimizer.load_state_dict(state.optimizer)
    if state.rng is not None:
        torch.set_rng_state(state.rng)
    return state.epochs_done, list(state.history)


def _restore(runs: RunDir, cfg: TrainConfig, model: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[int, list]:
    """Load a checkpoint into ``model``/``optimizer``; return the completed epochs and the metrics so far."""
    ckpt = runs.load_checkpoint()
    saved = ckpt.get("config", {})
    for key in ("model", "dataset", "subset", "reg", "batch_size", "seed"):
        if key in saved and saved[key] != getattr(cfg, key):
            raise CheckpointError(f"cannot resume {runs.path}: it was trained with {key}={saved[key]!r}, "
                                  f"not {getattr(cfg, key)!r}")
    try:
        unwrap(model).load_state_dict(ckpt["state_dict"])
        optimizer.load_state_dict(ckpt["optimizer"])
    except (KeyError, RuntimeError, ValueError) as err:
        raise CheckpointError(f"{runs.checkpoint_path} does not fit this model ({str(err).splitlines()[0]})") from None
    if "rng" in ckpt:
        torch.set_rng_state(ckpt["rng"])
    runs.write_config(cfg.to_dict())
    return int(ckpt["epoch"]), runs.read_metrics()[: int(ckpt["epoch"])]
