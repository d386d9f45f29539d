"""The SQL catalog: an in-memory DuckDB connection with one view per store table.

Every process (and every query session) opens its own connection; there is no DuckDB file, so
any number of readers can run beside the collector. The base views read the Parquet files that
`collector.store.layout.visible_files` lists (compaction-aware), pruned to the window's dt/hr
partitions and then filtered on the time column. `union_by_name` plus a typed empty branch keep
every column of the public schema present even when old files predate it (schema evolution),
and a table with no files yet is an empty view with the right types.

Derived views (documented in the README):
  traffic  one row per request: the client's and the server's report of the same hop paired
           and merged (analytics/pairing.py); settled hours are read as stored paired
           (analytics/paired_store.py), the rest paired here
  edges    one row per (source workload, destination workload/service, protocol) over the window
  signals  one row per destination service/version per minute: golden signals
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Final

import duckdb

from meshlens.analytics.duck_sql import empty_select, sql_string, ts_literal
from meshlens.analytics.error_rule import IS_4XX, IS_5XX, IS_ERROR, IS_GRPC_ERROR, IS_NO_RESPONSE
from meshlens.analytics.objectstore_source import remote_location
from meshlens.analytics.paired_store import MARGIN, PairedPlan, plan
from meshlens.analytics.pairing import TRAFFIC_SQL, traffic_sql
from meshlens.analytics.window import TimeWindow
from meshlens.collector.store.layout import parse_segment_file, visible_files
from meshlens.collector.store.schema import TABLES, TIME_COLUMN

BASE_VIEWS: Final = tuple(TABLES)
DERIVED_VIEWS: Final = ("traffic", "edges", "signals")

EDGES_SQL: Final = f"""
SELECT
    source_namespace, source_workload, source_canonical_service, source_version,
    destination_namespace, destination_workload, destination_canonical_service,
    destination_version, destination_service, protocol,
    count(*) AS requests,
    count(*) FILTER (WHERE {IS_ERROR}) AS errors,
    count(*) FILTER (WHERE {IS_5XX}) AS errors_5xx,
    count(*) FILTER (WHERE {IS_4XX}) AS errors_4xx,
    count(*) FILTER (WHERE {IS_GRPC_ERROR}) AS errors_grpc,
    count(*) FILTER (WHERE {IS_NO_RESPONSE}) AS no_response,
    count(*) FILTER (WHERE {IS_ERROR}) / count(*) AS error_rate,
    quantile_cont(duration_ms, 0.5) AS p50_ms,
    quantile_cont(duration_ms, 0.95) AS p95_ms,
    quantile_cont(duration_ms, 0.99) AS p99_ms,
    sum(request_bytes) AS request_bytes,
    sum(response_bytes) AS response_bytes,
    coalesce(avg(mtls::DOUBLE), 0.0) AS mtls_ratio,  -- of the reports that know it (as the graph)
    min(ts) AS first_ts,
    max(ts) AS last_ts
FROM traffic
GROUP BY ALL
"""

SIGNALS_SQL: Final = f"""
SELECT
    time_bucket(INTERVAL 1 MINUTE, ts) AS bucket,
    destination_namespace, destination_service_name, destination_canonical_service,
    destination_version,
    count(*) AS requests,
    count(*) / 60.0 AS rps,
    count(*) FILTER (WHERE {IS_ERROR}) AS errors,
    count(*) FILTER (WHERE {IS_ERROR}) / count(*) AS error_ratio,
    quantile_cont(duration_ms, 0.5) AS p50_ms,
    quantile_cont(duration_ms, 0.9) AS p90_ms,
    quantile_cont(duration_ms, 0.95) AS p95_ms,
    quantile_cont(duration_ms, 0.99) AS p99_ms
