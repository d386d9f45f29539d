"""End to end: real Envoy sidecars (gRPC ALS and OTel access logs) and the real OTel SDK send
through a real `meshlens serve`; the graph and signals come back from its API port and the CLI."""

from __future__ import annotations

import http.client
import json
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from meshlens.analytics.catalog import connect
from meshlens.analytics.graph import service_graph
from meshlens.analytics.window import TimeWindow
from meshlens.cli import main
from meshlens.localmesh.app import TinyApp
from meshlens.localmesh.bootstrap import Collector
from meshlens.localmesh.mesh import LocalMesh
from tests.collector.conftest import start_serve, wait_for

pytestmark = pytest.mark.integration

N_OK = 4


def _get(url: str, path: str) -> int:
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request("GET", path, headers={"Host": "reviews:9080"})
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


def _send_spans(target: str) -> None:
    """frontend (CLIENT) -> backend (SERVER), twice, one failed; plus a lone root SERVER span."""
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.trace import SpanKind, Status, StatusCode

    def provider(name: str) -> TracerProvider:
        p = TracerProvider(
            resource=Resource.create({"service.name": name, "k8s.namespace.name": "shop"})
        )
        p.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=target, insecure=True)))
        return p

    front, back = provider("frontend"), provider("backend")
    for failed in (False, True):
        with front.get_tracer("t").start_as_current_span("GET /", kind=SpanKind.CLIENT) as c:
            ctx = trace.set_span_in_context(c)
            with back.get_tracer("t").start_as_current_span(
                "GET /", context=ctx, kind=SpanKind.SERVER
            ) as s:
                if failed:
                    s.set_status(Status(StatusCode.ERROR))
    front.shutdown()
    back.shutdown()


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    work: Path = tmp_path_factory.mktemp("e2e")
    data = work / "data"
    serve = start_serve(data)
    start = datetime.now(UTC) - timedelta(seconds=5)
    reviews = TinyApp("reviews-v1").start()
    pp_app = TinyApp("productpage-v1").start()
    mesh = LocalMesh(work, Collector("127.0.0.1", serve.grpc_port, flush_interval_s=0.1))
    mesh.add_workload("reviews", "v1", app_port=reviews.port)
    pp = mesh.add_workload("productpage", "v1", app_port=pp_app.port)
    mesh.connect(pp, "reviews")
    try:
        mesh.start()
        url = mesh.outbound_url(pp, "reviews")
        codes = [_get(url, f"/ok/{i}") for i in range(N_OK)] + [_get(url, "/status/503")]
        _send_spans(serve.grpc_target)
        window = TimeWindow(start, datetime.now(UTC) + timedelta(minutes=1))

        seen: list[object] = []

        def settled() -> bool:
            conn = connect(data, window)
            try:
                got = conn.execute(
                    "SELECT (SELECT count(*) FROM requests WHERE origin = 'envoy_als'), "
                    "(SELECT count(*) FROM requests WHERE origin = 'otel_als'), "
                    "(SELECT count(*) FROM spans WHERE service_name IN ('frontend', 'backend'))"
                ).fetchone()
                seen[:] = [got]
                # Both access-log paths (the OTel one is batched) and the SDK spans.
                return got == (2 * (N_OK + 1), 2 * (N_OK + 1), 4)
            finally:
                conn.close()

        try:
            wait_for(settled, 30, "request rows from both sidecars and the SDK spans")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; last (als, otel, spans) = {seen}") from None
        yield {"codes": codes, "data": data, "window": window, "serve": serve}
    finally:
        mesh.stop()
        reviews.stop()
        pp_app.stop()
        rc = serve.stop()
        assert rc == 0, serve.log()


def test_graph_from_envoy_requests(run: dict[str, Any]) -> None:
    assert run["codes"] == [200] * N_OK + [503]
    window = run["window"]
    g = service_graph(connect(run["data"], window), window, origin="envoy_als")
    e = g.edge("wl:default/productpage-v1", "wl:default/reviews-v1")
    # Both sidecars reported each request; counted once, 1 of 5 is a 5xx, all over mTLS.
    assert (e.requests, e.errors_5xx, e.mtls_ratio, e.source_reported) == (N_OK + 1, 1, 1.0, 0)
    assert e.p50_ms is not None and e.p50_ms >= 0
    assert g.node("wl:default/reviews-v1").health == "Failure"  # 20 % 5xx
    # The OTel access-log path reports the same requests: the same edge from that origin.
    otel = service_graph(connect(run["data"], window), window, origin="otel_als")
    assert otel.edge("wl:default/productpage-v1", "wl:default/reviews-v1").requests == N_OK + 1


def test_graph_and_signals_over_the_api_port(run: dict[str, Any]) -> None:
    window = run["window"]
    q = (
        f"from={window.start.isoformat().replace('+', '%2B')}"
        f"&to={window.end.isoformat().replace('+', '%2B')}&origin=envoy_als"
    )
    with urllib.request.urlopen(run["serve"].api_url(f"/api/v1/graph?{q}"), timeout=20) as r:
        graph = json.loads(r.read())
    assert [(e["source"], e["target"], e["requests"]) for e in graph["edges"]] == [
        ("wl:default/productpage-v1", "wl:default/reviews-v1", N_OK + 1)
    ]
    with urllib.request.urlopen(
        run["serve"].api_url(f"/api/v1/signals?{q}&step=10m"), timeout=20
    ) as r:
        signals = json.loads(r.read())
    assert sum(s["requests"] for s in signals) == N_OK + 1
    assert sum(s["errors"] for s in signals) == 1


def test_spans_graph_from_the_otel_sdk(
    run: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    window = run["window"]
    rc = main(
        [
            "graph",
            "--data-dir",
            str(run["data"]),
            "--from",
            window.start.isoformat(),
            "--to",
            window.end.isoformat(),
            "--source",
            "spans",
            "--level",
            "app",
            "--namespace",
            "shop",
            "--format",
            "json",
        ]
    )
    assert rc == 0
    doc = json.loads(capsys.readouterr().out)
    edges = {(e["source"], e["target"]): e for e in doc["edges"]}
    e = edges[("app:shop/frontend", "app:shop/backend")]
    assert (e["requests"], e["errors"]) == (2, 1)
