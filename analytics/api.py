"""The analytics HTTP API on the collector's API port (and the library calls the CLI shares).

    GET  /api/v1/graph    ?since=15m | from=&to= , level, namespace (comma list), source, origin
    GET  /api/v1/signals  ?since | from&to , by (comma list), step, service, origin
    GET  /api/v1/health   ?since | from&to , level, namespace, source, origin
    POST /api/v1/sql      {"sql": "...", "max_rows": 1000, "timeout": 30}

They return the same JSON as `meshlens graph|signals|health --format json` and, for SQL,
{"columns", "types", "rows": [{...}], "row_count", "truncated", "elapsed_s"}.
Errors: 400 for a bad argument or a rejected query, 408 for a query timeout.

Under `meshlens serve` these routes run in the query workers (collector/query_pool.py), except
`IN_PROCESS_ROUTES`, which read a little state and run no query; the workers build their routes
with `api_routes` from the same settings, plus `query_temp_root` (their own spill directory).
`api_routes` also collects the routes of analytics.judge.api, analytics.gate.api and
analytics.istio.api when those modules exist.
"""

from __future__ import annotations

import argparse
import logging
import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import polars as pl

from meshlens.analytics.api_settings import ApiSettings
from meshlens.analytics.errors import AnalyticsError, QueryRejected, QueryTimeout
from meshlens.analytics.gate.api import gate_routes
from meshlens.analytics.graph import Graph
from meshlens.analytics.health import (
    HealthConfig,
    default_health_config,
    graph_health,
    load_health_config,
)
from meshlens.analytics.istio.api import istio_routes
from meshlens.analytics.judge.api import judge_routes
from meshlens.analytics.window import TimeWindow, parse_window
from meshlens.httpd import HttpError, Request, Response, Route
from meshlens.settings import parse_duration

log = logging.getLogger(__name__)


def _health(config: str | HealthConfig | None) -> HealthConfig:
    if config is None or config == "":
        return default_health_config()
    if isinstance(config, HealthConfig):
        return config
    return load_health_config(config)


def graph_for(
    data_dir: Path | str,
    window: TimeWindow,
    *,
    level: str = "workload",
    namespaces: Sequence[str] = (),
    source: str = "requests",
    health_config: str | HealthConfig | None = None,
    prometheus_url: str | None = None,
    origin: str | None = None,
) -> Graph:
    """The graph from the store (or from Prometheus when a URL is given), with health."""
    config = _health(health_config)
    if prometheus_url:
        from meshlens.analytics.prometheus_source import prometheus_graph

        return prometheus_graph(
            prometheus_url, window, level=level, namespaces=namespaces, health_config=config
        )
    from meshlens.analytics.catalog import connect
    from meshlens.analytics.graph import service_graph

    conn = connect(Path(data_dir), window)
    try:
        return service_graph(
            conn,
            window,
            level=level,
            namespace=tuple(namespaces),
            source=source,
            health_config=config,
            origin=origin,
        )
    finally:
        conn.close()


def signals_for(
    data_dir: Path | str,
    window: TimeWindow,
    *,
    by: Sequence[str] = ("service",),
    step_s: float = 60,
    service: str | None = None,
    prometheus_url: str | None = None,
    origin: str | None = None,
) -> pl.DataFrame:
    if prometheus_url:
        from meshlens.analytics.prometheus_source import prometheus_signals

        return prometheus_signals(prometheus_url, window, by=by, step_s=step_s, service=service)
    from meshlens.analytics.catalog import connect
    from meshlens.analytics.signals import golden_signals

    conn = connect(Path(data_dir), window)
    try:
        return golden_signals(conn, window, by=by, step_s=step_s, service=service, origin=origin)
    finally:
        conn.close()


def signals_json(df: pl.DataFrame) -> list[dict[str, Any]]:
    """Rows as objects; bucket as ISO 8601; NaN/None as null."""
    out = []
    for row in df.iter_rows(named=True):
        rec = {}
        for k, v in row.items():
            if isinstance(v, datetime):
                v = v.astimezone(UTC).isoformat()
            elif isinstance(v, float) and v != v:
                v = None
            rec[k] = v
        out.append(rec)
    return out


def health_json(graph: Graph, config: str | HealthConfig | None = None) -> dict[str, Any]:
    report = graph_health(graph, _health(config))
    return {
        "level": graph.level,
        "source": graph.source,
        "window": graph.window.to_json(),
        **report.to_json(),
    }


# ---- HTTP ----------------------------------------------------------------------------------


def _window(req: Request, now: datetime | None = None) -> TimeWindow:
    return parse_window(
        req.arg("since"), req.arg("from"), req.arg("to"), now=now or datetime.now(UTC)
    )


def _list(text: str | None) -> tuple[str, ...]:
    return tuple(x.strip() for x in (text or "").split(",") if x.strip())


def _bad_request(exc: AnalyticsError) -> HttpError:
    return HttpError(400, str(exc))


API_MAX_ROWS: Final = 100_000
API_MAX_TIMEOUT_S: Final = 300.0
# No query behind them: answered by the API port itself, even when every query worker is busy.
IN_PROCESS_ROUTES: Final = frozenset({("GET", "/gate/rollouts"), ("GET", "/gate/rollouts/*")})
SQL_PATH: Final = "/api/v1/sql"
SQL_KILL_GRACE_S: Final = 0.25
SQL_DEADLINE_MAX_BODY: Final = 64 * 1024


