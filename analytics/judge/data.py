"""The judge's inputs: request-level data of each side (DuckDB over the store), OTLP metric
series, and custom SQL. Only I/O here; every statistic lives in pure modules.

Sides are chosen by `selector`:
  version   destination_version = V (Istio fills it from the canonical revision label)
  revision  the same column: Istio's canonical revision is what `destination_version` carries
  workload  destination_workload = V
  subset    client-side (source-reported) requests whose cluster is outbound|port|V|host, i.e.
            what a VirtualService routed to subset V; falls back to destination_version = V
            when no client-side report exists
The service matches destination_service_name, destination_canonical_service or the FQDN.
Rows come from the `traffic` view: requests de-duplicated like Kiali (the destination's report
when both proxies reported the request).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path
from typing import Final

import duckdb
import numpy as np

from meshlens.analytics import error_rule
from meshlens.analytics.errors import JudgeInputError
from meshlens.analytics.judge.model import SELECTORS
from meshlens.analytics.window import TimeWindow
from meshlens.collector.store import grpc_status

_SERVICE_SQL: Final = (
    "(destination_service_name = $service OR destination_canonical_service = "
    "$service OR destination_service = $service)"
)
_SIDE_SQL: Final = {
    "version": "destination_version = $side",
    "revision": "destination_version = $side",
    "workload": "destination_workload = $side",
}


@dataclass(frozen=True, slots=True)
class RequestData:
    """One side's requests, time-ordered. ts in epoch seconds."""

    ts: np.ndarray
    duration_ms: np.ndarray
    response_code: np.ndarray  # int, 0 = no response
    grpc_status: np.ndarray  # int, -1 = not gRPC / unknown
    protocol: np.ndarray  # str objects

    @property
    def n(self) -> int:
        return int(self.ts.size)

    @classmethod
    def empty(cls) -> RequestData:
        z = np.zeros(0)
        return cls(z, z, z.astype(np.int64), z.astype(np.int64), np.zeros(0, dtype=object))

    @classmethod
    def from_arrays(
        cls,
        ts: np.ndarray,
        duration_ms: np.ndarray,
        response_code: np.ndarray | None = None,
        grpc_status: np.ndarray | None = None,
        protocol: np.ndarray | None = None,
    ) -> RequestData:
        n = len(ts)
        order = np.argsort(np.asarray(ts, float), kind="stable")
        rc = np.full(n, 200) if response_code is None else np.asarray(response_code)
        gs = np.full(n, -1) if grpc_status is None else np.asarray(grpc_status)
        pr = np.full(n, "http", dtype=object) if protocol is None else np.asarray(protocol, object)
        return cls(
            np.asarray(ts, float)[order],
            np.asarray(duration_ms, float)[order],
            rc.astype(np.int64)[order],
            gs.astype(np.int64)[order],
            pr[order],
        )


def grpc_code(text: str) -> int:
    """'14', 'UNAVAILABLE' or 'Unavailable' -> 14 (collector.store.grpc_status); raises
    ValueError for anything else."""
    code = grpc_status.code_of(text)
    if code is None:
        raise ValueError(f"not a gRPC status: {text!r}")
    return code


def error_mask(
    data: RequestData, codes: tuple[str, ...], grpc_codes: tuple[str, ...] = ()
) -> np.ndarray:
    """Which requests count as errors: the union of the classes of analytics/error_rule.py
    ("5xx", "4xx", "no_response", "grpc", "NXX", exact codes like "503") plus the exact gRPC
    statuses of `grpc_codes`. TCP connections are never errors."""
    m = np.zeros(data.n, dtype=bool)
    for c in codes:
        m |= error_rule.class_mask(c, data.protocol, data.response_code, data.grpc_status)
    for g in grpc_codes:
        m |= data.grpc_status == grpc_code(g)
    return m


def _check_selector(selector: str) -> None:
    if selector not in SELECTORS:
        raise JudgeInputError(
            f"unknown selector {selector!r}: choose one of {', '.join(SELECTORS)}"
        )


def _to_request_data(rows: duckdb.DuckDBPyRelation) -> RequestData:
    t = rows.arrow()
    if hasattr(t, "read_all"):
        t = t.read_all()
    if t.num_rows == 0:
        return RequestData.empty()
    cols = {name: t.column(name).to_numpy(zero_copy_only=False) for name in t.column_names}
    gs_raw = cols["grpc_status"]
    gs = np.full(len(gs_raw), -1, dtype=np.int64)
    for i, g in enumerate(gs_raw):
        if g is None or g == "" or (isinstance(g, float) and math.isnan(g)):
            continue
        code = grpc_status.code_of(str(g))
        gs[i] = 2 if code is None else code  # unrecognized text: a failed status (UNKNOWN)
    rc = np.nan_to_num(np.asarray(cols["response_code"], float), nan=0.0).astype(np.int64)
    dur = np.asarray(cols["duration_ms"], float)
    return RequestData.from_arrays(
        np.asarray(cols["t"], float), dur, rc, gs, np.asarray(cols["protocol"], object)
    )


def _window_sql(col: str) -> str:
    return f"{col} >= $start AND {col} < $end"


