"""The SQL page: examples and the guarded query runner."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import streamlit as st

from meshlens.dashboards.data.common import (
    TTL_S,
    Window,
)

# -- SQL -----------------------------------------------------------------------------------
EXAMPLES: Final = {
    "Busiest edges": (
        "SELECT source_workload, destination_workload, requests, round(error_rate, 4) AS err,\n"
        "       round(p95_ms, 1) AS p95_ms, round(mtls_ratio, 2) AS mtls\n"
        "FROM edges ORDER BY requests DESC LIMIT 20"
    ),
    "Error codes per service": (
        "SELECT destination_canonical_service, response_code, response_flags, count(*) AS n\n"
        "FROM traffic WHERE response_code >= 400 OR response_code = 0\n"
        "GROUP BY ALL ORDER BY n DESC LIMIT 50"
    ),
    "Requests per minute": (
        "SELECT time_bucket(INTERVAL 1 MINUTE, ts) AS minute, count(*) AS requests\n"
        "FROM traffic GROUP BY 1 ORDER BY 1"
    ),
    "Slowest requests": (
        "SELECT ts, source_workload, destination_service, path, response_code, duration_ms,\n"
        "       trace_id FROM requests ORDER BY duration_ms DESC LIMIT 20"
    ),
    "Plaintext traffic": (
        "SELECT source_workload, destination_workload, count(*) AS n FROM traffic\n"
        "WHERE NOT mtls GROUP BY ALL ORDER BY n DESC"
    ),
    "Slowest spans": (
        "SELECT service_name, name, kind, duration_ms, trace_id FROM spans\n"
        "ORDER BY duration_ms DESC LIMIT 20"
    ),
}


@dataclass(frozen=True, slots=True)
class SqlOutcome:
    frame: pd.DataFrame | None
    truncated: bool = False
    elapsed_s: float = 0.0
    error: str = ""


@st.cache_data(ttl=TTL_S, show_spinner=False, max_entries=32)
def run_sql(ddir: str, sql: str, max_rows: int, window: Window | None = None) -> SqlOutcome:
    """The query through the analytics SQL sandbox (read-only, time- and row-limited), over
    `window`'s partitions only when given. Rejected or failing queries come back as `error`
    text for the page to show."""
    from meshlens.analytics.errors import AnalyticsError
    from meshlens.analytics.sql import run_query

    try:
        res = run_query(Path(ddir), sql, max_rows=max_rows, window=window.tw if window else None)
    except AnalyticsError as exc:
        return SqlOutcome(None, error=str(exc))
    df = pd.DataFrame(list(res.rows), columns=list(res.columns))
    return SqlOutcome(df, bool(res.truncated), float(res.elapsed_s))


def to_parquet_bytes(df: pd.DataFrame) -> bytes:
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), buf)
    return buf.getvalue()
