"""The explorer's server: ``streamlit run app/serve.py``.

Serves ``Home.py`` as usual, and imports torch and polar in the background as soon as the server starts, so the first
visitor of a freshly started (classroom) server does not wait ~1 s for them while the page is still loading.

pandas (and numpy with it) is imported before the server takes its first connection, not in that background
thread nor lazily on a page: Plotly looks both up in ``sys.modules`` without importing them, so a figure built while
another thread is halfway through ``import pandas`` finds a partially initialized module and raises AttributeError
(seen in a browser test: the page's run died and the Prune click it carried was lost). ~0.3 s once per server.
"""
from __future__ import annotations

import importlib
import threading
from contextlib import asynccontextmanager
from pathlib import Path

import streamlit as st


@asynccontextmanager
async def preload(_app: st.App):
    importlib.import_module("pandas")
    threading.Thread(target=importlib.import_module, args=("polar",), name="preload-polar", daemon=True).start()
    yield


app = st.App(Path(__file__).with_name("Home.py"), lifespan=preload)
