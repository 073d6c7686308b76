"""Polar explorer: train the same network with polarization and with L1 side by side, watch γ, prune, compare.

    streamlit run app/serve.py     (or app/Home.py: the same app, without importing torch before the first visit)

A thin layer over the ``polar`` library: the settings live in the sidebar (and the URL), each duel trains in a
trainer process of a server-wide pool (app/trainers.py), and every chart is drawn from the snapshots it publishes.
"""
from __future__ import annotations

import streamlit as st
from settings import sidebar

st.set_page_config(page_title="Polar explorer", page_icon="🧲", layout="wide")

if "duel" not in st.session_state:
    st.session_state["duel"] = None

if "url_duel" not in st.session_state:  # a reloaded tab names its duel in the URL (the sidebar rewrites the URL)
    st.session_state["url_duel"] = st.query_params.get("duel", "")
st.session_state["settings"] = sidebar()
page = st.navigation([st.Page("app_pages/explore.py", title="Explore", icon="🧲", default=True),
                      st.Page("app_pages/sweep.py", title="t and λ sweep", icon="📈"),
                      st.Page("app_pages/playground.py", title="Regularizer playground", icon="🎛️"),
                      st.Page("app_pages/runs.py", title="Saved runs", icon="🗂️")])
page.run()
