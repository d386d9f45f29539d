"""Golden signals per service / workload / version / namespace / app over time buckets.

Rate, errors and latency come from the `traffic` view, one row per request (the client's and
the server's reports of a hop paired: analytics/pairing.py), as the graph reads them, so a
request that never reached its destination (UF, UH, ...) still counts as an error of the
service it was meant for. TCP connections are left out (no request semantics). Errors:
analytics/error_rule.py (5xx, no response, a gRPC status other than OK). Buckets are aligned to
the window start; empty buckets are absent.

Saturation, where the metrics table has it (averaged per bucket and service), from:
  cpu_utilization    process.cpu.utilization, container.cpu.utilization,
                     k8s.pod.cpu.utilization, system.cpu.utilization (0..1)
  memory_bytes       process.memory.usage, container.memory.usage,
                     container_memory_working_set_bytes, process_resident_memory_bytes
  inflight_requests  http.server.active_requests, envoy_cluster_upstream_rq_active,
                     envoy_http_downstream_rq_active
  active_connections envoy_cluster_upstream_cx_active, db.client.connection.count,
                     db.client.connections.usage, envoy_http_downstream_cx_active
Metric rows match a signal row by service_name (= the service / app value) and, when `version`
is a dimension, the resource's service.version.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Final

import duckdb
import polars as pl

from meshlens.analytics.error_rule import IS_ERROR
from meshlens.analytics.errors import AnalyticsError
from meshlens.analytics.window import TimeWindow

DIMENSIONS: Final[dict[str, str]] = {
    "service": "destination_service_name",
    "workload": "destination_workload",
    "version": "destination_version",
    "namespace": "destination_namespace",
    "app": "destination_canonical_service",
    "source": "source_workload",
}

SATURATION: Final[dict[str, tuple[str, ...]]] = {
    "cpu_utilization": (
        "process.cpu.utilization",
        "container.cpu.utilization",
        "k8s.pod.cpu.utilization",
        "system.cpu.utilization",
    ),
    "memory_bytes": (
        "process.memory.usage",
        "container.memory.usage",
        "container_memory_working_set_bytes",
        "process_resident_memory_bytes",
    ),
    "inflight_requests": (
        "http.server.active_requests",
        "envoy_cluster_upstream_rq_active",
        "envoy_http_downstream_rq_active",
    ),
    "active_connections": (
        "envoy_cluster_upstream_cx_active",
        "db.client.connection.count",
        "db.client.connections.usage",
        "envoy_http_downstream_cx_active",
    ),
}
QUANTILES: Final = (0.5, 0.9, 0.95, 0.99)
MAX_STEP_S: Final = 3660 * 86400  # ten years


def _check(by: Sequence[str], step_s: float) -> None:
    if not by:
        raise AnalyticsError("signals need at least one --by dimension")
    bad = [b for b in by if b not in DIMENSIONS]
    if bad:
        raise AnalyticsError(
            f"unknown --by dimension {bad[0]!r}; choose from {', '.join(DIMENSIONS)}"
        )
    if not 0 < step_s <= MAX_STEP_S:  # also NaN; beyond this, microsecond buckets overflow
        raise AnalyticsError(
            f"--step must be positive and at most {MAX_STEP_S // 86400}d, got {step_s:g} s"
        )


def _ts(window_start: object) -> str:
    assert isinstance(window_start, datetime)
    return f"TIMESTAMPTZ '{window_start.astimezone(UTC).isoformat()}'"


def _bucket_index(window: TimeWindow, micros: int) -> str:
    """time_bucket(step, ts, window start) as a bucket number: integer arithmetic per row is
    much cheaper; _bucket_ts turns the (few) numbers back into times. Floor division via a
    positive offset (`//` truncates toward zero), so rows before the start bucket right."""
    origin = (window.start - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
    offset = (4 * 10**15 // micros + 1) * micros  # > any |epoch_us(ts) - origin| in practice
    return f"((epoch_us(ts) - {origin} + {offset}) // {micros} - {offset // micros})"


def _bucket_ts(window: TimeWindow, micros: int, col: str = "bucket") -> str:
    return f"{_ts(window.start)} + to_microseconds({col} * {micros}) AS bucket"


def to_service(service: str) -> str:
    """SQL: the request went to `service` (an SQL expression: a literal or a parameter), named
    by its short name, its host (FQDN) or its canonical service. The one rule for "requests to a
    service" (signals, the app's Service page); a request that never reached a proxy has no
    canonical service but still names the service its client routed to."""
    return (
        f"(destination_service_name = {service} OR destination_service = {service}"
        f" OR destination_canonical_service = {service})"
    )


def _base(
    window: TimeWindow,
    by: Sequence[str],
    step_s: float,
    service: str | None,
    origin: str | None = None,
    *,
    raw: bool = False,
) -> str:
    # raw: the dimension columns as stored (NULL not yet 'unknown'), cheaper to group by.
    dims = ", ".join(
        f"{DIMENSIONS[b]} AS {b}" if raw else f"coalesce({DIMENSIONS[b]}, 'unknown') AS {b}"
        for b in by
    )
    where = "protocol <> 'tcp'"
    if service is not None:
        where += " AND " + to_service("'" + service.replace("'", "''") + "'")
    if origin:
        where += " AND origin = '" + origin.replace("'", "''") + "'"
    micros = int(step_s * 1_000_000)
    return f"""
