"""Golden tests of the requests graph on a hand-built mesh with known counts and latencies."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest

from meshlens.analytics.catalog import connect
from meshlens.analytics.errors import GraphError
from meshlens.analytics.graph import Graph, service_graph
from meshlens.analytics.window import TimeWindow
from meshlens.cli import main
from tests.analytics.requests_factory import T0, UNKNOWN_WL, call, store, wl

GW = wl("istio-system", "istio-ingressgateway", "istio-ingressgateway", "latest")
PP = wl("bookinfo", "productpage-v1", "productpage", "v1")
R1 = wl("bookinfo", "reviews-v1", "reviews", "v1")
R2 = wl("bookinfo", "reviews-v2", "reviews", "v2")
RT = wl("bookinfo", "ratings-v1", "ratings", "v1")
DT = wl("bookinfo", "details-v1", "details", "v1")
DB = wl("bookinfo", "mongodb-v1", "mongodb", "v1")
EXT = wl("unknown", "unknown", "unknown", "unknown")
WINDOW = TimeWindow(T0, T0 + timedelta(minutes=10))


def svc(name: str) -> str:
    return f"{name}.bookinfo.svc.cluster.local"


def mesh_rows() -> list[dict[str, object]]:
    rows = []
    rows += call(GW, PP, svc("productpage"), n=98, durations=[float(i) for i in range(1, 99)])
    rows += call(
        GW,
        PP,
        svc("productpage"),
        n=2,
        code=503,
        durations=[99.0, 100.0],
        start=T0 + timedelta(seconds=200),
    )
    rows += call(PP, R1, svc("reviews"), n=40)
    rows += call(PP, R2, svc("reviews"), n=30, durations=[20.0] * 30)
    rows += call(
        PP,
        R2,
        svc("reviews"),
        n=5,
        code=503,
        flags="UF",
        reporters=("source",),
        durations=[1.0] * 5,
    )
    rows += call(R2, RT, svc("ratings"), n=18, protocol="grpc", grpc="0")
    rows += call(
        R2, RT, svc("ratings"), n=2, protocol="grpc", grpc="14", start=T0 + timedelta(seconds=100)
    )
    rows += call(
        UNKNOWN_WL,
        PP,
        svc("productpage"),
        n=10,
        reporters=("destination",),
        mtls=False,
        start=T0 + timedelta(seconds=300),
    )
    rows += call(PP, EXT, "www.external.com", n=8, reporters=("source",), mtls=False)
    rows += call(
        RT, DB, svc("mongodb"), n=3, protocol="tcp", request_bytes=100, response_bytes=1000
    )
    rows += call(PP, DT, svc("details"), n=7)
    rows += call(PP, DT, svc("details"), n=3, code=404, start=T0 + timedelta(seconds=50))
    rows += call(R1, RT, svc("ratings"), n=9)
    rows += call(R1, RT, svc("ratings"), n=1, code=0, flags="DC", start=T0 + timedelta(seconds=400))
    # Outside the window: must not count.
    rows += call(GW, PP, svc("productpage"), n=5, start=T0 + timedelta(minutes=11))
    return rows


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return store(tmp_path_factory.mktemp("mesh"), mesh_rows())


def graph(data: Path, **kw: object) -> Graph:
    conn = connect(data, WINDOW)
    try:
        return service_graph(conn, WINDOW, **kw)  # type: ignore[arg-type]
    finally:
        conn.close()


def test_workload_graph_counts_latency_and_errors(data: Path) -> None:
    g = graph(data)
    e = g.edge("wl:istio-system/istio-ingressgateway", "wl:bookinfo/productpage-v1")
    assert (e.requests, e.errors, e.errors_5xx) == (100, 2, 2)
    assert e.error_rate == pytest.approx(0.02)
    assert e.rps == pytest.approx(100 / 600)
    # Destination-reported latencies 1..100 ms: exact interpolated quantiles.
    assert (e.p50_ms, e.p95_ms, e.p99_ms) == pytest.approx((50.5, 95.05, 99.01))
    assert e.mtls_ratio == 1.0 and e.share == 1.0
    assert e.source_reported == 0
    assert e.responses[0].code == "200" and e.responses[0].count == 98


def test_source_reports_count_only_when_no_destination_saw_the_request(data: Path) -> None:
    e = graph(data).edge("wl:bookinfo/productpage-v1", "wl:bookinfo/reviews-v2")
    assert (e.requests, e.errors_5xx, e.source_reported) == (35, 5, 5)
    assert {(r.code, r.flags, r.count) for r in e.responses} == {("200", "-", 30), ("503", "UF", 5)}
    # Latency from destination reports only (Kiali): all 20 ms.
    assert e.p50_ms == 20.0 and e.p99_ms == 20.0


def test_unknown_source_external_service_and_tcp(data: Path) -> None:
    g = graph(data)
    unknown = g.edge("unknown", "wl:bookinfo/productpage-v1")
    assert (unknown.requests, unknown.mtls_ratio) == (10, 0.0)
    assert g.node("unknown").is_unknown and g.node("unknown").is_root
    ext = g.edge("wl:bookinfo/productpage-v1", "svc:unknown/www.external.com")
    assert (ext.requests, ext.source_reported) == (8, 8)
    assert g.node("svc:unknown/www.external.com").is_service_entry
    tcp = g.edge("wl:bookinfo/ratings-v1", "wl:bookinfo/mongodb-v1", "tcp")
    assert (tcp.requests, tcp.request_bytes, tcp.response_bytes) == (3, 300, 3000)
    assert tcp.to_json()["connections"] == 3 and tcp.error_rate == 0.0
    assert g.node("wl:bookinfo/mongodb-v1").tcp_bytes_in == 3300


def test_grpc_4xx_and_no_response_classes(data: Path) -> None:
    g = graph(data)
    grpc = g.edge("wl:bookinfo/reviews-v2", "wl:bookinfo/ratings-v1", "grpc")
    assert (grpc.requests, grpc.errors_grpc, grpc.errors) == (20, 2, 2)
    assert {r.code: r.count for r in grpc.responses} == {"0": 18, "14": 2}
    details = g.edge("wl:bookinfo/productpage-v1", "wl:bookinfo/details-v1")
    assert (details.errors_4xx, details.errors, details.error_rate_4xx) == (3, 0, 0.3)
    nr = g.edge("wl:bookinfo/reviews-v1", "wl:bookinfo/ratings-v1")
    assert (nr.no_response, nr.errors, nr.no_response_rate) == (1, 1, 0.1)
    assert {(r.code, r.flags) for r in nr.responses} == {("200", "-"), ("-", "DC")}


def test_share_of_callers_traffic(data: Path) -> None:
    g = graph(data)
    out = {e.target: e.share for e in g.edges if e.source == "wl:bookinfo/productpage-v1"}
    assert out["wl:bookinfo/reviews-v1"] == pytest.approx(40 / 93)
    assert sum(out.values()) == pytest.approx(1.0)


def test_node_totals_and_health(data: Path) -> None:
    g = graph(data)
    pp = g.node("wl:bookinfo/productpage-v1")
    assert (pp.requests_in, pp.errors_in, pp.requests_out) == (110, 2, 93)
    assert pp.app == "productpage" and pp.version == "v1"
    # 2 % 5xx inbound: Kiali's default degrades any 5xx and fails at 10 %.
    assert pp.health == "Degraded"
    # 5 of 35 = 14 % 5xx outbound to reviews-v2: Failure on that edge.
    assert g.edge("wl:bookinfo/productpage-v1", "wl:bookinfo/reviews-v2").health == "Failure"
    assert g.node("wl:bookinfo/reviews-v1").health == "Failure"  # 10 % no response outbound
    assert g.node("wl:bookinfo/details-v1").health == "Failure"  # 30 % 4xx (>= 20 %)
    assert g.node("wl:bookinfo/reviews-v2").health == "Failure"  # inbound 5 of 35 are 5xx
    assert g.node("wl:bookinfo/ratings-v1").health == "Failure"  # inbound grpc 2 of 20 = 10 %
    assert g.edge("wl:bookinfo/ratings-v1", "wl:bookinfo/mongodb-v1", "tcp").health == "NA"


@pytest.mark.parametrize(
    ("level", "source", "target", "requests"),
    [
        ("app", "app:bookinfo/productpage", "app:bookinfo/reviews", 75),
        ("versioned-app", "vapp:bookinfo/productpage/v1", "vapp:bookinfo/reviews/v2", 35),
        ("service", "svc:bookinfo/productpage", "svc:bookinfo/reviews", 75),
        ("service", "svc:bookinfo/reviews", "svc:bookinfo/ratings", 30),
    ],
)
def test_levels(data: Path, level: str, source: str, target: str, requests: int) -> None:
    assert (
        sum(
            e.requests
            for e in graph(data, level=level).edges
            if e.source == source and e.target == target
        )
        == requests
    )


def test_app_level_latency_is_exact_over_merged_workloads(data: Path) -> None:
    e = graph(data, level="app").edge("app:bookinfo/productpage", "app:bookinfo/reviews")
    # 40 x 10 ms (v1) and 30 x 20 ms (v2): the median falls in the 10 ms block.
    assert e.p50_ms == 10.0 and e.p99_ms == 20.0


def test_namespace_filter_marks_outside_nodes(data: Path) -> None:
    g = graph(data, namespace="istio-system")
    assert [(e.source, e.target) for e in g.edges] == [
        ("wl:istio-system/istio-ingressgateway", "wl:bookinfo/productpage-v1")
    ]
    assert g.node("wl:bookinfo/productpage-v1").is_outside


def test_traffic_and_edges_views_match_the_graph(data: Path) -> None:
    conn = connect(data, WINDOW)
    n = conn.execute("SELECT count(*) FROM traffic").fetchone()
    edges = conn.execute(
        "SELECT requests, errors, p50_ms FROM edges WHERE source_workload = 'istio-ingressgateway'"
    ).fetchall()
    conn.close()
    assert n == (sum(e.requests for e in graph(data).edges),)
    assert edges == [(100, 2, 50.5)]


def test_empty_window_gives_an_empty_graph(tmp_path: Path) -> None:
    g = graph(tmp_path)
    assert g.nodes == () and g.edges == ()


def test_bad_level_and_source() -> None:
    conn = connect(Path("/nonexistent"), WINDOW)
    with pytest.raises(GraphError, match=r"unknown graph level 'pods'"):
        service_graph(conn, WINDOW, level="pods")
    with pytest.raises(GraphError, match=r"unknown graph source 'logs'"):
        service_graph(conn, WINDOW, source="logs")


def test_json_shape(data: Path) -> None:
    doc = graph(data).to_json()
    assert {"id", "namespace", "workload", "app", "version", "service", "health"} <= set(
        doc["nodes"][0]
    )
    edge = doc["edges"][0]
    assert {
        "source",
        "target",
        "protocol",
        "requests",
        "rps",
        "error_rate",
        "p50_ms",
        "p95_ms",
        "p99_ms",
        "mtls_ratio",
        "responses",
        "share",
    } <= set(edge)
    ids = {n["id"] for n in doc["nodes"]}
    assert all(e["source"] in ids and e["target"] in ids for e in doc["edges"])
    json.dumps(doc)


@pytest.mark.parametrize("fmt", ["json", "table", "dot", "mermaid", "kiali"])
def test_cli_graph_formats(data: Path, fmt: str, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(
        [
            "graph",
            "--data-dir",
            str(data),
            "--from",
            T0.isoformat(),
            "--since",
            "10m",
            "--format",
            fmt,
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0
    if fmt == "json":
        assert len(json.loads(out)["edges"]) == 9
    elif fmt == "dot":
        assert out.startswith("digraph") and '"unknown" -> "wl:bookinfo/productpage-v1"' in out
    elif fmt == "mermaid":
        assert out.startswith("flowchart LR") and "-->|" in out
    elif fmt == "kiali":
        doc = json.loads(out)
        assert doc["graphType"] == "workload" and len(doc["elements"]["edges"]) == 9
    else:
        assert "wl:istio-system/istio-ingressgateway" in out and "2.00%" in out


def test_cli_rejects_bad_window(data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["graph", "--data-dir", str(data), "--since", "soon"]) == 2
    assert "not a duration" in capsys.readouterr().err


def test_null_and_unknown_identity_are_one_node_with_exact_latency(tmp_path: Path) -> None:
    # Stored NULL and 'unknown' source workloads are the same unknown node: the latency scan
    # cannot group by the stored values then (two groups), and must still be exact.
    rows = call(UNKNOWN_WL, PP, svc("productpage"), n=4, durations=[1.0, 2.0, 3.0, 4.0])
    rows += call(
        UNKNOWN_WL,
        PP,
        svc("productpage"),
        n=4,
        durations=[5.0, 6.0, 7.0, 8.0],
        start=T0 + timedelta(seconds=30),
    )
    for r in rows[8:]:
        r["source_workload"] = None
    g = graph(store(tmp_path, rows))
    e = g.edge("unknown", "wl:bookinfo/productpage-v1")
    assert e.requests == 8
    assert e.p50_ms == pytest.approx(4.5)
    assert e.first_seen is not None and e.last_seen is not None
    assert e.first_seen < e.last_seen


def test_whole_hour_window_reads_partitions_unfiltered(data: Path) -> None:
    # The window covers the rows' hour partition completely, so the catalog scans it without
    # a time filter; counts must match a window that ends just after the last row.
    hour = TimeWindow(T0, T0 + timedelta(hours=1))
    late = TimeWindow(T0, T0 + timedelta(minutes=12))
    with connect(data, hour) as c1, connect(data, late) as c2:
        count = "SELECT count(*) FROM requests"
        assert c1.execute(count).fetchall() == c2.execute(count).fetchall()
        g1, g2 = service_graph(c1, hour), service_graph(c2, late)
    assert [(e.source, e.target, e.requests, e.p50_ms) for e in g1.edges] == [
        (e.source, e.target, e.requests, e.p50_ms) for e in g2.edges
    ]


def test_a_client_report_not_yet_paired_is_not_plaintext(tmp_path: Path) -> None:
    """Live data always ends with client reports whose server report has not arrived yet; the
    client does not know the connection's mTLS (Istio: connection_security_policy 'unknown'),
    so the edge's mTLS ratio is over the reports that know it (Kiali: destination telemetry)."""
    pp, rv = (
        wl("bookinfo", "productpage-v1", "productpage", "v1"),
        wl("bookinfo", "reviews-v1", "reviews", "v1"),
    )
    host = "reviews.bookinfo.svc.cluster.local"
    late = call(
        pp, rv, host, n=3, reporters=("source",), ids="late", start=T0 + timedelta(minutes=5)
    )
    for row in late:
        row["mtls"] = None
    rows = call(pp, rv, host, n=20) + late
    plain = call(pp, rv, host, n=2, mtls=False, start=T0 + timedelta(minutes=6), ids="plain")
    data_dir = store(tmp_path / "a", rows)
    e = graph(data_dir).edge("wl:bookinfo/productpage-v1", "wl:bookinfo/reviews-v1")
    assert e.requests == 23 and e.mtls_ratio == pytest.approx(1.0)
    # A known plaintext request still counts: 20 of 22 known.
    e = graph(store(tmp_path / "b", rows + plain)).edge(
        "wl:bookinfo/productpage-v1", "wl:bookinfo/reviews-v1"
    )
    assert e.mtls_ratio == pytest.approx(20 / 22)