def load_requests(
    conn: duckdb.DuckDBPyConnection,
    *,
    service: str,
    side: str,
    window: TimeWindow,
    selector: str = "version",
) -> RequestData:
    """One side's de-duplicated requests (HTTP and gRPC; TCP connections carry no latency or
    response code worth judging)."""
    _check_selector(selector)
    params = {
        "service": service,
        "side": side,
        "start": window.start.astimezone(UTC),
        "end": window.end.astimezone(UTC),
    }
    cols = "epoch_us(ts) / 1e6 AS t, duration_ms, response_code, grpc_status, protocol"
    if selector == "subset":
        sql = (
            f"SELECT {cols} FROM requests WHERE reporter = 'source' AND protocol <> 'tcp' "
            f"AND split_part(upstream_cluster, '|', 3) = $side AND {_SERVICE_SQL} "
            f"AND {_window_sql('ts')}"
        )
        data = _to_request_data(conn.sql(sql, params=params))
        if data.n:
            return data
        selector = "version"
    sql = (
        f"SELECT {cols} FROM traffic WHERE protocol <> 'tcp' AND {_SIDE_SQL[selector]} "
        f"AND {_SERVICE_SQL} AND {_window_sql('ts')}"
    )
    return _to_request_data(conn.sql(sql, params=params))


def load_spans(
    conn: duckdb.DuckDBPyConnection, *, service: str, side: str, window: TimeWindow
) -> RequestData:
    """One side's server spans (service.name = service, service.version = side): latency from
    the span, HTTP status or 500 for an error status, gRPC status when present."""
    params = {
        "service": service,
        "side": side,
        "start": window.start.astimezone(UTC),
        "end": window.end.astimezone(UTC),
    }
    sql = (
        "SELECT epoch_us(start_ts) / 1e6 AS t, duration_ms, "
        "CASE WHEN coalesce(http_status_code, 0) > 0 THEN http_status_code "
        "     WHEN status_code = 'error' THEN 500 ELSE 200 END AS response_code, "
        "CAST(rpc_grpc_status_code AS VARCHAR) AS grpc_status, "
        "CASE WHEN rpc_grpc_status_code IS NOT NULL THEN 'grpc' ELSE 'http' END AS protocol "
        "FROM spans WHERE kind = 'server' AND service_name = $service "
        f"AND service_version = $side AND {_window_sql('start_ts')}"
    )
    return _to_request_data(conn.sql(sql, params=params))


@dataclass(frozen=True, slots=True)
class Series:
    """Timestamped values of one side (per-step series or per-request values)."""

    ts: np.ndarray
    values: np.ndarray

    @property
    def n(self) -> int:
        return int(self.ts.size)


def load_metric_series(
    conn: duckdb.DuckDBPyConnection,
    *,
    service: str,
    side: str,
    window: TimeWindow,
    metric_name: str,
) -> Series:
    """An OTLP metric (gauge value, or sum/histogram mean) of one side from `metrics`: the side
    is the `service.version` resource attribute (or data-point attribute)."""
    params = {
        "service": service,
        "side": side,
        "name": metric_name,
        "start": window.start.astimezone(UTC),
        "end": window.end.astimezone(UTC),
    }
    sql = (
        "SELECT epoch_us(ts) / 1e6 AS t, "
        "CASE WHEN kind IN ('histogram', 'exponential_histogram', 'summary') "
        "     THEN sum / nullif(count, 0) ELSE value END AS v "
        "FROM metrics WHERE name = $name AND service_name = $service "
        "AND coalesce(json_extract_string(resource_attributes, '$.\"service.version\"'), "
        "             json_extract_string(attributes, '$.\"service.version\"')) = $side "
        f"AND {_window_sql('ts')} ORDER BY t"
    )
    rows = conn.sql(sql, params=params).fetchall()
    return _series(rows)


def _series(rows: list[tuple[object, object]]) -> Series:
    ts = np.array([float(r[0]) for r in rows if r[0] is not None and r[1] is not None])  # type: ignore[arg-type]
    vs = np.array([float(r[1]) for r in rows if r[0] is not None and r[1] is not None])  # type: ignore[arg-type]
    return Series(ts, vs)


def substitute(query: str, values: dict[str, str]) -> str:
    """${name} placeholders -> SQL string literals (quotes doubled)."""
    out = query
    for k, v in values.items():
        out = out.replace("${" + k + "}", "'" + str(v).replace("'", "''") + "'")
    return out


def load_sql_series(
    conn: duckdb.DuckDBPyConnection,
    *,
    query: str,
    service: str,
    baseline: str,
    canary: str,
    window: TimeWindow,
    data_dir: Path | None = None,
) -> tuple[Series, Series]:
    """A custom SQL metric: one SELECT returning (side, ts, value) rows, side being 'baseline'
    or 'canary'. Placeholders ${service}, ${baseline}, ${canary}, ${start}, ${end} become SQL
    literals. With `data_dir` it runs in analytics.sql's sandbox (read-only, time-limited);
    without, the statement is still checked to be a single SELECT."""
    from meshlens.analytics.sql import check_statement, run_query

    sql = substitute(
        query,
        {
            "service": service,
            "baseline": baseline,
            "canary": canary,
            "start": window.start.astimezone(UTC).isoformat(),
            "end": window.end.astimezone(UTC).isoformat(),
        },
    )
    if data_dir is not None:
        rows = list(run_query(data_dir, sql, max_rows=1_000_000, window=window).rows)
    else:
        rows = conn.sql(check_statement(sql)).fetchall()
    sides: dict[str, list[tuple[object, object]]] = {"baseline": [], "canary": []}
    for row in rows:
        if len(row) < 3:
            raise JudgeInputError("a custom SQL metric must return (side, ts, value) columns")
        side, ts, value = row[0], row[1], row[2]
        key = str(side).lower()
        if key not in sides:
            continue
        t = ts.timestamp() if hasattr(ts, "timestamp") else ts
        sides[key].append((t, value))
    return _series(sides["baseline"]), _series(sides["canary"])
