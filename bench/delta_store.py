"""Benchmark: what the shared store's Delta Lake tables cost, beside today's local layout, in one
run (bounded: about 7 minutes on 2 shared cores by default).

    .venv/bin/python -m bench.delta_store
    .venv/bin/python -m bench.delta_store --rows 1M 10M 50M      # larger query datasets
    .venv/bin/python -m bench.delta_store --rows 10M --s3-rows 10M --no-ingest
        # the product over moto at 10M: mind memory (graph-s3 peaked at 2.6 GB at 1M)
    .venv/bin/python -m bench.delta_store --no-ingest --rows 10M --cpus 2    # queries only

1. Ingest before/after. `meshlens serve` as bench/ingest.py runs it (same load generator, same
   measurement: bench.ingest.measure), once as today (the local layout only) and once with
   `--object-store s3://...` on a moto S3 server (tests/collector/store/s3server.py, in a child
   process) and `--ship-interval 0.2s`: the shipper uploads and commits to Delta while the load
   runs. For the Delta run it then waits until the table holds every row (catch-up), reads
   meshlens_objectstore_commits_total / lag_seconds / pending_files / errors_total from
   /metrics, stops the server (its final round) and checks that every item the load generator
   sent is in the Delta table exactly once: rows and distinct ids as our reader sees the
   snapshot (tests/collector/store/delta_readers.py: our_ids) and as ClickHouse's `deltaLake`
   reads the log (chdb). The load generator resends 8 (traces) or 17 (ALS) fixed payloads, so
   distinct ids are few; the row counts are what must match.
2. Local Delta vs today's layout. The local store writes each converted WAL segment's files
   and is done (a file is visible once renamed into its partition). A local Delta table would
   add one commit per segment: the segments of the layout run's data directory are committed,
   one segment per commit, to a local Delta table over hard links of the files (zero copy),
   with collector.store.delta_table.commit (the shipper's commit: AddActions, row-count stats,
   per-partition application transactions). `--commits` commits (segments reused under new
   names) cross delta-rs's checkpoint at version 100. Beside it, the layout's own cost for the
   same segment: write_table with fsync (what conversion already pays). Printed: ms per commit,
   the ceiling in segments/s (one table, commits serialized), and the segment rate the
   measured ingest needs (sustained items/s over mean rows per segment).
3. Queries through the table format. For each `--rows` dataset of bench/query.py
   (.bench-data/requests-N), a local Delta table over a hard-linked copy of its requests/
   directory (.bench-data/delta-requests-N/requests: one commit of AddActions pointing at the
   files in place, partition values dt/hr from the directory names, schema
   delta_table.table_schema("requests"); rebuilt each run). In child processes pinned to
   `--cpus` cores (bench.query.measure, median of `--repeat`):
     floor        DuckDB group-by (bench.query.floor_sql) over the directory listing
     floor-delta  the same over the Delta snapshot's file list (opening the log included)
     chdb         ClickHouse (chdb) over the files (bench.query.chdb_sql)
     chdb-delta   the same group-by through chdb's deltaLakeLocal() (reads the log itself)
     graph, signals             the product over the plain directory, settled hours read as
                                stored paired by maintenance (as bench/query.py)
     graph-live, signals-live   the product over the hard-linked copy: the same requests with
                                no stored pairing, so `traffic` pairs live
     graph-s3, signals-s3       the product over the Delta snapshot in a moto bucket
                                (--data-dir s3://..., analytics.objectstore_source: pyarrow reads
                                the snapshot's objects; `traffic` pairs live there, so compare
                                with graph-live), at `--s3-rows` only
     chdb-s3      the group-by through chdb's deltaLake() on the same bucket
   Ratios: to the floor and to chdb of the same size and cores, and to the row's pair (`vs`).
   moto serves S3 from one Python process, unpinned: the s3 rows measure moto as much as us.

The load average is printed before and after each part: the machine is shared.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench import ingest, query

if TYPE_CHECKING:
    from deltalake import DeltaTable

    from meshlens.collector.store.layout import ParquetSegment
    from tests.collector.store.s3server import S3Server

ROOT = Path(__file__).resolve().parents[1]
ID_COLUMN = {"spans": "span_id", "requests": "request_id"}
TABLE_OF = {"traces": "spans", "als": "requests"}


# ---- Delta helpers -----------------------------------------------------------------------------


def create_table(
    uri: str, table: str, options: dict[str, str] | None = None, checkpoint_interval: int = 0
) -> DeltaTable:
    """An empty Delta table at `uri` (a local path or s3://) with the shared store's schema,
    partitioning and properties (what delta_table.open_table creates in the bucket);
    `checkpoint_interval` overrides delta-rs's default of a checkpoint every 100 versions."""
    from deltalake import DeltaTable

    from meshlens.collector.store.delta_table import (
        PARTITION_COLUMNS,
        TABLE_CONFIGURATION,
        table_schema,
    )

    config = dict(TABLE_CONFIGURATION)
    if checkpoint_interval:
        config["delta.checkpointInterval"] = str(checkpoint_interval)
    return DeltaTable.create(
        uri,
        schema=table_schema(table),
        partition_by=list(PARTITION_COLUMNS),
        configuration=config,
        storage_options=options,
    )


def commit_segments(
    dt: DeltaTable, table: str, node: str, segs: list[ParquetSegment], rows: dict[str, int]
) -> None:
    """One Delta commit adding `segs` (files already under the table root), as the shipper
    commits: collector.store.delta_table.commit with per-partition watermarks."""
    from meshlens.collector.store.delta_plan import LocalFile, Partition, TableCommit
    from meshlens.collector.store.delta_table import commit
    from meshlens.collector.store.objectstore import segment_key

    adds = []
    marks: dict[Partition, int] = {}
    for s in segs:
        st = s.path.stat()
        adds.append(LocalFile(s, segment_key(s), st.st_size, st.st_mtime))
        marks[(s.dt, s.hr)] = max(marks.get((s.dt, s.hr), -1), s.hi)
    commit(dt, table, node, TableCommit(tuple(adds), (), marks), rows)


def table_rows(dt: DeltaTable) -> int:
    """Rows of the snapshot, from the log's per-file stats (no data file is read)."""
    import pyarrow as pa

    actions = pa.table(dt.get_add_actions(flatten=True))
    return int(sum(n or 0 for n in actions.column("num_records").to_pylist()))


def _row_count(path: Path) -> int:
    import pyarrow.parquet as pq

    return int(pq.read_metadata(path).num_rows)


# ---- 1. ingest before / after -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ShipCheck:
    commits: float
    lag_s: float
    pending: float
    errors: float
    uploaded_mib: float
    catchup_s: float  # after the WAL drained, until the table held every row
    moto_cpu_s: float  # CPU the moto server used from the load's start to the catch-up
    sustained: float  # every item / (first request .. all rows committed to Delta)
    ours: tuple[int, int]  # (rows, distinct ids) by our reader of the snapshot
    clickhouse: tuple[int, int]  # the same by chdb's deltaLake()
    sent: int

    @property
    def ok(self) -> bool:
        return (
            self.ours[0] == self.clickhouse[0] == self.sent
            and self.ours[1] == self.clickhouse[1]
            and self.pending == 0
        )


@dataclass(frozen=True, slots=True)
class IngestRow:
    mode: str  # "layout" or "layout+delta"
    cpus: int
    kind: str
    r: dict[str, Any]
    exact: str  # local Parquet holds every sent item once, clean exit
    data_dir: Path
    ship: ShipCheck | None


def moto_pid() -> int | None:
    """The moto server's process (s3_server's multiprocessing child of this process)."""
    me = os.getpid()
    for task in Path(f"/proc/{me}/task").iterdir():
        for pid in (task / "children").read_text().split():
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if b"spawn_main" in cmd and b"resource_tracker" not in cmd:
                return int(pid)
    return None


def cpu_s(pid: int | None) -> float:
    """CPU seconds (user + system) used so far by `pid`."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def scrape(api_port: int) -> dict[str, float]:
    """meshlens_objectstore_* samples from /metrics (at the end only: a scrape also runs the
    analytics exporters, which would perturb the measurement)."""
    url = f"http://127.0.0.1:{api_port}/metrics"
    with urllib.request.urlopen(url, timeout=30) as resp:
        text = resp.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("meshlens_objectstore_"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def wait_committed(s3: S3Server, url: Any, table: str, sent: int, timeout: float) -> float:
    """Seconds until the Delta table's snapshot holds `sent` rows (per the log's stats)."""
    from meshlens.collector.store.delta_table import open_table, storage_options

    t0 = time.monotonic()
    dt = None
    while time.monotonic() - t0 < timeout:
        if dt is None:
            dt = open_table(url, table, storage_options(s3.options))
        else:
            dt.update_incremental()
        if dt is not None and table_rows(dt) >= sent:
            break
        time.sleep(0.1)
    return time.monotonic() - t0


def run_ingest(
    tmp: Path, s3: S3Server | None, cpus: int, kind: str, args: argparse.Namespace
) -> IngestRow:
    from tests.collector.store.delta_readers import clickhouse_counts, our_ids

    table = TABLE_OF[kind]
    url = s3.bucket("p") if s3 is not None else None
    extra = [] if url is None else ["--object-store", str(url), "--ship-interval", "0.2s"]
    srv = ingest.start_meshlens(tmp, cpus, extra)
    assert srv.data_dir is not None and srv.api_port is not None
    ship_extra: dict[str, float] = {}
    moto = moto_pid() if s3 is not None else None
    moto0 = cpu_s(moto)
    try:
        r = ingest.measure(srv, kind, args)
        if s3 is not None and url is not None:
            catchup = wait_committed(s3, url, table, r["sent"], args.ship_timeout)
            # the S3 server shares this machine's cores with serve (a real S3 would not)
            moto_cpu = cpu_s(moto) - moto0
            ship_extra = {"catchup": catchup, "moto_cpu": moto_cpu, **scrape(srv.api_port)}
    finally:
        rc = ingest.stop(srv)
    stored = ingest.count_parquet_rows(srv.data_dir, table)
    exact = "yes" if stored == r["sent"] and rc == 0 else f"no ({stored}/{r['sent']}, rc {rc})"
    ship = None
    if s3 is not None and url is not None:
        ids = our_ids(s3, url, table, ID_COLUMN[table])
        ch = clickhouse_counts(s3, url, table, ID_COLUMN[table])
        # bench.ingest's sustained rate is sent / (first request .. WAL drained): add catch-up
        total_s = r["sent"] / r["sustained"] + ship_extra["catchup"]
        ship = ShipCheck(
            commits=ship_extra.get("meshlens_objectstore_commits_total", -1),
            lag_s=ship_extra.get("meshlens_objectstore_lag_seconds", -1),
            pending=ship_extra.get("meshlens_objectstore_pending_files", -1),
            errors=ship_extra.get("meshlens_objectstore_errors_total", -1),
            uploaded_mib=ship_extra.get("meshlens_objectstore_uploaded_bytes_total", 0) / 2**20,
            catchup_s=ship_extra["catchup"],
            moto_cpu_s=ship_extra["moto_cpu"],
            sustained=r["sent"] / total_s,
            ours=(len(ids), len(set(ids))),
            clickhouse=ch,
            sent=r["sent"],
        )
    mode = "layout" if s3 is None else "layout+delta"
    print(f"... {mode} cpus={cpus} {kind}: {r['rate']:,.0f}/s acked", file=sys.stderr)
    return IngestRow(mode, cpus, kind, r, exact, srv.data_dir, ship)


def print_ingest(rows: list[IngestRow]) -> None:
    print(
        f"{'server':<13} {'cpus':>4} {'signal':<6} {'acked/s':>9} {'sustained/s':>11} "
        f"{'drain s':>7} {'WAL MiB':>7} {'429s':>5} {'exact':>5} {'RSS main':>8} "
        f"{'+workers':>8} {'cpu µs/item main':>16} {'workers':>7}"
    )
    for row in rows:
        r = row.r
        print(
            f"{row.mode:<13} {row.cpus:>4} {row.kind:<6} {r['rate']:>9,.0f} "
            f"{r['sustained']:>11,.0f} {r['drain']:>7.1f} {r['backlog']:>7.0f} "
            f"{r['rejected']:>5} {row.exact:>5} {r['rss'][0]:>8.0f} {r['rss'][1]:>8.0f} "
            f"{r['cpu_us'][0]:>16.2f} {r['cpu_us'][1]:>7.2f}"
        )
    by = {(x.mode, x.cpus, x.kind): x for x in rows}
    for (mode, cpus, kind), row in by.items():
        base = by.get(("layout", cpus, kind))
        if mode == "layout" or base is None:
            continue
        a, b = row.r, base.r
        print(
            f"{kind}, {cpus} cpu(s): with the shipper / without: acked "
            f"{a['rate'] / b['rate']:.0%}, sustained {a['sustained'] / b['sustained']:.0%}, "
            f"CPU per item (main + workers) {sum(a['cpu_us']) / sum(b['cpu_us']):.2f}x"
        )
    print()
    print(
        f"{'Delta shipping':<13} {'cpus':>4} {'signal':<6} {'commits':>7} {'MiB up':>7} "
        f"{'catch-up s':>10} {'into Delta/s':>12} {'moto cpu s':>10} {'lag s':>6} "
        f"{'pending':>7} {'errors':>6} "
        f"{'sent':>9} {'our rows':>9} {'ch rows':>9} {'distinct':>13} {'check':>5}"
    )
    for row in rows:
        s = row.ship
        if s is None:
            continue
        print(
            f"{'moto S3':<13} {row.cpus:>4} {row.kind:<6} {s.commits:>7.0f} "
            f"{s.uploaded_mib:>7.1f} {s.catchup_s:>10.2f} {s.sustained:>12,.0f} "
            f"{s.moto_cpu_s:>10.1f} "
            f"{s.lag_s:>6.2f} {s.pending:>7.0f} {s.errors:>6.0f} {s.sent:>9,} "
            f"{s.ours[0]:>9,} {s.clickhouse[0]:>9,} "
            f"{f'{s.ours[1]:,}/{s.clickhouse[1]:,}':>13} {'ok' if s.ok else 'FAIL':>5}"
        )
    print(
        "catch-up: from the end of the WAL drain until the table's snapshot held every sent "
        "row; into Delta/s: every item over first request .. all committed; moto cpu s: CPU "
        "the local S3 server took from the 2 cores meanwhile (a real S3 is elsewhere); lag, "
        "pending, "
        "commits: /metrics before SIGTERM; our rows: rows of the snapshot's files (our_ids), "
        "ch rows: ClickHouse deltaLake() count() after SIGTERM; distinct ids ours/ClickHouse; "
        "check: sent = our rows = ch rows, distinct equal, nothing pending"
    )


# ---- 2. local Delta commit per segment vs the layout ------------------------------------------


@dataclass(frozen=True, slots=True)
class Variant:
    """One way of committing segments: where the table is and how its object is handled."""

    name: str
    s3: bool = False
    refresh: bool = False  # update_incremental() before each commit (timed with it)
    checkpoint_interval: int = 0  # 0: delta-rs's default (100)


VARIANTS: tuple[Variant, ...] = (
    Variant("local"),
    Variant("local refreshed", refresh=True),
    Variant("local ckpt 10", checkpoint_interval=10),
    Variant("moto S3", s3=True),
    Variant("moto S3 ckpt 10", s3=True, checkpoint_interval=10),
)


@dataclass(frozen=True, slots=True)
class CommitCost:
    table: str
    segments: int  # distinct converted segments in the layout run's directory
    rows_per_segment: float
    files_per_segment: float
    commit_ms: dict[str, list[float]]  # by variant: per commit (version = index + 1)
    write_ms: list[float]  # write_table with fsync of one segment's rows (the layout's cost)


def _segments(data_dir: Path, table: str) -> list[list[ParquetSegment]]:
    """The layout's files grouped by converted WAL segment (node, lo, hi)."""
    from meshlens.collector.store.layout import list_table_files

    by_seg: dict[tuple[str, int, int], list[ParquetSegment]] = {}
    for s in list_table_files(data_dir, table):
        by_seg.setdefault((s.node, s.lo, s.hi), []).append(s)
    if not by_seg:
        raise SystemExit(f"no {table} segments in {data_dir}")
    return [by_seg[k] for k in sorted(by_seg)]


