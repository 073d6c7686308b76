"""The sidebar: every setting of a duel, bound to the URL's query parameters so a link reproduces the setup.

Presets write their values into the widgets' session-state keys (in the selectbox's callback, before the widgets
are drawn); the current values are written back to ``st.query_params`` on every run.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import streamlit as st
import torch

import polar

# From the trained baseline Polar ships: a brief sparse training at a fine-tuning learning rate. λ is ~400x the
# paper's (a few hundred steps instead of 200 epochs); L1's λ follows polar.l1_lambda_for (same pull on kept γ).
DEMO = dict(start="baseline", model="resnet20", subset=1000, epochs=2, batch_size=64, lr=0.02, seed=0, lam=0.02,
            t=1.2, l1_lam=polar.l1_lambda_for(0.02, 1.2))
SCRATCH = dict(start="scratch", model="resnet20", subset=300, epochs=6, batch_size=32, lr=0.1, seed=0, lam=0.01,
               t=1.2, l1_lam=polar.l1_lambda_for(0.01, 1.2))
PRESETS: dict[str, dict[str, Any]] = {
    "Fast CPU demo (from the trained baseline)": DEMO,
    "From scratch (the paper's protocol, brief)": SCRATCH,
    "Paper settings (ResNet-56, 200 epochs)": dict(start="scratch", model="resnet56", subset=0, epochs=200,
                                                   batch_size=64, lr=0.1, seed=0, lam=5e-5, t=1.4,
                                                   l1_lam=polar.l1_lambda_for(5e-5, 1.4)),
    "t = 0 (no pull to zero: spreads γ apart)": {**DEMO, "t": 0.0},
    "λ too strong": {**DEMO, "lam": 0.2, "l1_lam": polar.l1_lambda_for(0.2, 1.2)},
}
STARTS = {"baseline": "the trained baseline", "scratch": "scratch (random weights, the paper's protocol)"}
DEVICES = ["auto", "cpu"] + (["cuda"] if torch.cuda.is_available() else [])
DATASETS = ["cifar10", "synthetic", "cifar100"]


@dataclass
class Settings:
    start: str
    model: str
    dataset: str
    subset: int
    epochs: int
    batch_size: int
    lr: float
    seed: int
    device: str
    lam: float
    t: float
    l1_lam: float

    def from_baseline(self) -> str:
        """Why the duel cannot start from the trained baseline ("" when it can)."""
        if self.start != "baseline":
            return ""
        shipped = polar.list_pretrained().get(self.model)
        if shipped is None:
            return f"Polar ships no trained {self.model} (only {', '.join(polar.list_pretrained()) or 'none'})"
        if self.dataset != shipped["dataset"]:
            return f"the trained {self.model} learned {shipped['dataset']}, not {self.dataset}"
        return ""

    def configs(self) -> dict[str, polar.TrainConfig]:
        """The two training configs of the duel (raises polar.ConfigError on bad values)."""
        init = "pretrained" if self.start == "baseline" and not self.from_baseline() else ""
        base = dict(model=self.model, dataset=self.dataset, subset=self.subset, epochs=self.epochs,
                    batch_size=self.batch_size, lr=self.lr, lr_schedule="cosine" if self.epochs < 50 else "step",
                    weight_decay=1e-4, bn_wd=False, seed=self.seed, device=self.device, init=init)
        return {"polar": polar.TrainConfig(**base, reg="polar", lam=self.lam, t=self.t),
                "l1": polar.TrainConfig(**base, reg="l1", lam=self.l1_lam)}


# on a GPU the duel trains on all of the training set (a CPU gets the subset that keeps it interactive)
_DEFAULTS: dict[str, Any] = {**DEMO, "dataset": "cifar10", "device": "auto",
                             "subset": 0 if torch.cuda.is_available() else DEMO["subset"]}
_CHOICES = {"model": [m for m in polar.list_models() if not m.endswith("imagenet")], "dataset": DATASETS,
            "device": DEVICES, "start": list(STARTS)}
_LIMIT_OF = {"l1_lam": "lam"}  # settings checked against another field's polar.LIMITS entry


_INTERACTIVE = {"epochs": (1, 300), "batch_size": (8, 1024), "lr": (1e-4, 1.0)}  # narrower, for a brief duel


def _limits(key: str) -> tuple[Any, Any]:
    """The allowed range of a numeric setting: polar.LIMITS (the one source TrainConfig checks too), narrowed for
    settings whose full range makes no sense in an interactive duel."""
    lo, hi = polar.LIMITS[_LIMIT_OF.get(key, key)]
    narrow = _INTERACTIVE.get(key, (lo, hi))
    return max(lo, narrow[0]), min(hi, narrow[1])


def _from_url(key: str) -> Any:
    """The URL's value for ``key`` in the default's type, or the default (reported) when unusable."""
    default = _DEFAULTS[key]
    raw = st.query_params.get(key)
    if raw is None:
        return default
    try:
        value = type(default)(raw)
        if key in _CHOICES:
            ok = value in _CHOICES[key]
        else:
            polar.check_range(_LIMIT_OF.get(key, key), value)
            ok = _limits(key)[0] <= value <= _limits(key)[1]
    except (ValueError, TypeError):  # unreadable, NaN, infinite or out of range
        ok = False
    if not ok:
        st.session_state["_url_errors"] = st.session_state.get("_url_errors", []) + [f"{key}={raw}"]
        return default
    return value


def _set(**values: Any) -> None:
    """Change settings (a preset, the L1 rule): the session's record and the widgets alike."""
    st.session_state["_settings"].update(values)
    st.session_state.update(values)
    st.session_state.pop("_url_errors", None)  # the user has taken the settings in hand


