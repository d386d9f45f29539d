"""Kiali conformance: the series of Kiali's TestServiceNodeGraph, turned into request rows, must
give Kiali's expected graph JSON (graph/api/testdata/test_service_node_graph.expected)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa

from meshlens.analytics.catalog import connect
from meshlens.analytics.graph import service_graph
from meshlens.analytics.graph.kiali import to_kiali_json
from meshlens.analytics.window import TimeWindow
from meshlens.collector.store.parquet_write import write_table
from meshlens.collector.store.schema import REQUESTS

# Copied from ../shared/reference (sources and commits: reference/servicegraph_fixtures/README.md)
KIALI = Path(__file__).resolve().parents[1] / "reference" / "servicegraph_fixtures" / "kiali"
DURATION = 600  # Kiali's default 10m: rate * 600 s = requests in the window


def _fixture(name: str) -> Any:
    path = KIALI / name
    assert path.exists(), f"Kiali fixture {path} is missing"
    return json.loads(path.read_text())


def rows_from_series(metric: dict[str, str], rate: float, protocol: str, end: datetime) -> pa.Table:
    """rate x 600 s destination-reported requests (or one TCP connection carrying the bytes)."""
    if protocol == "tcp":
        n, extra = (
            1,
            {
                "request_bytes": [round(rate * DURATION)],
                "response_bytes": [0],
                "response_code": [0],
            },
        )
    else:
        n = round(rate * DURATION)
        extra = {
            "response_code": [int(metric["response_code"])] * n,
            "grpc_status": [metric.get("grpc_response_status", "")] * n,
            "request_bytes": [0] * n,
            "response_bytes": [0] * n,
        }
    start = end - timedelta(seconds=DURATION)
    cols = {
        "ts": pa.array(
            [start + timedelta(seconds=i * DURATION / n) for i in range(n)],
            pa.timestamp("us", tz="UTC"),
        ),
        "duration_ms": [5.0] * n,
        "reporter": ["destination"] * n,
        "protocol": [protocol] * n,
        "source_workload": [metric["source_workload"]] * n,
        "source_namespace": [metric["source_workload_namespace"]] * n,
        "source_canonical_service": [metric["source_canonical_service"]] * n,
        "source_version": [metric["source_canonical_revision"]] * n,
        "destination_service": [metric["destination_service"]] * n,
        "destination_service_name": [metric["destination_service_name"]] * n,
        "destination_namespace": [metric["destination_service_namespace"]] * n,
        "destination_workload": [metric["destination_workload"]] * n,
        "destination_canonical_service": [metric["destination_canonical_service"]] * n,
        "destination_version": [metric["destination_canonical_revision"]] * n,
        "response_flags": [metric["response_flags"]] * n,
        "mtls": [False] * n,
        "request_id": [f"{protocol}-{i}" for i in range(n)] if protocol != "tcp" else [""],
        **extra,
    }
    return pa.table(
        {
            k: pa.array(v, REQUESTS.field(k).type) if not isinstance(v, pa.Array) else v
            for k, v in cols.items()
        }
    )


def _strip(doc: dict[str, Any]) -> dict[str, Any]:
    """Drop what we do not model (see analytics/graph/kiali.py): isInaccessible, edge ids."""
    nodes = sorted((dict(n["data"]) for n in doc["elements"]["nodes"]), key=lambda d: d["id"])
    for n in nodes:
        n.pop("isInaccessible", None)
    edges = sorted(
        ({k: v for k, v in e["data"].items() if k != "id"} for e in doc["elements"]["edges"]),
        key=lambda d: (d["source"], d["target"], d["traffic"]["protocol"]),
    )
    return {
        "graphType": doc["graphType"],
        "duration": doc["duration"],
        "nodes": nodes,
        "edges": edges,
    }


def test_service_node_graph_matches_kiali(tmp_path: Path) -> None:
    spec = _fixture("test_service_node_graph.input.json")
    expected = _fixture(spec["expected_output_file"])
    end = datetime.fromtimestamp(expected["timestamp"], tz=UTC)
    for i, q in enumerate(spec["queries"]):
        protocol = "tcp" if "istio_tcp" in q["promql"] else None
        for series in q["result"]:
            proto = protocol or series["metric"]["request_protocol"]
            write_table(
                tmp_path,
                "requests",
                rows_from_series(series["metric"], series["value"], proto, end),
                "kiali",
                i + 1,
            )
    window = TimeWindow(end - timedelta(seconds=DURATION), end)
    graph = service_graph(connect(tmp_path, window), window, level="workload", namespace="bookinfo")
    ours = to_kiali_json(graph, cluster="east", timestamp=expected["timestamp"])
    assert _strip(ours) == _strip(expected)


def test_workload_graph_expected_uses_the_fields_we_emit() -> None:
    # The larger expected graph's input is Go mock code (not transcribed): check the schema we
    # emit covers its node and edge fields that we model.
    expected = _fixture("test_workload_graph.expected.json")
    node_keys = set().union(*(n["data"] for n in expected["elements"]["nodes"]))
    edge_rates = set().union(
        *(e["data"]["traffic"].get("rates", {}) for e in expected["elements"]["edges"])
    )
    modelled = {
        "id",
        "nodeType",
        "cluster",
        "namespace",
        "workload",
        "app",
        "version",
        "service",
        "destServices",
        "traffic",
        "healthData",
        "isOutside",
        "isRoot",
        "isServiceEntry",
    }
    assert {"id", "nodeType", "namespace", "traffic"} <= node_keys
    assert node_keys - modelled <= {
        "isInaccessible",
        "isIdle",
        "isDead",
        "hasCB",
        "hasVS",
        "isGateway",
        "aggregate",
        "aggregateValue",
        "isAmbient",
        "isBox",
        "hasWorkloadEntry",
        "isWaypoint",
        "labels",
        "isOutOfMesh",
        "hasHealthConfig",
        "service",
        "parent",
    }
    assert edge_rates <= {
        "http",
        "httpPercentReq",
        "httpPercentErr",
        "http3xx",
        "http4xx",
        "http5xx",
        "httpNoResponse",
        "grpc",
        "grpcPercentReq",
        "grpcPercentErr",
        "grpcErr",
        "grpcNoResponse",
        "tcp",
    }
