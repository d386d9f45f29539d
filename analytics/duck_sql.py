"""DuckDB SQL for the public tables' types: the DuckDB type of each Arrow column, an empty
SELECT with a table's columns, string and timestamp literals. Shared by the local catalog, the
SQL sandbox, the stored pairing and the object store source (which the catalog loads only for
s3:// locations)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Final

import pyarrow as pa

from meshlens.collector.store.schema import TABLES

_DUCK_TYPES: Final = {
    pa.float64(): "DOUBLE",
    pa.string(): "VARCHAR",
    pa.int32(): "INTEGER",
    pa.int64(): "BIGINT",
    pa.bool_(): "BOOLEAN",
    pa.list_(pa.float64()): "DOUBLE[]",
    pa.list_(pa.int64()): "BIGINT[]",
}


def duck_type(t: pa.DataType) -> str:
    if pa.types.is_timestamp(t):
        return "TIMESTAMPTZ" if t.tz else "TIMESTAMP"
    try:
        return _DUCK_TYPES[t]
    except KeyError:
        raise TypeError(f"no DuckDB type for Arrow type {t}") from None


def sql_string(text: str) -> str:
    """`text` as a SQL string literal (quotes doubled)."""
    return "'" + text.replace("'", "''") + "'"


def ts_literal(when: datetime) -> str:
    return f"TIMESTAMPTZ '{when.astimezone(UTC).isoformat()}'"


def empty_select(table: str) -> str:
    """A SELECT with the table's columns and types and no rows."""
    cols = ", ".join(f"NULL::{duck_type(f.type)} AS {f.name}" for f in TABLES[table])
    return f"SELECT {cols} WHERE false"
