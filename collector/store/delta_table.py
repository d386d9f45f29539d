"""The shared store's tables: one Delta Lake table per public table, through delta-rs.

    s3://bucket/prefix/<table>/_delta_log/…                   the table's commits
    s3://bucket/prefix/<table>/dt=YYYY-MM-DD/hr=HH/<file>     data files (partition columns dt, hr)

Data files are our own Parquet files, uploaded unchanged and added by a commit (their columns
are the table's, the partition values live in the log). Every engine with a Delta reader —
ClickHouse's `deltaLake`, Trino's and Spark's Delta connectors, DuckDB's `delta` extension, our
own readers — sees a snapshot: a compaction or a retention pass is one commit, so a reader counts
a row once, and a file is visible only once the commit that adds it exists.

Several collectors commit to the same table at once. On S3, delta-rs commits with a conditional
PUT of the next log entry (`conditional_put=etag`; S3, MinIO and moto support it), so of two
writers racing for one version one wins and the other retries on top of it: no commit is lost.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Final

import pyarrow as pa

from meshlens.collector.errors import DeltaStoreError
from meshlens.collector.store.delta_plan import (
    CommittedFile,
    NodeState,
    Partition,
    TableCommit,
    app_id,
    table_path,
)
from meshlens.collector.store.layout import parse_segment_file
from meshlens.collector.store.location import S3Options, StoreUrl
from meshlens.collector.store.schema import TABLES

if TYPE_CHECKING:
    from deltalake import DeltaTable

log = logging.getLogger(__name__)

PARTITION_COLUMNS: Final = ("dt", "hr")
# Table properties set at creation. A checkpoint every 10 commits, not 100: each collector commits
# every few seconds, and delta-rs's commit time grows with the JSON entries since the last
# checkpoint (bench/delta_store.py: 5 ms after one, 25 ms mean towards the 100th; 6-9 ms with 10).
# Log entries older than two days are dropped at checkpoints (otherwise 30 days of small files),
# and old application transactions expire (there is one per node and hour).
TABLE_CONFIGURATION: Final = {
    "delta.checkpointInterval": "10",
    "delta.logRetentionDuration": "interval 2 days",
    "delta.setTransactionRetentionDuration": "interval 7 days",
}


def table_schema(table: str) -> pa.Schema:
    """The Delta table's schema: the public table's columns, then the partition columns."""
    base = TABLES[table]
    fields = [*base, pa.field("dt", pa.string()), pa.field("hr", pa.string())]
    return pa.schema(fields)


def storage_options(opts: S3Options) -> dict[str, str]:
    """delta-rs options for an S3-compatible store (credentials from the AWS_* environment)."""
    out = {"AWS_REGION": opts.region, "conditional_put": "etag"}
    if opts.endpoint_url:
        out["AWS_ENDPOINT_URL"] = opts.endpoint_url
        if opts.endpoint_url.startswith("http://"):
            out["AWS_ALLOW_HTTP"] = "true"
    return out


def table_uri(url: StoreUrl, table: str) -> str:
    return f"s3://{url.path(table)}"


def open_table(
    url: StoreUrl, table: str, options: Mapping[str, str], *, create: bool = False
) -> DeltaTable | None:
    """The table at `url`/`table`, or None if it does not exist yet (created when `create`)."""
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    uri = table_uri(url, table)
    opts = dict(options)
    try:
        try:
            return DeltaTable(uri, storage_options=opts)
        except TableNotFoundError:
            if not create:
                return None
        try:
            return DeltaTable.create(
                uri,
                schema=table_schema(table),
                partition_by=list(PARTITION_COLUMNS),
                mode="ignore",
                configuration=dict(TABLE_CONFIGURATION),
                storage_options=opts,
            )
        except Exception:  # another collector created it at the same moment: use theirs
            return DeltaTable(uri, storage_options=opts)
    except Exception as exc:
        raise DeltaStoreError(uri, f"cannot open: {exc}") from exc


def add_missing_columns(dt: DeltaTable, table: str) -> list[str]:
    """Add the public table's columns the Delta table lacks (a metadata commit); returns their
    names. A commit with a wider schema does not widen the table: after an upgrade that adds a
    column, engines reading the log would not see it otherwise."""
    from deltalake import Schema

    have = {f.name for f in dt.schema().fields}
    missing = [f for f in Schema.from_arrow(table_schema(table)).fields if f.name not in have]
    if missing:
        dt.alter.add_columns(missing)
        log.info("delta table %s: added columns %s", table, [f.name for f in missing])
    return [f.name for f in missing]


def snapshot_files(dt: DeltaTable) -> list[tuple[str, int, Partition]]:
    """(path relative to the table root, size, (dt, hr)) of every file of the snapshot."""
    actions = pa.table(dt.get_add_actions(flatten=True))
    paths = actions.column("path").to_pylist()
    sizes = actions.column("size_bytes").to_pylist()
    dts = actions.column("partition.dt").to_pylist()
    hrs = actions.column("partition.hr").to_pylist()
    return [(p, int(s), (d, h)) for p, s, d, h in zip(paths, sizes, dts, hrs, strict=True)]


def node_state(dt: DeltaTable, table: str, node: str) -> NodeState:
    """This node's active files and its per-partition watermarks, read from the snapshot."""
    from pathlib import Path

    files: dict[str, CommittedFile] = {}
    parts: set[Partition] = set()
    for path, size, part in snapshot_files(dt):
        seg = parse_segment_file(Path(table, path), table)
        if seg is None or seg.node != node:
            continue
        files[path] = CommittedFile(seg, path, size)
        parts.add(part)
    marks: dict[Partition, int] = {}
    for part in parts:
        v = dt.transaction_version(app_id(node, part))
        if v is not None:
            marks[part] = v
    return NodeState(files, marks)


