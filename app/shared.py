"""What every browser session of one server shares: the pool of trainer processes and the datasets on the device.

Cached with ``st.cache_resource`` here, in one module the pages import, so the Explore page and the t/λ sweep page
queue in the same pool.
"""
from __future__ import annotations

import os
from pathlib import Path

import streamlit as st
from streamlit import runtime
from trainers import TrainerPool

import polar

TEST_PER_CLASS = 100  # a balanced 1,000-image test subset keeps per-epoch evaluation interactive


def runs_folder() -> Path:
    """Where the explorer keeps every run it trains, and its grids: ``$POLAR_RUNS/app`` (default ``runs/app``),
    read at each page run (a test or a second server may point it elsewhere)."""
    return Path(os.environ.get("POLAR_RUNS", "runs")) / "app"


def session_alive(session_id: str) -> bool:
    """Whether a browser session is still connected (outside a Streamlit server, e.g. AppTest, whose runtime is a
    mock: assume so)."""
    return not runtime.exists() or bool(runtime.get_instance().is_active_session(session_id))


@st.cache_resource
def trainer_pool() -> TrainerPool:
    """One pool of trainer processes per server, shared by every session (see app/trainers.py)."""
    return TrainerPool(session_alive)


@st.cache_resource
def measured_curves() -> dict[str, list[dict]]:
    """Trade-off curves already measured on this server, by what determines them (the network's weights, the test
    data, the targets and options; see the Explore page's ``tradeoff_curve``). In a class every student's "no
    regularizer" curve is the same trained baseline pruned the same way on the same test images: measured once, it
    is a third of each later trade-off saved. A few records per curve; one entry per distinct start."""
    return {}


@st.cache_resource(show_spinner="Loading the dataset onto the device…")
def device_data(dataset: str, subset: int, device: str) -> tuple[polar.DeviceDataset, dict, str]:
    """The dataset on the device, shared read-only by all sessions, with the ``polar.load_dataset`` arguments a
    trainer process loads it with; falls back to synthetic data offline."""
    args = {"name": dataset, "subset": subset or None, "test_subset": TEST_PER_CLASS}
    try:
        return polar.load_dataset(**args, device=polar.resolve_device(device)), {**args, "download": False}, ""
    except polar.DatasetError as err:
        args = {"name": "synthetic", "subset": subset or None}
        return (polar.load_dataset(**args, device=polar.resolve_device(device)), args,
                f"{dataset} is not available here ({err}). Showing the synthetic dataset instead.")
