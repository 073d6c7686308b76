"""The explorer's server: ``streamlit run app/serve.py``.

Serves ``Home.py`` as usual, and imports torch and polar in the background as soon as the server starts, so the first
visitor of a freshly started (classroom) server does not wait ~1 s for them while the page is still loading.

pandas (and numpy with it) is imported before the server takes its first connection, not in that background
thread nor lazily on a page: Plotly looks both up in ``sys.modules`` without importing them, so a figure built while
another thread is halfway through ``import pandas`` finds a partially initialized module and raises AttributeError
(seen in a browser test: the page's run died and the Prune click it carried was lost). ~0.3 s once per server.

Once the libraries are in, their objects are frozen out of the garbage collector (``gc.freeze``): with torch, pandas
and Plotly loaded a full collection scanned ~275,000 objects (160 ms here). Streamlit forces one after every script
run, fragment reruns included (``runner.postScriptGC``, which ``.streamlit/config.toml`` turns off: with ten
sessions' own objects alive, freezing the libraries was not enough); the freeze keeps the full collections that
remain cheap — Python's own, and Streamlit's when the server starts without the repository's config. Frozen
objects are never freed, which is what module-level objects of loaded libraries are anyway.
"""
from __future__ import annotations

import gc
import importlib
import threading
from contextlib import asynccontextmanager
from pathlib import Path

import streamlit as st

LIBRARIES = ("polar", "plotly.graph_objects")  # what every page needs, beyond Streamlit and pandas


def _import_and_freeze() -> None:
    for name in LIBRARIES:
        importlib.import_module(name)
    gc.collect()
    gc.freeze()


@asynccontextmanager
async def preload(_app: st.App):
    importlib.import_module("pandas")
    threading.Thread(target=_import_and_freeze, name="preload-polar", daemon=True).start()
    yield


app = st.App(Path(__file__).with_name("Home.py"), lifespan=preload)