def _write_ms(groups: list[list[ParquetSegment]], table: str, scratch: Path) -> list[float]:
    """The layout's cost per segment: its rows written as conversion writes them."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from meshlens.collector.store.parquet_write import write_table

    out = []
    for i, g in enumerate(groups[:40]):
        data = pa.concat_tables([pq.read_table(s.path) for s in g])
        t = time.perf_counter()
        write_table(scratch, table, data, "w", i + 1, fsync=True)
        out.append((time.perf_counter() - t) * 1000)
    return out


def _commit_ms(
    groups: list[list[ParquetSegment]],
    rows_of: dict[Path, int],
    table: str,
    root: Path,
    commits: int,
    v: Variant,
    s3: S3Server | None,
) -> list[float]:
    """ms per commit: `commits` commits of one segment each to a new table (local at `root`,
    or in a fresh moto bucket: the log only, no file uploaded), segments reused under new
    numbers once all are in. The files are hard links under `root` (zero copy)."""
    from deltalake import DeltaTable

    from meshlens.collector.store.delta_table import storage_options, table_uri
    from meshlens.collector.store.layout import parse_segment_file, segment_file_name

    root.mkdir(parents=True)
    if v.s3:
        assert s3 is not None
        uri, opts = table_uri(s3.bucket("p"), table), storage_options(s3.options)
    else:
        uri, opts = str(root), {}
    dt = create_table(uri, table, opts, v.checkpoint_interval)
    out = []
    n_files = 0
    for i in range(commits):
        g = groups[i % len(groups)]
        segs: list[ParquetSegment] = []
        rows: dict[str, int] = {}
        for s in g:  # a hard link under the table root, numbered by commit (reused segments)
            dest = root / f"dt={s.dt}" / f"hr={s.hr}"
            dest.mkdir(parents=True, exist_ok=True)
            name = segment_file_name(s.node, i + 1)
            os.link(s.path, dest / name)
            seg = parse_segment_file(dest / name, table)
            assert seg is not None
            segs.append(seg)
            rows[f"{table}/dt={s.dt}/hr={s.hr}/{name}"] = rows_of[s.path]
        n_files += len(segs)
        t = time.perf_counter()
        if v.refresh:
            dt.update_incremental()
        commit_segments(dt, table, g[0].node, segs, rows)
        out.append((time.perf_counter() - t) * 1000)
    check = DeltaTable(uri, storage_options=opts)
    if check.version() != commits or len(check.file_uris()) != n_files:
        raise SystemExit(f"Delta table {uri}: version {check.version()} != {commits}")
    return out


def local_commit_cost(
    data_dir: Path, table: str, commits: int, s3_commits: int, work: Path, s3: S3Server
) -> CommitCost:
    groups = _segments(data_dir, table)
    rows_of = {s.path: _row_count(s.path) for g in groups for s in g}
    write_ms = _write_ms(groups, table, work / f"layout-{table}")
    by: dict[str, list[float]] = {}
    for i, v in enumerate(VARIANTS):
        n = s3_commits if v.s3 else commits
        if n > 0:
            root = work / f"delta-{i}" / table
            by[v.name] = _commit_ms(groups, rows_of, table, root, n, v, s3)
    n_files = sum(len(g) for g in groups)
    return CommitCost(
        table,
        len(groups),
        sum(rows_of.values()) / len(groups),
        n_files / len(groups),
        by,
        write_ms,
    )


def _pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


def _ranges(ms: list[float]) -> list[tuple[str, list[float]]]:
    """Commits by version: the first 10, up to the default checkpoint, it, after it, all."""
    n = len(ms)
    out = [
        ("v1-10", ms[:10]),
        (f"v11-{min(n, 99)}", ms[10:99]),
        ("v100 (checkpoint)", ms[99:100]),
        (f"v101-{n}", ms[100:]),
        ("all", ms),
    ]
    return [(label, xs) for label, xs in out if xs]


def print_commit_costs(costs: list[CommitCost], ingest_rows: list[IngestRow]) -> None:
    print(
        f"{'table':<9} {'commit to':<16} {'versions':<18} {'n':>4} {'median ms':>9} "
        f"{'p90 ms':>7} {'max ms':>7} {'mean ms':>7} {'ceiling seg/s':>13}"
    )
    for c in costs:
        for name, ms in c.commit_ms.items():
            for label, xs in _ranges(ms):
                med, mean = statistics.median(xs), statistics.fmean(xs)
                print(
                    f"{c.table:<9} {name:<16} {label:<18} {len(xs):>4} {med:>9.2f} "
                    f"{_pct(xs, 0.9):>7.2f} {max(xs):>7.2f} {mean:>7.2f} {1000 / mean:>13,.0f}"
                )
        w = c.write_ms
        print(
            f"{c.table:<9} {'layout (today)':<16} {'write_table':<18} {len(w):>4} "
            f"{statistics.median(w):>9.2f} {_pct(w, 0.9):>7.2f} {max(w):>7.2f} "
            f"{statistics.fmean(w):>7.2f} {'-':>13}"
        )
    print(
        "commit: collector.store.delta_table.commit of one converted segment's files (AddActions "
        "+ per-partition app transaction), one DeltaTable object kept for all commits as the "
        "shipper keeps it (create_write_transaction does not advance the object's version); "
        "refreshed: update_incremental() before each commit (timed with it); ckpt 10: "
        "delta.checkpointInterval=10 (default: a checkpoint every 100 versions); moto S3: the "
        "same commits to a bucket on the local moto server (log only: uploads are in part 1); "
        "ceiling = 1000 / mean ms (one table, commits serialized); layout: the same segment's "
        "rows written by parquet_write.write_table with fsync (what conversion pays today, and "
        "all it pays: a file is visible once renamed into its partition)"
    )
    for c in costs:
        print(
            f"{c.table}: {c.segments} segments in the layout run's directory, "
            f"{c.rows_per_segment:,.0f} rows and {c.files_per_segment:.1f} files per segment"
        )
    for c in costs:
        kind = "traces" if c.table == "spans" else "als"
        local = c.commit_ms.get("local")
        if not local:
            continue
        mean = statistics.fmean(local)
        write = statistics.median(c.write_ms)
        for row in ingest_rows:
            if row.mode != "layout" or row.kind != kind:
                continue
            need = row.r["sustained"] / c.rows_per_segment
            print(
                f"{c.table}, {row.cpus} cpu(s): today's ingest ({row.r['sustained']:,.0f} "
                f"{'spans' if kind == 'traces' else 'entries'}/s sustained) needs "
                f"{need:.1f} segments/s: {need * mean:.0f} ms of local Delta commits per "
                f"second (ceiling {1000 / mean:,.0f} segments/s at the mean over "
                f"{len(local)} commits); a commit costs {mean / write:.0%} of the segment's "
                f"file write (median {write:.1f} ms)"
            )


# ---- 3. queries through the table format -------------------------------------------------------

# Each measured row: (label, which data, what the child runs, its pair for the `vs` ratio).
LOCAL_QUERIES: tuple[tuple[str, str, str, str], ...] = (
    ("floor", "plain", "floor", ""),
    ("floor-delta", "delta", "floor-delta", "floor"),
    ("chdb", "plain", "chdb", ""),
    ("chdb-delta", "delta", "chdb-delta", "chdb"),
    ("graph", "plain", "graph", ""),
    ("signals", "plain", "signals", ""),
    ("graph-live", "copy", "graph", "graph"),
    ("signals-live", "copy", "signals", "signals"),
)
S3_QUERIES: tuple[tuple[str, str, str, str], ...] = (
    ("graph-s3", "s3", "graph", "graph-live"),
    ("signals-s3", "s3", "signals", "signals-live"),
    ("chdb-s3", "s3", "chdb-s3", "chdb-delta"),
)


def _delta_group_by(source: str) -> str:
    return (
        "SELECT source_workload, destination_workload, count() AS n, "
        "quantilesExactInclusive(0.5, 0.95, 0.99)(duration_ms) AS q "
        f"FROM {source} GROUP BY source_workload, destination_workload"
    )


def run_delta_query(data: str, what: str) -> int:
    """The queries bench.query.run_once lacks; `data` is the Delta copy's directory (its
    requests/ is the table) or s3://bucket/prefix. Returns the size of the answer."""
    if what == "floor-delta":
        import duckdb
        from deltalake import DeltaTable

        files = DeltaTable(str(Path(data) / "requests")).file_uris()
        with duckdb.connect(":memory:") as c:
            return len(c.sql(query.floor_sql(files)).fetchall())
    import chdb

    if what == "chdb-delta":
        # chdb reads local tables only under its user_files_path: the cwd (ROOT) of this child.
        sql = _delta_group_by(f"deltaLakeLocal('{(Path(data) / 'requests').resolve()}')")
    elif what == "chdb-s3":
        from meshlens.collector.store.location import StoreUrl
        from tests.collector.store.s3server import CREDENTIALS

        endpoint = os.environ["MESHLENS_S3_ENDPOINT_URL"]
        where = f"{endpoint}/{StoreUrl.parse(data).path('requests')}/"
        key, secret = CREDENTIALS["AWS_ACCESS_KEY_ID"], CREDENTIALS["AWS_SECRET_ACCESS_KEY"]
        sql = _delta_group_by(f"deltaLake('{where}', '{key}', '{secret}')")
    else:
        raise ValueError(what)
    return len(str(chdb.query(sql, "CSV")).splitlines())


