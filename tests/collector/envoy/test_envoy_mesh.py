"""A real Envoy sidecar pair (client -> server over mTLS -> tiny app) sending gRPC ALS, OTel
access logs and OTLP traces to a real `meshlens serve`; the rows it stores, asserted exactly."""

from __future__ import annotations

import http.client
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from meshlens.collector.store.layout import visible_files
from meshlens.localmesh.app import TinyApp
from meshlens.localmesh.bootstrap import Collector
from meshlens.localmesh.mesh import LocalMesh
from tests.collector.conftest import start_serve, wait_for

pytestmark = pytest.mark.integration

PP = "spiffe://cluster.local/ns/default/sa/productpage"
REVIEWS = "spiffe://cluster.local/ns/default/sa/reviews"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
N_OK = 3  # 200s, then one 404 from the app, then one UH
# rows per origin: both sidecars report each HTTP request (the UH only the client), the TCP
# connection and the two gRPC calls
EXPECTED = 2 * (N_OK + 1) + 1 + 2 + 2 * 2
EXPECTED_SPANS = 2 * (N_OK + 1) + 1 + 2 * 2  # HTTP and gRPC
MONGO = "spiffe://cluster.local/ns/default/sa/mongodb"


def _get(url: str, path: str, headers: dict[str, str]) -> int:
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request("GET", path, headers=headers)
        resp = conn.getresponse()
        resp.read()  # read the whole body so Envoy does not log a downstream disconnect (DC)
        return resp.status
    finally:
        conn.close()


def _grpc_calls(url: str) -> list[str]:
    """Health/Check for the server (SERVING) and for an unknown service (NOT_FOUND)."""
    target = url.removeprefix("http://")
    options = [("grpc.default_authority", "ratings:9090")]
    codes = []
    with grpc.insecure_channel(target, options=options) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for service in ("", "no.such.Service"):
            try:
                stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
                codes.append("OK")
            except grpc.RpcError as exc:
                codes.append(exc.code().name)
    return codes


def _table(data_dir: Path, table: str) -> list[dict[str, Any]]:
    files = visible_files(data_dir, table)
    if not files:
        return []
    return pa.concat_tables([pq.read_table(f) for f in files]).to_pylist()


@pytest.fixture(scope="module")
def mesh_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    work: Path = tmp_path_factory.mktemp("mesh")
    data = work / "data"
    serve = start_serve(data)
    reviews_app = TinyApp("reviews-v1").start()
    pp_app = TinyApp("productpage-v1").start()
    db_app = TinyApp("mongodb-v1").start()
    # a gRPC app (HTTP/2 end to end through both sidecars): the standard health service
    grpc_app = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), grpc_app)
    grpc_port = grpc_app.add_insecure_port("127.0.0.1:0")
    grpc_app.start()
    mesh = LocalMesh(work, Collector("127.0.0.1", serve.grpc_port, flush_interval_s=0.1))
    mesh.add_workload("reviews", "v1", app_port=reviews_app.port)
    pp = mesh.add_workload("productpage", "v1", app_port=pp_app.port)
    mesh.add_workload("mongodb", "v1", app_port=db_app.port, service_port=27017, tcp=True)
    mesh.connect(pp, "reviews", weights={"v1": 100, "v9": 0}, extra_subsets=("v9",))
    mesh.add_workload("ratings", "v1", app_port=grpc_port, service_port=9090)
    mesh.connect(pp, "mongodb")
    mesh.connect(pp, "ratings")
    try:
        mesh.start()
        url = mesh.outbound_url(pp, "reviews")
        headers = {"Host": "reviews:9080", "traceparent": f"00-{TRACE_ID}-00f067aa0ba902b7-01"}
        codes = [_get(url, f"/ok/{i}", headers) for i in range(N_OK)]
        codes.append(_get(url, "/status/404", headers))
        # Move all traffic to the subset without endpoints, live, through the admin runtime.
        keys = mesh.sidecar(pp).set_weights("reviews", {"v1": 0, "v9": 100})
        codes.append(_get(url, "/broken", {"Host": "reviews:9080"}))
        # one TCP connection through the TCP proxies (bytes, not requests, are seen)
        tcp_code = _get(mesh.outbound_url(pp, "mongodb"), "/tcp", {"Connection": "close"})
        grpc_codes = _grpc_calls(mesh.outbound_url(pp, "ratings"))

        def rows_by_origin() -> dict[str, list[dict[str, Any]]] | None:
            rows = _table(data, "requests")
            out = {o: [r for r in rows if r["origin"] == o] for o in ("envoy_als", "otel_als")}
            return out if all(len(v) >= EXPECTED for v in out.values()) else None

        def spans() -> list[dict[str, Any]] | None:
            found = _table(data, "spans")
            return found if len(found) >= EXPECTED_SPANS else None

        by_origin = wait_for(rows_by_origin, 20, "requests rows from ALS and OTel logs")
        yield {
            "codes": codes,
            "tcp_code": tcp_code,
            "grpc_codes": grpc_codes,
            "keys": keys,
            "runtime": mesh.sidecar(pp).runtime(),
            "als": by_origin["envoy_als"],
            "otel": by_origin["otel_als"],
            "spans": wait_for(spans, 20, "spans from the sidecars"),
        }
    finally:
        mesh.stop()
        reviews_app.stop()
        pp_app.stop()
        db_app.stop()
        grpc_app.stop(grace=0)
        rc = serve.stop()
        assert rc == 0, serve.log()


