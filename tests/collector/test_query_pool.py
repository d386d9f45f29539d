"""The query pool's pure parts: option checks, which routes are forwarded, SQL deadlines."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from meshlens.analytics.api import IN_PROCESS_ROUTES, SQL_KILL_GRACE_S, api_routes, sql_deadline
from meshlens.collector.errors import ConfigError
from meshlens.collector.query_pool import PoolOptions, QueryPool, forwarding_routes
from meshlens.httpd import Request, Response, Route


def options(**kw: object) -> PoolOptions:
    base: dict[str, object] = dict(
        size=1,
        memory=2 * 1024**3,
        timeout_s=10.0,
        queue_wait_s=1.0,
        max_waiting=0,
        max_response=1024,
        temp_root=Path("/nonexistent"),
    )
    base.update(kw)
    return PoolOptions(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"memory": 512 * 1024**2}, r"invalid --query-memory '536870912': .*at least"),
        ({"size": -1}, r"invalid --query-workers '-1': must be >= 0"),
        ({"timeout_s": 0.0}, r"invalid --query-timeout '0.0': must be > 0"),
    ],
)
def test_bad_options_say_which_setting(kw: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        options(**kw).check()


def test_only_query_routes_are_forwarded() -> None:
    def local(req: Request) -> Response:
        return Response.json({"where": "api"})

    routes = [
        Route("GET", "/gate/rollouts", local),
        Route("GET", "/gate/rollouts/*", local),
        Route("POST", "/api/v1/sql", local),
        Route("GET", "/api/v1/graph", local),
    ]
    pool = QueryPool(api_routes, {}, options())  # not started
    out = forwarding_routes(routes, pool, IN_PROCESS_ROUTES)
    kept = {(r.method, r.path) for r in out if r.handler is local}
    assert kept == {("GET", "/gate/rollouts"), ("GET", "/gate/rollouts/*")}


def sql_request(body: object, path: str = "/api/v1/sql") -> Request:
    return Request("POST", path, {}, {}, json.dumps(body).encode())


def test_sql_deadline_is_the_requested_timeout_plus_a_grace() -> None:
    got = sql_deadline(sql_request({"sql": "SELECT 1", "timeout": 2}))
    assert got is not None
    assert abs(got - (2 + SQL_KILL_GRACE_S)) < 1e-9


@pytest.mark.parametrize(
    "req",
    [
        sql_request({"sql": "SELECT 1", "timeout": "soon"}),
        sql_request({"sql": "SELECT 1", "timeout": 10_000}),
        sql_request(["not", "an", "object"]),
        sql_request({"sql": "SELECT 1", "timeout": 2}, path="/api/v1/graph"),
        sql_request({"sql": "SELECT 1 -- " + "x" * 100_000, "timeout": 2}),
        Request("POST", "/api/v1/sql", {}, {}, b"{not json"),
    ],
)
def test_sql_deadline_falls_back_to_the_pool_timeout(req: Request) -> None:
    assert sql_deadline(req) is None
