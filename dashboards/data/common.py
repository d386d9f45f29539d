"""The store, the window and the caching rules every loader shares."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import streamlit as st

from meshlens.analytics import signals
from meshlens.analytics.catalog import connect
from meshlens.analytics.duck_sql import ts_literal
from meshlens.analytics.objectstore_source import table_partitions
from meshlens.analytics.window import TimeWindow
from meshlens.dashboards import time_range

DATA_DIR_ENV: Final = "MESHLENS_DATA_DIR"
TTL_S: Final = 10
WINDOW_STEP_S: Final = 10  # "now" is rounded to this, so cached entries are shared
MAX_ROWS: Final = 500
LEVELS: Final = ("workload", "app", "versioned-app", "service")
WINDOWS: Final = dict(time_range.RELATIVE)  # the relative ranges the sidebar offers
GRPC_PORT_ENV: Final = "MESHLENS_GRPC_PORT"  # meshlens serve's setting (Envoy ALS, OTLP)
_SEGMENT_RE: Final = re.compile(r"^[a-z0-9][a-z0-9-]*_\d{16}_\d{16}\.parquet$")


def data_dir() -> Path:
    return Path(os.environ.get(DATA_DIR_ENV, "meshlens-data"))


@dataclass(frozen=True, slots=True)
class Window:
    """A hashable [start, end) for cache keys (ISO strings) with its TimeWindow."""

    start: str
    end: str

    @classmethod
    def ending(cls, end: datetime, seconds: float) -> Window:
        end = end.astimezone(UTC)
        return cls((end - timedelta(seconds=seconds)).isoformat(), end.isoformat())

    @property
    def tw(self) -> TimeWindow:
        return TimeWindow(datetime.fromisoformat(self.start), datetime.fromisoformat(self.end))

    @property
    def seconds(self) -> float:
        return self.tw.seconds


def rounded_now(step: int = WINDOW_STEP_S) -> datetime:
    now = datetime.now(UTC).timestamp()
    return datetime.fromtimestamp((int(now) // step + 1) * step, tz=UTC)


def _df(conn: Any, sql: str, params: dict[str, Any] | None = None) -> pd.DataFrame:
    return conn.execute(sql, params or {}).df()


def _p(window: Window) -> dict[str, Any]:
    tw = window.tw
    return {"start": tw.start, "end": tw.end}


# -- the window's paired traffic, once ------------------------------------------------------
# Every loader of a page asks the `traffic` view (reports paired into requests) for the same
# window, and the pairing is most of each query's cost. The window's rows are paired once and
# kept in memory (shared by sessions, a few windows at most); loaders then scan that table.
# Windows with more requests than this query the files as before (the table would not fit).
MAX_MATERIALIZED_REPORTS: Final = 800_000  # about 200 MB of Arrow at most
_MATERIALIZED_WINDOWS: Final = 3


@st.cache_resource(ttl=TTL_S, max_entries=_MATERIALIZED_WINDOWS, show_spinner=False)
def _window_traffic(ddir: str, window: Window) -> pa.Table | None:
    conn = connect(Path(ddir), window.tw)
    try:
        rows = conn.execute(
            "SELECT count(*) FROM requests WHERE ts >= $start AND ts < $end", _p(window)
        ).fetchall()
        if not rows or int(rows[0][0]) > MAX_MATERIALIZED_REPORTS:
            return None
        rel = conn.sql("SELECT * FROM traffic WHERE ts >= $start AND ts < $end", params=_p(window))
        return rel.to_arrow_table()
    finally:
        conn.close()


def warm_window(ddir: str, window: Window) -> None:
    """Pair the window's reports now (a page starts this beside its first small loaders)."""
    _window_traffic(ddir, window)


def traffic_connection(
    ddir: str, window: Window, tw: TimeWindow | None = None
) -> duckdb.DuckDBPyConnection:
    """`connect()` over `tw` (default: the window) whose `traffic` view reads the window's
    paired rows from memory when they fit. Queries must stay inside the window."""
    bounds = tw or window.tw
    conn = connect(Path(ddir), bounds)
    table = _window_traffic(ddir, window)
    if table is not None:
        conn.register("window_traffic", table)
        # Bounded like connect()'s own views: a query over `tw` sees only `tw`'s rows.
        conn.execute(
            "CREATE OR REPLACE VIEW traffic AS SELECT * FROM window_traffic "
            f"WHERE ts >= {ts_literal(bounds.start)} AND ts < {ts_literal(bounds.end)}"
        )
    return conn


