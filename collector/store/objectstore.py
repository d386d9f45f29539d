"""Ship this collector's finished Parquet files to S3-compatible object storage.

Past one machine, N collectors (each with its own `--node`, e.g. the pod name) keep their WAL
and Parquet files on local disk as before, and a shipper mirrors each one's finished files to
the same bucket under the same relative keys:

    <data>/<table>/dt=/hr=/<node>_<lo>_<hi>.parquet  ->  s3://bucket/prefix/<table>/dt=/hr=/...

Readers apply the layout's visibility rules to the bucket listing exactly as to a local
directory, so the bucket is one store (`analytics.objectstore_source`).

Why this is exactly-once: an acknowledged request is in the local WAL (fsynced) until it is in
a local Parquet file; file names come from WAL sequence numbers of a node, so a replay after a
crash rewrites the same file, and re-uploading it overwrites the same key with the same rows.
An upload is one object PUT (multipart completion is atomic too), so readers never see half a
file. A compacted file is uploaded before the files it covers are deleted remotely, and readers
hide covered files meanwhile. Only this node's keys are ever written or deleted, so collectors
never step on each other. What is not yet shipped lives only on the local disk: the lag gauge
says how far behind the bucket is.

The remote state of this node is listed once at start (and every `resync` seconds) and kept in
memory in between: nobody else writes this node's keys.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from meshlens.collector.store.compaction import partition_end
from meshlens.collector.store.layout import (
    ParquetSegment,
    list_table_files,
    parse_segment_file,
    visible,
)
from meshlens.collector.store.location import StoreUrl
from meshlens.collector.store.schema import TABLES

if TYPE_CHECKING:
    import pyarrow.fs as pafs

log = logging.getLogger(__name__)

# Bucket names per S3's rules (lowercase, digits, '.', '-'; 3..63); a prefix is any key path.
DEFAULT_REGION: Final = "us-east-1"
MAX_FAILURES_PER_ROUND: Final = 3  # consecutive upload failures before a round gives up


@dataclass(frozen=True, slots=True)
class S3Options:
    """How to reach the object store. Credentials come from the standard AWS variables
    (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_PROFILE...)."""

    endpoint_url: str = ""  # e.g. http://minio:9000 for S3-compatible stores; '' = AWS
    region: str = DEFAULT_REGION

    @classmethod
    def from_settings(cls, ns: Any) -> S3Options:
        return cls(
            getattr(ns, "s3_endpoint_url", "") or "",
            getattr(ns, "s3_region", "") or DEFAULT_REGION,
        )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> S3Options:
        """For readers (`meshlens sql`, the UI): MESHLENS_S3_ENDPOINT_URL, MESHLENS_S3_REGION."""
        env = os.environ if environ is None else environ
        return cls(
            env.get("MESHLENS_S3_ENDPOINT_URL", ""),
            env.get("MESHLENS_S3_REGION", "") or DEFAULT_REGION,
        )


def s3_filesystem(opts: S3Options) -> pafs.S3FileSystem:
    import pyarrow.fs as pafs

    kwargs: dict[str, Any] = {"region": opts.region}
    if opts.endpoint_url:
        scheme, sep, rest = opts.endpoint_url.partition("://")
        if sep:
            kwargs["scheme"] = scheme
            kwargs["endpoint_override"] = rest.rstrip("/")
        else:
            kwargs["endpoint_override"] = opts.endpoint_url.rstrip("/")
    return pafs.S3FileSystem(**kwargs)


# ---- pure: what a round does -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LocalFile:
    seg: ParquetSegment
    key: str  # <table>/dt=/hr=/<name>
    size: int
    mtime: float


@dataclass(frozen=True, slots=True)
class RemoteFile:
    seg: ParquetSegment  # path = the relative key as a Path
    key: str
    size: int
    mtime: float  # when the object was written (Last-Modified)


def segment_key(seg: ParquetSegment) -> str:
    return f"{seg.table}/dt={seg.dt}/hr={seg.hr}/{seg.path.name}"


def parse_key(key: str) -> ParquetSegment | None:
    """A relative object key `<table>/dt=/hr=/<name>` parsed with the layout's rules."""
    table = key.split("/", 1)[0]
    if table not in TABLES or key.count("/") != 3:
        return None
    return parse_segment_file(Path(key), table)


def expired(seg: ParquetSegment, now: float, retention: float) -> bool:
    return retention > 0 and partition_end(seg.dt, seg.hr) <= now - retention


