"""The analytics HTTP API: same JSON as the CLI, errors as 400/408, optional route modules."""

from __future__ import annotations

import argparse
import json
import urllib.error
import urllib.request
from datetime import timedelta
from pathlib import Path

import pytest

from meshlens.analytics.api import api_routes
from meshlens.analytics.api_settings import ApiSettings
from meshlens.httpd import HttpOptions, Request, dispatch, start_http_server
from tests.analytics.requests_factory import T0, call, store, wl

PP = wl("bookinfo", "productpage-v1", "productpage", "v1")
R1 = wl("bookinfo", "reviews-v1", "reviews", "v1")
WINDOW_Q = {"from": [T0.isoformat()], "to": [(T0 + timedelta(minutes=5)).isoformat()]}


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rows = call(PP, R1, "reviews.bookinfo.svc.cluster.local", n=20)
    rows += call(
        PP,
        R1,
        "reviews.bookinfo.svc.cluster.local",
        n=5,
        code=500,
        start=T0 + timedelta(seconds=30),
    )
    return store(tmp_path_factory.mktemp("api"), rows)


def get(data: Path, path: str, **query: list[str]) -> tuple[int, object]:
    req = Request("GET", path, {**WINDOW_Q, **query}, {}, b"")
    resp = dispatch(api_routes({"data_dir": str(data)}), HttpOptions(), req)
    return resp.status, json.loads(resp.body)


def post_sql(data: Path, body: object) -> tuple[int, object]:
    req = Request("POST", "/api/v1/sql", {}, {}, json.dumps(body).encode())
    resp = dispatch(api_routes({"data_dir": str(data)}), HttpOptions(), req)
    return resp.status, json.loads(resp.body)


def test_graph_signals_health(data: Path) -> None:
    status, graph = get(data, "/api/v1/graph", level=["app"])
    assert status == 200
    assert isinstance(graph, dict)
    [edge] = graph["edges"]
    assert (edge["source"], edge["target"], edge["requests"], edge["error_rate"]) == (
        "app:bookinfo/productpage",
        "app:bookinfo/reviews",
        25,
        0.2,
    )
    status, sig = get(data, "/api/v1/signals", by=["service,version"], step=["5m"])
    assert status == 200 and isinstance(sig, list)
    assert (sig[0]["service"], sig[0]["version"], sig[0]["requests"], sig[0]["errors"]) == (
        "reviews",
        "v1",
        25,
        5,
    )
    status, health = get(data, "/api/v1/health")
    assert status == 200 and isinstance(health, dict)
    assert {n["id"]: n["status"] for n in health["nodes"]}["wl:bookinfo/reviews-v1"] == "Failure"


def test_bad_arguments_are_400(data: Path) -> None:
    status, body = get(data, "/api/v1/graph", level=["pods"])
    assert status == 400 and "unknown graph level" in body["error"]  # type: ignore[index]
    status, body = get(data, "/api/v1/signals", since=["forever"], to=[])
    assert status == 400 and "not a duration" in body["error"]  # type: ignore[index]


def test_sql(data: Path) -> None:
    status, body = post_sql(data, {"sql": "SELECT count(*) AS n FROM requests", "max_rows": 5})
    assert status == 200
    assert body["rows"] == [{"n": 50}] and body["truncated"] is False  # type: ignore[index]
    status, body = post_sql(data, {"sql": "COPY requests TO '/tmp/x.csv'"})
    assert status == 400 and "COPY statement not allowed" in body["error"]  # type: ignore[index]
    status, body = post_sql(
        data,
        {"sql": "SELECT count(*) FROM range(10000000000) t(a) WHERE a % 7 = 1", "timeout": 0.3},
    )
    assert status == 408
    status, body = post_sql(data, {"query": "SELECT 1"})
    assert status == 400


def test_every_route_family_is_served(tmp_path: Path) -> None:
    paths = {r.path for r in api_routes({"data_dir": str(tmp_path)})}
    assert {"/api/v1/graph", "/api/v1/signals", "/api/v1/health", "/api/v1/sql"} <= paths
    assert any(p.startswith("/api/v1/canary") for p in paths)  # judge
    assert any(p.startswith("/gate/") for p in paths)  # gate
    assert any(p.startswith("/api/v1/check") for p in paths)  # Istio checks


@pytest.mark.integration
def test_over_a_real_socket(data: Path) -> None:
    server = start_http_server("127.0.0.1", 0, api_routes({"data_dir": str(data)}))
    try:
        base = f"http://127.0.0.1:{server.port}"
        url = f"{base}/api/v1/graph?from={T0.isoformat().replace('+', '%2B')}&since=5m"
        with urllib.request.urlopen(url, timeout=10) as resp:
            assert len(json.loads(resp.read())["edges"]) == 1
        req = urllib.request.Request(
            f"{base}/api/v1/sql", data=b'{"sql": "SELECT 42 AS x"}', method="POST"
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert json.loads(resp.read())["rows"] == [{"x": 42}]
        with pytest.raises(urllib.error.HTTPError) as ei:
            urllib.request.urlopen(f"{base}/api/v1/graph?since=x", timeout=10)
        assert ei.value.code == 400
    finally:
        server.stop()


def test_api_settings_are_typed_once_from_the_serve_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MESHLENS_GATE_WINDOW", "2m")  # serve declares no gate flags
    ns = argparse.Namespace(
        data_dir=tmp_path, query_workers=0, query_memory=2**31, grpc_port=4317, gate_window=None
    )
    s = ApiSettings.of(ns)
    assert s.data_dir == tmp_path and s.query_memory == 2**31
    assert s.query_workers == 1  # at least one: each worker's share of the spill budget
    assert s.gate_window == 120.0  # None (not given) falls back to the environment
    assert ApiSettings.of({"data_dir": str(tmp_path)}).prometheus_url == ""
    assert ApiSettings.of(s) is s
