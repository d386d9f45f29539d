"""Parity: one store, one answer. The same requests give the same edges, request counts and
errors through `meshlens graph`, the `edges` view, signals, `/metrics` (the service-graph
series the exporter derives) and the app's data layer: they all read the one pairing
(analytics/pairing.py) and the one error rule (analytics/error_rule.py).

The data are Bookinfo's chain as real sidecars report it: every hop of a request carries the
same x-request-id, both ends report each hop, one server-side sidecar has no peer metadata
(source unknown), gRPC statuses arrive as names, and a few calls never reach a server proxy.
"""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from meshlens.analytics.catalog import connect
from meshlens.analytics.exporter import DerivedMetricsCollector
from meshlens.analytics.graph import service_graph
from meshlens.analytics.signals import golden_signals
from meshlens.analytics.window import TimeWindow
from meshlens.collector.store.parquet_write import write_table
from meshlens.collector.store.schema import REQUESTS
from tests.analytics.requests_factory import T0, call, wl

WINDOW = TimeWindow(T0 - timedelta(minutes=1), T0 + timedelta(minutes=5))
INGRESS = wl("istio-system", "istio-ingressgateway", "istio-ingressgateway", "unknown")
PP = wl("default", "productpage-v1", "productpage", "v1")
DETAILS = wl("default", "details-v1", "details", "v1")
REVIEWS = wl("default", "reviews-v2", "reviews", "v2")
RATINGS = wl("default", "ratings-v1", "ratings", "v1")
UNKNOWN = wl("unknown", "unknown", "unknown", "unknown")


def _svc(name: str) -> str:
    return f"{name}.default.svc.cluster.local"


def _rows() -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for i in range(40):
        rid = f"chain-{i}"
        t = T0 + timedelta(seconds=i)
        hops = [
            call(INGRESS, PP, _svc("productpage"), start=t),
            call(PP, DETAILS, _svc("details"), start=t, code=503 if i % 10 == 0 else 200),
            call(PP, REVIEWS, _svc("reviews"), start=t),
            # ratings' sidecar has no peer metadata: its report does not know the caller
            call(
                REVIEWS,
                RATINGS,
                _svc("ratings"),
                start=t,
                protocol="grpc",
                grpc="Unavailable" if i % 8 == 0 else "OK",
            ),
        ]
        for hop in hops:
            for r in hop:
                r["request_id"] = rid
                if r["destination_service_name"] == "ratings" and r["reporter"] == "destination":
                    r.update(
                        source_workload="unknown",
                        source_canonical_service="unknown",
                        source_namespace="unknown",
                        source_version="unknown",
                    )
                rows.append(r)
    # three calls to reviews that never reached a proxy (no healthy upstream)
    for r in call(
        PP,
        wl("default", "unknown", "unknown", "unknown"),
        _svc("reviews"),
        n=3,
        code=503,
        flags="UH",
        reporters=("source",),
        start=T0 + timedelta(seconds=50),
    ):
        rows.append(r)
    return rows


def _store(tmp_path: Path) -> Path:
    rows = _rows()
    cols = {f.name: [r.get(f.name) for r in rows] for f in REQUESTS}
    write_table(tmp_path, "requests", pa.table(cols, schema=REQUESTS), node="t", lo=1)
    return tmp_path


# (client app, server app) -> (requests, errors), what every path must agree on
EXPECTED = {
    ("istio-ingressgateway", "productpage"): (40, 0),
    ("productpage", "details"): (40, 4),
    ("productpage", "reviews"): (43, 3),  # 40 paired + 3 that never reached a proxy (UH)
    ("reviews", "ratings"): (40, 5),  # gRPC Unavailable on i % 8 == 0; the caller from the client
}


def test_graph_edges_view_signals_exporter_and_app_agree(tmp_path: Path) -> None:
    data = _store(tmp_path)
    conn = connect(data, WINDOW)

    g = service_graph(conn, WINDOW, level="app")
    by_graph: dict[tuple[str, str], tuple[int, int]] = {}
    for e in g.edges:
        src, dst = g.node(e.source), g.node(e.target)
        key = (src.app, dst.app if dst.app != "unknown" else dst.service)
        n, err = by_graph.get(key, (0, 0))
        by_graph[key] = (n + e.requests, err + e.errors)
    assert by_graph == EXPECTED

    view = conn.execute(
        "SELECT source_canonical_service, coalesce(nullif(destination_canonical_service, "
        "'unknown'), split_part(destination_service, '.', 1)), sum(requests), sum(errors) "
        "FROM edges GROUP BY 1, 2"
    ).fetchall()
    assert {(a, b): (int(n), int(e)) for a, b, n, e in view} == EXPECTED

    sig = golden_signals(conn, WINDOW, by=("service",), step_s=3600, saturation=False)
    per_service = {r["service"]: (r["requests"], r["errors"]) for r in sig.to_dicts()}
    expected_by_server: Counter[str] = Counter()
    errors_by_server: Counter[str] = Counter()
    for (_, server), (n, e) in EXPECTED.items():
        expected_by_server[server] += n
        errors_by_server[server] += e
    assert per_service == {s: (expected_by_server[s], errors_by_server[s]) for s in per_service}
    assert set(per_service) == set(expected_by_server)

    collector = DerivedMetricsCollector(
        data, clock=lambda: (T0 + timedelta(minutes=10)).timestamp(), backfill_s=3600, lag_s=1
    )
    reg = CollectorRegistry(auto_describe=False)
    reg.register(collector)
    exported: dict[tuple[str, str], list[int]] = {}
    for fam in text_string_to_metric_families(generate_latest(reg).decode()):
        for s in fam.samples:
            if s.name == "traces_service_graph_request_total":
                acc = exported.setdefault((s.labels["client"], s.labels["server"]), [0, 0])
                acc[0] += int(s.value)
            if s.name == "traces_service_graph_request_failed_total":
                acc = exported.setdefault((s.labels["client"], s.labels["server"]), [0, 0])
                acc[1] += int(s.value)
    assert {k: tuple(v) for k, v in exported.items()} == EXPECTED


def test_the_apps_service_page_agrees(tmp_path: Path) -> None:
    from meshlens.dashboards import data as app

    data = _store(tmp_path)
    w = app.Window(WINDOW.start.isoformat(), WINDOW.end.isoformat())
    for (client, server), (n, errors) in EXPECTED.items():
        inbound = app.inbound(str(data), w, server)
        rows = inbound[inbound["source_workload"].str.startswith(client)]
        assert int(rows["requests"].sum()) == n, (client, server, inbound)
        ok = (rows["success_pct"] * rows["requests"] / 100).sum()
        assert round(float(rows["requests"].sum() - ok)) == errors
    outbound = app.outbound(str(data), w, "productpage")
    assert int(outbound["requests"].sum()) == 40 + 43