# -- store extent (time travel) ------------------------------------------------------------
@st.cache_data(ttl=TTL_S, show_spinner=False)
def time_extent(ddir: str) -> tuple[datetime, datetime] | None:
    """First and last request time, read from the partition names plus the newest partition
    only (no full scan)."""
    parts = table_partitions(ddir, "requests")  # a local directory or s3://bucket/prefix
    if not parts:
        return None
    first_dt, first_hr = parts[0]
    last_dt, last_hr = parts[-1]
    lo = datetime.fromisoformat(f"{first_dt}T{first_hr}:00:00+00:00")
    hi_hour = datetime.fromisoformat(f"{last_dt}T{last_hr}:00:00+00:00")
    conn = connect(Path(ddir), TimeWindow(lo, hi_hour + timedelta(hours=1)))
    try:
        row = conn.execute("SELECT max(ts) FROM requests WHERE ts >= $h", {"h": hi_hour}).fetchone()
        first = conn.execute(
            "SELECT min(ts) FROM requests WHERE ts < $h",
            {"h": lo + timedelta(hours=1)},
        ).fetchone()
    finally:
        conn.close()
    last = row[0] if row and row[0] is not None else hi_hour
    start = first[0] if first and first[0] is not None else lo
    return start.astimezone(UTC), last.astimezone(UTC)


@st.cache_data(ttl=5, show_spinner=False)
def last_data_time(ddir: str) -> datetime | None:
    """When the newest request in the store happened, for the freshness line: the Parquet
    footers (ts statistics) of the newest partition only, never a scan; a bucket store or a
    file without statistics falls back to `time_extent`. None: no request stored yet."""
    parts = table_partitions(ddir, "requests")
    if not parts:
        return None
    root = Path(ddir) / "requests"
    if root.is_dir():
        for dt, hr in reversed(parts[-2:]):  # the newest hour may hold no sealed file yet
            newest = _footer_max_ts(root / f"dt={dt}" / f"hr={hr}")
            if newest is not None:
                return newest
    extent = time_extent(ddir)
    return extent[1] if extent else None


def _footer_max_ts(part: Path) -> datetime | None:
    best: datetime | None = None
    try:
        names = [n for n in os.listdir(part) if _SEGMENT_RE.match(n)]
    except FileNotFoundError:  # removed by retention while we looked
        return None
    for name in names:
        try:
            meta = pq.read_metadata(part / name)
        except (OSError, ValueError):  # being replaced by compaction
            continue
        col = meta.schema.to_arrow_schema().get_field_index("ts")
        if col < 0:
            continue
        for i in range(meta.num_row_groups):
            stats = meta.row_group(i).column(col).statistics
            if stats is None or not stats.has_min_max or not isinstance(stats.max, datetime):
                continue
            ts = stats.max if stats.max.tzinfo else stats.max.replace(tzinfo=UTC)
            best = ts if best is None or ts > best else best
    return best


def effective_span(ddir: str, window: Window) -> tuple[datetime, datetime] | None:
    """The part of the window the store has data for (max(window start, first data) ..
    min(window end, last data)); None when they do not overlap. Rates divide by its length."""
    tw = window.tw
    return time_range.effective_span(tw.start, tw.end, time_extent(ddir))


def effective_seconds(ddir: str, window: Window) -> float:
    """Seconds of `effective_span` (at least 1): the denominator of every rate."""
    return time_range.span_seconds(effective_span(ddir, window))


def ingest_port() -> str:
    """The port to point Envoy's access log service at (meshlens serve's gRPC port)."""
    return os.environ.get(GRPC_PORT_ENV, "4317")


# The "requests to this service" predicate (analytics.signals owns the rule), for $svc.
TO_SERVICE: Final = signals.to_service("$svc")
