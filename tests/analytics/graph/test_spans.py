"""The spans graph against the OTel service-graph connector's and Tempo's test fixtures, plus
hand-built cases (database and peer virtual nodes, span links, failure rules, gateways)."""

from __future__ import annotations

import base64
import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import yaml

from meshlens.analytics.catalog import connect
from meshlens.analytics.graph import Graph, service_graph
from meshlens.analytics.graph.spans import SpanGraphOptions, spans_graph
from meshlens.analytics.window import TimeWindow
from meshlens.collector.decode.otlp_json import otlp_json_to_proto
from meshlens.collector.decode.otlp_traces import decode_traces_record
from meshlens.collector.store.parquet_write import write_table
from meshlens.collector.store.records import Record, RecordKind
from meshlens.collector.store.schema import SPANS

# Copied from ../shared/reference (sources and commits: reference/servicegraph_fixtures/README.md)
FIXTURES = Path(__file__).resolve().parents[1] / "reference" / "servicegraph_fixtures"
ALL_TIME = TimeWindow(datetime(2020, 1, 1, tzinfo=UTC), datetime(2030, 1, 1, tzinfo=UTC))
CONNECTOR = SpanGraphOptions(mode="connector", root_client_edges=False)
TEMPO = SpanGraphOptions(mode="tempo", root_client_edges=False)


def needs_fixture(name: str) -> Path:
    path = FIXTURES / name
    assert path.exists(), f"reference fixture {path} is missing"
    return path


def store_otlp_json(data: Path, doc: dict[str, Any]) -> Path:
    body = otlp_json_to_proto("traces", json.dumps(doc).encode())
    spans = decode_traces_record(Record(RecordKind.OTLP_TRACES, 0, body))["spans"]
    write_table(data, "spans", spans, "test", 1)
    return data


def edges_by_name(g: Graph) -> Counter[tuple[str, str, str, bool]]:
    """(client, server, connection_type, failed) -> requests, like the connector's series."""

    def name(node_id: str) -> str:
        return node_id.split(":", 1)[1].split("/")[-1]

    out: Counter[tuple[str, str, str, bool]] = Counter()
    for e in g.edges:
        if e.requests - e.errors:
            out[(name(e.source), name(e.target), e.connection_type, False)] += e.requests - e.errors
        if e.errors:
            out[(name(e.source), name(e.target), e.connection_type, True)] += e.errors
    return out


def expected_series(
    path: Path, metric: str = "traces_service_graph_request_total"
) -> Counter[tuple[str, str, str, bool]]:
    doc = yaml.safe_load(path.read_text())
    out: Counter[tuple[str, str, str, bool]] = Counter()
    for rm in doc["resourceMetrics"]:
        for sm in rm["scopeMetrics"]:
            for m in sm["metrics"]:
                if m["name"] != metric:
                    continue
                for dp in m["sum"]["dataPoints"]:
                    attrs = {a["key"]: next(iter(a["value"].values())) for a in dp["attributes"]}
                    key = (
                        attrs["client"],
                        attrs["server"],
                        attrs.get("connection_type", ""),
                        bool(attrs.get("failed", False)),
                    )
                    out[key] += int(dp["asInt"])
    return out


@pytest.mark.parametrize(
    ("trace", "expected"),
    [
        ("virtual-node-label-trace.yaml", "virtual-node-label-expected-metrics.yaml"),
        ("virtual-node-label-client-trace.yaml", "virtual-node-label-client-expected-metrics.yaml"),
        ("extra-dimensions-queue-db-trace.yaml", "extra-dimensions-queue-db-expected-metrics.yaml"),
        ("messaging-system-trace.yaml", "messaging-system-trace-expected-metrics.yaml"),
    ],
)
def test_otel_connector_fixtures(tmp_path: Path, trace: str, expected: str) -> None:
    doc = yaml.safe_load(needs_fixture(trace).read_text())
    data = store_otlp_json(tmp_path, doc)
    g = spans_graph(connect(data, ALL_TIME), ALL_TIME, options=CONNECTOR)
    assert edges_by_name(g) == expected_series(needs_fixture(expected))


