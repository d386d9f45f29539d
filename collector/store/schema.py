"""The public SQL schema (v1): one pyarrow schema per table.

These tables are a user-facing contract (ad-hoc SQL, Grafana, notebooks). Add columns freely;
rename or remove only with a SCHEMA_VERSION bump. Times are UTC, durations in ms, identity text
that is not known is 'unknown' (Istio's convention), never NULL.
"""

from __future__ import annotations

from typing import Final

import pyarrow as pa

SCHEMA_VERSION: Final = 1
UNKNOWN: Final = "unknown"

_TS = pa.timestamp("us", tz="UTC")
_META = {b"meshlens.schema_version": str(SCHEMA_VERSION).encode()}


def _schema(*fields: tuple[str, pa.DataType]) -> pa.Schema:
    return pa.schema([pa.field(name, typ) for name, typ in fields], metadata=_META)


REQUESTS: Final = _schema(
    ("ts", _TS),
    ("duration_ms", pa.float64()),
    ("reporter", pa.string()),  # 'source' | 'destination'
    ("protocol", pa.string()),  # 'http' | 'grpc' | 'tcp'
    ("source_workload", pa.string()),
    ("source_namespace", pa.string()),
    ("source_canonical_service", pa.string()),
    ("source_version", pa.string()),
    ("source_principal", pa.string()),
    ("destination_service", pa.string()),  # FQDN host
    ("destination_service_name", pa.string()),
    ("destination_namespace", pa.string()),
    ("destination_workload", pa.string()),
    ("destination_canonical_service", pa.string()),
    ("destination_version", pa.string()),
    ("destination_principal", pa.string()),
    ("method", pa.string()),
    ("path", pa.string()),
    ("authority", pa.string()),
    ("response_code", pa.int32()),  # 0 = no response
    ("grpc_status", pa.string()),  # '' when not gRPC; else the numeric code as text, e.g. '14'
    ("response_flags", pa.string()),  # Envoy short codes, '-' for none
    ("request_bytes", pa.int64()),
    ("response_bytes", pa.int64()),
    ("mtls", pa.bool_()),
    ("upstream_cluster", pa.string()),
    ("request_id", pa.string()),
    ("trace_id", pa.string()),
    ("node_id", pa.string()),
    ("origin", pa.string()),  # 'envoy_als' | 'otel_als' | 'file'
    # Additions beyond v1's minimum (allowed: add freely).
    ("user_agent", pa.string()),
    ("destination_port", pa.int32()),
    ("source_address", pa.string()),
    ("connection_termination_details", pa.string()),
    ("response_code_details", pa.string()),
)

SPANS: Final = _schema(
    ("trace_id", pa.string()),  # hex
    ("span_id", pa.string()),
    ("parent_span_id", pa.string()),  # '' for roots
    ("name", pa.string()),
    ("kind", pa.string()),  # internal|server|client|producer|consumer
    ("start_ts", _TS),
    ("end_ts", _TS),
    ("duration_ms", pa.float64()),
    ("service_name", pa.string()),
    ("service_namespace", pa.string()),
    ("service_version", pa.string()),
    ("status_code", pa.string()),  # unset|ok|error
    ("status_message", pa.string()),
    ("http_method", pa.string()),
    ("http_status_code", pa.int32()),
    ("http_route", pa.string()),
    ("rpc_service", pa.string()),
    ("rpc_method", pa.string()),
    ("peer_service", pa.string()),
    ("server_address", pa.string()),
    ("attributes", pa.string()),  # JSON object
    ("resource_attributes", pa.string()),  # JSON object
    # Additions beyond v1's minimum.
    ("rpc_grpc_status_code", pa.int32()),
    ("db_system", pa.string()),
    ("db_name", pa.string()),
    ("messaging_system", pa.string()),
    ("links", pa.string()),  # JSON array of {"trace_id","span_id"}
    ("scope_name", pa.string()),
)

METRICS: Final = _schema(
    ("ts", _TS),
    ("name", pa.string()),
    ("kind", pa.string()),  # gauge|sum|histogram|exponential_histogram|summary
    ("unit", pa.string()),
    ("service_name", pa.string()),
    ("value", pa.float64()),
    ("count", pa.int64()),
    ("sum", pa.float64()),
    ("bucket_bounds", pa.list_(pa.float64())),
    ("bucket_counts", pa.list_(pa.int64())),
    ("is_monotonic", pa.bool_()),
    ("attributes", pa.string()),
    ("resource_attributes", pa.string()),
    # Additions: start time, temporality, exponential-histogram scale, summary quantiles.
    ("start_ts", _TS),
    ("temporality", pa.string()),  # 'cumulative' | 'delta' | ''
    ("scale", pa.int32()),
    ("quantiles", pa.string()),  # JSON [[q, v], ...] for summaries
)

LOGS: Final = _schema(
    ("ts", _TS),
    ("severity_text", pa.string()),
    ("severity_number", pa.int32()),
    ("body", pa.string()),
    ("service_name", pa.string()),
    ("trace_id", pa.string()),
    ("span_id", pa.string()),
    ("attributes", pa.string()),
    ("resource_attributes", pa.string()),
)

VERDICTS: Final = _schema(
    ("ts", _TS),
    ("rollout", pa.string()),
    ("service", pa.string()),
    ("baseline", pa.string()),
    ("canary", pa.string()),
    ("phase", pa.string()),
    ("canary_weight", pa.int32()),
    ("verdict", pa.string()),  # pass|fail|inconclusive
    ("score", pa.float64()),
    ("details", pa.string()),  # JSON: per-metric results, reasons, action taken
    # What the gate did: start|advance|hold|pause|resume|reapply|rollback|promote|none, or
    # flagger:<hook>:<status> / argo:<verdict> when another controller asked through the API.
    ("action", pa.string()),
    ("dry_run", pa.bool_()),
)

TABLES: Final[dict[str, pa.Schema]] = {
    "requests": REQUESTS,
    "spans": SPANS,
    "metrics": METRICS,
    "logs": LOGS,
    "verdicts": VERDICTS,
}

# The column each table is partitioned (dt/hr) by.
TIME_COLUMN: Final[dict[str, str]] = {
    "requests": "ts",
    "spans": "start_ts",
    "metrics": "ts",
    "logs": "ts",
    "verdicts": "ts",
}


# Columns whose values are mostly distinct within a file. Parquet dictionary-encodes the other
# columns; for these a dictionary only costs time (it is built, then abandoned) and space.
HIGH_CARDINALITY: Final[dict[str, frozenset[str]]] = {
    "requests": frozenset(
        {
            "ts",
            "duration_ms",
            "path",
            "request_id",
            "trace_id",
            "source_address",
            "request_bytes",
            "response_bytes",
        }
    ),
    "spans": frozenset(
        {"trace_id", "span_id", "parent_span_id", "start_ts", "end_ts", "duration_ms", "attributes"}
    ),
    "metrics": frozenset({"ts", "start_ts", "value", "count", "sum", "bucket_counts"}),
    "logs": frozenset({"ts", "body", "trace_id", "span_id", "attributes"}),
    "verdicts": frozenset({"ts", "details"}),
}


def empty_table(table: str) -> pa.Table:
    """An empty Arrow table with the schema of `table`."""
    return TABLES[table].empty_table()
