"""A real Envoy sidecar pair (client -> server over mTLS -> tiny app) sending gRPC ALS, OTel
access logs and OTLP traces; the rows meshlens decodes from them, asserted exactly."""

from __future__ import annotations

import http.client
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

from collector.decode.envoy_als import decode_als_record
from collector.decode.otel_als import otel_access_log_to_request
from collector.decode.request_rows import rows_to_table
from collector.localmesh.app import TinyApp
from collector.localmesh.bootstrap import Collector
from collector.localmesh.mesh import LocalMesh
from collector.store.records import Record, RecordKind
from tests.collector.envoy.recorder import LOGS_METHOD, TRACES_METHOD, Recorder

pytestmark = pytest.mark.integration

PP = "spiffe://cluster.local/ns/default/sa/productpage"
REVIEWS = "spiffe://cluster.local/ns/default/sa/reviews"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
N_OK = 3  # 200s, then one 404 from the app, then one UH


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


@pytest.fixture(scope="module")
def mesh_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    work: Path = tmp_path_factory.mktemp("mesh")
    rec = Recorder().start()
    reviews_app = TinyApp("reviews-v1").start()
    pp_app = TinyApp("productpage-v1").start()
    mesh = LocalMesh(work, Collector("127.0.0.1", rec.port, flush_interval_s=0.1))
    mesh.add_workload("reviews", "v1", app_port=reviews_app.port)
    pp = mesh.add_workload("productpage", "v1", app_port=pp_app.port)
    mesh.connect(pp, "reviews", weights={"v1": 100, "v9": 0}, extra_subsets=("v9",))
    try:
        mesh.start()
        url = mesh.outbound_url(pp, "reviews")
        headers = {"Host": "reviews:9080", "traceparent": f"00-{TRACE_ID}-00f067aa0ba902b7-01"}
        codes = [_get(url, f"/ok/{i}", headers) for i in range(N_OK)]
        codes.append(_get(url, "/status/404", headers))
        # Move all traffic to the subset without endpoints, live, through the admin runtime.
        keys = mesh.sidecar(pp).set_weights("reviews", {"v1": 0, "v9": 100})
        codes.append(_get(url, "/broken", {"Host": "reviews:9080"}))

        def als_entries() -> int:
            return sum(t.num_rows for t in _als_tables(rec))

        def otel_records() -> int:
            return len(_otel_rows(rec))

        def spans() -> int:
            return len(_spans(rec))

        expected = 2 * (N_OK + 1) + 1
        assert rec.wait(lambda: als_entries() >= expected), f"ALS entries: {als_entries()}"
        assert rec.wait(lambda: otel_records() >= expected), f"OTel logs: {otel_records()}"
        assert rec.wait(lambda: spans() >= expected), f"spans: {spans()}"
        yield {
            "codes": codes,
            "keys": keys,
            "runtime": mesh.sidecar(pp).runtime(),
            "als": pa.concat_tables(_als_tables(rec)).to_pylist(),
            "otel": _otel_rows(rec),
            "spans": _spans(rec),
        }
    finally:
        mesh.stop()
        reviews_app.stop()
        pp_app.stop()
        rec.stop()


def _als_tables(rec: Recorder) -> list[pa.Table]:
    with rec.rec.lock:
        items = list(rec.rec.als)
    return [
        decode_als_record(Record(RecordKind.ENVOY_ALS, 1, raw, ident))["requests"]
        for raw, ident in items
    ]


def _value(v: Any) -> Any:
    return getattr(v, v.WhichOneof("value")) if v.WhichOneof("value") else None


def _otel_rows(rec: Recorder) -> list[dict[str, Any]]:
    with rec.rec.lock:
        raws = list(rec.rec.otlp.get(LOGS_METHOD, []))
    rows = []
    for raw in raws:
        req = logs_service_pb2.ExportLogsServiceRequest.FromString(raw)
        for rl in req.resource_logs:
            resource = {kv.key: _value(kv.value) for kv in rl.resource.attributes}
            for sl in rl.scope_logs:
                for lr in sl.log_records:
                    attrs = {kv.key: _value(kv.value) for kv in lr.attributes}
                    row = otel_access_log_to_request(
                        lr.body.string_value, attrs, resource, lr.time_unix_nano
                    )
                    assert row is not None, lr.body.string_value
                    rows.append(row)
    return rows


def _spans(rec: Recorder) -> list[Any]:
    with rec.rec.lock:
        raws = list(rec.rec.otlp.get(TRACES_METHOD, []))
    out = []
    for raw in raws:
        req = trace_service_pb2.ExportTraceServiceRequest.FromString(raw)
        for rs in req.resource_spans:
            service = {kv.key: _value(kv.value) for kv in rs.resource.attributes}
            for ss in rs.scope_spans:
                out.extend((service.get("service.name"), s) for s in ss.spans)
    return out


def _pick(rows: list[dict[str, Any]], reporter: str) -> list[dict[str, Any]]:
    return sorted((r for r in rows if r["reporter"] == reporter), key=lambda r: r["ts"])


def test_requests_went_through_mtls(mesh_run: dict[str, Any]) -> None:
    assert mesh_run["codes"] == [200] * N_OK + [404, 503]


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
        assert r["trace_id"] == TRACE_ID
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


def test_rows_fit_the_requests_schema(mesh_run: dict[str, Any]) -> None:
    table = rows_to_table(mesh_run["otel"])
    assert table.num_rows == len(mesh_run["otel"])
    assert table.column("reporter").null_count == 0


def test_spans_from_both_sidecars(mesh_run: dict[str, Any]) -> None:
    spans = mesh_run["spans"]
    services = {svc for svc, _ in spans}
    assert services == {"productpage.default", "reviews.default"}
    traced = [s for _, s in spans if s.trace_id.hex() == TRACE_ID]
    # client (egress) and server (ingress) span of each of the N_OK + 1 traced requests
    assert len(traced) == 2 * (N_OK + 1)
    kinds = sorted({s.kind for s in traced})
    assert kinds == [2, 3]  # SERVER, CLIENT