WITH r AS NOT MATERIALIZED (
    SELECT {_bucket_index(window, micros)} AS bucket, {dims},
        *
    FROM traffic WHERE {where}
)"""


def golden_signals(
    conn: duckdb.DuckDBPyConnection,
    window: TimeWindow,
    *,
    by: Sequence[str] = ("service",),
    step_s: float = 60,
    service: str | None = None,
    saturation: bool = True,
    origin: str | None = None,
) -> pl.DataFrame:
    """One row per bucket x dimension values: bucket, <by>, requests, rps, errors, error_ratio,
    p50_ms, p90_ms, p95_ms, p99_ms [, cpu_utilization, memory_bytes, inflight_requests,
    active_connections when metrics have them]."""
    by = tuple(by)
    _check(by, step_s)
    keys = ["bucket", *by]
    micros = int(step_s * 1_000_000)
    base = _base(window, by, step_s, service, origin, raw=True)
    out = _counts_and_latency(conn, base, keys, by, _bucket_ts(window, micros))
    if out.height == 0:
        return _empty(by)
    bucket_end = pl.min_horizontal(
        pl.col("bucket") + pl.duration(microseconds=int(step_s * 1_000_000)),
        pl.lit(window.end),
    )
    seconds = (bucket_end - pl.col("bucket")).dt.total_microseconds() / 1_000_000
    out = out.with_columns(
        rps=pl.col("requests") / seconds,
        error_ratio=pl.col("errors") / pl.col("requests"),
        **{
            f"p{int(q * 100)}_ms": pl.col("q").list.get(i, null_on_oob=True)
            for i, q in enumerate(QUANTILES)
        },
    ).drop("q")
    out = out.select(
        [*keys, "requests", "rps", "errors", "error_ratio", "p50_ms", "p90_ms", "p95_ms", "p99_ms"]
    ).sort(keys)
    if saturation:
        out = _with_saturation(conn, out, window, by, step_s)
    return out


def _literal(v: object) -> str:
    return "'" + str(v).replace("'", "''") + "'"


def _counts_and_latency(
    conn: duckdb.DuckDBPyConnection,
    base: str,
    keys: Sequence[str],
    by: Sequence[str],
    bucket_ts: str,
) -> pl.DataFrame:
    """Requests, errors and the latency quantiles (`q`) per bucket x dimensions in ONE scan of
    `traffic` (each scan pairs the two reports of every request again: most of the cost).
    `base` has the stored dimension values: rows are grouped as they are, with the durations
    kept as lists, and made 'unknown' on the few groups; the quantiles come from the
    concatenated lists of each group, so NULL and 'unknown' merge and the answer stays exact."""
    cols = ", ".join(keys)
    dims = ", ".join(f"coalesce({b}, 'unknown') AS {b}" for b in by)
    qs = ", ".join(str(q) for q in QUANTILES)
    return conn.sql(
        f"""{base},
        raw AS (
            SELECT {cols}, protocol, response_code, grpc_status, count(*) AS n,
                list(duration_ms) AS durations
            FROM r GROUP BY ALL
        ),
        -- error classes and 'unknown' from the (few) group keys, not per row
        s AS MATERIALIZED (
            SELECT {bucket_ts}, {dims}, n, durations,
                coalesce({IS_ERROR}, false) AS is_err
            FROM raw
        ),
        c AS (
            SELECT {cols}, sum(n)::BIGINT AS requests,
                sum(CASE WHEN is_err THEN n ELSE 0 END)::BIGINT AS errors
            FROM s GROUP BY {cols}
        ),
        l AS (
            SELECT {cols}, quantile_cont(d, [{qs}]) AS q
            FROM (SELECT {cols}, unnest(durations) AS d FROM s) GROUP BY {cols}
        )
        SELECT c.*, l.q FROM c JOIN l USING ({cols})"""
    ).pl()


def _empty(by: Sequence[str], schema: dict[str, pl.DataType] | None = None) -> pl.DataFrame:
    cols: dict[str, pl.DataType] = {"bucket": pl.Datetime("us", "UTC")}
    cols.update({b: pl.String() for b in by})
    cols.update(
        {
            "requests": pl.Int64(),
            "rps": pl.Float64(),
            "errors": pl.Int64(),
            "error_ratio": pl.Float64(),
            "p50_ms": pl.Float64(),
            "p90_ms": pl.Float64(),
            "p95_ms": pl.Float64(),
            "p99_ms": pl.Float64(),
        }
    )
    return pl.DataFrame(schema=cols)


def _with_saturation(
    conn: duckdb.DuckDBPyConnection,
    out: pl.DataFrame,
    window: TimeWindow,
    by: Sequence[str],
    step_s: float,
) -> pl.DataFrame:
    join_dim = next((b for b in by if b in ("service", "app", "workload")), None)
    if join_dim is None or out.height == 0:
        return out
    names = {n: col for col, ns in SATURATION.items() for n in ns}
    listing = ", ".join(f"'{n}'" for n in names)
    case = " ".join(f"WHEN name = '{n}' THEN '{c}'" for n, c in names.items())
    version = (
        ", coalesce(json_extract_string(resource_attributes, '$.\"service.version\"'), "
        "'unknown') AS version"
        if "version" in by
        else ""
    )
    micros = int(step_s * 1_000_000)
    m = conn.sql(
        f"""SELECT time_bucket(to_microseconds({micros}), ts, {_ts(window.start)}) AS bucket,
            service_name AS {join_dim}{version}, CASE {case} END AS signal,
            avg(coalesce(value, CASE WHEN count > 0 THEN sum / count END)) AS v
        FROM metrics WHERE name IN ({listing}) GROUP BY ALL"""
    ).pl()
    if m.height == 0:
        return out
    keys = ["bucket", join_dim] + (["version"] if "version" in by else [])
    wide = m.pivot(on="signal", index=keys, values="v")
    wide = wide.with_columns(pl.col("bucket").cast(out.schema["bucket"]))
    return out.join(wide, on=keys, how="left")
