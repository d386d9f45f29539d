"""analytics.exporter: service-graph / span-metrics families derived from the store."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from meshlens.analytics.catalog import connect
from meshlens.analytics.exporter import OVERFLOW, DerivedMetricsCollector, metric_collectors
from meshlens.analytics.graph.spans import SpanGraphOptions, spans_graph
from meshlens.analytics.window import TimeWindow
from meshlens.collector.store.parquet_write import write_table
from meshlens.collector.store.schema import REQUESTS, SPANS

T0 = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)


def _req(
    ts: datetime,
    reporter: str,
    src: str,
    dst: str,
    code: int = 200,
    ms: float = 7.0,
    dst_wl: str | None = None,
    rid: str = "",
) -> dict[str, Any]:
    return {
        "ts": ts,
        "request_id": rid,
        "duration_ms": ms,
        "reporter": reporter,
        "protocol": "http",
        "source_workload": f"{src}-v1" if src != "unknown" else "unknown",
        "source_namespace": "ns",
        "source_canonical_service": src,
        "source_version": "v1",
        "destination_service": f"{dst}.ns.svc.cluster.local",
        "destination_service_name": dst,
        "destination_namespace": "ns",
        "destination_workload": dst_wl if dst_wl is not None else f"{dst}-v1",
        "destination_canonical_service": dst if dst_wl != "unknown" else "unknown",
        "destination_version": "v1",
        "response_code": code,
        "grpc_status": "",
        "response_flags": "-",
        "mtls": True,
    }


def _write_requests(data_dir: Path, rows: list[dict[str, Any]], lo: int) -> None:
    write_table(
        data_dir, "requests", pa.Table.from_pylist(rows, schema=REQUESTS), "t", lo, fsync=False
    )


def _samples(collector: Any) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    reg = CollectorRegistry(auto_describe=False)
    reg.register(collector)
    out = {}
    for fam in text_string_to_metric_families(generate_latest(reg).decode()):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _get(samples: dict[Any, float], name: str, **labels: str) -> float:
    hits = [
        v
        for (n, ls), v in samples.items()
        if n == name and all(dict(ls).get(k) == v for k, v in labels.items())
    ]
    assert hits, f"no {name} {labels}"
    return sum(hits)


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now.timestamp()

    def __call__(self) -> float:
        return self.now


def test_requests_become_connector_metrics_with_kiali_dedup(tmp_path: Path) -> None:
    t = T0 + timedelta(seconds=30)
    _write_requests(
        tmp_path,
        [
            _req(t, "source", "a", "b", rid="r1"),
            _req(t, "destination", "a", "b", rid="r1"),  # one request, 2 reports
            _req(t, "source", "a", "b", 503, 20, rid="r2"),
            _req(t, "destination", "a", "b", 503, 15, rid="r2"),
            # never reached a proxy
            _req(t, "source", "a", "ext", 0, 3000, dst_wl="unknown", rid="r3"),
            _req(t, "destination", "unknown", "a", 200, 1.5, rid="r4"),  # from outside the mesh
        ],
        1,
    )
    clock = Clock(T0 + timedelta(minutes=2))
    c = DerivedMetricsCollector(tmp_path, clock=clock, backfill_s=600, lag_s=10)
    s = _samples(c)
    total = "traces_service_graph_request_total"
    assert _get(s, total, client="a", server="b", failed="false", connection_type="") == 1
    assert _get(s, total, client="a", server="b", failed="true") == 1
    assert _get(s, "traces_service_graph_request_failed_total", client="a", server="b") == 1
    assert _get(s, total, client="a", server="ext", failed="true") == 1
    assert _get(s, total, client="user", server="a", connection_type="virtual_node") == 1
    # server histogram from destination reports, client histogram from source reports (seconds)
    srv = "traces_service_graph_request_server_seconds"
    assert _get(s, srv + "_bucket", client="a", server="b", failed="true", le="0.01") == 0
    assert _get(s, srv + "_bucket", client="a", server="b", failed="true", le="0.05") == 1
    assert abs(_get(s, srv + "_sum", client="a", server="b", failed="true") - 0.015) < 1e-9
    cli = "traces_service_graph_request_client_seconds"
    assert abs(_get(s, cli + "_sum", client="a", server="b", failed="true") - 0.020) < 1e-9
    assert _get(s, cli + "_bucket", client="a", server="ext", le="2") == 0
    assert _get(s, cli + "_bucket", client="a", server="ext", le="5") == 1


def test_counters_are_cumulative_and_never_count_a_row_twice(tmp_path: Path) -> None:
    _write_requests(tmp_path, [_req(T0, "destination", "a", "b")], 1)
    clock = Clock(T0 + timedelta(seconds=60))
    c = DerivedMetricsCollector(tmp_path, clock=clock, backfill_s=600, lag_s=10, min_interval_s=0)
    total = "traces_service_graph_request_total"
    assert _get(_samples(c), total, client="a") == 1
    _write_requests(tmp_path, [_req(T0 + timedelta(seconds=55), "destination", "a", "b")], 2)
    assert _get(_samples(c), total, client="a") == 1  # still inside the lag
    clock.now += 30
    assert _get(_samples(c), total, client="a") == 2
    clock.now += 30
    assert _get(_samples(c), total, client="a") == 2


def test_edge_cardinality_is_bounded_with_an_overflow_series(tmp_path: Path) -> None:
    rows = [_req(T0, "destination", f"c{i}", "b") for i in range(5) for _ in range(5 - i)]
    _write_requests(tmp_path, rows, 1)
    c = DerivedMetricsCollector(tmp_path, clock=Clock(T0 + timedelta(minutes=1)), max_edges=2)
    s = _samples(c)
    total = "traces_service_graph_request_total"
    clients = {dict(ls)["client"] for (n, ls) in s if n == total}
    assert clients == {"c0", "c1", OVERFLOW}  # the two busiest, then the rest together
    assert _get(s, total, client=OVERFLOW) == 3 + 2 + 1


def _span(
    tid: str,
    sid: str,
    parent: str,
    svc: str,
    kind: str,
    ms: float,
    status: str = "unset",
    peer: str = "",
) -> dict[str, Any]:
    return {
        "trace_id": tid,
        "span_id": sid,
        "parent_span_id": parent,
        "name": f"{kind} op",
        "kind": kind,
        "start_ts": T0,
        "end_ts": T0 + timedelta(milliseconds=ms),
        "duration_ms": ms,
        "service_name": svc,
        "status_code": status,
        "peer_service": peer,
    }


def test_spans_pair_into_edges_and_span_metrics_when_there_are_no_requests(tmp_path: Path) -> None:
    spans = [
        _span("t1", "s1", "", "front", "server", 50),  # root: client 'user'
        _span("t1", "c1", "s1", "front", "client", 30),
        _span("t1", "s2", "c1", "back", "server", 25, "error"),
        _span("t2", "c9", "", "front", "client", 12, peer="payments"),  # uninstrumented peer
    ]
    write_table(tmp_path, "spans", pa.Table.from_pylist(spans, schema=SPANS), "t", 1, fsync=False)
    s = _samples(DerivedMetricsCollector(tmp_path, clock=Clock(T0 + timedelta(minutes=1))))
    total = "traces_service_graph_request_total"
    assert _get(s, total, client="front", server="back", failed="true", connection_type="") == 1
    assert _get(s, total, client="user", server="front", connection_type="virtual_node") == 1
    assert _get(s, total, client="front", server="payments", connection_type="virtual_node") == 1
    # One span pairing: the graph (connector naming) has the same edges and counts.
    conn = connect(tmp_path, TimeWindow(T0 - timedelta(hours=1), T0 + timedelta(hours=1)))
    try:
        graph = spans_graph(
            conn,
            TimeWindow(T0 - timedelta(hours=1), T0 + timedelta(hours=1)),
            level="app",
            options=SpanGraphOptions(mode="connector", root_client_edges=False),
        )
    finally:
        conn.close()
    names = {n.id: n.app if n.app != "unknown" else n.service for n in graph.nodes}
    from_graph = {(names[e.source], names[e.target]): e.requests for e in graph.edges}
    exported: dict[tuple[str, str], float] = {}
    for (name, label_pairs), value in s.items():
        if name == total:
            labels = dict(label_pairs)
            key = (labels["client"], labels["server"])
            exported[key] = exported.get(key, 0) + value
    assert from_graph == exported
    calls = "traces_span_metrics_calls_total"
    assert (
        _get(
            s,
            calls,
            service_name="back",
            span_kind="SPAN_KIND_SERVER",
            status_code="STATUS_CODE_ERROR",
        )
        == 1
    )
    assert _get(s, calls, service_name="front", span_kind="SPAN_KIND_CLIENT") == 2
    dur = "traces_span_metrics_duration_seconds_bucket"
    assert _get(s, dur, service_name="front", span_kind="SPAN_KIND_SERVER", le="0.05") == 1


def test_metric_collectors_include_gate_metrics_and_survive_an_empty_store(tmp_path: Path) -> None:
    reg = CollectorRegistry(auto_describe=False)
    for c in metric_collectors(tmp_path):
        reg.register(c)
    text = generate_latest(reg).decode()
    assert "# TYPE traces_service_graph_request_total counter" in text
    assert "# TYPE traces_span_metrics_duration_seconds histogram" in text
    assert "meshlens_gate_verdicts_total" in text
