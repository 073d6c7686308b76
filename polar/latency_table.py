"""How long a network takes as a function of its channel widths, measured where it will run: ``polar.latency_table``.

    table = polar.latency_table(model, runtime="onnxruntime", batch_size=64)   # ~1-2 minutes, then cached
    table.predict(model, widths)                  # ms for these channel-set widths (polar.channel_sets order)
    table.curve(model, 3)                         # set 3's widths and the predicted ms, the others full

Why a table: fewer MACs need not mean less time. On an AVX-512 CPU oneDNN computes output channels in blocks of 16
(a 16→8 conv costs what 16→16 does: bench/conv_widths.py), and the BatchNorms, ReLUs and residual adds are paid per
element written, not per MAC — so a network pruned to half its FLOPs ran at 0.6-0.7 of its MACs ratio
(bench/prune_speedup.py). Choosing widths for time needs time measured.

Widths come in steps of the CPU's channel block, the granularity: 16 floats where AVX-512 is available (oneDNN's
blocked layouts and ONNX Runtime's NCHWc kernels both compute 16 channels at a time there), else 8. Off the block
the runtimes fall off their fast paths, and not gently: ONNX Runtime keeps a conv in NCHWc only when its input
channels are a multiple of the block, so a ResNet-20 at 0.75 width with widths 12/24/48 ran 31.5 ms at batch 64,
slower than the full network's 24.8 ms, while 16/48 ran 22.4 ms (PyTorch: 34.6 and 29.6 ms, full 34.4). A table
fitted to off-block widths predicted ONNX Runtime's speed-ups 18-40 % too high; so tables are measured, and widths
planned, on the block only.

How: the network is timed at 24 width vectors (the full widths, uniform scales and random widths per channel set,
each width a multiple of the granularity or the set's full width, built with ``polar.prune_to_widths``), each against
the unpruned network in alternating rounds so that load drift on the machine cancels in the ratio; each timing
sample lasts at least ``SAMPLE_MS`` (many calls of a batch-1 network, which runs in a millisecond: timed one call at a
time, a ResNet-20 table for ONNX Runtime at batch 1 missed held-out vectors by 23.5 % at the median, all too
optimistic; with 20 ms samples by 8.2 %, bench/latency_table_error.py). Its time is
modelled as

    t(widths) = c + Σ_groups  a_g · MACs_g(widths rounded up to the granularity)  +  b_g · outputs_g(widths)
                            + d_g · layers_g(widths)

where a group holds the layers of one kind at one output resolution (3x3 convs at 16x16, depthwise convs at 8x8, the
classifier, ...), MACs are counted with each layer's channel counts rounded up to the granularity, outputs are the
elements the layer writes (what the elementwise layers after it pay for) and layers counts the layers left (each
costs a fixed dispatch time, which a removed ResNet block saves). The coefficients are non-negative least
squares on the timings. Every layer's cost then depends on the widths it actually gets, so widths that interact (a
VGG conv reads one set and writes the next) are predicted as well as independent ones. Predictions hold for widths
on the block (what ``polar.plan_speedup`` chooses); off it they are too optimistic.

Both ``latency_table`` and ``measured_speedup`` first call ``polar.steady_allocator()`` (process-wide, permanent: it
keeps freed memory for reuse). Without it glibc page-faults the activations of a newly built network in again until
its heap settles, so the first timings of each width vector ran slow by different amounts: ResNet-20 tables built
without it predicted random widths' speed-ups with median errors of 12-24 % (single vectors up to 54 % off); with it
5-12 % (tests/test_speedup.py, 2-core VM).

A table is cached as JSON per machine (CPU model, cores, threads), runtime and version, architecture and batch size
(``$POLAR_CACHE``, default ``~/.cache/polar``); a file that does not parse or belongs to another key is measured
again, never trusted.
"""
from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import platform
import statistics
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from .atomic import atomic_write_text
from .errors import ConfigError
from .latency import _torch_runner, latency_ms, steady_allocator
from .machine import cpu_flags, cpu_model
from .models import channel_sets, unwrap
from .prune import prune_to_widths
from .prune.cost import _current, _outputs_per_channel, layer_widths
from .prune.surgery import Removal

__all__ = ["LatencyTable", "latency_table", "measured_speedup", "RUNTIMES"]

RUNTIMES = ("torch", "onnxruntime")
SAMPLES = 24
REMOVED_SHARE = 0.2  # of the removable sets in a random sample vector (see _sample_widths)
SAMPLE_MS = 20.0  # each timing sample at least this long (polar.latency_ms): batch 1 runs in ~1 ms
FEATURES = 3  # per group: rounded MACs, output elements, layers


