"""Read back what a collector stored: DuckDB over the visible Parquet files, as readers do."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb

from meshlens.collector.store.layout import visible_files
from tests.collector.conftest import wait_for


def query(
    data_dir: Path, table: str, select: str = "count(*)", where: str = "true", rest: str = ""
) -> list[Any]:
    """`select {select} from {table} where {where} {rest}` (rest: group by / order by)."""
    files = [str(f) for f in visible_files(data_dir, table)]
    if not files:
        return []
    con = duckdb.connect()
    try:
        return con.execute(
            f"select {select} from read_parquet(?, union_by_name=true) where {where} {rest}",
            [files],
        ).fetchall()
    finally:
        con.close()


def count_rows(data_dir: Path, table: str, where: str = "true") -> int:
    rows = query(data_dir, table, "count(*)", where)
    return int(rows[0][0]) if rows else 0


def wait_rows(
    data_dir: Path, table: str, n: int, timeout: float = 20.0, where: str = "true"
) -> int:
    """Wait until `table` has at least `n` rows; returns the count (callers assert equality)."""
    wait_for(
        lambda: count_rows(data_dir, table, where) >= n,
        timeout,
        f"{n} rows in {table}",
        interval=0.1,
    )
    return count_rows(data_dir, table, where)