def _stats(rows: int) -> str:
    # Row counts only: min/max of the time column would let engines skip files, but a rounded
    # bound would make them skip rows; dt/hr partition pruning does most of that work.
    return json.dumps({"numRecords": rows})


def commit(
    dt: DeltaTable,
    table: str,
    node: str,
    change: TableCommit,
    rows: Mapping[str, int],
) -> None:
    """Commit `change` (its files already uploaded) as one Delta transaction; `rows` gives the
    row count of each added file by key."""
    from deltalake.transaction import AddAction, CommitProperties, RemoveAction, Transaction

    now_ms = int(time.time() * 1000)
    # A pure rearrangement (compaction of committed rows) carries dataChange=false, as OPTIMIZE
    # does, so streaming readers of the table do not read its rows again.
    data_change = bool(change.watermarks) or not change.adds
    actions: list[AddAction | RemoveAction] = []
    for f in change.adds:
        actions.append(
            AddAction(
                table_path(f.seg),
                f.size,
                {"dt": f.seg.dt, "hr": f.seg.hr},
                int(f.mtime * 1000),
                data_change,
                _stats(rows[f.key]),
            )
        )
    for c in change.removes:
        actions.append(
            RemoveAction(c.path, data_change, now_ms, c.size, {"dt": c.seg.dt, "hr": c.seg.hr})
        )
    txns = [Transaction(app_id(node, p), v, now_ms) for p, v in sorted(change.watermarks.items())]
    # Commit on top of the newest version: delta-rs's conflict check counts a commit made after
    # the snapshot it read as concurrent, and this shipper's own previous commit carries the same
    # application ids (a ConcurrentTransaction error).
    dt.update_incremental()
    dt.create_write_transaction(
        actions,
        "append",
        table_schema(table),
        list(PARTITION_COLUMNS),
        commit_properties=CommitProperties(app_transactions=txns, max_commit_retries=100),
    )


def vacuum(dt: DeltaTable, grace_hours: int, *, full: bool = False) -> list[str]:
    """Delete files removed from the table more than `grace_hours` ago (with `full`, also files
    no commit ever added, e.g. uploads of a collector that died before committing them)."""
    return list(
        dt.vacuum(
            retention_hours=max(0, grace_hours),
            dry_run=False,
            enforce_retention_duration=False,
            full=full,
        )
    )


def snapshot_keys(
    url: StoreUrl, tables: Iterable[str], options: Mapping[str, str]
) -> dict[str, list[tuple[str, Partition]]]:
    """Per table, the object keys (relative to the store) of its current snapshot's files."""
    out: dict[str, list[tuple[str, Partition]]] = {}
    for table in tables:
        dt = open_table(url, table, options)
        files = [] if dt is None else snapshot_files(dt)
        out[table] = [(f"{table}/{path}", part) for path, _size, part in files]
    return out