@dataclass(frozen=True)
class LatencyTable:
    """A fitted latency model of one architecture on one machine, runtime and batch size (see the module doc)."""

    key: dict
    granularity: int
    intercept_ms: float
    coefficients: dict[str, list[float]]  # group -> [ms per rounded MAC, per output element, per layer]
    full_ms: float  # the unpruned network, measured
    fit_error: float  # mean relative error of the fit on its own timings
    samples: list[dict]  # {"widths": [...], "ms": measured}

    def predict(self, model: nn.Module, widths: Sequence[int]) -> float:
        """Predicted milliseconds of ``model`` pruned to ``widths`` (one per channel set, 0 removes a ResNet block)."""
        return self.predictor(model)(widths)

    def predictor(self, model: nn.Module) -> Callable[[Sequence[int]], float]:
        """:meth:`predict` for one model, its architecture checked once (hashing every layer's shape was a third of
        a width search's time when checked at every question)."""
        if _architecture(model) != self.key["architecture"]:
            raise ConfigError("this latency table was measured for another architecture; build one for this model "
                              "with polar.latency_table(model, ...)")
        inner = unwrap(model)
        return lambda widths: self._predict(_features(inner, widths, self.granularity))

    def _predict(self, features: dict[str, list[float]]) -> float:
        return self.intercept_ms + sum(sum(c * f for c, f in zip(self.coefficients[g], values))
                                       for g, values in features.items() if g in self.coefficients)

    def curve(self, model: nn.Module, index: int) -> list[tuple[int, float]]:
        """Channel set ``index``'s widths (multiples of the granularity, and its full width) and the predicted ms of
        the network at each, every other set full: the per-set view of the table."""
        full, predict = full_widths(model), self.predictor(model)
        sizes = sorted({*range(self.granularity, full[index], self.granularity), full[index]})
        return [(w, predict([*full[:index], w, *full[index + 1:]])) for w in sizes]

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, allow_nan=False)


def full_widths(model: nn.Module) -> list[int]:
    return [cs.bns[0].num_features for cs in channel_sets(unwrap(model))]


def _architecture(model: nn.Module) -> str:
    """What fixes the timings besides the machine: every layer's shape and the input size, hashed."""
    inner = unwrap(model)
    shapes = [f"{type(m).__name__}{tuple(p.shape)}" for m in inner.modules() for p in m.parameters(recurse=False)]
    text = f"{getattr(inner, 'name', type(inner).__name__)}|{inner.input_size}|{'|'.join(shapes)}"
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def _machine() -> str:
    model = cpu_model() or platform.processor() or platform.machine()
    return f"{model} | {os.cpu_count()} cores | {torch.get_num_threads()} threads"


def channel_block() -> int:
    """The channels this CPU's vector units compute at once in float32: 16 with AVX-512, else 8 (AVX2's 8 floats;
    also a safe multiple of narrower units' 4)."""
    return 16 if "avx512f" in cpu_flags() else 8


def _on_block(n: int, share: float, granularity: int, allow_empty: bool) -> int:
    """The width nearest ``share`` of ``n`` channels that is a multiple of ``granularity`` (or ``n`` itself; 0 only
    where the set may go)."""
    width = min(n, granularity * round(n * share / granularity))
    if width == 0 and not allow_empty:
        width = min(n, granularity)
    return width


def _runtime_version(runtime: str) -> str:
    if runtime == "torch":
        return torch.__version__
    import onnxruntime
    return onnxruntime.__version__


def _group(module: nn.Module, outputs: int) -> str:
    """The layers that share one coefficient pair: kind, kernel and output resolution."""
    if isinstance(module, nn.Linear):
        return "linear"
    kind = "dw" if module.groups > 1 else "conv"
    return f"{kind}{module.kernel_size[0]}x{module.kernel_size[1]}@{round(math.sqrt(outputs))}"


