"""Hand-built `requests` rows for golden tests: one dict per proxy report, defaults filled."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa

from meshlens.collector.store.parquet_write import write_table
from meshlens.collector.store.schema import REQUESTS

T0 = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)


def wl(ns: str, workload: str, app: str, version: str) -> dict[str, str]:
    return {"namespace": ns, "workload": workload, "app": app, "version": version}


UNKNOWN_WL = wl("unknown", "unknown", "unknown", "unknown")


def call(
    src: dict[str, str],
    dst: dict[str, str],
    service: str,
    *,
    n: int = 1,
    code: int = 200,
    flags: str = "-",
    grpc: str = "",
    protocol: str = "http",
    durations: Iterable[float] | None = None,
    reporters: tuple[str, ...] = ("source", "destination"),
    mtls: bool = True,
    start: datetime = T0,
    spacing_s: float = 1.0,
    request_bytes: int = 100,
    response_bytes: int = 1000,
    ids: str | None = None,
) -> list[dict[str, Any]]:
    """`n` calls src -> dst (via `service`, a FQDN or external host), reported by `reporters`.
    Durations: destination report = d, source report = d + 1 (the network hop)."""
    durs = list(durations) if durations is not None else [10.0] * n
    assert len(durs) == n
    short, _, rest = service.partition(".")
    svc_ns = rest.split(".")[0] if rest.endswith("svc.cluster.local") else "unknown"
    svc_name = short if rest.endswith("svc.cluster.local") else service
    rows = []
    prefix = ids or f"{src['workload']}-{dst['workload']}-{code}-{flags}-{start.timestamp()}"
    for i, d in enumerate(durs):
        for rep in reporters:
            rows.append(
                {
                    "ts": start + timedelta(seconds=i * spacing_s),
                    "duration_ms": d + (1.0 if rep == "source" else 0.0),
                    "reporter": rep,
                    "protocol": protocol,
                    "source_workload": src["workload"],
                    "source_namespace": src["namespace"],
                    "source_canonical_service": src["app"],
                    "source_version": src["version"],
                    "source_principal": f"spiffe://cluster.local/ns/{src['namespace']}/sa/{src['app']}"
                    if mtls
                    else "unknown",
                    "destination_service": service,
                    "destination_service_name": svc_name,
                    "destination_namespace": svc_ns,
                    "destination_workload": dst["workload"],
                    "destination_canonical_service": dst["app"],
                    "destination_version": dst["version"],
                    "destination_principal": "unknown",
                    "method": "GET",
                    "path": "/",
                    "response_code": 0 if protocol == "tcp" else code,
                    "grpc_status": grpc,
                    "response_flags": flags,
                    "request_bytes": request_bytes,
                    "response_bytes": response_bytes,
                    "mtls": mtls,
                    "request_id": "" if protocol == "tcp" else f"{prefix}-{i}",
                    "origin": "file",
                }
            )
    return rows


def store(data_dir: Path, rows: list[dict[str, Any]], table: str = "requests") -> Path:
    schema = REQUESTS if table == "requests" else None
    t = (
        pa.Table.from_pylist(rows)
        if schema is None
        else pa.Table.from_pylist(rows, schema=pa.schema([f for f in schema if f.name in rows[0]]))
    )
    write_table(data_dir, table, t, "test", 1)
    return data_dir