def plan_uploads(
    local: Iterable[LocalFile], remote: Mapping[str, RemoteFile], *, now: float, retention: float
) -> list[LocalFile]:
    """Local visible files (not covered by a local compacted file, not expired) that are not in
    the object store with the same size. Oldest partition first."""
    by_seg = {f.seg: f for f in local}
    out = []
    for seg in visible(by_seg):
        f = by_seg[seg]
        if expired(seg, now, retention):
            continue
        have = remote.get(f.key)
        if have is None or have.size != f.size:
            out.append(f)
    return out


def plan_deletes(
    remote: Mapping[str, RemoteFile], *, now: float, retention: float, grace: float
) -> list[str]:
    """Keys to delete: expired partitions, and files covered by a compacted file that has been
    in the object store for `grace` seconds (queries that listed the inputs can finish)."""
    files = list(remote.values())
    by_seg = {f.seg: f for f in files}
    shown = set(visible(by_seg))
    out = []
    for f in files:
        if expired(f.seg, now, retention):
            out.append(f.key)
        elif f.seg not in shown:
            cover = [g for g in files if g.seg in shown and g.seg.covers(f.seg)]
            if cover and all(g.mtime + grace <= now for g in cover):
                out.append(f.key)
    return sorted(out)


# ---- I/O ---------------------------------------------------------------------------------------


def list_local(data_dir: Path, node: str) -> list[LocalFile]:
    out = []
    for table in TABLES:
        for seg in list_table_files(data_dir, table):
            if seg.node != node:
                continue
            try:
                st = seg.path.stat()
            except FileNotFoundError:  # deleted by compaction or retention meanwhile
                continue
            out.append(LocalFile(seg, segment_key(seg), st.st_size, st.st_mtime))
    return out


def list_remote(
    fs: pafs.FileSystem,
    url: StoreUrl,
    node: str | None = None,
    tables: Iterable[str] = tuple(TABLES),
) -> dict[str, RemoteFile]:
    """Every well-named Parquet object of `tables` under the store (of `node` only, if given)."""
    import pyarrow.fs as pafs

    out: dict[str, RemoteFile] = {}
    for table in tables:
        selector = pafs.FileSelector(url.path(table), recursive=True, allow_not_found=True)
        for info in fs.get_file_info(selector):
            if info.type != pafs.FileType.File:
                continue
            key = info.path[len(url.root) + 1 :]
            seg = parse_key(key)
            if seg is None or (node is not None and seg.node != node):
                continue
            mtime = info.mtime.timestamp() if info.mtime is not None else 0.0
            out[key] = RemoteFile(seg, key, int(info.size or 0), mtime)
    return out


def upload(fs: pafs.FileSystem, url: StoreUrl, f: LocalFile) -> int:
    """PUT one local file to its key; returns the bytes sent. The object appears whole or not
    at all; the size is checked after the upload."""
    data = f.seg.path.read_bytes()  # bounded by compaction's target size
    dest = url.path(f.key)
    with fs.open_output_stream(dest) as out:
        out.write(data)
    got = fs.get_file_info(dest).size
    if got != len(data):
        raise OSError(f"uploaded {dest}: object has {got} bytes, local file {len(data)}")
    return len(data)


@dataclass(frozen=True, slots=True)
class ShipResult:
    uploaded: int = 0
    uploaded_bytes: int = 0
    deleted: int = 0
    errors: int = 0
    pending: int = 0  # local files the round tried and failed to ship


@dataclass(frozen=True, slots=True)
class ShipperStats:
    uploaded_files: int = 0
    uploaded_bytes: int = 0
    deleted_files: int = 0
    errors: int = 0
    rounds: int = 0
    pending_files: int = 0
    lag_seconds: float = 0.0  # upper bound on the age of a finished file not yet shipped
    last_round_seconds: float = 0.0


@dataclass(slots=True)
class _Totals:
    uploaded_files: int = 0
    uploaded_bytes: int = 0
    deleted_files: int = 0
    errors: int = 0
    rounds: int = 0
    pending_files: int = 0
    last_round_seconds: float = 0.0
    clean_since: float = field(default_factory=time.time)


