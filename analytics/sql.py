"""The SQL sandbox behind `meshlens sql` and `POST /api/v1/sql`.

Guards, outermost first:
  1. exactly one statement, and it must be a SELECT (DuckDB's own parser decides, no regex);
  2. DuckDB's configuration (`sandbox`): file access limited to the store's table directories,
     no extension install/load, memory limit, spill files in a private directory of their own
     under `<data>/.tmp-query/` with a size cap, configuration locked;
  3. a timer that interrupts the running statement after `timeout_s`;
  4. at most `max_rows` rows come back, with `truncated` set when there were more.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import math
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import duckdb
import pyarrow as pa

from meshlens.analytics.catalog import BASE_VIEWS, connect
from meshlens.analytics.duck_sql import sql_string
from meshlens.analytics.errors import QueryError, QueryRejected, QueryTimeout
from meshlens.analytics.objectstore_source import remote_location
from meshlens.analytics.window import TimeWindow
from meshlens.collector.store.layout import PAIRED_TABLE

DEFAULT_MAX_ROWS: Final = 10_000
DEFAULT_TIMEOUT_S: Final = 30.0
DEFAULT_MEMORY_LIMIT: Final = "2GB"
DEFAULT_TEMP_LIMIT: Final = "1GiB"
# Spill files of queries larger than memory; DuckDB's default is `.tmp` in the working
# directory, outside the data directory and its disk budget.
TEMP_DIR_NAME: Final = ".tmp-query"

_WHY_NOT: Final[Mapping[str, str]] = {
    "COPY": "COPY reads or writes files; the SQL surface is read-only",
    "EXPORT": "EXPORT DATABASE writes files; the SQL surface is read-only",
    "ATTACH": "ATTACH opens other databases; only the store's views are available",
    "DETACH": "DETACH changes the catalog; the SQL surface is read-only",
    "LOAD": "extensions cannot be installed or loaded",
    "SET": "settings cannot be changed (the configuration is locked)",
    "VARIABLE_SET": "settings cannot be changed (the configuration is locked)",
    "PRAGMA": "PRAGMA changes or inspects settings; use SELECT * FROM duckdb_settings()",
    "CREATE": "the SQL surface is read-only (CREATE)",
    "CREATE_FUNC": "the SQL surface is read-only (CREATE FUNCTION)",
    "INSERT": "the SQL surface is read-only (INSERT)",
    "UPDATE": "the SQL surface is read-only (UPDATE)",
    "DELETE": "the SQL surface is read-only (DELETE)",
    "DROP": "the SQL surface is read-only (DROP)",
    "ALTER": "the SQL surface is read-only (ALTER)",
    "TRANSACTION": "transactions are not needed for read-only queries",
    "CALL": "CALL runs table functions and checkpoints; use SELECT * FROM fn()",
}


@dataclass(frozen=True, slots=True)
class QueryResult:
    columns: tuple[str, ...]
    rows: tuple[tuple[Any, ...], ...]
    truncated: bool
    elapsed_s: float
    types: tuple[str, ...] = ()
    arrow: pa.Table | None = field(default=None, compare=False, repr=False)

    def records(self) -> list[dict[str, Any]]:
        """Rows as JSON-ready objects (times as ISO 8601, decimals as floats)."""
        return [
            {c: json_value(v) for c, v in zip(self.columns, row, strict=True)} for row in self.rows
        ]

    def to_json(self) -> dict[str, Any]:
        return {
            "columns": list(self.columns),
            "types": list(self.types),
            "rows": self.records(),
            "row_count": len(self.rows),
            "truncated": self.truncated,
            "elapsed_s": round(self.elapsed_s, 6),
        }


def json_value(v: Any) -> Any:
    if isinstance(v, dt.datetime | dt.date | dt.time):
        return v.isoformat()
    if isinstance(v, dt.timedelta):
        return v.total_seconds()
    if isinstance(v, decimal.Decimal):
        return float(v)
    if isinstance(v, bytes):
        return base64.b64encode(v).decode()
    if isinstance(v, uuid.UUID):
        return str(v)
    if isinstance(v, list | tuple):
        return [json_value(x) for x in v]
    if isinstance(v, dict):
        return {str(k): json_value(x) for k, x in v.items()}
    if isinstance(v, float) and v != v:  # NaN is not JSON
        return None
    return v


def check_statement(sql: str) -> str:
    """The single SELECT statement in `sql`, or QueryRejected / QueryError saying why not."""
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as exc:
        raise QueryError(sql, str(exc).strip()) from None
    if not statements:
        raise QueryRejected(sql, "empty query: give one SELECT statement")
    if len(statements) > 1:
        raise QueryRejected(sql, f"{len(statements)} statements given; run exactly one SELECT")
    stmt = statements[0]
    kind = stmt.type.name
    if kind != "SELECT":
        why = _WHY_NOT.get(kind, "only SELECT statements are allowed")
        raise QueryRejected(sql, f"{kind} statement not allowed: {why}")
    return stmt.query


def _rejection(sql: str, exc: duckdb.Error) -> QueryError:
    msg = str(exc).strip()
    if isinstance(exc, duckdb.PermissionException):
        if "xtension" in msg:
            return QueryRejected(sql, f"extensions cannot be installed or loaded ({msg})")
        return QueryRejected(sql, f"file access outside the data directory is not allowed ({msg})")
    if "configuration has been locked" in msg:
        return QueryRejected(sql, f"settings cannot be changed ({msg})")
    return QueryError(sql, msg)


def spill_dir(data_dir: Path, temp_root: Path | None = None) -> Path | None:
    """A fresh directory name for one query's spill files (DuckDB creates it only when it
    spills, and deletes it on close), or None (no spilling) for an object store or a data
    directory this process cannot write to."""
    if remote_location(data_dir) or not Path(data_dir).is_dir():  # no store: nothing to spill
        return None
    root = temp_root if temp_root is not None else Path(data_dir) / TEMP_DIR_NAME
    try:
        root.mkdir(parents=True, exist_ok=True)  # DuckDB creates only the last level
    except OSError:
        return None
    return root.resolve() / f"q-{uuid.uuid4().hex}"


def sandbox(
    conn: duckdb.DuckDBPyConnection,
    data_dir: Path,
    *,
    memory_limit: str,
    temp_dir: Path | None,
    temp_limit: str,
) -> None:
    """DuckDB's own guards (its "Securing DuckDB" page). Readable: the table directories and
    the stored paired hours only, not the data directory itself, because DuckDB lets a query
    read its temp directory and that lies inside it (and the WAL and gate state need no SQL).
    Its own spill directory is private to this query, so it holds nothing the query could not
    read anyway."""
    remote = remote_location(data_dir)
    readable = (*BASE_VIEWS, PAIRED_TABLE)  # the tables and the hours stored paired
    tables = [] if remote else [sql_string(str(data_dir.resolve() / t) + "/") for t in readable]
    spill = sql_string(str(temp_dir)) if temp_dir is not None else "''"  # '' = never spill
    for stmt in (
        f"SET memory_limit = {sql_string(memory_limit)}",
        f"SET temp_directory = {spill}",
        f"SET max_temp_directory_size = {sql_string(temp_limit)}",
        "SET autoinstall_known_extensions = false",
        "SET autoload_known_extensions = false",
        f"SET allowed_directories = [{', '.join(tables)}]",
        "SET enable_external_access = false",
        "SET lock_configuration = true",
    ):
        conn.execute(stmt)


def run_query(
    data_dir: Path,
    sql: str,
    *,
    max_rows: int = DEFAULT_MAX_ROWS,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    window: TimeWindow | None = None,
    memory_limit: str = DEFAULT_MEMORY_LIMIT,
    temp_root: Path | None = None,
    temp_limit: str = DEFAULT_TEMP_LIMIT,
) -> QueryResult:
    """Run one read-only SELECT over the store's views with the sandbox guards. Spill files go
    to a private directory under `temp_root` (default `<data>/.tmp-query`), at most
    `temp_limit` of them."""
    if max_rows < 0:
        raise QueryRejected(sql, f"max_rows must be >= 0, got {max_rows}")
    if not math.isfinite(timeout_s):
        raise QueryRejected(sql, f"timeout must be a finite number of seconds, got {timeout_s}")
    query = check_statement(sql)
    started = time.perf_counter()
    conn = connect(Path(data_dir), window)
    try:
        sandbox(
            conn,
            Path(data_dir),
            memory_limit=memory_limit,
            temp_dir=spill_dir(Path(data_dir), temp_root),
            temp_limit=temp_limit,
        )
    except BaseException:
        conn.close()
        raise
    timed_out = threading.Event()

    def _interrupt() -> None:
        timed_out.set()
        conn.interrupt()

    timer = threading.Timer(timeout_s, _interrupt) if timeout_s > 0 else None
    try:
        if timer is not None:
            timer.daemon = True
            timer.start()
        try:
            # A streaming Arrow reader: stop pulling once the row cap is passed.
            reader = conn.sql(query).to_arrow_reader(min(max(max_rows + 1, 1), 65_536))
            batches: list[pa.RecordBatch] = []
            have = 0
            for batch in reader:
                batches.append(batch)
                have += batch.num_rows
                if have > max_rows:
                    break
            schema = reader.schema
        except duckdb.InterruptException:
            raise QueryTimeout(sql, timeout_s) from None
        except duckdb.Error as exc:
            if timed_out.is_set():
                raise QueryTimeout(sql, timeout_s) from None
            raise _rejection(sql, exc) from None
    finally:
        if timer is not None:
            timer.cancel()
        conn.close()
    table = pa.Table.from_batches(batches, schema=schema)
    truncated = table.num_rows > max_rows
    table = table.slice(0, max_rows)
    # Column-wise, so duplicate column names (SELECT 1, 1) survive.
    rows = tuple(zip(*(c.to_pylist() for c in table.columns), strict=True))
    types = tuple(str(f.type) for f in table.schema)
    return QueryResult(
        tuple(table.column_names), rows, truncated, time.perf_counter() - started, types, table
    )
