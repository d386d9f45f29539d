"""The catalog's base views over a store in object storage (`--data-dir s3://bucket/prefix`).

The bucket holds the same layout as a local data directory, written by any number of collectors
(`collector.store.objectstore`). Listing it and applying `collector.store.layout.visible` per
node gives the same file set a local reader would see: files covered by a compacted file of the
same node and partition are hidden, so a compaction in progress never counts rows twice.

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
from meshlens.collector.store.layout import ParquetSegment, partition_key, partitions, visible
from meshlens.collector.store.location import store_location
from meshlens.collector.store.objectstore import (
    S3Options,
    StoreUrl,
    list_remote,
    s3_filesystem,
)
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


def visible_keys(
    files: list[ParquetSegment], start: datetime | None = None, end: datetime | None = None
) -> list[str]:
    """Relative keys a reader scans: visible per node and partition, pruned to [start, end]'s
    dt/hr partitions (the same rules as `layout.visible_files`)."""
    shown = visible(files)
    if start is not None or end is not None:
        lo = partition_key(start) if start is not None else ("0000-00-00", "00")
        hi = partition_key(end) if end is not None else ("9999-99-99", "99")
        shown = [f for f in shown if lo <= (f.dt, f.hr) <= hi]
    return [str(f.path) for f in shown]


def table_partitions(data_dir: str | os.PathLike[str], table: str) -> list[tuple[str, str]]:
    """(dt, hr) of every partition of `table`, oldest first, in a local directory or a bucket
    (from the listing alone: no file is read)."""
    url = remote_location(data_dir)
    if url is None:
        return [(dt, hr) for dt, hr, _d in partitions(Path(data_dir), table)]
    try:
        listing = list_remote(s3_filesystem(S3Options.from_env()), url, tables=(table,))
    except OSError as exc:
        raise ObjectStoreError(str(url), f"cannot list objects: {exc}") from None
    return sorted({(f.seg.dt, f.seg.hr) for f in listing.values()})


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

    by_table: dict[str, list[ParquetSegment]] = {t: [] for t in TABLES}
    import pyarrow.fs as pafs

    try:
        fs = fs if fs is not None else s3_filesystem(S3Options.from_env())
        # A missing bucket would list as empty: a typo must not look like "no data yet".
        if fs.get_file_info(url.bucket).type == pafs.FileType.NotFound:
            raise ObjectStoreError(str(url), f"bucket {url.bucket!r} does not exist")
        listing = list_remote(fs, url)
    except OSError as exc:  # unreachable endpoint, bad credentials
        raise ObjectStoreError(str(url), f"cannot list objects: {exc}") from None
    for f in listing.values():
        by_table[f.seg.table].append(f.seg)
    start, end = (window.start, window.end) if window else (None, None)
    for table, files in by_table.items():
        empty = empty_select(table)
        keys = visible_keys(files, start, end)
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
