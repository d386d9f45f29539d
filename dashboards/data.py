"""Everything the Streamlit pages read, and the only module of the app that touches `analytics`.

Each loader is a `st.cache_data` function keyed by plain values (data dir, window bounds rounded
to `WINDOW_STEP_S`, filters), so pages re-run cheaply and auto-refresh reuses work. Filters go
into SQL (`WHERE ... LIMIT`): a page never loads more rows than it shows, and every connection is
opened over the window's partitions only (analytics.catalog prunes dt/hr directories), which is
what keeps the pages responsive on a 10M-row store.
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import streamlit as st

from meshlens.analytics import signals
from meshlens.analytics.catalog import connect
from meshlens.analytics.error_rule import IS_4XX, IS_5XX, IS_ERROR
from meshlens.analytics.objectstore_source import table_partitions
from meshlens.analytics.window import TimeWindow

DATA_DIR_ENV: Final = "MESHLENS_DATA_DIR"
TTL_S: Final = 10
WINDOW_STEP_S: Final = 10  # "now" is rounded to this, so cached entries are shared
MAX_ROWS: Final = 500
LEVELS: Final = ("workload", "app", "versioned-app", "service")
WINDOWS: Final = {"5m": 300, "15m": 900, "1h": 3600, "6h": 21600, "24h": 86400}


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
_TO_SERVICE: Final = signals.to_service("$svc")

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
              AND {_TO_SERVICE}
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
            FROM traffic WHERE ts >= $start AND ts < $end AND {_TO_SERVICE}
            GROUP BY ALL ORDER BY requests DESC LIMIT 400""",
            {**_p(window), "svc": service},
        )
    finally:
        conn.close()


# -- canary --------------------------------------------------------------------------------
_ALL_TIME: Final = TimeWindow(datetime(2000, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC))


@st.cache_data(ttl=TTL_S, show_spinner=False)
def rollouts(ddir: str) -> pd.DataFrame:
    """One row per rollout: latest verdict row plus the live gate state when a state file
    exists (<data_dir>/gate/<rollout>.json)."""
    conn = connect(Path(ddir), _ALL_TIME)
    try:
        df = _df(
            conn,
            """
            SELECT rollout, service, baseline, canary, phase, canary_weight, verdict, score,
                   action, ts AS last_verdict_at, count(*) OVER (PARTITION BY rollout) AS verdicts,
                   min(ts) OVER (PARTITION BY rollout) AS started_at
            FROM verdicts
            QUALIFY row_number() OVER (PARTITION BY rollout ORDER BY ts DESC) = 1
            ORDER BY last_verdict_at DESC""",
        )
    finally:
        conn.close()
    for i, rollout in enumerate(df["rollout"].tolist()):
        state = gate_state(ddir, str(rollout))
        if state:
            df.loc[i, "phase"] = state.get("phase", df.loc[i, "phase"])
            df.loc[i, "canary_weight"] = state.get("canary_weight", df.loc[i, "canary_weight"])
    return df


def gate_state(ddir: str, rollout: str) -> dict[str, Any] | None:
    path = Path(ddir) / "gate" / f"{rollout}.json"
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data


@st.cache_data(ttl=TTL_S, show_spinner=False)
def verdict_history(ddir: str, rollout: str) -> pd.DataFrame:
    conn = connect(Path(ddir), _ALL_TIME)
    try:
        return _df(
            conn,
            """
            SELECT ts, phase, canary_weight, verdict, score, action, dry_run, details
            FROM verdicts WHERE rollout = $r ORDER BY ts""",
            {"r": rollout},
        )
    finally:
        conn.close()


def verdict_metrics(details: str | None) -> list[dict[str, Any]]:
    """Per-metric results from a verdict row's `details` JSON (the judge's Verdict.to_json,
    possibly nested under "verdict")."""
    try:
        data = json.loads(details or "{}")
    except ValueError:
        return []
    if isinstance(data, dict) and isinstance(data.get("verdict"), dict):
        data = data["verdict"]
    metrics = data.get("metrics", []) if isinstance(data, dict) else []
    return [m for m in metrics if isinstance(m, dict)]


@st.cache_data(ttl=TTL_S, show_spinner=False)
def version_latencies(
    ddir: str, window: Window, service: str, versions: tuple[str, ...], limit: int = 20000
) -> pd.DataFrame:
    """A sample of request latencies and errors per version (both distributions of a canary)."""
    conn = connect(Path(ddir), window.tw)
    try:
        return _df(
            conn,
            f"""
            SELECT destination_version AS version, duration_ms, {IS_ERROR} AS error
            FROM traffic
            WHERE ts >= $start AND ts < $end AND {_TO_SERVICE}
              AND destination_version IN (SELECT unnest($versions::VARCHAR[]))
              AND protocol <> 'tcp'
            USING SAMPLE reservoir({int(limit)} ROWS) REPEATABLE (7)""",
            {**_p(window), "svc": service, "versions": list(versions)},
        )
    finally:
        conn.close()


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


@dataclass(frozen=True, slots=True)
class CheckOutcome:
    report: dict[str, Any] | None
    error: str = ""


@st.cache_data(ttl=TTL_S, show_spinner=False, max_entries=16)
def istio_check(ddir: str, window: Window, check: str, config_yaml: str) -> CheckOutcome:
    """`meshlens check <check>` over the window: the report JSON, or the error to show."""
    from meshlens.analytics.errors import AnalyticsError
    from meshlens.analytics.istio.checks import run_check
    from meshlens.analytics.istio.resources import parse_documents

    try:
        config = parse_documents(config_yaml, "config")
        report = run_check(check, Path(ddir), window.tw, config)
    except AnalyticsError as exc:
        return CheckOutcome(None, str(exc))
    return CheckOutcome(report.to_json())