FROM traffic
WHERE protocol <> 'tcp'
GROUP BY ALL
"""


def _covered(path: Path, table: str, window: TimeWindow) -> bool:
    """True when the file's dt/hr partition lies inside the window: the writer puts only rows
    of that hour there, so its rows need no time filter (nor the time column decoded)."""
    seg = parse_segment_file(path, table)
    if seg is None:
        return False
    hour = datetime.fromisoformat(f"{seg.dt}T{seg.hr}:00:00+00:00")
    return window.start <= hour and hour + timedelta(hours=1) <= window.end


def base_view_sql(data_dir: Path, table: str, window: TimeWindow | None) -> str:
    start, end = (window.start, window.end) if window else (None, None)
    files = visible_files(data_dir, table, start, end)
    empty = empty_select(table)
    if not files:
        return empty
    covered = {p for p in files if window is not None and _covered(p, table, window)}
    inside = [p for p in files if p in covered]
    edge = [p for p in files if p not in covered]
    scans = []
    for group, filtered in ((inside, False), (edge, True)):
        if not group:
            continue
        bounds = window if window is not None and filtered else None
        scans.append(_scan_sql(group, TIME_COLUMN[table], bounds))
    # The typed empty branch adds columns that no file has yet (schema evolution) and fixes types.
    return " UNION ALL BY NAME ".join([empty, *scans])


def _scan_sql(paths: list[Path], time_col: str, window: TimeWindow | None) -> str:
    """The rows of Parquet files, kept to `window` on `time_col` when one is given."""
    listing = ", ".join(sql_string(str(p)) for p in paths)
    scan = (
        f"SELECT * FROM read_parquet([{listing}], union_by_name = true, hive_partitioning = false)"
    )
    if window is not None:
        scan += f" WHERE {_time_filter(time_col, window.start, window.end)}"
    return scan


def _time_filter(col: str, lo: datetime | None, hi: datetime | None) -> str:
    conds = []
    if lo is not None:
        conds.append(f"{col} >= {ts_literal(lo)}")
    if hi is not None:
        conds.append(f"{col} < {ts_literal(hi)}")
    return " AND ".join(conds) or "true"


def traffic_view_sql(data_dir: Path, paired: PairedPlan, window: TimeWindow | None) -> str:
    """The `traffic` view: stored paired hours as they are, and the live ranges paired from
    their reports (MARGIN on either side, so a request crossing a range's edge pairs once)."""
    parts = []
    for paths, partial in ((paired.stored, False), (paired.stored_partial, True)):
        if not paths:
            continue
        parts.append(_scan_sql(list(paths), "ts", window if partial else None))
    if paired.live:
        inputs = []
        for lo, hi in paired.live:
            lo_in = None if lo is None else lo - MARGIN
            hi_in = None if hi is None else hi + MARGIN
            scan_window = (
                TimeWindow(lo_in, hi_in) if lo_in is not None and hi_in is not None else None
            )
            inputs.append(
                f"SELECT * FROM ({base_view_sql(data_dir, 'requests', scan_window)}) "
                f"WHERE {_time_filter('ts', lo_in, hi_in)}"
            )
        source = " UNION ALL BY NAME ".join(inputs)
        inside = " OR ".join(f"({_time_filter('ts', lo, hi)})" for lo, hi in paired.live)
        parts.append(f"SELECT * FROM ({traffic_sql('_live', source)}) WHERE {inside}")
    return " UNION ALL BY NAME ".join(parts)


def connect(
    data_dir: Path | str,
    window: TimeWindow | None = None,
    *,
    threads: int | None = None,
) -> duckdb.DuckDBPyConnection:
    """A fresh in-memory connection with the views of the public schema over `data_dir`
    (a local directory, or `s3://bucket/prefix`: see analytics.objectstore_source). Trusted
    callers only: SQL from users goes through `analytics.sql.run_query`, which adds the one
    sandbox (`analytics.sql.sandbox`)."""
    remote = remote_location(data_dir)
    data_dir = Path(data_dir)
    conn = duckdb.connect(":memory:")
    conn.execute("SET TimeZone = 'UTC'")
    conn.execute("SET enable_progress_bar = false")
    if threads is not None:
        conn.execute(f"SET threads = {int(threads)}")
    if remote is not None:
        from meshlens.analytics.objectstore_source import create_remote_views

        create_remote_views(conn, remote, window)
    else:
        for table in BASE_VIEWS:
            conn.execute(f"CREATE VIEW {table} AS {base_view_sql(data_dir, table, window)}")
    if remote is not None:
        conn.execute(f"CREATE VIEW traffic AS {TRAFFIC_SQL}")
    else:
        paired = plan(data_dir, window)
        conn.execute(f"CREATE VIEW traffic AS {traffic_view_sql(data_dir, paired, window)}")
    conn.execute(f"CREATE VIEW edges AS {EDGES_SQL}")
    conn.execute(f"CREATE VIEW signals AS {SIGNALS_SQL}")
    return conn