def sql_deadline(req: Request) -> float | None:
    """The time limit a SQL request asks for (its "timeout"), so a query worker is stopped at
    that deadline even while it converts the result; None when absent or unreadable (the
    handler then answers the 400 or uses its default)."""
    if req.method != "POST" or req.path != SQL_PATH or len(req.body) > SQL_DEADLINE_MAX_BODY:
        return None  # parsing a huge body here would be query work on the ingest process
    try:
        body = req.json()
        timeout = float(body.get("timeout", 30)) if isinstance(body, Mapping) else None
    except (HttpError, TypeError, ValueError, OverflowError):
        return None
    if timeout is None or not (math.isfinite(timeout) and 0 < timeout <= API_MAX_TIMEOUT_S):
        return None
    # A little later than DuckDB's own interrupt, which answers a clean 408 without a respawn
    # when the query itself, not the conversion, is what is slow.
    return timeout + SQL_KILL_GRACE_S


def _query_limits(settings: ApiSettings) -> dict[str, Any]:
    """run_query's memory and spill limits from the serve settings: DuckDB gets a quarter of a
    worker's address space (the rest: libraries, Arrow batches, Python rows, JSON), each
    worker an equal share of the spill budget."""
    from meshlens.analytics.sql import DEFAULT_MEMORY_LIMIT, DEFAULT_TEMP_LIMIT

    memory = settings.query_memory
    budget = settings.query_temp_budget
    workers = settings.query_workers
    temp_root = settings.query_temp_root
    return {
        "memory_limit": f"{memory // 4}B" if memory else DEFAULT_MEMORY_LIMIT,
        "temp_limit": f"{budget // workers}B" if budget else DEFAULT_TEMP_LIMIT,
        "temp_root": Path(temp_root) if temp_root else None,
    }


def api_routes(settings: ApiSettings | Mapping[str, Any] | argparse.Namespace) -> list[Route]:
    """Routes for the API port, from the serve settings (see ApiSettings)."""
    s = ApiSettings.of(settings)
    data_dir = s.data_dir
    prometheus_url = s.prometheus_url or None
    health_config = s.health_config or None
    limits = _query_limits(s)

    def graph(req: Request) -> Response:
        try:
            g = graph_for(
                data_dir,
                _window(req),
                level=req.arg("level", "workload") or "workload",
                namespaces=_list(req.arg("namespace")),
                source=req.arg("source", "requests") or "requests",
                health_config=health_config,
                prometheus_url=prometheus_url,
                origin=req.arg("origin"),
            )
        except AnalyticsError as exc:
            raise _bad_request(exc) from None
        return Response.json(g.to_json())

    def signals(req: Request) -> Response:
        try:
            step = parse_duration(req.arg("step", "60") or "60")
        except ValueError as exc:
            raise HttpError(400, f"step: {exc}") from None
        try:
            df = signals_for(
                data_dir,
                _window(req),
                by=_list(req.arg("by")) or ("service",),
                step_s=step,
                service=req.arg("service"),
                prometheus_url=prometheus_url,
                origin=req.arg("origin"),
            )
        except AnalyticsError as exc:
            raise _bad_request(exc) from None
        return Response.json(signals_json(df))

    def health(req: Request) -> Response:
        try:
            g = graph_for(
                data_dir,
                _window(req),
                level=req.arg("level", "workload") or "workload",
                namespaces=_list(req.arg("namespace")),
                source=req.arg("source", "requests") or "requests",
                health_config=health_config,
                prometheus_url=prometheus_url,
                origin=req.arg("origin"),
            )
            return Response.json(health_json(g, health_config))
        except AnalyticsError as exc:
            raise _bad_request(exc) from None

    def sql(req: Request) -> Response:
        from meshlens.analytics.sql import run_query

        body = req.json()
        if not isinstance(body, Mapping) or not isinstance(body.get("sql"), str):
            raise HttpError(400, 'body must be a JSON object with "sql": "SELECT ..."')
        try:
            max_rows = int(body.get("max_rows", 1000))
            timeout = float(body.get("timeout", 30))
        except (TypeError, ValueError, OverflowError) as exc:
            raise HttpError(400, f"max_rows/timeout: {exc}") from None
        # The server's limits bound what a client may ask for: a client cannot lift them.
        if not 0 <= max_rows <= API_MAX_ROWS:
            raise HttpError(400, f"max_rows must be between 0 and {API_MAX_ROWS}, got {max_rows}")
        if not (math.isfinite(timeout) and 0 < timeout <= API_MAX_TIMEOUT_S):
            raise HttpError(
                400, f"timeout must be > 0 and at most {API_MAX_TIMEOUT_S:g} s, got {timeout!r}"
            )
        try:
            result = run_query(
                data_dir, body["sql"], max_rows=max_rows, timeout_s=timeout, **limits
            )
        except QueryTimeout as exc:
            raise HttpError(408, str(exc)) from None
        except (QueryRejected, AnalyticsError) as exc:
            raise HttpError(400, str(exc)) from None
        return Response.json(result.to_json())

    routes = [
        Route("GET", "/api/v1/graph", graph),
        Route("GET", "/api/v1/signals", signals),
        Route("GET", "/api/v1/health", health),
        Route("POST", SQL_PATH, sql),
    ]
    for more in (judge_routes, gate_routes, istio_routes):
        routes.extend(more(s))
    return routes