def _apply_preset() -> None:
    _set(**PRESETS[st.session_state["preset"]])


def _remember(key: str) -> None:
    """A widget the user changed: keep its new value in the session's record."""
    st.session_state["_settings"][key] = st.session_state[key]
    st.session_state.pop("_url_errors", None)  # the user has taken the settings in hand


def _bound(key: str) -> dict[str, Any]:
    """A widget's arguments that tie it to setting ``key``."""
    return {"key": key, "on_change": _remember, "args": (key,)}


def _url_text(value: Any) -> str:
    """A setting as the URL shows it: numbers in their shortest form at 12 significant digits (a slider's 1.25, not
    1.2500000000000002), everything else as text."""
    return f"{value:.12g}" if isinstance(value, float) else str(value)


def sidebar() -> Settings:
    """Draw the settings; return their current values.

    The values live in ``st.session_state["_settings"]`` (from the URL on a session's first run; then changed only by
    the user's edits, a preset or the L1 rule) and are handed to the widgets before each run draws them: a
    ``st.rerun()`` from the live fragment can reset widgets outside it to their defaults (streamlit#9171, #11266),
    which for these number inputs are their minimums — seen as a duel of 1 epoch at batch 8 on all of CIFAR-10.
    """
    settings = st.session_state.setdefault("_settings", {})
    for key in _DEFAULTS:
        if key not in settings:  # first run of a session: start from the URL
            settings[key] = _from_url(key)
        st.session_state[key] = settings[key]
    with st.sidebar:
        st.selectbox("Preset", list(PRESETS), index=None, key="preset", on_change=_apply_preset,
                     placeholder="choose a preset…", help="Fills the settings below; brief presets scale λ up.")
        st.caption("Brief runs need a far larger λ than the paper's 200-epoch values: the push on γ grows with "
                   "λ × lr × steps.")
        st.radio("Start from", list(STARTS), format_func=STARTS.get, **_bound("start"),
                 help="The trained baseline has learned CIFAR-10 (see its accuracy below), so pruning it shows what "
                      "each regularizer's pruning costs. Scratch trains from random weights, as the paper does over "
                      "200 epochs; briefly, on a CPU, that network has barely learned.")
        st.selectbox("Model", _CHOICES["model"], **_bound("model"))
        st.selectbox("Dataset", DATASETS, **_bound("dataset"))
        st.number_input("Images per class (0 = all)", *_limits("subset"), step=50, **_bound("subset"))
        st.number_input("Epochs", *_limits("epochs"), **_bound("epochs"))
        st.number_input("Batch size", *_limits("batch_size"), step=32, **_bound("batch_size"))
        st.number_input("Learning rate", *_limits("lr"), format="%.4f", **_bound("lr"))
        st.number_input("Seed", *_limits("seed"), step=1, **_bound("seed"))
        st.selectbox("Device", DEVICES, **_bound("device"))
        st.divider()
        st.number_input("Polarization λ", *_limits("lam"), format="%.5f", step=0.001, **_bound("lam"))
        st.slider("Polarization t", *_limits("t"), step=0.05, **_bound("t"))
        st.number_input("L1 λ", *_limits("l1_lam"), format="%.5f", step=0.001, **_bound("l1_lam"))
        rule = polar.l1_lambda_for(st.session_state["lam"], st.session_state["t"])
        st.caption(f"The rule gives L1 λ = (t − 1)·λ = {rule:.5g}: both shrink the large γ (the channels the "
                   "network keeps) equally fast; only polarization drives the small ones to 0.")
        st.button("Set L1 λ by the rule", on_click=lambda: _set(l1_lam=rule))
    values = {key: st.session_state[key] for key in _DEFAULTS}
    st.query_params.from_dict({k: _url_text(v) for k, v in values.items()})
    return Settings(**values)