def _pick(
    rows: list[dict[str, Any]], reporter: str, protocol: str = "http"
) -> list[dict[str, Any]]:
    return sorted(
        (r for r in rows if r["reporter"] == reporter and r["protocol"] == protocol),
        key=lambda r: r["ts"],
    )


def test_requests_went_through_mtls(mesh_run: dict[str, Any]) -> None:
    assert mesh_run["codes"] == [200] * N_OK + [404, 503]
    assert len(mesh_run["als"]) == EXPECTED
    assert len(mesh_run["otel"]) == EXPECTED


def test_weights_moved_live_through_runtime(mesh_run: dict[str, Any]) -> None:
    runtime = mesh_run["runtime"]
    for key, value in mesh_run["keys"].items():
        assert str(runtime[key]) == str(value)


@pytest.mark.parametrize("source", ["als", "otel"])
def test_destination_rows(mesh_run: dict[str, Any], source: str) -> None:
    rows = _pick(mesh_run[source], "destination")
    assert [r["response_code"] for r in rows] == [200] * N_OK + [404]
    for r in rows:
        assert r["upstream_cluster"] == "inbound|9080||"
        assert r["destination_service"] == "reviews.default.svc.cluster.local"
        assert r["destination_service_name"] == "reviews"
        assert r["destination_namespace"] == "default"
        assert r["destination_version"] == "v1"
        assert r["source_principal"] == PP
        assert r["source_namespace"] == "default"
        # metadata exchange (x-envoy-peer-metadata) names the calling workload
        assert (r["source_workload"], r["source_canonical_service"], r["source_version"]) == (
            "productpage-v1",
            "productpage",
            "v1",
        )
        assert r["destination_principal"] == REVIEWS
        assert r["mtls"] is True
        assert r["response_flags"] == "-"
        assert r["protocol"] == "http"
        assert r["method"] == "GET"
        assert r["trace_id"] == TRACE_ID
        assert r["origin"] == ("envoy_als" if source == "als" else "otel_als")
        assert r["duration_ms"] is not None and r["duration_ms"] >= 0
    assert [r["path"] for r in rows] == [f"/ok/{i}" for i in range(N_OK)] + ["/status/404"]
    if source == "als":  # node metadata of the server sidecar
        for r in rows:
            assert r["destination_workload"] == "reviews-v1"
            assert r["destination_canonical_service"] == "reviews"
            assert r["node_id"].startswith("sidecar~127.0.0.1~reviews-v1-")
            assert r["response_bytes"] > 0
    else:
        for r in rows:
            assert r["destination_workload"] == "reviews-v1"  # from the pod attribute