def _run_once(data: str, what: str, _plain: Any = query.run_once) -> int:
    if what in ("floor-delta", "chdb-delta", "chdb-s3"):
        return run_delta_query(data, what)
    return int(_plain(data, what))


def measure_child(data: str, what: str, repeat: int) -> dict[str, float]:
    # bench.query.measure times bench.query.run_once: route our queries through it, so every
    # row is measured the same way (median wall, CPU, peak RSS, load).
    query.run_once = _run_once
    got = query.measure(data, what, repeat)
    # Peak RSS of this process image only: ru_maxrss (what query.measure reports) keeps the
    # peak of the process it was forked from across exec, and our parent holds pyarrow, delta-rs
    # and chdb; VmHWM is the high-water mark of the memory map exec gave us.
    status = Path("/proc/self/status").read_text()
    hwm = next((ln.split()[1] for ln in status.splitlines() if ln.startswith("VmHWM:")), None)
    if hwm is not None:
        got["peak_mb"] = int(hwm) / 1024
    return got


@dataclass(frozen=True, slots=True)
class DeltaCopy:
    root: Path  # .bench-data/delta-requests-N (its requests/ is the Delta table)
    files: int
    rows: int
    link_s: float
    commit_s: float


def build_delta_copy(data: Path) -> DeltaCopy:
    """A local Delta table over hard links of `data`/requests (zero copy), one commit."""
    from deltalake import DeltaTable

    from meshlens.collector.store.layout import list_table_files

    out = data.parent / f"delta-{data.name}"
    shutil.rmtree(out, ignore_errors=True)
    t = time.perf_counter()
    shutil.copytree(data / "requests", out / "requests", copy_function=os.link)
    link_s = time.perf_counter() - t
    segs = list_table_files(out, "requests")
    rows = {f"requests/dt={s.dt}/hr={s.hr}/{s.path.name}": _row_count(s.path) for s in segs}
    t = time.perf_counter()
    dt = create_table(str(out / "requests"), "requests")
    # The synthetic files are numbered like segments of one node ("synth"): the shipper's
    # commit applies as it is.
    commit_segments(dt, "requests", "synth", segs, rows)
    commit_s = time.perf_counter() - t
    dt = DeltaTable(str(out / "requests"))  # the committing object stays at its version
    got = table_rows(dt)
    if got != sum(rows.values()) or len(dt.file_uris()) != len(segs):
        raise SystemExit(f"Delta copy of {data}: {got} rows, {len(dt.file_uris())} files")
    return DeltaCopy(out, len(segs), got, link_s, commit_s)


