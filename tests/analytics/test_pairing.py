"""The `traffic` view pairs the client's and the server's report of the same hop (same request
id and the same destination) and merges what each side knows; every consumer reads it."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from meshlens.analytics.catalog import connect
from meshlens.analytics.graph import service_graph
from meshlens.analytics.signals import golden_signals
from meshlens.analytics.window import TimeWindow
from meshlens.collector.store.parquet_write import write_table
from meshlens.collector.store.schema import REQUESTS
from tests.analytics.requests_factory import T0, call, wl

WINDOW = TimeWindow(T0 - timedelta(minutes=1), T0 + timedelta(minutes=10))
INGRESS = wl("istio-system", "istio-ingressgateway", "istio-ingressgateway", "unknown")
PP = wl("default", "productpage-v1", "productpage", "v1")
DETAILS = wl("default", "details-v1", "details", "v1")
REVIEWS = wl("default", "reviews-v2", "reviews", "v2")


def _svc(name: str) -> str:
    return f"{name}.default.svc.cluster.local"


def _store(tmp_path: Path, rows: list[dict[str, Any]]) -> Path:
    cols = {f.name: [r.get(f.name) for r in rows] for f in REQUESTS}
    write_table(tmp_path, "requests", pa.table(cols, schema=REQUESTS), node="t", lo=1)
    return tmp_path


def _chain(n: int = 3) -> list[dict[str, Any]]:
    """Bookinfo's chain: every hop of one request carries the same x-request-id."""
    rows: list[dict[str, Any]] = []
    for i in range(n):
        rid = f"req-{i}"
        for src, dst, svc in (
            (INGRESS, PP, "productpage"),
            (PP, DETAILS, "details"),
            (PP, REVIEWS, "reviews"),
        ):
            rows += call(src, dst, _svc(svc), ids=rid, start=T0 + timedelta(seconds=i))
    for r in rows:
        r["request_id"] = r["request_id"].split("-")[0] + "-" + r["request_id"].split("-")[1]
    return rows


def test_hops_that_share_a_request_id_stay_three_hops(tmp_path: Path) -> None:
    data = _store(tmp_path, _chain())
    conn = connect(data, WINDOW)
    assert conn.execute("SELECT count(*) FROM requests").fetchone() == (18,)
    assert conn.execute("SELECT count(*), bool_and(paired) FROM traffic").fetchone() == (9, True)
    edges = conn.execute(
        "SELECT source_workload, destination_workload, requests FROM edges ORDER BY 2"
    ).fetchall()
    assert edges == [
        ("productpage-v1", "details-v1", 3),
        ("istio-ingressgateway", "productpage-v1", 3),
        ("productpage-v1", "reviews-v2", 3),
    ]
    g = service_graph(conn, WINDOW)
    assert sorted((e.source, e.target, e.requests) for e in g.edges) == sorted(
        [
            ("wl:istio-system/istio-ingressgateway", "wl:default/productpage-v1", 3),
            ("wl:default/productpage-v1", "wl:default/details-v1", 3),
            ("wl:default/productpage-v1", "wl:default/reviews-v2", 3),
        ]
    )
    sig = golden_signals(conn, WINDOW, by=("service",), step_s=3600)
    assert sorted(sig.select("requests").to_series().to_list()) == [3, 3, 3]


def test_a_paired_request_takes_each_field_from_the_side_that_knows_it(tmp_path: Path) -> None:
    unknown_src = wl("unknown", "unknown", "unknown", "unknown")
    client = call(PP, wl("default", "unknown", "unknown", "v1"), _svc("reviews"), ids="r1")
    server = call(unknown_src, wl("default", "reviews-v1", "reviews", "unknown"), _svc("reviews"))
    rows = [r for r in client if r["reporter"] == "source"]
    rows += [
        {
            **r,
            "request_id": rows[0]["request_id"],
            "source_principal": "spiffe://x/ns/default/sa/pp",
        }
        for r in server
        if r["reporter"] == "destination"
    ]
    rows[0]["upstream_cluster"] = "outbound|9080|v1|reviews.default.svc.cluster.local"
    conn = connect(_store(tmp_path, rows), WINDOW)
    got = conn.execute(
        "SELECT reporter, paired, source_workload, source_version, destination_workload, "
        "destination_version, source_principal, upstream_cluster, duration_ms, "
        "client_duration_ms FROM traffic"
    ).fetchall()
    assert got == [
        (
            "destination",
            True,
            "productpage-v1",  # from the client
            "v1",
            "reviews-v1",  # from the server
            "v1",  # the server has no version label: the client's subset
            "spiffe://x/ns/default/sa/pp",  # the server saw the peer certificate
            "outbound|9080|v1|reviews.default.svc.cluster.local",
            10.0,  # the server's measurement
            11.0,  # the client's, kept
        )
    ]
    g = service_graph(conn, WINDOW)
    assert [(e.source, e.target) for e in g.edges] == [
        ("wl:default/productpage-v1", "wl:default/reviews-v1")
    ]


def test_unpaired_reports_count_on_their_own(tmp_path: Path) -> None:
    rows = call(
        PP,
        wl("default", "unknown", "unknown", "unknown"),
        _svc("reviews"),
        flags="UH",
        code=503,
        reporters=("source",),
        ids="never-reached",
    )
    rows += call(
        wl("unknown", "unknown", "unknown", "unknown"),
        REVIEWS,
        _svc("reviews"),
        reporters=("destination",),
        ids="no-client-sidecar",
    )
    conn = connect(_store(tmp_path, rows), WINDOW)
    assert conn.execute(
        "SELECT reporter, paired, response_flags FROM traffic ORDER BY reporter"
    ).fetchall() == [("destination", False, "-"), ("source", False, "UH")]


def test_a_hop_made_twice_with_one_id_and_a_retried_request(tmp_path: Path) -> None:
    twice = call(PP, REVIEWS, _svc("reviews"), n=2, ids="same", spacing_s=0.5)
    for r in twice:
        r["request_id"] = "same"
    # One client report, two server attempts (Envoy retried): one pair and one attempt alone.
    retried = call(PP, DETAILS, _svc("details"), ids="retry")
    retried += [
        r for r in call(PP, DETAILS, _svc("details"), ids="retry") if r["reporter"] != "source"
    ]
    for r in retried:
        r["request_id"] = "retry"
    conn = connect(_store(tmp_path, twice + retried), WINDOW)
    assert conn.execute(
        "SELECT destination_service_name, count(*), count(*) FILTER (WHERE paired) FROM traffic "
        "GROUP BY 1 ORDER BY 1"
    ).fetchall() == [("details", 2, 1), ("reviews", 2, 2)]


@pytest.mark.parametrize(
    ("grpc", "error"), [("0", False), ("OK", False), ("14", True), ("", False)]
)
def test_grpc_ok_is_not_an_error_in_any_view(tmp_path: Path, grpc: str, error: bool) -> None:
    rows = call(PP, REVIEWS, _svc("reviews"), protocol="grpc", grpc=grpc, n=4)
    conn = connect(_store(tmp_path, rows), WINDOW)
    assert conn.execute("SELECT errors FROM edges").fetchone() == ((4 if error else 0),)
    g = service_graph(conn, WINDOW)
    assert g.edges[0].errors == (4 if error else 0)
    sig = golden_signals(conn, WINDOW, by=("service",), step_s=3600)
    assert sig["errors"].to_list() == [4 if error else 0]
