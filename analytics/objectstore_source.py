"""The catalog's base views over the shared store (`--data-dir s3://bucket/prefix`).

The bucket holds one Delta Lake table per public table, committed to by any number of
collectors (`collector.store.objectstore`, `collector.store.delta_table`). A reader takes each
table's current snapshot (its log, not a listing of the bucket) and scans exactly the files the
snapshot names, so a compaction or retention commit is seen whole or not at all and a file
still uploading is never read.

DuckDB's httpfs extension is not used (extensions are neither installed nor loaded, and the
sandbox forbids it): pyarrow reads the objects through our `S3FileSystem`, and each table is
registered in DuckDB as an Arrow dataset behind a view with the local catalog's name, columns
and types. So with `--data-dir s3://...`, SQL sees the registered views only; DuckDB itself
still has `enable_external_access = false` and cannot open any file or URL.

Endpoint and region come from MESHLENS_S3_ENDPOINT_URL / MESHLENS_S3_REGION, credentials from
the standard AWS environment variables.
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Final

import duckdb

from meshlens.analytics.duck_sql import empty_select, ts_literal
from meshlens.analytics.errors import ObjectStoreError
from meshlens.analytics.window import TimeWindow
from meshlens.collector.store.delta_table import snapshot_keys, storage_options
from meshlens.collector.store.layout import partition_key, partitions
from meshlens.collector.store.location import S3Options, StoreUrl, s3_filesystem, store_location
from meshlens.collector.store.schema import TABLES, TIME_COLUMN

if TYPE_CHECKING:
    import pyarrow.fs as pafs

ARROW_PREFIX: Final = "_meshlens_arrow_"


def remote_location(data_dir: str | os.PathLike[str]) -> StoreUrl | None:
    """The object store `data_dir` names (s3://bucket/prefix), or None for a local directory."""
    try:
        return store_location(data_dir)
    except ValueError as exc:
        raise ObjectStoreError(os.fspath(data_dir), str(exc)) from None


Keyed = list[tuple[str, tuple[str, str]]]  # (object key, (dt, hr))


def window_keys(
    files: Keyed, start: datetime | None = None, end: datetime | None = None
) -> list[str]:
    """Object keys of a snapshot pruned to [start, end]'s dt/hr partitions."""
    lo = partition_key(start) if start is not None else ("0000-00-00", "00")
    hi = partition_key(end) if end is not None else ("9999-99-99", "99")
    return [key for key, part in files if lo <= part <= hi]


def _snapshot(url: StoreUrl, tables: tuple[str, ...]) -> dict[str, Keyed]:
    try:
        return snapshot_keys(url, tables, storage_options(S3Options.from_env()))
    except Exception as exc:  # unreachable endpoint, bad credentials, unreadable log
        raise ObjectStoreError(str(url), f"cannot read the Delta tables: {exc}") from None


def table_partitions(data_dir: str | os.PathLike[str], table: str) -> list[tuple[str, str]]:
    """(dt, hr) of every partition of `table`, oldest first, in a local directory or a bucket
    (from the directory listing or the table's snapshot: no data file is read)."""
    url = remote_location(data_dir)
    if url is None:
        return [(dt, hr) for dt, hr, _d in partitions(Path(data_dir), table)]
    return sorted({part for _key, part in _snapshot(url, (table,))[table]})


def create_remote_views(
    conn: duckdb.DuckDBPyConnection,
    url: StoreUrl,
    window: TimeWindow | None,
    *,
    fs: pafs.FileSystem | None = None,
) -> None:
    """CREATE VIEW <table> for every base table of the public schema over the objects of `url`
    (an empty view with the right types when there are none)."""
    import pyarrow.dataset as ds
    import pyarrow.fs as pafs

    try:
        fs = fs if fs is not None else s3_filesystem(S3Options.from_env())
        # A missing bucket would read as empty: a typo must not look like "no data yet".
        if fs.get_file_info(url.bucket).type == pafs.FileType.NotFound:
            raise ObjectStoreError(str(url), f"bucket {url.bucket!r} does not exist")
    except OSError as exc:  # unreachable endpoint, bad credentials
        raise ObjectStoreError(str(url), f"cannot reach the object store: {exc}") from None
    by_table = _snapshot(url, tuple(TABLES))
    start, end = (window.start, window.end) if window else (None, None)
    for table, files in by_table.items():
        empty = empty_select(table)
        keys = window_keys(files, start, end)
        if not keys:
            conn.execute(f"CREATE VIEW {table} AS {empty}")
            continue
        # The table's schema: columns older files lack come back as nulls (schema evolution).
        dataset = ds.dataset(
            [url.path(k) for k in keys], schema=TABLES[table], format="parquet", filesystem=fs
        )
        name = ARROW_PREFIX + table
        conn.register(name, dataset)
        scan = f"SELECT * FROM {name}"
        if window is not None:
            col = TIME_COLUMN[table]
            scan += (
                f" WHERE {col} >= {ts_literal(window.start)} AND {col} < {ts_literal(window.end)}"
            )
        conn.execute(f"CREATE VIEW {table} AS {empty} UNION ALL BY NAME {scan}")