def ship_dataset(s3: S3Server, data: Path) -> tuple[str, str]:
    """Commit `data`'s requests to a fresh bucket with the product's shipper; (url, line)."""
    from meshlens.collector.store.delta_table import storage_options
    from meshlens.collector.store.objectstore import Shipper

    url = s3.bucket("p")
    t = time.perf_counter()
    res = Shipper(data, "synth", url, s3.fs(), options=storage_options(s3.options)).ship_once()
    took = time.perf_counter() - t
    if res.errors or res.pending:
        raise SystemExit(f"shipping {data} to {url}: {res}")
    line = (
        f"{data.name} shipped to moto by Shipper.ship_once: {res.uploaded} files, "
        f"{res.uploaded_bytes / 2**20:.1f} MiB, {res.commits} commit(s) in {took:.1f} s"
    )
    return str(url), line


def _measure(data: str, what: str, cpus: int, repeat: int) -> dict[str, float]:
    out = subprocess.run(
        [
            *query._pinned(cpus),
            sys.executable,
            "-m",
            "bench.delta_store",
            "--repeat",
            str(repeat),
            "--_measure",
            data,
            what,
        ],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    )
    got: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return got


def run_queries(
    rows: int,
    sources: dict[str, str],
    queries: tuple[tuple[str, str, str, str], ...],
    cpus_list: list[int],
    repeat: int,
    chdb_ok: bool,
) -> list[str]:
    lines = []
    for cpus in cpus_list:
        got: dict[str, dict[str, float]] = {}
        pairs: dict[str, str] = {}
        for label, source, what, pair in queries:
            if "chdb" in what and not chdb_ok:
                continue
            got[label] = _measure(sources[source], what, cpus, repeat)
            pairs[label] = pair
        for label, r in got.items():

            def ratio(ref: str, value: float = r["median_s"], got: Any = got) -> str:
                return f"{value / got[ref]['median_s']:.2f}x" if ref in got else "-"

            pair = pairs[label]
            vs = f"{ratio(pair)} {pair}" if pair else "-"
            lines.append(
                f"{rows:>11,} {cpus:>4} {label:>12} {r['median_s']:>9.3f} {r['min_s']:>7.3f} "
                f"{r['max_s']:>7.3f} {r['cpu_s']:>6.2f} {r['peak_mb']:>8.0f} {r['size']:>5.0f} "
                f"{ratio('floor'):>8} {ratio('chdb'):>7} {vs:>20} "
                f"{r['load0']:>5.1f}->{r['load']:<4.1f}"
            )
            print(lines[-1], file=sys.stderr)
    return lines


