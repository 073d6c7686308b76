"""The explorer's server: ``streamlit run app/serve.py``.

Serves ``Home.py`` as usual, and imports torch and polar in the background as soon as the server starts, so the first
visitor of a freshly started (classroom) server does not wait ~1 s for them while the page is still loading.
"""
from __future__ import annotations

import importlib
import threading
from contextlib import asynccontextmanager
from pathlib import Path

import streamlit as st


@asynccontextmanager
async def preload(_app: st.App):
    threading.Thread(target=importlib.import_module, args=("polar",), name="preload-polar", daemon=True).start()
    yield


app = st.App(Path(__file__).with_name("Home.py"), lifespan=preload)
