"""Loaders of the Service page: golden signals, inbound, outbound, codes by flags."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Final

import pandas as pd
import streamlit as st

from meshlens.analytics import health, signals
from meshlens.analytics.catalog import connect
from meshlens.analytics.error_rule import IS_ERROR
from meshlens.analytics.graph.model import code_label
from meshlens.analytics.window import TimeWindow
from meshlens.dashboards import time_range
from meshlens.dashboards.data.common import (
    MAX_ROWS,
    TO_SERVICE,
    TTL_S,
    Window,
    _df,
    _p,
    effective_seconds,
    effective_span,
    traffic_connection,
)

SIGNAL_COLUMNS: Final = ("bucket", "version", "rps", "error_ratio", "p50_ms", "p95_ms", "p99_ms")


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
    `meshlens signals --by version --service <service>` computes them, over whole buckets
    only: buckets are aligned to `step_s`, and the bucket the data (or the window) starts
    inside of and the one holding its end (now) are left out, so no line ends in a false dip."""
    span = effective_span(ddir, window)
    whole = time_range.whole_buckets(*span, step_s) if span else None
    if whole is None:
        return pd.DataFrame(columns=list(SIGNAL_COLUMNS))
    tw = TimeWindow(*whole)
    conn = traffic_connection(ddir, window, tw)
    try:
        sig = signals.golden_signals(
            conn, tw, by=("version",), step_s=step_s, service=service, saturation=False
        )
    finally:
        conn.close()
    return sig.select(list(SIGNAL_COLUMNS)).to_pandas()


# Requests to a service: analytics.signals' rule, with the service as a query parameter.
# rps divides by the seconds the store has data for inside the window (`effective_seconds`),
# not by the window: "last 7d" over an hour of data must not show a 168x lower rate.
_TABLE_COLS: Final = f"""
    count(*) AS requests,
    round(count(*) / $secs, 3) AS rps,
    round(100.0 * count(*) FILTER (WHERE NOT {IS_ERROR}) / count(*), 2) AS success_pct,
    round(quantile_cont(duration_ms, 0.5), 1) AS p50_ms,
    round(quantile_cont(duration_ms, 0.9), 1) AS p90_ms,
    round(quantile_cont(duration_ms, 0.99), 1) AS p99_ms,
    round(100.0 * avg(mtls::INT), 1) AS mtls_pct,  -- over the reports that know (not NULL)
    sum(request_bytes) AS request_bytes,
    sum(response_bytes) AS response_bytes"""


@st.cache_data(ttl=TTL_S, show_spinner=False)
def inbound(ddir: str, window: Window, service: str) -> pd.DataFrame:
    """Who calls the service (Istio's 'Client Workloads'): one row per request from the
    `traffic` view, so a caller the server's proxy cannot name is named by the caller's own
    report (analytics/pairing.py)."""
    conn = traffic_connection(ddir, window)
    try:
        return _df(
            conn,
            f"""
            SELECT source_workload, source_namespace, destination_version AS version, protocol,
                   {_TABLE_COLS}
            FROM traffic WHERE ts >= $start AND ts < $end
              AND {TO_SERVICE}
            GROUP BY ALL ORDER BY requests DESC LIMIT {MAX_ROWS}""",
            {**_p(window), "svc": service, "secs": effective_seconds(ddir, window)},
        )
    finally:
        conn.close()


@st.cache_data(ttl=TTL_S, show_spinner=False)
def outbound(ddir: str, window: Window, service: str) -> pd.DataFrame:
    """What the service calls (Istio's 'Outbound Services'): one row per request from the
    `traffic` view, calls that never reached a destination proxy included; mTLS as the server
    saw it (a client-side ALS report only sees the app's plaintext hop)."""
    conn = traffic_connection(ddir, window)
    try:
        return _df(
            conn,
            f"""
            SELECT destination_service, destination_version AS version, protocol,
                   {_TABLE_COLS}
            FROM traffic WHERE ts >= $start AND ts < $end
              AND source_canonical_service = $svc
            GROUP BY ALL ORDER BY requests DESC LIMIT {MAX_ROWS}""",
            {**_p(window), "svc": service, "secs": effective_seconds(ddir, window)},
        )
    finally:
        conn.close()


@st.cache_data(ttl=TTL_S, show_spinner=False)
def codes_by_flags(ddir: str, window: Window, service: str) -> pd.DataFrame:
    """Requests per response code x response flags (long form)."""
    conn = traffic_connection(ddir, window)
    try:
        return _df(
            conn,
            f"""
            SELECT CAST(response_code AS VARCHAR) AS response_code,
                   coalesce(response_flags, '-') AS response_flags, count(*) AS requests
            FROM traffic WHERE ts >= $start AND ts < $end AND {TO_SERVICE}
            GROUP BY ALL ORDER BY response_code, requests DESC LIMIT 400""",
            {**_p(window), "svc": service},
        )
    finally:
        conn.close()


@dataclass(frozen=True, slots=True)
class ServiceHealth:
    """Kiali's health of a service's inbound traffic: status Healthy, Degraded, Failure or NA,
    and the error shares behind it (e.g. "5XX 1.4%")."""

    status: str
    requests: int
    detail: str


@st.cache_data(ttl=TTL_S, show_spinner=False)
def service_health(ddir: str, window: Window, service: str) -> ServiceHealth:
    """analytics.health's default tolerances over the requests to `service` in the window."""
    conn = traffic_connection(ddir, window)
    try:
        rows = conn.execute(
            f"""
            SELECT protocol, response_code, coalesce(grpc_status, '') AS grpc, count(*) AS n
            FROM traffic WHERE ts >= $start AND ts < $end AND {TO_SERVICE}
            GROUP BY ALL""",
            {**_p(window), "svc": service},
        ).fetchall()
    finally:
        conn.close()
    by_protocol: dict[str, dict[str, int]] = {}
    for protocol, code, grpc, n in rows:
        codes = by_protocol.setdefault(str(protocol), {})
        label = code_label(str(protocol), int(code or 0), str(grpc))
        codes[label] = codes.get(label, 0) + int(n)
    tolerances = health.default_health_config().tolerances("", "service", service)
    parts = [
        health.evaluate(codes, protocol, "inbound", tolerances)
        for protocol, codes in sorted(by_protocol.items())
    ]
    status = health.worst(p.status for p in parts)
    shares = [
        f"{p.protocol} {code} {pct:.1f}%"
        for p in parts
        for code, pct in p.error_pct.items()
        if round(pct, 1) > 0
    ]
    total = sum(p.requests for p in parts)
    return ServiceHealth(status, total, ", ".join(shares) or "no errors")