@pytest.mark.parametrize("source", ["als", "otel"])
def test_source_rows(mesh_run: dict[str, Any], source: str) -> None:
    rows = _pick(mesh_run[source], "source")
    assert [r["response_code"] for r in rows] == [200] * N_OK + [404, 503]
    assert [r["response_flags"] for r in rows] == ["-"] * (N_OK + 1) + ["UH"]
    ok, broken = rows[:-1], rows[-1]
    for r in ok:
        assert r["upstream_cluster"] == "outbound|9080|v1|reviews.default.svc.cluster.local"
        assert r["destination_version"] == "v1"
        # metadata exchange (the server's x-envoy-peer-metadata response header)
        assert (r["destination_workload"], r["destination_canonical_service"]) == (
            "reviews-v1",
            "reviews",
        )
        assert r["trace_id"] == TRACE_ID
    assert broken["destination_workload"] == "unknown"  # nobody answered
    for r in rows:
        assert r["source_workload"] == "productpage-v1"
        assert r["source_namespace"] == "default"
        assert r["destination_service"] == "reviews.default.svc.cluster.local"
        assert r["destination_service_name"] == "reviews"
        assert r["destination_namespace"] == "default"
    if source == "als":
        for r in rows:
            assert r["source_canonical_service"] == "productpage"
            assert r["source_version"] == "v1"
            assert r["source_principal"] == PP
            assert r["mtls"] is None  # ALS cannot see the sidecar-to-sidecar connection
        # Envoy's ALS names the cluster from the upstream host; a UH request has none.
        assert broken["upstream_cluster"] == "unknown"
    else:
        for r in ok:  # %UPSTREAM_PEER_URI_SAN% / %UPSTREAM_LOCAL_URI_SAN% attributes
            assert r["destination_principal"] == REVIEWS
            assert r["mtls"] is True
        assert broken["upstream_cluster"] == "outbound|9080|v9|reviews.default.svc.cluster.local"
        assert broken["destination_version"] == "v9"
        assert broken["mtls"] is None  # never connected upstream


@pytest.mark.parametrize("source", ["als", "otel"])
def test_tcp_rows(mesh_run: dict[str, Any], source: str) -> None:
    assert mesh_run["tcp_code"] == 200
    (dest,) = _pick(mesh_run[source], "destination", "tcp")
    (src,) = _pick(mesh_run[source], "source", "tcp")
    assert dest["upstream_cluster"] == "inbound|27017||"
    assert src["upstream_cluster"] == "outbound|27017|v1|mongodb.default.svc.cluster.local"
    for r in (dest, src):
        assert r["response_code"] == 0
        assert r["response_flags"] == "-"
        assert r["request_bytes"] > 0 and r["response_bytes"] > 0
        assert r["destination_service"] == "mongodb.default.svc.cluster.local"
        assert r["method"] is None
    assert dest["mtls"] is True
    assert dest["source_principal"] == PP
    assert dest["destination_principal"] == MONGO
    assert src["source_workload"] == "productpage-v1"
    # the request bytes seen by the client sidecar are those the server sidecar forwarded
    assert dest["request_bytes"] == src["request_bytes"]


@pytest.mark.parametrize("source", ["als", "otel"])
def test_grpc_rows(mesh_run: dict[str, Any], source: str) -> None:
    assert mesh_run["grpc_codes"] == ["OK", "NOT_FOUND"]
    for reporter in ("source", "destination"):
        rows = _pick(mesh_run[source], reporter, "grpc")
        assert [r["grpc_status"] for r in rows] == ["0", "5"]
        assert [r["response_code"] for r in rows] == [200, 200]
        for r in rows:
            assert r["path"] == "/grpc.health.v1.Health/Check"
            assert r["method"] == "POST"
            assert r["destination_service"] == "ratings.default.svc.cluster.local"
            assert r["destination_workload"] == "ratings-v1"
            assert r["source_workload"] == "productpage-v1"


def test_spans_from_both_sidecars(mesh_run: dict[str, Any]) -> None:
    spans = mesh_run["spans"]
    assert {s["service_name"] for s in spans} == {
        "productpage.default",
        "reviews.default",
        "ratings.default",
    }
    traced = [s for s in spans if s["trace_id"] == TRACE_ID]
    # client (egress) and server (ingress) span of each of the N_OK + 1 traced requests
    assert len(traced) == 2 * (N_OK + 1)
    by_kind = {k: [s for s in traced if s["kind"] == k] for k in ("client", "server")}
    assert {s["service_name"] for s in by_kind["client"]} == {"productpage.default"}
    assert {s["service_name"] for s in by_kind["server"]} == {"reviews.default"}
    assert sorted(s["http_status_code"] for s in by_kind["server"]) == [200] * N_OK + [404]
