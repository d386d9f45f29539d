"""Loaders of the Requests & traces page: request search, spans of a trace."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from meshlens.analytics.catalog import connect
from meshlens.analytics.error_rule import IS_4XX, IS_5XX, IS_ERROR
from meshlens.analytics.window import TimeWindow
from meshlens.dashboards.data.common import (
    TTL_S,
    Window,
    _df,
    _p,
)


# -- requests & traces ---------------------------------------------------------------------
@st.cache_data(ttl=TTL_S, show_spinner=False)
def search_requests(
    ddir: str,
    window: Window,
    *,
    trace_id: str = "",
    service: str = "",
    status: str = "any",
    min_ms: float = 0.0,
    limit: int = 200,
) -> pd.DataFrame:
    """Newest matching requests (filters pushed into SQL). status: any|ok|error|4xx|5xx."""
    where = ["ts >= $start", "ts < $end"]
    params: dict[str, Any] = _p(window)
    if trace_id.strip():
        where.append("(trace_id = $trace OR request_id = $trace)")
        params["trace"] = trace_id.strip().lower()
    if service:
        where.append("(destination_canonical_service = $svc OR source_canonical_service = $svc)")
        params["svc"] = service
    status_sql = {
        "ok": f"NOT {IS_ERROR}",
        "error": IS_ERROR,
        "4xx": IS_4XX,
        "5xx": IS_5XX,
    }.get(status)
    if status_sql:
        where.append(status_sql)
    if min_ms > 0:
        where.append("duration_ms >= $min_ms")
        params["min_ms"] = float(min_ms)
    conn = connect(Path(ddir), window.tw)
    try:
        return _df(
            conn,
            f"""
            SELECT ts, reporter, source_workload, destination_service, destination_version,
                   method, path, response_code, response_flags, round(duration_ms, 2) AS
                   duration_ms, mtls, trace_id, request_id
            FROM requests WHERE {" AND ".join(where)}
            ORDER BY ts DESC LIMIT {int(limit)}""",
            params,
        )
    finally:
        conn.close()


@st.cache_data(ttl=TTL_S, show_spinner=False)
def trace_spans(ddir: str, window: Window, trace_id: str) -> pd.DataFrame:
    """All spans of one trace (searched in the window, then a day around it)."""
    tid = trace_id.strip().lower()
    tw = window.tw
    for start, end in (
        (tw.start, tw.end),
        (tw.start - timedelta(days=1), tw.end + timedelta(hours=1)),
    ):
        conn = connect(Path(ddir), TimeWindow(start, end))
        try:
            df = _df(
                conn,
                """
                SELECT span_id, parent_span_id, name, kind, service_name, service_version,
                       start_ts, end_ts, duration_ms, status_code, http_status_code, http_route
                FROM spans WHERE trace_id = $t ORDER BY start_ts LIMIT 2000""",
                {"t": tid},
            )
        finally:
            conn.close()
        if len(df):
            return df
    return df


@st.cache_data(ttl=TTL_S, show_spinner=False)
def recent_traces(ddir: str, window: Window, service: str = "", limit: int = 50) -> pd.DataFrame:
    """Root spans (one per trace), newest first."""
    where = "start_ts >= $start AND start_ts < $end AND coalesce(parent_span_id, '') = ''"
    params = _p(window)
    if service:
        where += " AND service_name = $svc"
        params["svc"] = service
    conn = connect(Path(ddir), window.tw)
    try:
        return _df(
            conn,
            f"""
            SELECT trace_id, service_name, name, start_ts, round(duration_ms, 2) AS duration_ms,
                   status_code FROM spans WHERE {where}
            ORDER BY start_ts DESC LIMIT {int(limit)}""",
            params,
        )
    finally:
        conn.close()
