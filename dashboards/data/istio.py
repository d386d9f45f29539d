"""Istio config against traffic (Security and Routing pages)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import streamlit as st

from meshlens.dashboards.data.common import (
    TTL_S,
    Window,
    _p,
    traffic_connection,
)

if TYPE_CHECKING:
    from meshlens.analytics.istio.telemetry import Context

# -- Istio config against traffic (Security and Routing pages) -----------------------------
ISTIO_CONFIG_ENV: Final = "MESHLENS_ISTIO_CONFIG"


def istio_config_text() -> str:
    """The Istio YAML the pages start from: the file or directory in MESHLENS_ISTIO_CONFIG
    (the demo sets it), else empty."""
    raw = os.environ.get(ISTIO_CONFIG_ENV, "")
    if not raw:
        return ""
    path = Path(raw)
    files = sorted(path.rglob("*.y*ml")) if path.is_dir() else [path]
    return "\n---\n".join(f.read_text() for f in files if f.is_file())


def istio_config_problem() -> str:
    """Why MESHLENS_ISTIO_CONFIG gives no YAML although it is set ('' when unset or fine), so
    a typo is not mistaken for "no config given". No path in it: it is the server's."""
    raw = os.environ.get(ISTIO_CONFIG_ENV, "")
    if not raw:
        return ""
    path = Path(raw)
    if path.is_file():
        return ""
    if path.is_dir():
        return "" if any(path.rglob("*.y*ml")) else "it names a directory with no .yaml file"
    return "it names no file or directory on the server"


@dataclass(frozen=True, slots=True)
class CheckOutcome:
    report: dict[str, Any] | None
    error: str = ""


@st.cache_resource(ttl=TTL_S, show_spinner=False, max_entries=16)
def istio_context(ddir: str, window: Window) -> Context:
    """Who is who in the window (workloads' apps, versions and principals, from both sides'
    reports): one scan of the window's reports for the mTLS and authz checks together. A frozen
    value, so one object is shared."""
    from meshlens.analytics.catalog import connect
    from meshlens.analytics.istio.telemetry import load_context

    conn = connect(Path(ddir), window.tw)
    try:
        return load_context(conn)
    finally:
        conn.close()


@st.cache_data(ttl=TTL_S, show_spinner=False, max_entries=16)
def istio_check(ddir: str, window: Window, check: str, config_yaml: str) -> CheckOutcome:
    """`meshlens check <check>` over the window: the report JSON, or the error to show."""
    from meshlens.analytics.errors import AnalyticsError
    from meshlens.analytics.istio.checks import run_check
    from meshlens.analytics.istio.resources import parse_documents

    try:
        config = parse_documents(config_yaml, "config")
        # The window's paired traffic, shared with the other loaders (data.common), and its
        # identities, shared by the checks of the same window.
        context = istio_context(ddir, window) if check != "routing" else None
        report = run_check(
            check,
            Path(ddir),
            window.tw,
            config,
            conn_factory=lambda _dir, _tw: traffic_connection(ddir, window),
            context=context,
        )
    except AnalyticsError as exc:
        return CheckOutcome(None, str(exc))
    return CheckOutcome(report.to_json())


@st.cache_data(ttl=TTL_S, show_spinner=False)
def busiest_namespace(ddir: str, window: Window) -> str | None:
    """The application namespace with the most requests in the window (the pages' example
    config is put there, so it meets the traffic it is shown against); None: no traffic."""
    from meshlens.analytics.catalog import connect

    conn = connect(Path(ddir), window.tw)
    try:
        row = conn.execute(
            """SELECT destination_namespace, count(*) AS n FROM requests
               WHERE ts >= $start AND ts < $end
                 AND destination_namespace NOT IN ('', 'unknown', 'istio-system')
               GROUP BY 1 ORDER BY n DESC, 1 LIMIT 1""",
            _p(window),
        ).fetchone()
    finally:
        conn.close()
    return str(row[0]) if row else None
