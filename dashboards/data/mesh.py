"""Loaders of the Mesh page: namespaces and the service graph."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import streamlit as st

from meshlens.analytics.catalog import connect
from meshlens.dashboards.data.common import (
    TTL_S,
    Window,
    _p,
)


# -- mesh ----------------------------------------------------------------------------------
@st.cache_data(ttl=TTL_S, show_spinner=False)
def namespaces(ddir: str, window: Window) -> list[str]:
    conn = connect(Path(ddir), window.tw)
    try:
        rows = conn.execute(
            """SELECT DISTINCT ns FROM (
                 SELECT destination_namespace AS ns FROM requests
                 WHERE ts >= $start AND ts < $end
                 UNION SELECT source_namespace FROM requests WHERE ts >= $start AND ts < $end)
               WHERE ns IS NOT NULL AND ns NOT IN ('', 'unknown') ORDER BY 1""",
            _p(window),
        ).fetchall()
    finally:
        conn.close()
    return [r[0] for r in rows]


@st.cache_data(ttl=TTL_S, show_spinner=False)
def service_graph(ddir: str, window: Window, level: str, namespace: str | None) -> dict[str, Any]:
    """analytics.graph's JSON: {"nodes": [...], "edges": [...]} (Kiali semantics), from proxy
    requests, or from spans when the window has no requests."""
    from meshlens.analytics.graph import service_graph as build

    conn = connect(Path(ddir), window.tw)
    try:
        graph = build(conn, window.tw, level=level, namespace=namespace or None, source="auto")
    finally:
        conn.close()
    data: dict[str, Any] = graph.to_json()
    return data
