"""Rows of the `requests` table as plain dicts -> an Arrow table (shared by the Envoy decoders).

Each decoder builds one dict per request with the keys of `collector.store.schema.REQUESTS`
(`ts` as integer microseconds since the epoch, UTC); missing identity text becomes 'unknown',
missing numbers stay null.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final

import pyarrow as pa

from meshlens.collector.store.schema import REQUESTS, UNKNOWN

IDENTITY_COLUMNS: Final = (
    "reporter",
    "protocol",
    "source_workload",
    "source_namespace",
    "source_canonical_service",
    "source_version",
    "source_principal",
    "destination_service",
    "destination_service_name",
    "destination_namespace",
    "destination_workload",
    "destination_canonical_service",
    "destination_version",
    "destination_principal",
    "upstream_cluster",
    "node_id",
)
# Text columns where '' is the documented "none" (not 'unknown').
_EMPTY_OK: Final = {"grpc_status"}
_DEFAULTS: Final[dict[str, Any]] = {"response_flags": "-", "response_code": 0}


def rows_to_table(rows: Iterable[Mapping[str, Any]]) -> pa.Table:
    """dict rows -> a `requests` table (exact schema, column order)."""
    rows = list(rows)
    return columns_to_table(
        {f.name: [row.get(f.name) for row in rows] for f in REQUESTS}, len(rows)
    )


def columns_to_table(cols: Mapping[str, list[Any]], n: int | None = None) -> pa.Table:
    """Column lists (any subset of the requests columns, equal lengths) -> a `requests`
    table; absent columns are null (identity text 'unknown')."""
    if n is None:
        n = len(next(iter(cols.values()))) if cols else 0
    columns: dict[str, pa.Array] = {}
    for field in REQUESTS:
        name = field.name
        values = cols.get(name)
        if values is None:
            values = [None] * n
        if name in IDENTITY_COLUMNS:
            values = [UNKNOWN if v is None or v == "" else v for v in values]
        elif name in _DEFAULTS:
            default = _DEFAULTS[name]
            values = [default if v is None or v == "" else v for v in values]
        elif name in _EMPTY_OK:
            values = ["" if v is None else v for v in values]
        if pa.types.is_timestamp(field.type):
            columns[name] = pa.array(values, pa.int64()).cast(field.type)
        else:
            columns[name] = pa.array(values, field.type)
    return pa.Table.from_pydict(columns, schema=REQUESTS)
