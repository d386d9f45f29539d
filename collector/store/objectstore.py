"""Ship this collector's finished Parquet files into the shared store: Delta Lake tables in
S3-compatible object storage (`collector/store/delta_table.py`, `delta_plan.py`).

Past one machine, N collectors (each with its own `--node`: the StatefulSet pod name) keep their
WAL and Parquet files on their own persistent volume as on a single node, and each one's shipper
commits its finished files to the same tables:

    <data>/<table>/dt=/hr=/<node>_<lo>_<hi>.parquet  ->  s3://bucket/prefix/<table>/dt=/hr=/...
                                                         + a commit in <table>/_delta_log/

Why this is exactly once: an acknowledged request is in the local WAL (fsynced) until it is in
a local Parquet file, and a local file stays until compaction or retention replace it. A round
uploads the files its plan adds, then commits them in one Delta transaction that also records,
per partition, the highest WAL sequence number of this node it holds (an application
transaction). A crash before the commit leaves uploads that no snapshot lists (VACUUM deletes
them); a crash after it is seen at the restart in the table's own transaction versions, so the
files are not added again. Local compaction is mirrored as a commit that adds the output and
removes the inputs, retention as a commit that removes expired partitions' files. What is not
yet committed lives only on the local volume: the lag gauge says how far behind the table is.

The table's view of this node is read once at start (and every `resync` seconds) and kept in
memory in between: no other collector adds or removes this node's files.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from meshlens.collector.store.delta_plan import (
    LocalFile,
    NodeState,
    TableCommit,
    after_commit,
    plan_commit,
    table_path,
)
from meshlens.collector.store.delta_table import (
    add_missing_columns,
    commit,
    node_state,
    open_table,
    storage_options,
    vacuum,
)
from meshlens.collector.store.layout import ParquetSegment, list_table_files
from meshlens.collector.store.location import S3Options, StoreUrl, s3_filesystem
from meshlens.collector.store.schema import TABLES

if TYPE_CHECKING:
    import pyarrow.fs as pafs
    from deltalake import DeltaTable

log = logging.getLogger(__name__)


def segment_key(seg: ParquetSegment) -> str:
    """A file's object key relative to the store: its table, then its path in the table."""
    return f"{seg.table}/{table_path(seg)}"


# ---- I/O ---------------------------------------------------------------------------------------


def list_local(data_dir: Path, node: str, table: str) -> list[LocalFile]:
    out = []
    for seg in list_table_files(data_dir, table):
        if seg.node != node:
            continue
        try:
            st = seg.path.stat()
        except FileNotFoundError:  # deleted by compaction or retention meanwhile
            continue
        out.append(LocalFile(seg, segment_key(seg), st.st_size, st.st_mtime))
    return out


def upload(fs: pafs.FileSystem, url: StoreUrl, f: LocalFile) -> int:
    """PUT one local file to its key; returns the bytes sent. No snapshot lists it until the
    commit that adds it, so a partial or repeated upload is never seen."""
    data = f.seg.path.read_bytes()  # bounded by compaction's target size
    dest = url.path(f.key)
    with fs.open_output_stream(dest) as out:
        out.write(data)
    got = fs.get_file_info(dest).size
    if got != len(data):
        raise OSError(f"uploaded {dest}: object has {got} bytes, local file {len(data)}")
    return len(data)


def _row_count(f: LocalFile) -> int:
    import pyarrow.parquet as pq

    return int(pq.read_metadata(f.seg.path).num_rows)


@dataclass(frozen=True, slots=True)
class ShipResult:
    uploaded: int = 0
    uploaded_bytes: int = 0
    deleted: int = 0  # files removed from the tables (compacted inputs, expired partitions)
    errors: int = 0
    pending: int = 0  # local files the round tried and failed to commit
    commits: int = 0
    vacuumed: int = 0  # objects deleted by VACUUM


@dataclass(frozen=True, slots=True)
class ShipperStats:
    uploaded_files: int = 0
    uploaded_bytes: int = 0
    deleted_files: int = 0
    errors: int = 0
    rounds: int = 0
    pending_files: int = 0
    lag_seconds: float = 0.0  # upper bound on the age of a finished file not yet committed
    last_round_seconds: float = 0.0
    commits: int = 0
    vacuumed_files: int = 0


@dataclass(slots=True)
class _Totals:
    uploaded_files: int = 0
    uploaded_bytes: int = 0
    deleted_files: int = 0
    errors: int = 0
    rounds: int = 0
    pending_files: int = 0
    last_round_seconds: float = 0.0
    commits: int = 0
    vacuumed_files: int = 0
    clean_since: float = field(default_factory=time.time)


