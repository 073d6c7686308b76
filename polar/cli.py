"""The ``polar`` command line: ``python -m polar train ...`` (and, with pruning, ``prune``/``finetune``/``search``).

Every TrainConfig field is a flag (``--lam``, ``--bn-wd/--no-bn-wd``, ...), on top of a schedule preset. Bad input
ends with one line ``polar: error: ...`` and exit status 2, never a traceback.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Callable, Sequence
from typing import Any

from tqdm import tqdm

from .config import SCHEDULES, TrainConfig
from .runs import RunDir
from .train import EpochEvent, StepEvent, train

__all__ = ["main", "build_parser"]

_HELP = {f.name: f.metadata.get("help", "") for f in dataclasses.fields(TrainConfig)}


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per TrainConfig field; defaults are SUPPRESSed so only flags the user typed override the preset."""
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        if f.type == "bool":
            parser.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS)
        else:
            cast = {"int": int, "float": float, "str": str}[str(f.type)]
            parser.add_argument(flag, dest=f.name, type=cast, default=argparse.SUPPRESS,
                                help=f"(default {f.default!r} or the preset's)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="polar", description="Polarization-regularized channel pruning.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("train", help="sparsity training with polarization, L1 or no regularizer")
    p.add_argument("--preset", default="cifar", choices=sorted(SCHEDULES),
                   help="schedule preset (the paper's 'cifar' by default); flags override it")
    p.add_argument("--out", required=True, help="run directory for config.json, metrics.csv, gammas/, checkpoint.pt")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_config_flags(p)
    p.set_defaults(func=cmd_train)
    return parser


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    return {k: v for k, v in vars(args).items() if k in names}


def cmd_train(args: argparse.Namespace) -> None:
    run = RunDir(args.out)
    if args.resume:
        cfg = TrainConfig.from_dict({**run.read_config(), **_overrides(args)})
    else:
        cfg = TrainConfig.from_preset(args.preset, **_overrides(args))
    from .train import _rank_world  # rank is known only after train() joins the process group

    bar = None
    for event in train(cfg, run_dir=args.out, resume=args.resume):
        main_rank = _rank_world()[0] == 0
        if isinstance(event, StepEvent) and main_rank and not args.quiet:
            if bar is None:
                bar = tqdm(total=cfg.epochs * event.steps_per_epoch, initial=event.step - 1, unit="step",
                           dynamic_ncols=True)
            bar.update(1)
            if event.step % 20 == 0:
                bar.set_postfix(epoch=event.epoch, loss=f"{float(event.loss):.3f}", reg=f"{float(event.reg):.3f}")
        elif isinstance(event, EpochEvent) and main_rank:
            m = event.metrics()
            (bar.write if bar else print)(
                f"epoch {m['epoch']}: train loss {m['train_loss']:.4f} acc {m['train_acc']:.4f}, test acc "
                f"{m['test_acc']:.4f}, reg {m['reg']:.4f}, gamma<0.01 {m['gamma_below_0.01']:.1%}, "
                f"gamma in (0.1,0.4) {m['gamma_in_0.1_0.4']:.1%}, {m['seconds']:.1f}s ({m['images_per_s']:.0f} img/s)")
    if bar is not None:
        bar.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], None] = args.func
    try:
        func(args)
    except KeyboardInterrupt:
        print("polar: interrupted; the run directory keeps its last complete epoch (continue with --resume)",
              file=sys.stderr)
        return 130
    except ValueError as err:  # ConfigError, DatasetError, CheckpointError and the registry's errors
        print(f"polar: error: {err}", file=sys.stderr)
        return 2
    return 0


def main_entry() -> None:
    """The ``polar`` console script."""
    sys.exit(main())
