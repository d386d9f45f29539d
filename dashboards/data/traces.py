"""Loaders of the Requests & traces page: request search, trace lookup by any id, the spans,
logs and proxy requests of one trace.

A trace is looked up by what a person has: a request id (x-request-id) or a trace id in any
spelling (dashboards.trace_ids). The lookup finds the trace's id and time first, then reads
its spans, logs and requests over that time (plus a margin), not over the sidebar window: a
trace that started before the window still comes back whole, and any id of the last day opens.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Final

import pandas as pd
import streamlit as st

from meshlens.analytics.catalog import connect
from meshlens.analytics.error_rule import IS_4XX, IS_5XX, IS_ERROR
from meshlens.analytics.window import TimeWindow
from meshlens.dashboards.data.common import (
    TTL_S,
    Window,
    _df,
)
from meshlens.dashboards.trace_ids import parse_lookup

STATUSES: Final = ("any", "ok", "error", "4xx", "5xx")
MARGIN: Final = timedelta(hours=1)  # around a trace's first/last seen time
LOOKBACK: Final = timedelta(days=1)  # how far back an id is looked up past the window
MAX_SPANS: Final = 2000

_REQUEST_STATUS: Final = {"ok": f"NOT {IS_ERROR}", "error": IS_ERROR, "4xx": IS_4XX, "5xx": IS_5XX}
_SPAN_STATUS: Final = {
    "ok": "coalesce(status_code, '') <> 'error' AND coalesce(http_status_code, 0) < 400",
    "error": "(status_code = 'error' OR coalesce(http_status_code, 0) >= 500)",
    "4xx": "http_status_code >= 400 AND http_status_code < 500",
    "5xx": "http_status_code >= 500",
}


@dataclass(frozen=True, slots=True)
class TraceRef:
    """One trace found by an id: its trace id ('' when the requests carry none), the request id
    typed ('' for a trace id), and the first and last time anything of it was seen."""

    trace_id: str
    request_id: str
    first: str  # ISO 8601
    last: str

    @property
    def around(self) -> Window:
        """The time to read its spans, logs and requests over."""
        a, b = datetime.fromisoformat(self.first), datetime.fromisoformat(self.last)
        return Window((a - MARGIN).isoformat(), (b + MARGIN).isoformat())


def _ranges(window: Window) -> list[TimeWindow]:
    """The window (widened by the margin), then the last day up to its end."""
    tw = window.tw
    return [
        TimeWindow(tw.start - MARGIN, tw.end + MARGIN),
        TimeWindow(min(tw.start, tw.end - LOOKBACK) - MARGIN, tw.end + MARGIN),
    ]


def _query(ddir: str, tw: TimeWindow, sql: str, params: dict[str, Any]) -> pd.DataFrame:
    conn = connect(Path(ddir), tw)
    try:
        return _df(conn, sql, {"start": tw.start, "end": tw.end, **params})
    finally:
        conn.close()


def _id_filter(text: str, params: dict[str, Any]) -> str:
    lookup = parse_lookup(text)
    params["rids"] = list(lookup.request_ids)
    if not lookup.trace_ids:  # not a trace id: '' would match every untraced request
        return "request_id IN (SELECT unnest($rids))"
    params["tids"] = list(lookup.trace_ids)
    return "(request_id IN (SELECT unnest($rids)) OR trace_id IN (SELECT unnest($tids)))"


# -- search --------------------------------------------------------------------------------
@st.cache_data(ttl=TTL_S, show_spinner=False)
def search_requests(
    ddir: str,
    window: Window,
    *,
    query: str = "",
    service: str = "",
    status: str = "any",
    path: str = "",
    min_ms: float = 0.0,
    limit: int = 200,
) -> pd.DataFrame:
    """Newest matching proxy requests (filters pushed into SQL), with `spans`: how many spans
    are stored for the row's trace. `query` is a request id or a trace id (any spelling); an id
    not seen in the window is looked up over the last day. status: any|ok|error|4xx|5xx."""
    where = ["ts >= $start", "ts < $end"]
    params: dict[str, Any] = {}
    if query.strip():
        where.append(_id_filter(query, params))
    if service:
        where.append("(destination_canonical_service = $svc OR source_canonical_service = $svc)")
        params["svc"] = service
    if status in _REQUEST_STATUS:
        where.append(_REQUEST_STATUS[status])
    if path.strip():
        where.append("contains(lower(path), $path)")
        params["path"] = path.strip().lower()
    if min_ms > 0:
        where.append("duration_ms >= $min_ms")
        params["min_ms"] = float(min_ms)
    sql = f"""
        WITH found AS (
            SELECT ts, trace_id, request_id, reporter, source_workload, destination_workload,
                   destination_service, method, path, response_code, response_flags,
                   round(duration_ms, 2) AS duration_ms, mtls
            FROM requests WHERE {" AND ".join(where)}
            ORDER BY ts DESC LIMIT {int(limit)}),
        traced AS (
            SELECT trace_id, count(*) AS spans FROM spans
            WHERE start_ts >= $start - INTERVAL 1 HOUR AND start_ts < $end + INTERVAL 1 HOUR
              AND trace_id IN (SELECT trace_id FROM found WHERE trace_id <> '')
            GROUP BY 1)
        SELECT found.*, coalesce(traced.spans, 0) AS spans
        FROM found LEFT JOIN traced USING (trace_id) ORDER BY ts DESC"""
    # Read over the window plus the margin (spans of a trace may start before its request),
    # select requests of the window itself; an id from before the window: the last day.
    tw = window.tw
    span = ((tw.start, tw.end), (min(tw.start, tw.end - LOOKBACK), tw.end))
    df = pd.DataFrame()
    for start, end in span if query.strip() else span[:1]:
        read = TimeWindow(start - MARGIN, end + MARGIN)
        df = _query(ddir, read, sql, {**params, "start": start, "end": end})
        if len(df):
            break
    return df


@st.cache_data(ttl=TTL_S, show_spinner=False)
def recent_traces(
    ddir: str,
    window: Window,
    service: str = "",
    limit: int = 50,
    *,
    query: str = "",
    status: str = "any",
    path: str = "",
    min_ms: float = 0.0,
) -> pd.DataFrame:
    """Root spans (one per trace) of the window, newest first, with the same filters as the
    request search (service matches the span's service name, with or without namespace)."""
    where = ["start_ts >= $start", "start_ts < $end", "coalesce(parent_span_id, '') = ''"]
    params: dict[str, Any] = {}
    if query.strip():
        lookup = parse_lookup(query)
        params["tids"] = list(lookup.trace_ids)
        where.append("trace_id IN (SELECT unnest($tids))" if lookup.trace_ids else "false")
    if service:
        where.append("(service_name = $svc OR starts_with(service_name, $svc || '.'))")
        params["svc"] = service
    if status in _SPAN_STATUS:
        where.append(_SPAN_STATUS[status])
    if path.strip():
        where.append("(contains(lower(name), $path) OR contains(lower(http_route), $path))")
        params["path"] = path.strip().lower()
    if min_ms > 0:
        where.append("duration_ms >= $min_ms")
        params["min_ms"] = float(min_ms)
    return _query(
        ddir,
        window.tw,
        f"""
        SELECT trace_id, service_name, name, start_ts, round(duration_ms, 2) AS duration_ms,
               status_code, http_status_code
        FROM spans WHERE {" AND ".join(where)}
        ORDER BY start_ts DESC LIMIT {int(limit)}""",
        params,
    )


# -- one trace -----------------------------------------------------------------------------
@st.cache_data(ttl=TTL_S, show_spinner=False)
def resolve_trace(ddir: str, window: Window, text: str) -> TraceRef | None:
    """The trace a request id or trace id belongs to (None when neither requests nor spans
    of the window or the last day have it)."""
    lookup = parse_lookup(text)
    if lookup.empty:
        return None
    for tw in _ranges(window):
        params: dict[str, Any] = {}
        found = _query(
            ddir,
            tw,
            f"""
            SELECT trace_id, max(request_id IN (SELECT unnest($rids))) AS by_request,
                   min(ts) AS first, max(ts + to_microseconds(CAST(coalesce(duration_ms, 0)
                   * 1000 AS BIGINT))) AS last, count(*) AS n
            FROM requests WHERE ts >= $start AND ts < $end AND {_id_filter(text, params)}
            GROUP BY 1 ORDER BY (trace_id <> '') DESC, n DESC LIMIT 1""",
            params,
        )
        if len(found):
            row = found.iloc[0]
            tid = str(row["trace_id"] or "")
            first, last = pd.Timestamp(row["first"]), pd.Timestamp(row["last"])
            if tid:  # the trace's spans may start before its first proxy report
                f2, l2 = _span_extent(ddir, TimeWindow(tw.start, tw.end), tid)
                first = min(first, f2) if f2 is not None else first
                last = max(last, l2) if l2 is not None else last
            rid = text.strip() if bool(row["by_request"]) else ""
            if pd.isna(first) or pd.isna(last):  # rows without a time: read the whole range
                first, last = pd.Timestamp(tw.start) + MARGIN, pd.Timestamp(tw.end) - MARGIN
            return TraceRef(tid, rid, first.isoformat(), last.isoformat())
        for tid in lookup.trace_ids:
            first_s, last_s = _span_extent(ddir, tw, tid)
            if first_s is not None and last_s is not None:
                return TraceRef(tid, "", first_s.isoformat(), last_s.isoformat())
    return None


def _span_extent(
    ddir: str, tw: TimeWindow, trace_id: str
) -> tuple[pd.Timestamp | None, pd.Timestamp | None]:
    df = _query(
        ddir,
        tw,
        """SELECT min(start_ts) AS a, max(coalesce(end_ts, start_ts)) AS b FROM spans
           WHERE start_ts >= $start AND start_ts < $end AND trace_id = $t""",
        {"t": trace_id},
    )
    a, b = df.iloc[0]["a"], df.iloc[0]["b"]
    if pd.isna(a):
        return None, None
    return pd.Timestamp(a), pd.Timestamp(b)


@st.cache_data(ttl=TTL_S, show_spinner=False)
def trace_spans(ddir: str, around: Window, trace_id: str) -> pd.DataFrame:
    """All spans of one trace over `around` (TraceRef.around), oldest first."""
    return _query(
        ddir,
        around.tw,
        f"""
        SELECT trace_id, span_id, parent_span_id, name, kind, service_name, service_version,
               start_ts, end_ts, duration_ms, status_code, status_message, http_method,
               http_status_code, http_route, peer_service, attributes, resource_attributes
        FROM spans WHERE start_ts >= $start AND start_ts < $end AND trace_id = $t
        ORDER BY start_ts LIMIT {MAX_SPANS}""",
        {"t": trace_id.strip().lower()},
    )


@st.cache_data(ttl=TTL_S, show_spinner=False)
def trace_logs(ddir: str, around: Window, trace_id: str) -> pd.DataFrame:
    """The log records of one trace (OTLP logs carrying its trace id), oldest first."""
    return _query(
        ddir,
        around.tw,
        """
        SELECT ts, severity_text, severity_number, service_name, span_id, body, attributes,
               resource_attributes
        FROM logs WHERE ts >= $start AND ts < $end AND trace_id = $t
        ORDER BY ts LIMIT 2000""",
        {"t": trace_id.strip().lower()},
    )


@st.cache_data(ttl=TTL_S, show_spinner=False)
def trace_requests(ddir: str, around: Window, trace_id: str, request_id: str = "") -> pd.DataFrame:
    """The proxy requests (access logs) of one trace from every reporting proxy: those that
    carry its trace id, and those of the request id (x-request-id follows the call chain, so
    it also groups the hops of an untraced request)."""
    if not trace_id and not request_id:
        return pd.DataFrame()
    return _query(
        ddir,
        around.tw,
        """
        SELECT ts, reporter, origin, node_id, source_workload, destination_workload,
               destination_canonical_service, destination_service, method, path,
               response_code, response_flags,
               round(duration_ms, 2) AS duration_ms, mtls, upstream_cluster, request_id, trace_id
        FROM requests WHERE ts >= $start AND ts < $end
          AND ((trace_id = $t AND $t <> '') OR (request_id = $r AND $r <> ''))
        ORDER BY ts, reporter LIMIT 2000""",
        {"t": trace_id.strip().lower(), "r": request_id.strip()},
    )
