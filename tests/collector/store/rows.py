"""Read back what the store wrote, the way any reader does (visible files only)."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from meshlens.collector.store.layout import visible_files
from meshlens.collector.store.parquet_write import conform


def read_table(data_dir: Path, table: str = "logs") -> pa.Table:
    files = visible_files(data_dir, table)
    if not files:
        return conform(table, pa.table({}))
    return pa.concat_tables(conform(table, pq.read_table(f)) for f in files)


def bodies(data_dir: Path) -> list[str]:
    """The `body` of every visible `logs` row (the fake decoder puts record ids there)."""
    return [str(b) for b in read_table(data_dir).column("body").to_pylist()]
