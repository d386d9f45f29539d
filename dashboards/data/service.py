"""Loaders of the Service page: golden signals, inbound, outbound, codes by flags."""

from __future__ import annotations

from pathlib import Path
from typing import Final

import pandas as pd
import streamlit as st

from meshlens.analytics import signals
from meshlens.analytics.catalog import connect
from meshlens.analytics.error_rule import IS_ERROR
from meshlens.dashboards.data.common import (
    MAX_ROWS,
    TO_SERVICE,
    TTL_S,
    Window,
    _df,
    _p,
)


# -- service -------------------------------------------------------------------------------
@st.cache_data(ttl=TTL_S, show_spinner=False)
def services(ddir: str, window: Window) -> list[str]:
    conn = connect(Path(ddir), window.tw)
    try:
        rows = conn.execute(
            """SELECT destination_canonical_service, count(*) AS n FROM requests
               WHERE ts >= $start AND ts < $end AND destination_canonical_service NOT IN
               ('', 'unknown') GROUP BY 1 ORDER BY n DESC, 1""",
            _p(window),
        ).fetchall()
    finally:
        conn.close()
    return [r[0] for r in rows]


@st.cache_data(ttl=TTL_S, show_spinner=False)
def golden_signals(ddir: str, window: Window, service: str, step_s: int) -> pd.DataFrame:
    """Per time bucket and destination version: rps, error ratio, p50/p95/p99 (ms), as
    `meshlens signals --by version --service <service>` computes them."""
    conn = connect(Path(ddir), window.tw)
    try:
        sig = signals.golden_signals(
            conn, window.tw, by=("version",), step_s=step_s, service=service, saturation=False
        )
    finally:
        conn.close()
    return sig.select(
        ["bucket", "version", "rps", "error_ratio", "p50_ms", "p95_ms", "p99_ms"]
    ).to_pandas()


# Requests to a service: analytics.signals' rule, with the service as a query parameter.
_TABLE_COLS: Final = f"""
    count(*) AS requests,
    round(count(*) / $secs, 3) AS rps,
    round(100.0 * count(*) FILTER (WHERE NOT {IS_ERROR}) / count(*), 2) AS success_pct,
    round(quantile_cont(duration_ms, 0.5), 1) AS p50_ms,
    round(quantile_cont(duration_ms, 0.9), 1) AS p90_ms,
    round(quantile_cont(duration_ms, 0.99), 1) AS p99_ms,
    round(100.0 * avg(CASE WHEN mtls THEN 1 ELSE 0 END), 1) AS mtls_pct,
    sum(request_bytes) AS request_bytes,
    sum(response_bytes) AS response_bytes"""


@st.cache_data(ttl=TTL_S, show_spinner=False)
def inbound(ddir: str, window: Window, service: str) -> pd.DataFrame:
    """Who calls the service (Istio's 'Client Workloads'): one row per request from the
    `traffic` view, so a caller the server's proxy cannot name is named by the caller's own
    report (analytics/pairing.py)."""
    conn = connect(Path(ddir), window.tw)
    try:
        return _df(
            conn,
            f"""
            SELECT source_workload, source_namespace, destination_version AS version, protocol,
                   {_TABLE_COLS}
            FROM traffic WHERE ts >= $start AND ts < $end
              AND {TO_SERVICE}
            GROUP BY ALL ORDER BY requests DESC LIMIT {MAX_ROWS}""",
            {**_p(window), "svc": service, "secs": window.seconds},
        )
    finally:
        conn.close()


@st.cache_data(ttl=TTL_S, show_spinner=False)
def outbound(ddir: str, window: Window, service: str) -> pd.DataFrame:
    """What the service calls (Istio's 'Outbound Services'): one row per request from the
    `traffic` view, calls that never reached a destination proxy included; mTLS as the server
    saw it (a client-side ALS report only sees the app's plaintext hop)."""
    conn = connect(Path(ddir), window.tw)
    try:
        return _df(
            conn,
            f"""
            SELECT destination_service, destination_version AS version, protocol,
                   {_TABLE_COLS}
            FROM traffic WHERE ts >= $start AND ts < $end
              AND source_canonical_service = $svc
            GROUP BY ALL ORDER BY requests DESC LIMIT {MAX_ROWS}""",
            {**_p(window), "svc": service, "secs": window.seconds},
        )
    finally:
        conn.close()


@st.cache_data(ttl=TTL_S, show_spinner=False)
def codes_by_flags(ddir: str, window: Window, service: str) -> pd.DataFrame:
    """Requests per response code x response flags (long form)."""
    conn = connect(Path(ddir), window.tw)
    try:
        return _df(
            conn,
            f"""
            SELECT CAST(response_code AS VARCHAR) AS response_code,
                   coalesce(response_flags, '-') AS response_flags, count(*) AS requests
            FROM traffic WHERE ts >= $start AND ts < $end AND {TO_SERVICE}
            GROUP BY ALL ORDER BY requests DESC LIMIT 400""",
            {**_p(window), "svc": service},
        )
    finally:
        conn.close()