def test_otel_failed_label_fixture(tmp_path: Path) -> None:
    # The fixture's input trace is not in the reference set; build what it describes:
    # three foo -> bar client/server pairs, one with an ERROR status.
    path = needs_fixture("failed-label-not-work-expect-metrics.yaml")
    rows = []
    for i, status in enumerate(["ok", "unset", "error"]):
        rows += span_pair("foo", "bar", trace=f"{i:032x}", status=status)
    data = store_spans(tmp_path, rows)
    g = spans_graph(connect(data, ALL_TIME), ALL_TIME, options=CONNECTOR)
    assert edges_by_name(g) == expected_series(path)
    failed = expected_series(path, "traces_service_graph_request_failed_total")
    assert sum(failed.values()) == g.edges[0].errors == 1


def _b64_to_hex(value: str) -> str:
    return base64.b64decode(value).hex()


def test_tempo_virtual_nodes_fixture(tmp_path: Path) -> None:
    doc = json.loads(needs_fixture("tempo/trace-with-virtual-nodes.json").read_text())
    for rs in doc["resourceSpans"]:
        for ss in rs["scopeSpans"]:
            for sp in ss["spans"]:
                for key in ("traceId", "spanId", "parentSpanId"):
                    if sp.get(key):
                        sp[key] = _b64_to_hex(sp[key])
    data = store_otlp_json(tmp_path, doc)
    g = spans_graph(connect(data, ALL_TIME), ALL_TIME, options=TEMPO)
    # servicegraphs_test.go TestServiceGraphs_virtualNodes: one request on each, none failed.
    assert edges_by_name(g) == Counter(
        {
            ("user", "mythical-server", "virtual_node", False): 1,
            ("mythical-requester", "external-payments-platform", "virtual_node", False): 1,
            ("external-producer", "internal-consumer", "virtual_node", False): 1,
        }
    )


# ---- hand-built spans ----------------------------------------------------------------------

T0 = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
WINDOW = TimeWindow(T0, T0 + timedelta(hours=1))


def span(
    trace: str,
    span_id: str,
    parent: str,
    kind: str,
    service: str,
    *,
    duration: float = 10.0,
    status: str = "unset",
    **extra: Any,
) -> dict[str, Any]:
    start = T0 + timedelta(seconds=1)
    return {
        "trace_id": trace,
        "span_id": span_id,
        "parent_span_id": parent,
        "name": "op",
        "kind": kind,
        "start_ts": start,
        "end_ts": start + timedelta(milliseconds=duration),
        "duration_ms": duration,
        "service_name": service,
        "status_code": status,
        "attributes": json.dumps(extra.pop("attributes", {})),
        "resource_attributes": json.dumps(extra.pop("resource_attributes", {})),
        **extra,
    }


def span_pair(
    client: str,
    server: str,
    *,
    trace: str,
    status: str = "unset",
    server_status: str = "unset",
    http: int | None = None,
    grpc: int | None = None,
) -> list[dict[str, Any]]:
    c_id, s_id = trace[:16], trace[16:]
    return [
        span(
            trace,
            c_id,
            "",
            "client",
            client,
            duration=12.0,
            status=status,
            http_status_code=http,
            rpc_grpc_status_code=grpc,
        ),
        span(
            trace,
            s_id,
            c_id,
            "server",
            server,
            duration=10.0,
            status=server_status,
            http_status_code=http,
            rpc_grpc_status_code=grpc,
        ),
    ]


def store_spans(data: Path, rows: list[dict[str, Any]]) -> Path:
    names = list(dict.fromkeys(k for r in rows for k in r))
    schema = pa.schema([SPANS.field(n) for n in names])
    write_table(data, "spans", pa.Table.from_pylist(rows, schema=schema), "test", 1)
    return data


def test_paired_edges_latency_and_root_gateway(tmp_path: Path) -> None:
    rows = span_pair("istio-ingressgateway", "productpage", trace="a" * 32, http=200)
    rows += span_pair(
        "istio-ingressgateway", "productpage", trace="b" * 32, http=503, server_status="error"
    )
    g = spans_graph(connect(store_spans(tmp_path, rows), WINDOW), WINDOW)
    e = g.edge("app:unknown/istio-ingressgateway", "app:unknown/productpage")
    assert (e.requests, e.errors, e.p50_ms, e.protocol) == (2, 1, 10.0, "http")
    assert {r.code for r in e.responses} == {"200", "503"}
    # The gateway's root CLIENT spans also show where traffic enters (grafana/tempo#1418).
    assert g.edge("virtual:user", "app:unknown/istio-ingressgateway").requests == 2


