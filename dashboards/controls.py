"""Sidebar controls shared by every page (window length, auto-refresh) and their values."""

from __future__ import annotations

from datetime import datetime
from typing import Final

import streamlit as st

from meshlens.dashboards import data

REFRESH: Final = {"off": None, "10s": 10, "30s": 30, "1m": 60}


def sidebar() -> None:
    """Drawn once by app.py before the page runs; values live in st.session_state."""
    st.sidebar.markdown("### meshlens")
    st.sidebar.caption(f"store: `{data.data_dir()}`")
    st.sidebar.selectbox("Time window", list(data.WINDOWS), index=1, key="window_len")
    st.sidebar.selectbox("Auto-refresh", list(REFRESH), index=2, key="refresh")


def window_seconds() -> int:
    return data.WINDOWS[str(st.session_state.get("window_len", "15m"))]


def current_window(end: datetime | None = None) -> data.Window:
    return data.Window.ending(end or data.rounded_now(), window_seconds())


def refresh_every() -> int | None:
    return REFRESH.get(str(st.session_state.get("refresh", "30s")))


def ddir() -> str:
    return str(data.data_dir())