def _round(width: int, granularity: int) -> int:
    return -(-width // granularity) * granularity


def _features(model: nn.Module, widths: Sequence[int], granularity: int) -> dict[str, list[float]]:
    """Per group: [MACs with channel counts rounded up to ``granularity``, output elements, layers], per image."""
    sets = channel_sets(model)
    if len(widths) != len(sets) or any(not 0 <= int(w) <= cs.bns[0].num_features for w, cs in zip(widths, sets)):
        raise ConfigError(f"give one width per channel set, each between 0 and its channel count: "
                          f"{full_widths(model)} at most, got {list(widths)}")
    removal = Removal({id(cs.bns[0]): torch.arange(cs.bns[0].num_features) >= int(w) for cs, w in zip(sets, widths)},
                      (1, 3, model.input_size, model.input_size))
    shapes = layer_widths(model, removal)
    outputs = _outputs_per_channel(model, (1, 3, model.input_size, model.input_size))
    features: dict[str, list[float]] = {}
    for module in model.modules():
        if not isinstance(module, (nn.Conv2d, nn.Linear)):
            continue
        shape = shapes.get(id(module), _current(module))
        if shape is None or 0 in shape:
            continue
        c_in, c_out = shape
        per_channel = outputs[id(module)]
        depthwise = isinstance(module, nn.Conv2d) and module.groups > 1
        kernel = module.kernel_size[0] * module.kernel_size[1] if isinstance(module, nn.Conv2d) else 1
        macs = per_channel * _round(c_out, granularity) * kernel * (1 if depthwise else _round(c_in, granularity))
        group = features.setdefault(_group(module, per_channel), [0.0, 0.0, 0.0])
        group[0] += macs
        group[1] += per_channel * c_out
        group[2] += 1
    return features


def _sample_widths(model: nn.Module, count: int, seed: int, granularity: int) -> list[list[int]]:
    """The full widths, uniform scales, then random widths around a random scale per vector; every width on the
    block (:func:`_on_block`), and each set that may go (a ResNet block's) gone with probability
    ``REMOVED_SHARE``: removing whole blocks is how a plan reaches large speed-ups where the block leaves a set no
    narrower width (a ResNet-20's 16-channel stage), and a table that had seen few removals predicted a 2x plan's
    2.90x as 2.19x in ONNX Runtime."""
    gen = torch.Generator().manual_seed(seed)
    sets = channel_sets(model)
    full = full_widths(model)
    vectors = [full] + [[_on_block(n, s, granularity, False) for n in full] for s in (0.75, 0.5, 0.3)]
    while len(vectors) < count:
        scale = 0.15 + 0.85 * float(torch.rand((), generator=gen))
        vector = []
        for cs, n in zip(sets, full):
            share = min(1.0, max(0.0, scale + 0.25 * float(torch.randn((), generator=gen))))
            gone = cs.allow_empty and float(torch.rand((), generator=gen)) < REMOVED_SHARE
            vector.append(0 if gone else _on_block(n, share, granularity, cs.allow_empty))
        vectors.append(vector)
    return vectors


def _torch_timer(model: nn.Module, batch_size: int) -> Callable[[], float]:
    run = _torch_runner(model, batch_size, channels_last=True)
    return lambda: latency_ms(run, repeats=5, warmup=2, min_sample_ms=SAMPLE_MS)


def _onnx_timer(model: nn.Module, batch_size: int, folder: Path) -> Callable[[], float]:
    import onnxruntime as ort

    from .export import export_onnx
    path = export_onnx(model, folder / f"{len(list(folder.iterdir()))}.onnx")
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    x = torch.randn(batch_size, 3, model.input_size, model.input_size).numpy()
    return lambda: latency_ms(lambda: session.run(["logits"], {"images": x}), repeats=5, warmup=2,
                              min_sample_ms=SAMPLE_MS)


def _timer(model: nn.Module, runtime: str, batch_size: int, folder: Path) -> Callable[[], float]:
    return _torch_timer(model, batch_size) if runtime == "torch" else _onnx_timer(model, batch_size, folder)


def measured_speedup(original: nn.Module, pruned: nn.Module, runtime: str = "torch", batch_size: int = 64,
                     rounds: int = 5) -> float:
    """How many times faster ``pruned`` runs than ``original`` in ``runtime`` at ``batch_size`` on this CPU: the
    ratio of their median times, timed in alternating rounds (load drift hits both alike), under the steady
    allocator (see the module doc)."""
    if runtime not in RUNTIMES:
        raise ConfigError(f"unknown runtime {runtime!r}; choose one of: {', '.join(RUNTIMES)}")
    steady_allocator()
    with tempfile.TemporaryDirectory() as folder:
        timers = [_timer(copy.deepcopy(unwrap(m)).cpu(), runtime, batch_size, Path(folder))
                  for m in (original, pruned)]  # CPU copies: the caller's models stay where they are
        times = [(timers[0](), timers[1]()) for _ in range(rounds)]
    return statistics.median(a for a, _ in times) / statistics.median(b for _, b in times)


def _measure(model: nn.Module, vectors: list[list[int]], runtime: str, batch_size: int) -> list[float]:
    """Each width vector's ms: its time relative to the full network's, timed alternately (two rounds), times the
    full network's median over the whole measurement."""
    with tempfile.TemporaryDirectory() as folder:
        def timer(widths: list[int]) -> Callable[[], float]:
            return _timer(prune_to_widths(model, widths).cpu(), runtime, batch_size, Path(folder))
        full = timer(vectors[0])
        full_times, ratios = [], []
        for widths in vectors:
            timed = timer(widths)
            pairs = [(full(), timed()) for _ in range(2)]
            full_times += [f for f, _ in pairs]
            ratios.append(statistics.median(t / f for f, t in pairs))
    reference = statistics.median(full_times)
    return [r * reference for r in ratios]


def _nnls(columns: list[list[float]], target: list[float], ridge: float = 1e-3) -> list[float]:
    """Non-negative least squares on relative errors, with a small ridge on the scaled weights (a family with many
    layer groups has more unknowns than a quick table has timings): fit, drop the columns with negative weights,
    refit."""
    a = torch.tensor(columns, dtype=torch.float64).T  # (samples, features)
    y = torch.tensor(target, dtype=torch.float64)
    a, y = a / y[:, None], torch.ones_like(y)  # each timing counts by its relative error
    scale = a.abs().amax(0).clamp_min(1e-30)
    active = [j for j in range(a.shape[1]) if a[:, j].abs().max() > 0]
    while True:
        scaled = a[:, active] / scale[active]
        system = torch.cat([scaled, math.sqrt(ridge) * torch.eye(len(active), dtype=torch.float64)])
        rhs = torch.cat([y, torch.zeros(len(active), dtype=torch.float64)])
        solution = torch.linalg.lstsq(system, rhs[:, None]).solution.flatten() / scale[active]
        negative = [j for j, v in zip(active, solution.tolist()) if v < 0]
        if not negative:
            weights = [0.0] * a.shape[1]
            for j, v in zip(active, solution.tolist()):
                weights[j] = v
            return weights
        active = [j for j in active if j not in negative]


def _fit(model: nn.Module, vectors: list[list[int]], times: list[float], granularity: int
         ) -> tuple[float, dict[str, list[float]], float]:
    features = [_features(model, w, granularity) for w in vectors]
    groups = sorted({g for f in features for g in f})
    columns = [[1.0] * len(vectors)]
    for g in groups:
        for k in range(FEATURES):
            columns.append([f[g][k] if g in f else 0.0 for f in features])
    weights = _nnls(columns, times)
    coefficients = {g: weights[1 + FEATURES * i:1 + FEATURES * (i + 1)] for i, g in enumerate(groups)}
    predicted = [weights[0] + sum(sum(c * v for c, v in zip(coefficients[g], values)) for g, values in f.items())
                 for f in features]
    error = statistics.mean(abs(p - t) / t for p, t in zip(predicted, times))
    return weights[0], coefficients, error


def _cache_file(key: dict) -> Path:
    root = Path(os.environ.get("POLAR_CACHE", Path.home() / ".cache" / "polar")) / "latency"
    digest = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return root / f"{key['model']}-{key['runtime']}-b{key['batch_size']}-{digest}.json"


def _read_cached(path: Path, key: dict) -> LatencyTable | None:
    try:
        table = LatencyTable(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None
    return table if table.key == key else None


def latency_table(model: nn.Module, runtime: str = "torch", batch_size: int = 64, device: str = "cpu",
                  samples: int = SAMPLES, seed: int = 0, cache: bool = True) -> LatencyTable:
    """Measure (or read from the cache) how ``model``'s latency depends on its channel widths in ``runtime``
    ("torch": PyTorch, channels_last, inference mode; "onnxruntime": its CPU provider, the model exported by
    ``polar.export_onnx``) at ``batch_size``, with this process's thread count. CPU only for now: a GPU's timings
    need synchronising and its own granularity. Sets ``polar.steady_allocator()`` for this process (module doc)."""
    if runtime not in RUNTIMES:
        raise ConfigError(f"unknown runtime {runtime!r}; choose one of: {', '.join(RUNTIMES)}")
    if device != "cpu":
        raise ConfigError(f"latency tables are measured on the CPU only, got device={device!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
    if not isinstance(samples, int) or samples < 8:
        raise ConfigError(f"samples must be an integer of at least 8 (the fit has up to ~10 unknowns), got {samples!r}")
    inner = unwrap(model)
    granularity = channel_block()
    key = {"model": getattr(inner, "name", type(inner).__name__), "architecture": _architecture(inner),
           "runtime": runtime, "version": _runtime_version(runtime), "batch_size": batch_size,
           "machine": _machine(), "samples": samples, "seed": seed, "granularity": granularity,
           "removed_share": REMOVED_SHARE, "sample_ms": SAMPLE_MS}
    path = _cache_file(key)
    if cache:
        cached = _read_cached(path, key)
        if cached is not None:
            return cached
    steady_allocator()
    vectors = _sample_widths(inner, samples, seed, granularity)
    times = _measure(inner, vectors, runtime, batch_size)
    intercept, coefficients, error = _fit(inner, vectors, times, granularity)
    table = LatencyTable(key=key, granularity=granularity, intercept_ms=intercept, coefficients=coefficients,
                         full_ms=times[0], fit_error=error,
                         samples=[{"widths": w, "ms": t} for w, t in zip(vectors, times)])
    if cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(table.to_json(), path)
    return table
