"""Two independent readers of the shared store's Delta tables, for tests: ours (the snapshot's
files, read with pyarrow) and ClickHouse (chdb's `deltaLake` table function, which reads the
log itself). Both read the same bucket on the moto server."""

from __future__ import annotations

import json
from typing import Any

import pyarrow.parquet as pq

from meshlens.collector.store.delta_table import open_table, snapshot_files, storage_options
from meshlens.collector.store.location import StoreUrl
from tests.collector.store.s3server import CREDENTIALS, S3Server


def our_ids(
    s3: S3Server, url: StoreUrl, table: str = "spans", column: str = "span_id"
) -> list[str]:
    """`column` of every row of the table's current snapshot, as our readers see it."""
    dt = open_table(url, table, storage_options(s3.options))
    if dt is None:
        return []
    fs = s3.fs()
    ids: list[str] = []
    for path, _size, _part in snapshot_files(dt):
        t = pq.read_table(url.path(f"{table}/{path}"), filesystem=fs, columns=[column])
        ids.extend(t.column(column).to_pylist())
    return ids


def our_files(s3: S3Server, url: StoreUrl, table: str = "spans") -> list[str]:
    dt = open_table(url, table, storage_options(s3.options))
    return [] if dt is None else sorted(p.rsplit("/", 1)[1] for p, _s, _p in snapshot_files(dt))


def clickhouse(s3: S3Server, url: StoreUrl, table: str, select: str, tail: str = "") -> list[Any]:
    """`SELECT <select> FROM <the Delta table> <tail>`, run by ClickHouse (chdb) in this
    process."""
    import chdb

    where = f"{s3.endpoint_url}/{url.path(table)}/"
    key, secret = CREDENTIALS["AWS_ACCESS_KEY_ID"], CREDENTIALS["AWS_SECRET_ACCESS_KEY"]
    sql = f"SELECT {select} FROM deltaLake('{where}', '{key}', '{secret}') {tail}"
    out = chdb.query(sql, "JSONCompact")
    rows: list[Any] = json.loads(out.bytes() or b'{"data": []}')["data"]
    return rows


def clickhouse_counts(
    s3: S3Server, url: StoreUrl, table: str = "spans", column: str = "span_id"
) -> tuple[int, int]:
    """(rows, distinct values of `column`) as ClickHouse counts them."""
    [[n, d]] = clickhouse(s3, url, table, f"count(), uniqExact({column})")
    return int(n), int(d)
