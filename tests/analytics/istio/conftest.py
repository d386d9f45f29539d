from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa

from meshlens.analytics.window import TimeWindow
from meshlens.collector.store.parquet_write import write_table

T0 = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
WINDOW = TimeWindow(T0, T0 + timedelta(hours=1))


def request_row(**kw: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "ts": T0 + timedelta(seconds=kw.pop("at", 1)),
        "duration_ms": 5.0,
        "reporter": "destination",
        "protocol": "http",
        "source_workload": "unknown",
        "source_namespace": "unknown",
        "source_canonical_service": "unknown",
        "source_version": "unknown",
        "source_principal": "unknown",
        "destination_service": "productpage.default.svc.cluster.local",
        "destination_service_name": "productpage",
        "destination_namespace": "default",
        "destination_workload": "productpage-v1",
        "destination_canonical_service": "productpage",
        "destination_version": "v1",
        "destination_principal": "spiffe://cluster.local/ns/default/sa/productpage",
        "method": "GET",
        "path": "/productpage",
        "authority": "productpage:9080",
        "response_code": 200,
        "grpc_status": "",
        "response_flags": "-",
        "request_bytes": 0,
        "response_bytes": 100,
        "mtls": True,
        "upstream_cluster": "inbound|9080||",
        "request_id": "",
        "trace_id": "",
        "node_id": "test",
        "origin": "envoy_als",
        "user_agent": "curl/8",
        "destination_port": 9080,
    }
    row.update(kw)
    return row


def caller(workload: str, ns: str = "default", sa: str | None = None, **kw: Any) -> dict[str, Any]:
    principal = f"spiffe://cluster.local/ns/{ns}/sa/{sa or workload.rsplit('-', 1)[0]}"
    return request_row(
        source_workload=workload,
        source_namespace=ns,
        source_canonical_service=workload.rsplit("-", 1)[0],
        source_version=workload.rsplit("-", 1)[-1],
        source_principal=principal,
        **kw,
    )


def write_requests(data_dir: Path, rows: list[dict[str, Any]]) -> None:
    write_table(data_dir, "requests", pa.Table.from_pylist(rows), "test", 1)