QUERY_HEADER = (
    f"{'rows':>11} {'cpus':>4} {'query':>12} {'median s':>9} {'min s':>7} {'max s':>7} "
    f"{'cpu s':>6} {'RSS MB':>8} {'out':>5} {'x floor':>8} {'x chdb':>7} {'vs':>20} {'load':>11}"
)


@contextmanager
def s3_env(s3: S3Server) -> Iterator[None]:
    """The moto server's endpoint for our children (credentials are set by s3_server)."""
    old = os.environ.get("MESHLENS_S3_ENDPOINT_URL")
    os.environ["MESHLENS_S3_ENDPOINT_URL"] = s3.endpoint_url
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("MESHLENS_S3_ENDPOINT_URL", None)
        else:
            os.environ["MESHLENS_S3_ENDPOINT_URL"] = old


# ---- main --------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    # Line by line: the measuring children write to the same stdout, and a buffered parent
    # would print its headers after their rows when the output is a file.
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rows", nargs="*", default=["1M", "10M"], help="query datasets")
    ap.add_argument("--s3-rows", default="1M", help="dataset for the product over moto ('' off)")
    ap.add_argument("--repeat", type=int, default=3, help="query runs per measurement")
    ap.add_argument("--cpus", type=int, nargs="*", default=[2, 1], help="cores (queries)")
    ap.add_argument("--ingest-cpus", type=int, nargs="*", default=[2, 1], help="cores (serve)")
    ap.add_argument("--seconds", type=float, default=8.0, help="measured ingest window")
    ap.add_argument("--warmup", type=float, default=1.0)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--ship-timeout", type=float, default=120.0, help="catch-up limit (s)")
    ap.add_argument("--commits", type=int, default=200, help="local Delta commits per table")
    ap.add_argument("--s3-commits", type=int, default=60, help="the same to moto (0: off)")
    ap.add_argument("--no-ingest", action="store_true", help="skip parts 1 and 2")
    ap.add_argument("--no-queries", action="store_true", help="skip part 3")
    ap.add_argument("--_measure", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args._measure:
        print(json.dumps(measure_child(args._measure[0], args._measure[1], args.repeat)))
        return 0

    from tests.collector.store.s3server import s3_server

    t_start = time.monotonic()
    start_loads = query._loads()
    out: list[str] = []
    with s3_server() as s3, s3_env(s3), tempfile.TemporaryDirectory(prefix="delta-bench-") as tn:
        tmp = Path(tn)
        ingest_rows: list[IngestRow] = []
        costs: list[CommitCost] = []
        if not args.no_ingest:
            loads0 = query._loads()
            for cpus in args.ingest_cpus:
                for kind in ("traces", "als"):
                    for target in (None, s3):  # interleaved: both see the same machine
                        ingest_rows.append(run_ingest(tmp, target, cpus, kind, args))
            loads1 = query._loads()
            for kind in ("traces", "als"):
                first = next(r for r in ingest_rows if r.mode == "layout" and r.kind == kind)
                costs.append(
                    local_commit_cost(
                        first.data_dir, TABLE_OF[kind], args.commits, args.s3_commits, tmp, s3
                    )
                )
            out += [
                "== 1. single-node ingest: `meshlens serve` without and with --object-store "
                "(moto S3, --ship-interval 0.2s)",
                f"load average (1/5/15 min) before: {loads0}; after: {loads1}",
            ]
            out.append(_capture(print_ingest, ingest_rows))
            out += [
                "== 2. local Delta commit per converted segment vs today's layout "
                f"(segments of the {ingest_rows[0].cpus}-core layout runs)",
                f"load average after: {query._loads()}",
                _capture(print_commit_costs, costs, ingest_rows),
            ]
        if not args.no_queries:
            chdb_ok = query.chdb_available()
            lines: list[str] = []
            notes: list[str] = []
            loads0 = query._loads()
            for text in args.rows:
                rows = query.parse_rows(text)
                data = query.dataset(rows)
                subprocess.run(  # the paired hours graph/signals read (bench.query's maintenance)
                    [sys.executable, "-m", "bench.query", "--_pair", str(data)],
                    cwd=ROOT,
                    check=True,
                    capture_output=True,
                )
                copy = build_delta_copy(data)
                notes.append(
                    f"{data.name}: Delta table {copy.root.relative_to(ROOT)}/requests: "
                    f"{copy.files} files, {copy.rows:,} rows; hard links {copy.link_s * 1000:.0f} "
                    f"ms, create + one commit {copy.commit_s * 1000:.0f} ms"
                )
                sources = {"plain": str(data), "delta": str(copy.root), "copy": str(copy.root)}
                queries = LOCAL_QUERIES
                if args.s3_rows and rows == query.parse_rows(args.s3_rows):
                    sources["s3"], line = ship_dataset(s3, data)
                    notes.append(line)
                    queries = LOCAL_QUERIES + S3_QUERIES
                lines += run_queries(rows, sources, queries, args.cpus, args.repeat, chdb_ok)
            if args.s3_rows and query.parse_rows(args.s3_rows) not in map(
                query.parse_rows, args.rows
            ):
                notes.append(f"--s3-rows {args.s3_rows} is not among --rows: s3 rows left out")
            out += [
                "== 3. graph / signals / group-by through the Delta table vs the plain files",
                f"load average before: {loads0}; after: {query._loads()}",
                *notes,
                QUERY_HEADER,
                *lines,
                "floor: DuckDB group-by (workload pair: count, exact p50/p95/p99) over the "
                "directory listing; floor-delta: the same over the Delta snapshot's file list "
                "(opening the log included); chdb / chdb-delta: the same in ClickHouse over a "
                "file() glob / through deltaLakeLocal(); graph, signals: the product over the "
                "plain directory (stored paired hours); -live: over the Delta copy's directory, "
                "no stored pairing (traffic paired live); -s3: the product with --data-dir "
                "s3://... over the Delta snapshot in moto (paired live); chdb-s3: deltaLake() "
                "on the same bucket; -live and -s3 pair live because a catalog over s3:// has no "
                "stored pairing (catalog.connect: traffic = TRAFFIC_SQL); vs: median over the "
                "named row's median (same size, cores); RSS MB: peak (VmHWM) of the measuring "
                "child",
            ]
    print(
        f"load average (1/5/15 min) at start: {start_loads}; at end: {query._loads()} "
        f"({os.cpu_count()} cores; other processes distort wall times); "
        f"{time.monotonic() - t_start:.0f} s in all"
    )
    print("\n".join(out))
    return 0


def _capture(fn: Any, *a: Any) -> str:
    """What `fn` prints, as a string (the tables are printed together at the end)."""
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        fn(*a)
    return buf.getvalue().rstrip()


if __name__ == "__main__":
    sys.exit(main())
