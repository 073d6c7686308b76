"""The ``polar`` command line: ``train``, ``prune``, ``finetune``, ``export`` and ``search`` (the paper's
Algorithm 1).

Every TrainConfig field is a flag (``--lam``, ``--bn-wd/--no-bn-wd``, ...), on top of a schedule preset. Bad input
ends with one line ``polar: error: ...`` and exit status 2, never a traceback.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from torch import nn
from tqdm import tqdm

from .atomic import atomic_write_text
from .compare import finetune_config
from .config import SCHEDULES, ConfigError, TrainConfig, field_types, parse_numbers
from .device import finish_distributed, rank_world, resolve_device
from .errors import PolarError
from .runs import RunDir
from .train import EpochEvent, StepEvent, train

__all__ = ["main", "build_parser"]



def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per TrainConfig field; defaults are SUPPRESSed so only flags the user typed override the preset."""
    kinds = field_types()
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        if kinds[f.name] is bool:
            parser.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS)
        else:
            parser.add_argument(flag, dest=f.name, type=kinds[f.name], default=argparse.SUPPRESS,
                                help=f"(default {f.default!r} or the preset's)")


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line ``polar: error: ...`` (exit 2) like every other error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"polar: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="polar", description="Polarization-regularized channel pruning.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("train", help="sparsity training with polarization, L1 or no regularizer")
    p.add_argument("--preset", default="cifar", choices=sorted(SCHEDULES),
                   help="schedule preset (the paper's 'cifar' by default); flags override it")
    p.add_argument("--out", required=True, help="run directory for config.json, metrics.csv, gammas/, checkpoint.pt")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_config_flags(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("prune", help="prune a trained run's channels; report MACs, params and accuracy")
    p.add_argument("--run", required=True, help="run directory written by polar train")
    p.add_argument("--threshold", default="valley",
                   help="valley (Polar's robust valley), paper (the official code's literal rule), percent:SHARE, "
                        "fixed:VALUE or flops:REDUCTION (default valley)")
    p.add_argument("--per-layer", action="store_true",
                   help="valley/paper: one threshold per sparse layer from its own γ, as the official scripts")
    p.add_argument("--zero-beta", action="store_true", help="the paper's code: zero β too, fold nothing")
    p.add_argument("--round-to", type=int, default=1,
                   help="keep channel counts at multiples of this (8 runs faster on CPU, 16 on AVX-512 CPUs; "
                        "default 1: exact threshold)")
    p.add_argument("--narrow-residual", action="store_true",
                   help="CIFAR ResNets: also remove residual channels that no block writes to any more")
    p.add_argument("--speedup", type=float, default=None,
                   help="instead of a threshold: widths for this measured speed-up on this CPU (e.g. 2), from a "
                        "latency table of --runtime at --batch-size (measured once, ~1-2 min, then cached)")
    p.add_argument("--runtime", default="torch", choices=["torch", "onnxruntime"],
                   help="--speedup: where the network will run (default torch)")
    p.add_argument("--batch-size", type=int, default=64, help="--speedup: the batch size it will run at (default 64)")
    p.add_argument("--replans", type=int, default=2,
                   help="--speedup: measure the network chosen and plan again for a shortfall over 10%%, at most this "
                        "many times (default 2; 0: the table's prediction alone)")
    p.add_argument("--out", default="", help="output folder (default RUN/pruned)")
    p.add_argument("--sweep", default="", help="also sweep FLOPs reductions, e.g. 0.1,0.3,0.5,0.7 -> sweep.csv")
    p.set_defaults(func=cmd_prune)

    p = sub.add_parser("finetune", help="fine-tune a pruned model (no regularizer)")
    p.add_argument("--run", required=True, help="the sparse-training run directory (data and model settings)")
    p.add_argument("--pruned", default="", help="pruned model file (default RUN/pruned/model.pt)")
    p.add_argument("--preset", default="cifar-finetune", choices=sorted(SCHEDULES))
    p.add_argument("--out", default="", help="run directory for the fine-tuning (default RUN/finetune)")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--quiet", action="store_true")
    _add_config_flags(p)
    p.set_defaults(func=cmd_finetune)

    p = sub.add_parser("export", help="write a (pruned) model for deployment: ONNX")
    p.add_argument("--run", required=True, help="the run directory (its pruned/model.pt unless --model is given)")
    p.add_argument("--model", default="", help="a model file from polar prune or polar.save (default RUN/pruned)")
    p.add_argument("--format", default="onnx", choices=["onnx"])
    p.add_argument("--out", default="", help="output file (default: next to the model, .onnx)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("search", help="Algorithm 1: search λ for a target FLOPs reduction with short runs")
    p.add_argument("--target-flops-reduction", type=float, required=True, help="e.g. 0.5")
    p.add_argument("--tolerance", type=float, default=0.03)
    p.add_argument("--max-trials", type=int, default=8)
    p.add_argument("--preset", default="demo", choices=sorted(SCHEDULES))
    p.add_argument("--out", required=True, help="folder for the trials' run directories and trials.csv")
    p.add_argument("--quiet", action="store_true", help="(trials print one line each in any case)")
    _add_config_flags(p)
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("grid", help="Figure 3: FLOPs reduction at the valley and accuracy drop over λ × t")
    p.add_argument("--lams", required=True, help="polarization λ values, e.g. 0.005,0.01,0.02")
    p.add_argument("--ts", default="1.2", help="t values, e.g. 1.0,1.2,1.4")
    p.add_argument("--seeds", default="0", help="repeats, e.g. 0,1,2 (the summary gives mean ± std)")
    p.add_argument("--preset", default="demo-baseline", choices=sorted(SCHEDULES),
                   help="each point's sparse-training schedule (default: briefly, from the shipped baseline)")
    p.add_argument("--out", required=True,
                   help="folder: one JSON per finished point (a rerun resumes), then grid.csv and summary.csv")
    _add_config_flags(p)
    p.set_defaults(func=cmd_grid)
    return parser


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    return {k: v for k, v in vars(args).items() if k in names}


def _run_training(cfg: TrainConfig, out: str, resume: bool, quiet: bool) -> None:
    """Consume polar.train's events: a progress bar over steps and one line per epoch (rank 0 only)."""
    bar = None
    for event in train(cfg, run_dir=out, resume=resume):
        main_rank = rank_world()[0] == 0  # known only once train() joined the group
        if isinstance(event, StepEvent) and main_rank and not quiet:
            if bar is None:
                bar = tqdm(total=cfg.epochs * event.steps_per_epoch, initial=event.step - 1, unit="step",
                           dynamic_ncols=True)
            bar.update(1)
            if event.step % 20 == 0:  # float() syncs with the GPU: only at display points
                bar.set_postfix(epoch=event.epoch, loss=f"{float(event.loss):.3f}", reg=f"{float(event.reg):.3f}")
        elif isinstance(event, EpochEvent) and main_rank:
            m = event.metrics()
            (bar.write if bar else print)(
                f"epoch {m['epoch']}: train loss {m['train_loss']:.4f} acc {m['train_acc']:.4f}, test acc "
                f"{m['test_acc']:.4f}, reg {m['reg']:.4f}, gamma<0.01 {m['gamma_below_0.01']:.1%}, "
                f"gamma in (0.1,0.4) {m['gamma_in_0.1_0.4']:.1%}, {m['seconds']:.1f}s ({m['images_per_s']:.0f} img/s)")
    if bar is not None:
        bar.close()


def _writable_dir(path: str | Path, flag: str) -> Path:
    """``path`` as a folder this process can write into (created if missing), checked before any expensive work;
    a ConfigError naming ``flag`` otherwise."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{flag} {path} is a file, not a folder; choose another {flag}")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as err:
        raise ConfigError(f"{flag} {path} cannot be written ({err.strerror}); choose another {flag}") from None
    return path


def cmd_train(args: argparse.Namespace) -> None:
    run = RunDir(args.out)
    if not args.resume and run.checkpoint_path.is_file():
        raise ConfigError(f"{args.out} already holds a run; pass --resume to continue it or choose another --out")
    if args.resume:
        cfg = TrainConfig.from_dict({**run.read_config(), **_overrides(args)})
    else:
        cfg = TrainConfig.from_preset(args.preset, **_overrides(args))
    resolve_device(cfg.device)
    _writable_dir(args.out, "--out")
    _run_training(cfg, args.out, args.resume, args.quiet)


def _parse_threshold(text: str) -> tuple[str, float | None]:
    method, _, value = text.partition(":")
    if method in ("valley", "paper") and not value:
        return method, None
    if method in ("percent", "fixed", "flops") and value:
        try:
            number = float(value)
        except ValueError:
            number = math.nan
        if math.isfinite(number) and (method == "fixed" or 0 <= number < 1):
            return method, number
    raise ConfigError("--threshold must be valley, paper, percent:SHARE (0-1), fixed:VALUE or flops:REDUCTION "
                      f"(0-1), got {text!r}")


def _parse_reductions(text: str) -> list[float]:
    try:
        values = [float(r) for r in text.split(",")] if text else []
    except ValueError:
        values = [math.nan]
    if not all(math.isfinite(r) and 0 <= r < 1 for r in values):
        raise ConfigError(f"--sweep must be FLOPs reductions in [0, 1) separated by commas, e.g. 0.1,0.3,0.5; "
                          f"got {text!r}")
    return values


def cmd_prune(args: argparse.Namespace) -> None:
    from .datasets import load_dataset
    from .evaluate import evaluate
    from .flops import cost, flops_reduction
    from .prune import prune
    from .saving import load, save
    from .sweep import sweep
    from .threshold import find_threshold, threshold_for_reduction

    method, value = _parse_threshold(args.threshold)  # every argument is checked before anything is loaded
    if args.speedup is not None:
        _check_speedup_args(args)
    reductions = _parse_reductions(args.sweep)
    if args.round_to < 1:
        raise ConfigError(f"--round-to must be a positive integer (1 = exact threshold), got {args.round_to}")
    if args.per_layer and method not in ("valley", "paper"):
        raise ConfigError(f"--per-layer goes with --threshold valley or paper, not {args.threshold!r}")
    run = RunDir(args.run)
    cfg = TrainConfig.from_dict(run.read_config())
    out = _writable_dir(args.out or run.path / "pruned", "--out")
    model = load(run.checkpoint_path)
    options = {"round_to": args.round_to, "narrow_residual": args.narrow_residual}
    speed: dict[str, Any] = {}
    if args.speedup is not None:
        threshold, small, speed = _prune_for_speed(model, args)
    else:
        if method == "flops":
            threshold = threshold_for_reduction(model, float(value), **options)  # type: ignore[arg-type]
        else:
            threshold = find_threshold(model, method, value, upper=cfg.upper, per_layer=args.per_layer)
        small = prune(model, threshold, zero_beta=args.zero_beta, **options)
    data = load_dataset(cfg.dataset, subset=cfg.subset or None, data_dir=cfg.data_dir, path=cfg.data_path or None)
    before, after = cost(model), cost(small)
    report = {"run": str(run.path), "threshold_rule": args.threshold, "per_layer": args.per_layer,
              "threshold": threshold,
              "zero_beta": args.zero_beta, **options, "macs_before": before.macs, "macs_after": after.macs,
              "flops_before": before.flops, "flops_after": after.flops, "params_before": before.params,
              "params_after": after.params, "flops_reduction": flops_reduction(before, after),
              "acc_before_pruning": evaluate(model, data)[1], "acc_after_pruning": evaluate(small, data)[1], **speed}
    text = json.dumps(report, indent=2, allow_nan=False) + "\n"  # a NaN would make invalid JSON: fail before writing
    save(small, out / "model.pt")
    atomic_write_text(text, out / "report.json")
    if speed:
        shown = f"none (widths for {args.speedup:g}x in {args.runtime}: predicted {speed['predicted_speedup']:.2f}x, " \
            f"measured {speed['measured_speedup']:.2f}x at batch {args.batch_size})"
    elif isinstance(threshold, float):
        shown = f"{threshold:.4f} ({args.threshold})"
    else:
        shown = f"per layer {min(threshold.values()):.4f}..{max(threshold.values()):.4f} ({args.threshold})"
    print(f"threshold {shown}: MACs {before.macs / 1e6:.2f}M -> {after.macs / 1e6:.2f}M "
          f"(FLOPs reduction {report['flops_reduction']:.1%}), params {before.params / 1e6:.3f}M -> "
          f"{after.params / 1e6:.3f}M, test acc {report['acc_before_pruning']:.4f} -> "
          f"{report['acc_after_pruning']:.4f} before fine-tuning; wrote {out}/model.pt and report.json")
    if reductions:
        table = sweep(model, data, reductions=reductions, round_to=args.round_to,
                      narrow_residual=args.narrow_residual)
        table.to_csv(out / "sweep.csv", index=False)
        print(table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))


def _check_speedup_args(args: argparse.Namespace) -> None:
    if not math.isfinite(args.speedup) or args.speedup < 1:
        raise ConfigError(f"--speedup must be a number of at least 1 (2 = twice as fast), got {args.speedup}")
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be a positive integer, got {args.batch_size}")
    if args.replans < 0:
        raise ConfigError(f"--replans must be 0 or more (0: the latency table's prediction alone), got {args.replans}")
    clashing = [flag for flag, used in (("--threshold", args.threshold != "valley"), ("--per-layer", args.per_layer),
                                        ("--zero-beta", args.zero_beta), ("--round-to", args.round_to != 1),
                                        ("--narrow-residual", args.narrow_residual)) if used]
    if clashing:
        raise ConfigError(f"--speedup chooses the widths itself; drop {', '.join(clashing)}")


def _prune_for_speed(model: nn.Module, args: argparse.Namespace
                     ) -> tuple[None, nn.Module, dict[str, Any]]:
    """``polar.prune_to_speedup`` with the latency table's prediction and a fresh measurement for the report (not
    the one that chose among the re-plans: the network kept was the closest of those, so theirs leans its way)."""
    from .latency_table import measured_speedup
    from .speedup import pruned_for_speedup

    done = pruned_for_speedup(model, args.speedup, args.runtime, args.batch_size, replans=args.replans)
    return None, done.model, {
        "speedup_asked": args.speedup, "runtime": args.runtime, "batch_size": args.batch_size, "widths": done.widths,
        "predicted_speedup": done.predicted_speedup, "replans": args.replans, "asked_of_table": done.asked_of_table,
        "measured_speedup": measured_speedup(model, done.model, args.runtime, args.batch_size),
        "table_granularity": done.table.granularity, "table_fit_error": done.table.fit_error}


def cmd_finetune(args: argparse.Namespace) -> None:
    run = RunDir(args.run)
    pruned = Path(args.pruned) if args.pruned else run.path / "pruned" / "model.pt"
    if not pruned.is_file():
        raise ConfigError(f"{pruned} does not exist; run polar prune --run {run.path} first or pass --pruned")
    out = args.out or str(run.path / "finetune")
    if args.resume:
        cfg = TrainConfig.from_dict({**RunDir(out).read_config(), **_overrides(args)})
    else:
        # the one fine-tune recipe (polar.finetune_config): the sparse run's model and data, the preset's schedule
        cfg = finetune_config(TrainConfig.from_dict(run.read_config()), args.preset,
                              **{"init": str(pruned), **_overrides(args)})
    resolve_device(cfg.device)
    _writable_dir(out, "--out")
    _run_training(cfg, out, args.resume, args.quiet)


def cmd_export(args: argparse.Namespace) -> None:
    from .export import export_onnx
    from .saving import load

    source = Path(args.model) if args.model else Path(args.run) / "pruned" / "model.pt"
    if not source.is_file():
        raise ConfigError(f"{source} does not exist; run polar prune --run {args.run} first or pass --model")
    out = Path(args.out) if args.out else source.with_suffix(".onnx")
    _writable_dir(out.parent, "--out")
    model = load(source)
    export_onnx(model, out)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB): input 'images' (N, 3, {model.input_size}, "
          f"{model.input_size}), output 'logits'")


def cmd_search(args: argparse.Namespace) -> None:
    from .search import search_lambda

    if not (math.isfinite(args.target_flops_reduction) and 0 < args.target_flops_reduction < 1):
        raise ConfigError(f"--target-flops-reduction must be in (0, 1), got {args.target_flops_reduction}")
    if not (math.isfinite(args.tolerance) and 0 < args.tolerance < 1):
        raise ConfigError(f"--tolerance must be in (0, 1), got {args.tolerance}")
    if args.max_trials < 1:
        raise ConfigError(f"--max-trials must be at least 1, got {args.max_trials}")
    cfg = TrainConfig.from_preset(args.preset, **{"reg": "polar", **_overrides(args)})
    resolve_device(cfg.device)
    _writable_dir(args.out, "--out")
    print(f"searching λ for a {args.target_flops_reduction:.0%} FLOPs reduction (t = {cfg.t}, tolerance "
          f"{args.tolerance:.0%}, {cfg.epochs} epochs per trial)")
    last = None
    for trial in search_lambda(cfg, args.target_flops_reduction, args.out, args.tolerance, args.max_trials):
        last = trial
        print(f"trial {trial.trial}: λ {trial.lam:.4g} -> valley {trial.threshold:.3f}, FLOPs reduction "
              f"{trial.flops_reduction:.1%}, test acc {trial.test_acc:.4f} -> {trial.pruned_acc:.4f} after pruning")
    if last is None:  # max_trials >= 1 was checked above
        raise RuntimeError("the λ search ran no trial")
    hit = abs(last.flops_reduction - args.target_flops_reduction) <= args.tolerance
    print(f"{'found' if hit else 'closest after the trial budget'}: λ = {last.lam:.4g} ({last.run_dir}); "
          f"all trials in {args.out}/trials.csv")


def cmd_grid(args: argparse.Namespace) -> None:
    from .datasets import load_training_data
    from .grid import grid_summary, read_grid, tl_grid
    from .pretrained import initial_model

    lams, ts = parse_numbers(args.lams, "--lams", limit="lam"), parse_numbers(args.ts, "--ts", limit="t")
    seeds = parse_numbers(args.seeds, "--seeds", int)
    cfg = TrainConfig.from_preset(args.preset, **{"reg": "polar", **_overrides(args)})
    out = _writable_dir(args.out, "--out")
    device = resolve_device(cfg.device)
    data = load_training_data(cfg, device)
    start = initial_model(cfg, data.num_classes).to(device)
    print(f"grid: {len(lams)} λ × {len(ts)} t × {len(seeds)} seeds, {cfg.epochs} epochs each from "
          f"{cfg.init or 'fresh weights'} on {data.source}")
    for row in tl_grid(cfg, lams, ts, data, start, seeds, cache=out):
        print(f"λ {row['lam']:g}, t {row['t']:g}, seed {row['seed']}: valley FLOPs reduction "
              f"{row['flops_reduction']:.1%}, accuracy {row['acc_start']:.2%} -> {row['acc_pruned']:.2%} after "
              f"pruning", flush=True)
    points = read_grid(out)
    points.to_csv(out / "grid.csv", index=False)
    grid_summary(points).to_csv(out / "summary.csv", index=False)
    print(f"wrote {out / 'grid.csv'} and {out / 'summary.csv'}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], None] = args.func
    try:
        func(args)
        finish_distributed()
    except KeyboardInterrupt:
        print("polar: interrupted; the run directory keeps its last complete epoch (continue with --resume)",
              file=sys.stderr)
        return 130
    except PolarError as err:  # ConfigError, DatasetError, CheckpointError, NoValleyError: the user can fix them;
        print(f"polar: error: {err}", file=sys.stderr)  # anything else is a bug and keeps its traceback
        return 2
    except OSError as err:  # a disk that filled up, a folder that vanished: say which file, keep what is saved
        print(f"polar: error: {err.strerror or err} ({err.filename or 'a file'}); nothing saved before was changed",
              file=sys.stderr)
        return 2
    return 0


def main_entry() -> None:
    """The ``polar`` console script."""
    sys.exit(main())