def test_virtual_servers_named_from_peer_and_db_attributes(tmp_path: Path) -> None:
    rows = [
        span("1" * 32, "1" * 16, "", "server", "api"),
        span("1" * 32, "2" * 16, "1" * 16, "client", "api", peer_service="billing"),
        span(
            "1" * 32, "3" * 16, "1" * 16, "client", "api", db_system="postgresql", db_name="orders"
        ),
        span("1" * 32, "4" * 16, "1" * 16, "client", "api", server_address="cache.local"),
        span("1" * 32, "5" * 16, "1" * 16, "client", "api"),
        span("2" * 32, "6" * 16, "", "server", "api", peer_service="partner"),
        span("3" * 32, "7" * 16, "9" * 16, "server", "api"),  # parent never exported: dropped
    ]
    data = store_spans(tmp_path, rows)
    tempo = edges_by_name(spans_graph(connect(data, WINDOW), WINDOW, options=TEMPO))
    assert tempo == Counter(
        {
            ("user", "api", "virtual_node", False): 1,
            ("partner", "api", "virtual_node", False): 1,
            ("api", "billing", "virtual_node", False): 1,
            ("api", "orders", "database", False): 1,
            ("api", "cache.local", "virtual_node", False): 1,
            ("api", "unknown", "virtual_node", False): 1,
        }
    )
    conn = edges_by_name(spans_graph(connect(data, WINDOW), WINDOW, options=CONNECTOR))
    assert conn[("user", "api", "virtual_node", False)] == 2  # the connector always says user
    assert conn[("api", "unknown", "virtual_node", False)] == 2  # server.address is not a peer attr


def test_consumer_pairs_with_producer_through_a_link(tmp_path: Path) -> None:
    rows = [
        span("a" * 32, "1" * 16, "", "producer", "orders", messaging_system="kafka"),
        span(
            "b" * 32,
            "2" * 16,
            "",
            "consumer",
            "shipping",
            links=json.dumps([{"trace_id": "a" * 32, "span_id": "1" * 16}]),
        ),
    ]
    g = spans_graph(connect(store_spans(tmp_path, rows), WINDOW), WINDOW, options=TEMPO)
    assert edges_by_name(g) == Counter({("orders", "shipping", "messaging_system", False): 1})


def test_failures_from_codes_are_configurable(tmp_path: Path) -> None:
    rows = span_pair("a", "b", trace="1" * 32, http=503)
    rows += span_pair("a", "b", trace="2" * 32, grpc=14)
    rows += span_pair("a", "b", trace="3" * 32, http=200)
    data = store_spans(tmp_path, rows)
    only_status = spans_graph(connect(data, WINDOW), WINDOW, options=TEMPO)
    assert sum(e.errors for e in only_status.edges) == 0
    strict = SpanGraphOptions(fail_http_codes="^5", fail_grpc_codes=(14,), root_client_edges=False)
    g = spans_graph(connect(data, WINDOW), WINDOW, options=strict)
    assert {(e.protocol, e.requests, e.errors) for e in g.edges} == {("http", 2, 1), ("grpc", 1, 1)}


def test_auto_source_uses_spans_when_there_are_no_requests(tmp_path: Path) -> None:
    data = store_spans(tmp_path, span_pair("a", "b", trace="1" * 32))
    conn = connect(data, WINDOW)
    g = service_graph(conn, WINDOW, level="app", source="auto")
    assert g.source == "spans" and g.edge("app:unknown/a", "app:unknown/b").requests == 1


def test_versioned_app_uses_service_version(tmp_path: Path) -> None:
    rows = span_pair("a", "b", trace="1" * 32)
    rows[1]["service_version"] = "v2"
    g = spans_graph(
        connect(store_spans(tmp_path, rows), WINDOW), WINDOW, level="versioned-app", options=TEMPO
    )
    assert [e.target for e in g.edges] == ["vapp:unknown/b/v2"]