class Shipper:
    """Background thread: every `interval` seconds, upload what is new, delete what compaction
    or retention removed. `stop(final=True)` runs one last round (graceful shutdown)."""

    def __init__(
        self,
        data_dir: Path,
        node: str,
        url: StoreUrl,
        fs: pafs.FileSystem,
        *,
        interval: float = 5.0,
        retention: float = 0.0,
        grace: float = 60.0,
        resync: float = 300.0,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.node = node
        self.url = url
        self.fs = fs
        self.interval = interval
        self.retention = retention
        self.grace = grace
        self.resync = resync
        self._remote: dict[str, RemoteFile] | None = None
        self._listed_at = 0.0
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
                    "object store: %d files not shipped at shutdown; they stay in %s and are "
                    "shipped at the next start with this data directory",
                    result.pending,
                    self.data_dir,
                )

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.ship_once()

    def ship_once(self, now: float | None = None) -> ShipResult:
        """One round; never raises (errors are logged, counted and retried next round)."""
        with self._round_lock:
            t0 = time.time()
            try:
                result = self._round(t0 if now is None else now)
            except Exception as exc:  # listing failed: the store is unreachable
                log.error("object store %s: shipping round failed: %r", self.url, exc)
                self._remote = None  # list again next time
                result = ShipResult(errors=1, pending=self._t.pending_files)
            with self._lock:
                t = self._t
                t.uploaded_files += result.uploaded
                t.uploaded_bytes += result.uploaded_bytes
                t.deleted_files += result.deleted
                t.errors += result.errors
                t.rounds += 1
                t.last_round_seconds = time.time() - t0
                if result.pending == 0 and result.errors == 0:
                    t.clean_since = t0  # everything finished before t0 is in the store
                t.pending_files = result.pending
            return result

    def _round(self, now: float) -> ShipResult:
        if self._remote is None or time.monotonic() - self._listed_at > self.resync:
            self._remote = list_remote(self.fs, self.url, self.node)
            self._listed_at = time.monotonic()
        remote = self._remote
        uploaded = nbytes = deleted = errors = pending = 0
        local = list_local(self.data_dir, self.node)
        todo = plan_uploads(local, remote, now=now, retention=self.retention)
        failed_in_a_row = 0
        for i, f in enumerate(todo):
            if failed_in_a_row >= MAX_FAILURES_PER_ROUND:  # unreachable: do not stall shutdown
                pending += len(todo) - i
                break
            try:
                nbytes += upload(self.fs, self.url, f)
            except FileNotFoundError:  # compaction or retention removed it meanwhile
                continue
            except OSError as exc:
                errors += 1
                pending += 1
                failed_in_a_row += 1
                log.error("object store: upload of %s failed: %s", f.key, exc)
                continue
            failed_in_a_row = 0
            uploaded += 1
            remote[f.key] = RemoteFile(f.seg, f.key, f.size, now)
        for key in plan_deletes(remote, now=now, retention=self.retention, grace=self.grace):
            try:
                self.fs.delete_file(self.url.path(key))
            except FileNotFoundError:
                pass
            except OSError as exc:
                errors += 1
                log.error("object store: delete of %s failed: %s", key, exc)
                continue
            deleted += 1
            remote.pop(key, None)
        if uploaded or deleted:
            log.debug("object store %s: %d uploaded, %d deleted", self.url, uploaded, deleted)
        return ShipResult(uploaded, nbytes, deleted, errors, pending)

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
            )

    def metric_collector(self) -> Any:
        """A prometheus_client collector: meshlens_objectstore_* at scrape time."""
        return _ShipperMetrics(self.stats)


class _ShipperMetrics:
    def __init__(self, stats: Any) -> None:
        self._stats = stats

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        s: ShipperStats = self._stats()
        p = "meshlens_objectstore_"
        yield CounterMetricFamily(
            p + "uploaded_files", "Parquet files uploaded to the object store", s.uploaded_files
        )
        yield CounterMetricFamily(
            p + "uploaded_bytes", "bytes uploaded to the object store", s.uploaded_bytes
        )
        yield CounterMetricFamily(
            p + "deleted_files",
            "objects deleted (compacted inputs, expired partitions)",
            s.deleted_files,
        )
        yield CounterMetricFamily(p + "errors", "failed uploads, deletes and listings", s.errors)
        yield GaugeMetricFamily(
            p + "pending_files", "finished local files not yet in the object store", s.pending_files
        )
        yield GaugeMetricFamily(
            p + "lag_seconds",
            "upper bound on the age of a finished Parquet file not yet in the object store",
            s.lag_seconds,
        )


def shipper_from_settings(settings: Any, data_dir: Path) -> Shipper | None:
    """The shipper `meshlens serve` runs, or None when `object_store` is not set."""
    target = getattr(settings, "object_store", "") or ""
    if not target:
        return None
    url = StoreUrl.parse(target)
    return Shipper(
        data_dir,
        getattr(settings, "node", "local"),
        url,
        s3_filesystem(S3Options.from_settings(settings)),
        interval=float(getattr(settings, "ship_interval", 5.0)),
        retention=float(getattr(settings, "retention", 0.0) or 0.0),
    )
