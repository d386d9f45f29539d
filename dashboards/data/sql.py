"""The SQL page: examples, the guarded query runner and the catalog for the schema browser."""

from __future__ import annotations

import io
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
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

DEFAULT_TIMEOUT_S: Final = 30.0  # analytics.sql's default, the limit the page states

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
    "Requests per workload": (
        "SELECT count(*) AS n, destination_workload FROM requests GROUP BY 2 ORDER BY n DESC"
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
    "Error logs with their span": (
        "SELECT l.ts, l.severity_text, l.service_name, l.body, s.name AS span, l.trace_id\n"
        "FROM logs l LEFT JOIN spans s USING (trace_id, span_id)\n"
        "WHERE l.severity_number >= 17 ORDER BY l.ts DESC LIMIT 50"
    ),
}

# What each table of the catalog is, for the schema browser.
TABLE_NOTES: Final = {
    "requests": "one row per proxy report (a hop is reported by its source and its destination)",
    "spans": "one row per OTLP span",
    "metrics": "one row per OTLP metric point",
    "logs": "one row per OTLP log record (not access logs)",
    "verdicts": "one row per canary gate verdict",
    "traffic": "view: one row per request, the two reports of a hop merged",
    "edges": "view: one row per source/destination workload pair over the window",
    "signals": "view: golden signals per destination service/version per minute",
}

# Absolute paths in an error message (DuckDB quotes the files it failed on); the page shows
# messages, never where the store lives on the server.
_PATH: Final = re.compile(r"(?<![\w:/>])/(?:[\w.@+~-]+/)+[\w.@+*~=-]*")


@dataclass(frozen=True, slots=True)
class SqlOutcome:
    frame: pd.DataFrame | None
    truncated: bool = False
    elapsed_s: float = 0.0
    error: str = ""
    types: tuple[str, ...] = ()
    renamed: tuple[str, ...] = field(default=())  # duplicate column names made unique


def safe_message(message: str, ddir: str = "", sql: str = "") -> str:
    """The error text with the data directory written `<data>` and other absolute paths
    written `<path>` (except those the query itself names), at most 1,500 characters."""
    text = str(message)
    for d in {str(ddir), str(Path(ddir).resolve())} if ddir else set():
        if d and d not in (".", "/"):
            text = text.replace(d.rstrip("/"), "<data>")
    text = _PATH.sub(lambda m: m.group(0) if m.group(0) in sql else "<path>", text)
    return text if len(text) <= 1500 else text[:1497] + "..."


def _unique(names: list[str]) -> tuple[list[str], tuple[str, ...]]:
    seen: dict[str, int] = {}
    out, renamed = [], []
    for n in names:
        if n in seen:
            seen[n] += 1
            new = f"{n}_{seen[n]}"
            while new in seen:
                seen[n] += 1
                new = f"{n}_{seen[n]}"
            seen[new] = 1
            out.append(new)
            renamed.append(f"{n} -> {new}")
        else:
            seen[n] = 1
            out.append(n)
    return out, tuple(renamed)


def _frame(table: pa.Table) -> tuple[pd.DataFrame, tuple[str, ...]]:
    names, renamed = _unique([str(c) for c in table.column_names])
    table = table.rename_columns(names)
    try:
        df = table.to_pandas()
    except (pa.ArrowException, ValueError, TypeError):  # a type pandas cannot hold
        df = pd.DataFrame({n: table.column(n).to_pylist() for n in names})
    return df, renamed


@st.cache_data(ttl=TTL_S, show_spinner=False, max_entries=32)
def run_sql(
    ddir: str,
    sql: str,
    max_rows: int,
    window: Window | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> SqlOutcome:
    """The query through the analytics SQL sandbox (read-only, time- and row-limited), over
    `window`'s partitions only when given. Rejected or failing queries come back as `error`
    text for the page to show (no traceback, no server path)."""
    from meshlens.analytics.errors import AnalyticsError
    from meshlens.analytics.sql import run_query

    try:
        res = run_query(
            Path(ddir),
            sql,
            max_rows=max_rows,
            window=window.tw if window else None,
            timeout_s=timeout_s,
        )
        if res.arrow is not None:
            df, renamed = _frame(res.arrow)
        else:
            names, renamed = _unique(list(res.columns))
            df = pd.DataFrame(list(res.rows), columns=names)
    except AnalyticsError as exc:
        return SqlOutcome(None, error=safe_message(str(exc), ddir, sql))
    except Exception as exc:  # the page shows a message whatever broke below it
        return SqlOutcome(None, error=safe_message(f"{type(exc).__name__}: {exc}", ddir, sql))
    return SqlOutcome(df, bool(res.truncated), float(res.elapsed_s), "", tuple(res.types), renamed)


# The catalog is read over an empty window long ago: no file is opened, yet every view has
# all its columns and types (the catalog's typed empty branch), so it is instant on any store.
_NO_FILES: Final = Window(
    datetime(1970, 1, 1, tzinfo=UTC).isoformat(),
    (datetime(1970, 1, 1, tzinfo=UTC) + timedelta(seconds=1)).isoformat(),
)


@dataclass(frozen=True, slots=True)
class Catalog:
    """Tables and views of the SQL surface with their columns (name, type), or an error."""

    columns: pd.DataFrame  # table_name, column_name, data_type, ordinal_position
    error: str = ""

    @property
    def tables(self) -> list[str]:
        if self.columns.empty:
            return []
        return list(dict.fromkeys(self.columns["table_name"].astype(str)))

    def of(self, table: str) -> pd.DataFrame:
        df = self.columns[self.columns["table_name"] == table]
        out = df[["column_name", "data_type"]].rename(
            columns={"column_name": "column", "data_type": "type"}
        )
        out["type"] = out["type"].astype(str).str.replace("TIMESTAMP WITH TIME ZONE", "TIMESTAMPTZ")
        return out.reset_index(drop=True)


@st.cache_data(ttl=300, show_spinner=False)
def schema_catalog(ddir: str) -> Catalog:
    """Every view the SQL page can query with its columns, from the same sandboxed SQL layer
    the queries run in (information_schema of the catalog's connection)."""
    sql = (
        "SELECT table_name, column_name, data_type, ordinal_position "
        "FROM information_schema.columns WHERE table_schema = 'main' "
        "ORDER BY table_name, ordinal_position"
    )
    out = run_sql(ddir, sql, 100_000, _NO_FILES)
    if out.error or out.frame is None:
        empty = pd.DataFrame(columns=["table_name", "column_name", "data_type", "ordinal_position"])
        return Catalog(empty, out.error or "no catalog")
    df = out.frame
    order = {name: i for i, name in enumerate(TABLE_NOTES)}
    df = df.assign(_o=df["table_name"].map(lambda t: order.get(str(t), len(order))))
    df = df.sort_values(["_o", "table_name", "ordinal_position"], kind="stable").drop(columns="_o")
    return Catalog(df.reset_index(drop=True))


def example_for(table: str) -> str:
    """The starter query the schema browser inserts for `table`."""
    return f"SELECT * FROM {table} LIMIT 100"


def to_parquet_bytes(df: pd.DataFrame) -> bytes:
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), buf)
    return buf.getvalue()


def to_csv_bytes(df: pd.DataFrame) -> bytes:
    return df.to_csv(index=False).encode()