class Shipper:
    """Background thread: every `interval` seconds, commit what is new (one Delta transaction
    per table), mirror local compaction and retention, and VACUUM every `vacuum_interval`.
    `stop(final=True)` runs one last round (graceful shutdown).

    `frontier()` is the store's converted frontier (`Store.converted_below`); None when the
    shipper runs without a store (everything local is final)."""

    def __init__(
        self,
        data_dir: Path,
        node: str,
        url: StoreUrl,
        fs: pafs.FileSystem,
        *,
        options: Mapping[str, str] | None = None,
        frontier: Callable[[], int] | None = None,
        interval: float = 5.0,
        retention: float = 0.0,
        grace: float = 3600.0,
        resync: float = 300.0,
        vacuum_interval: float = 600.0,
        full_vacuum_every: int = 6,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.node = node
        self.url = url
        self.fs = fs
        self.options = dict(options) if options is not None else storage_options(S3Options())
        self.frontier = frontier
        self.interval = interval
        self.retention = retention
        self.grace = grace
        self.resync = resync
        self.vacuum_interval = vacuum_interval
        self.full_vacuum_every = max(1, full_vacuum_every)
        self._tables: dict[str, DeltaTable] = {}
        self._states: dict[str, NodeState] = {}
        self._listed_at = 0.0
        self._vacuumed_at = time.monotonic()
        self._vacuums = 0
        self._round_lock = threading.Lock()
        self._lock = threading.Lock()
        self._t = _Totals()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="meshlens-shipper", daemon=True)
        self._thread.start()

    def stop(self, *, final: bool = True, timeout: float = 30.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        if final:
            result = self.ship_once()
            if result.pending:
                log.warning(
                    "object store: %d files not committed at shutdown; they stay in %s and are "
                    "shipped at the next start with this data directory",
                    result.pending,
                    self.data_dir,
                )

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.ship_once()

    def ship_once(self, now: float | None = None, *, vacuum: bool = False) -> ShipResult:
        """One round; never raises (errors are logged, counted and retried next round).
        `vacuum` forces a VACUUM in this round (otherwise every `vacuum_interval`)."""
        with self._round_lock:
            t0 = time.time()
            try:
                result = self._round(t0 if now is None else now, vacuum)
            except Exception as exc:  # the store is unreachable
                log.error("object store %s: shipping round failed: %r", self.url, exc)
                self._states.clear()  # read the tables again next time
                result = ShipResult(errors=1, pending=self._t.pending_files)
            with self._lock:
                t = self._t
                t.uploaded_files += result.uploaded
                t.uploaded_bytes += result.uploaded_bytes
                t.deleted_files += result.deleted
                t.errors += result.errors
                t.commits += result.commits
                t.vacuumed_files += result.vacuumed
                t.rounds += 1
                t.last_round_seconds = time.time() - t0
                if result.pending == 0 and result.errors == 0:
                    t.clean_since = t0  # everything finished before t0 is committed
                t.pending_files = result.pending
            return result

    def _table(self, table: str, *, create: bool) -> DeltaTable | None:
        dt = self._tables.get(table)
        if dt is None:
            dt = open_table(self.url, table, self.options, create=create)
            if dt is not None:
                add_missing_columns(dt, table)  # a table made by an older meshlens
                self._tables[table] = dt
        return dt

    def _state(self, table: str) -> NodeState:
        state = self._states.get(table)
        if state is None:
            dt = self._table(table, create=False)
            if dt is not None:
                dt.update_incremental()
            state = NodeState() if dt is None else node_state(dt, table, self.node)
            self._states[table] = state
        return state

    def _round(self, now: float, force_vacuum: bool) -> ShipResult:
        if time.monotonic() - self._listed_at > self.resync:
            self._states.clear()
            self._listed_at = time.monotonic()
        frontier = self.frontier() if self.frontier is not None else None
        totals = dict.fromkeys(("uploaded", "nbytes", "deleted", "errors", "pending", "commits"), 0)
        for table in TABLES:
            local = list_local(self.data_dir, self.node, table)
            state = self._state(table)
            change = plan_commit(local, state, frontier=frontier, now=now, retention=self.retention)
            totals["pending"] += change.waiting
            if change.empty:
                continue
            self._ship_table(table, state, change, totals)
        vacuumed = 0
        due = time.monotonic() - self._vacuumed_at >= self.vacuum_interval
        if force_vacuum or due:
            vacuumed = self._vacuum(totals)
        return ShipResult(
            totals["uploaded"],
            totals["nbytes"],
            totals["deleted"],
            totals["errors"],
            totals["pending"],
            totals["commits"],
            vacuumed,
        )

    def _ship_table(
        self, table: str, state: NodeState, change: TableCommit, totals: dict[str, int]
    ) -> None:
        rows: dict[str, int] = {}
        nbytes = 0
        try:
            for f in change.adds:
                rows[f.key] = _row_count(f)
                nbytes += upload(self.fs, self.url, f)
        except FileNotFoundError:  # compaction or retention replaced it meanwhile: plan again
            return
        except OSError as exc:
            totals["errors"] += 1
            totals["pending"] += len(change.adds)
            log.error("object store: upload to %s/%s failed: %s", self.url, table, exc)
            return
        totals["uploaded"] += len(change.adds)
        totals["nbytes"] += nbytes
        try:
            dt = self._table(table, create=True)
            assert dt is not None
            commit(dt, table, self.node, change, rows)
        except Exception as exc:
            totals["errors"] += 1
            totals["pending"] += len(change.adds)
            self._states.pop(table, None)  # it may have landed: read the table again
            self._tables.pop(table, None)
            log.error("object store: commit to %s/%s failed: %s", self.url, table, exc)
            return
        totals["commits"] += 1
        totals["deleted"] += len(change.removes)
        self._states[table] = after_commit(state, change)

    def _vacuum(self, totals: dict[str, int]) -> int:
        self._vacuumed_at = time.monotonic()
        self._vacuums += 1
        full = self._vacuums % self.full_vacuum_every == 0
        hours = math.ceil(self.grace / 3600.0) if self.grace > 0 else 0
        deleted = 0
        for table in TABLES:
            try:
                dt = self._table(table, create=False)
                if dt is None:
                    continue
                dt.update_incremental()
                deleted += len(vacuum(dt, hours, full=full))
            except Exception as exc:
                totals["errors"] += 1
                self._tables.pop(table, None)
                log.error("object store: VACUUM of %s/%s failed: %s", self.url, table, exc)
        return deleted

    def stats(self) -> ShipperStats:
        with self._lock:
            t = self._t
            return ShipperStats(
                t.uploaded_files,
                t.uploaded_bytes,
                t.deleted_files,
                t.errors,
                t.rounds,
                t.pending_files,
                max(0.0, time.time() - t.clean_since),
                t.last_round_seconds,
                t.commits,
                t.vacuumed_files,
            )

    def metric_collector(self) -> Any:
        """A prometheus_client collector: meshlens_objectstore_* at scrape time."""
        return _ShipperMetrics(self.stats)


_METRIC_PREFIX = "meshlens_objectstore_"


class _ShipperMetrics:
    def __init__(self, stats: Any) -> None:
        self._stats = stats

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        s: ShipperStats = self._stats()
        for name, help_text, value in (
            ("uploaded_files", "Parquet files uploaded to the object store", s.uploaded_files),
            ("uploaded_bytes", "bytes uploaded to the object store", s.uploaded_bytes),
            (
                "deleted_files",
                "files removed from the Delta tables (compacted inputs, expired partitions)",
                s.deleted_files,
            ),
            ("commits", "Delta transactions committed by this collector", s.commits),
            (
                "vacuumed_files",
                "objects deleted by VACUUM after the grace period",
                s.vacuumed_files,
            ),
            ("errors", "failed uploads, commits, table reads and VACUUMs", s.errors),
        ):
            yield CounterMetricFamily(_METRIC_PREFIX + name, help_text, value)
        yield GaugeMetricFamily(
            _METRIC_PREFIX + "pending_files",
            "finished local files not yet committed",
            s.pending_files,
        )
        yield GaugeMetricFamily(
            _METRIC_PREFIX + "lag_seconds",
            "upper bound on the age of a finished Parquet file not yet committed",
            s.lag_seconds,
        )


def shipper_from_settings(
    settings: Any, data_dir: Path, frontier: Callable[[], int] | None = None
) -> Shipper | None:
    """The shipper `meshlens serve` runs, or None when `object_store` is not set."""
    target = getattr(settings, "object_store", "") or ""
    if not target:
        return None
    url = StoreUrl.parse(target)
    opts = S3Options.from_settings(settings)
    return Shipper(
        data_dir,
        getattr(settings, "node", "local"),
        url,
        s3_filesystem(opts),
        options=storage_options(opts),
        frontier=frontier,
        interval=float(getattr(settings, "ship_interval", 5.0)),
        retention=float(getattr(settings, "retention", 0.0) or 0.0),
        grace=float(getattr(settings, "vacuum_grace", 3600.0)),
    )
