"""The durable store: WAL with group commit, background conversion to Parquet, maintenance.

    append() --frame--> batch --(writer thread: write + one fsync per batch)--> ack
                                 |
                         segment rolls every flush_interval (or at a size cap)
                                 v
              converter thread -> convert_segment (worker processes) -> Parquet, then delete WAL
                                 v
              maintenance thread -> compaction, retention

The parts, named by their side of the WAL: `wal` (the format and the segment file),
`wal_append` (group commit, segment rolling), `ledger` (unconverted segments, sequence numbers,
counters), `wal_drain` (the converter thread and worker pool), `wal_to_parquet` (one segment ->
Parquet), `parquet_write` (tables -> the Parquet layout), `compaction` and `retention`. This
module composes them and recovers the WAL at start: torn tails are truncated (and logged),
complete segments are queued for conversion while new appends go to new segments. Records
that fail to decode are kept in `<data>/deadletter/` (WAL framing), and so are whole segments
that failed `conversion_attempts` conversions; `requeue_dead_letters` converts them again after
a fix.

A WAL segment is deleted only after its Parquet files are fsynced; Parquet names come from the
segment number, so converting a segment again after a crash rewrites the same files. One
process per (data_dir, node) may write: a lock file under wal/ enforces it.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from meshlens.collector.errors import PayloadTooLarge, StoreUnavailable
from meshlens.collector.store import compaction, retention, wal
from meshlens.collector.store.layout import (
    check_node,
    parse_wal_segment_name,
    wal_dir,
    wal_segment_path,
)
from meshlens.collector.store.ledger import Ledger, Segment, first_received_ns
from meshlens.collector.store.records import Record, RecordKind
from meshlens.collector.store.wal_append import Batch, WalWriter, WriterOptions
from meshlens.collector.store.wal_drain import Converter, ConverterOptions
from meshlens.collector.store.wal_to_parquet import DEAD_LETTER_DIR
from meshlens.durable_file import fsync_dir

log = logging.getLogger(__name__)

MiB: Final = 1024 * 1024


@dataclass(frozen=True, slots=True)
class StoreOptions:
    node: str = "local"
    durability: str = "fsync"  # "fsync": ack after fsync; "none": ack after write()
    flush_interval: float = 1.0  # seconds a non-empty segment stays open
    segment_max_bytes: int = 16 * MiB  # smaller segments convert in parallel, sooner
    # Bytes of appends waiting for the disk. Normally a few MB (one group commit); the cap
    # keeps a stalled disk from taking the collector (1 GiB with its workers) with it.
    memory_budget: int = 64 * MiB
    # Unconverted WAL bytes (active segment included) before appends are refused with a retry
    # hint (0 = no limit). Bounds the lag from ack to queryable to a few segments' conversion
    # instead of letting ingest outrun conversion into a backlog of minutes.
    disk_budget: int = 128 * MiB
    # Worker processes (0 = convert in the converter thread). Conversion costs ~4x the receive
    # path per item, so on 2 cores two workers (sharing the cores with it) keep up best.
    decode_workers: int = 2
    # Failed conversions of a WAL segment (its own fault, see conversion.py) before it moves to
    # <data>/deadletter/ (0 = retry forever).
    conversion_attempts: int = 5
    retention: float = 7 * 86400.0  # seconds; 0 = keep forever
    compact_after: float = 120.0  # seconds after a partition's hour ends
    compact_grace: float = 60.0  # keep compacted inputs this long for running queries
    maintenance_interval: float = 30.0
    # Extra/overriding decoders: (RecordKind value, "module:function"); for plugins and tests.
    decoders: tuple[tuple[int, str], ...] = ()

    @classmethod
    def from_settings(cls, ns: Any, **overrides: Any) -> StoreOptions:
        """Build from parsed SERVE settings (argparse namespace); missing names keep defaults."""
        names = (
            "node",
            "durability",
            "flush_interval",
            "memory_budget",
            "disk_budget",
            "decode_workers",
            "conversion_attempts",
            "retention",
            "compact_after",
        )
        values = {n: getattr(ns, n) for n in names if getattr(ns, n, None) is not None}
        values.update(overrides)
        return cls(**values)


@dataclass(frozen=True, slots=True)
class StoreStats:
    records_appended: int = 0
    items_appended: int = 0
    bytes_appended: int = 0
    append_failures: int = 0  # appends answered with StoreUnavailable (write/fsync errors)
    overloaded_rejections: int = 0
    bytes_in_flight: int = 0
    wal_bytes_pending: int = 0  # WAL bytes not yet converted (incl. the active segment)
    wal_segments_pending: int = 0
    wal_lag_seconds: float = 0.0  # age of the oldest record not yet converted
    segments_converted: int = 0
    records_converted: int = 0
    rows_written: int = 0
    decode_errors: int = 0
    attributes_dropped: int = 0  # over the attribute count limits (decode/limits.py)
    timestamps_clamped: int = 0  # later than receipt + ingest_max_future: set to receipt
    rows_too_old: int = 0  # older than receipt - ingest_max_age: dropped
    conversion_failures: int = 0  # segment conversions that failed and will be retried
    segments_dead_lettered: int = 0  # WAL segments moved to deadletter/ after repeated failures
    batches_written: int = 0
    last_batch_records: int = 0
    last_fsync_seconds: float = 0.0
    last_flush_seconds: float = 0.0  # duration of the last segment conversion
    wal_bytes_truncated: int = 0  # torn/corrupt tail bytes dropped at recovery
    compactions: int = 0
    files_compacted: int = 0
    files_deleted: int = 0  # compacted inputs removed after the grace period
    partitions_expired: int = 0
    hours_paired: int = 0  # settled hours stored paired by the maintenance hook


class Store:
    def __init__(
        self,
        data_dir: Path,
        options: StoreOptions | None = None,
        *,
        after_maintenance: Callable[[float], int] | None = None,
    ) -> None:
        """`after_maintenance(now)` runs after each compaction and retention pass and returns
        how many hours it stored paired: the composition root passes the analytics' pairing
        (analytics/paired_store.py), which the store itself must not import."""
        self.data_dir = Path(data_dir)
        self._after_maintenance = after_maintenance
        self.options = o = options or StoreOptions()
        check_node(o.node)
        if o.durability not in ("fsync", "none"):
            raise ValueError(f"durability must be 'fsync' or 'none', not {o.durability!r}")
        self._wal_dir = wal_dir(self.data_dir)
        fsync = o.durability == "fsync"
        self._ledger = Ledger(self._wal_dir, o.node)
        self._writer = WalWriter(
            self.data_dir,
            self._ledger,
            WriterOptions(
                o.node, fsync, o.flush_interval, o.segment_max_bytes, o.memory_budget, o.disk_budget
            ),
        )
        self._converter = Converter(
            self.data_dir,
            self._ledger,
            ConverterOptions(
                o.node, o.decode_workers, o.decoders, fsync, max(0, o.conversion_attempts)
            ),
        )
        self._state = "new"  # -> running -> closing -> closed
        self._stop = threading.Event()  # stops maintenance
        self._maint_lock = threading.Lock()
        self._maintenance = threading.Thread(
            target=self._maintenance_loop, name="meshlens-store-maintenance", daemon=True
        )
        self._lock_fd = -1

    # ---- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Lock the WAL, recover it (truncate torn tails, queue complete segments for
        conversion) and start the writer, converter and maintenance threads."""
        if self._state != "new":
            raise RuntimeError("Store.start() called twice")
        self._wal_dir.mkdir(parents=True, exist_ok=True)
        self._take_lock()
        try:
            self._recover()
        except BaseException:
            os.close(self._lock_fd)
            self._lock_fd = -1
            raise
        with self._ledger.lock:
            self._state = "running"
        self._converter.start()
        self._writer.start()
        self._maintenance.start()

    def close(self, timeout: float | None = None) -> None:
        """Stop accepting, write and fsync what is pending, convert every segment, stop."""
        with self._ledger.lock:
            state = self._state
            if state in ("new", "running"):
                self._state = "closing" if state == "running" else "closed"
        if state != "running":
            return
        deadline = None if timeout is None else time.monotonic() + timeout
        self._stop.set()
        self._writer.stop(_left(deadline))
        self._converter.stop(_left(deadline))
        self._maintenance.join(_left(deadline))
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1
        with self._ledger.lock:
            self._state = "closed"

    def __enter__(self) -> Store:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- the receive path --------------------------------------------------------------------

    def append(
        self, kind: RecordKind, payload: bytes, context: bytes = b"", items: int = 1
    ) -> None:
        """Append one accepted request; returns once it is durable (per `durability`).
        Raises StoreUnavailable (write/fsync failed, or not running), Overloaded, or
        PayloadTooLarge (over the WAL's frame limit, which recovery would take for corruption)."""
        self.submit(kind, payload, context, items).wait()

    def submit(
        self, kind: RecordKind, payload: bytes, context: bytes = b"", items: int = 1
    ) -> Batch:
        """Like `append` without waiting: the returned batch's `wait()` / `add_done_callback`
        tell when the record is durable (and whether the write failed). Refusals (overload,
        too large, not running) raise at once."""
        size = len(payload) + len(context)
        if size > wal.MAX_FRAME_BYTES - 64:
            raise PayloadTooLarge(size, wal.MAX_FRAME_BYTES - 64)
        frame = wal.frame_parts(Record(kind, time.time_ns(), b"", context).encode_head(), payload)
        state = self._state  # read without the lock: the writer re-checks under it
        return self._writer.enqueue(
            frame, items, None if state == "running" else f"store is {state}"
        )

    # ---- recovery ----------------------------------------------------------------------------

    def _take_lock(self) -> None:
        path = self._wal_dir / f"{self.options.node}.lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StoreUnavailable(
                str(self._wal_dir), f"another process writes as node {self.options.node!r}"
            ) from None
        self._lock_fd = fd

    def _recover(self) -> None:
        found = []
        for name in os.listdir(self._wal_dir):
            parsed = parse_wal_segment_name(name)
            if parsed and parsed[0] == self.options.node:
                found.append((parsed[1], self._wal_dir / name))
        self._ledger.load_reservation()
        queued = 0
        for seq, path in sorted(found):
            result = wal.repair(path)
            if result.problem is not None:
                self._ledger.count(wal_bytes_truncated=result.tail_bytes)
            self._ledger.note_seq(seq)  # numbers only grow, even past a dropped segment
            if not path.exists():
                continue
            if result.frames == 0:
                path.unlink()
                continue
            seg = Segment(path, result.good_bytes, first_received_ns(path))
            self._ledger.add(seq, seg, queued=True)
            queued += 1
        if found:
            log.info("WAL recovery: %d segments to convert in %s", queued, self._wal_dir)

    # ---- maintenance -------------------------------------------------------------------------

    def _maintenance_loop(self) -> None:
        while not self._stop.wait(self.options.maintenance_interval):
            try:
                self.maintain()
            except Exception:
                log.exception("store maintenance failed; will retry")

    def maintain(self, now: float | None = None) -> None:
        """One round of compaction and retention (the maintenance thread calls this)."""
        with self._maint_lock:  # the thread and a direct call must not merge the same files
            self._maintain(time.time() if now is None else now)

    def _maintain(self, now: float) -> None:
        done = compaction.compact_node(
            self.data_dir,
            self.options.node,
            now=now,
            compact_after=self.options.compact_after,
            below_seq=self._ledger.below_seq(),
            grace=self.options.compact_grace,
        )
        expired = 0
        if self.options.retention > 0:
            expired = retention.expire(self.data_dir, now=now, retention=self.options.retention)
        self._ledger.count(
            compactions=done.outputs,
            files_compacted=done.inputs,
            files_deleted=done.deleted,
            partitions_expired=expired,
        )
        if self._after_maintenance is not None:
            self._ledger.count(hours_paired=self._after_maintenance(now))

    # ---- observation and tools ---------------------------------------------------------------

    def converted_below(self) -> int:
        """Every WAL sequence number below this one is converted to Parquet: the shipper commits
        only files below it (segments convert out of order)."""
        return self._ledger.below_seq()

    def stats(self) -> StoreStats:
        with self._ledger.lock:
            v = self._ledger.snapshot()
            v["bytes_in_flight"] = self._writer.in_flight
        ints = {k for k, f in StoreStats.__dataclass_fields__.items() if f.type in ("int", int)}
        fields: dict[str, Any] = {k: (int(x) if k in ints else float(x)) for k, x in v.items()}
        return StoreStats(**fields)

    def wait_converted(self, timeout: float = 30.0) -> bool:
        """Roll the active segment and wait until everything appended so far is in Parquet."""
        return self._ledger.wait_converted(timeout, self._writer.request_roll)

    def requeue_dead_letters(self) -> int:
        """Move the records that failed to decode (`<data>/deadletter/`) back into the WAL as
        new segments, to be converted again, e.g. after a decoder fix. Returns how many files
        were moved. Records that fail again are dead-lettered again."""
        d = self.data_dir / DEAD_LETTER_DIR
        if not d.is_dir():
            return 0
        moved = 0
        for path in sorted(d.iterdir()):
            parsed = parse_wal_segment_name(path.name)
            if parsed is None or parsed[0] != self.options.node:
                continue
            if self._state != "running":
                raise StoreUnavailable(str(self._wal_dir), f"store is {self._state}")
            seq = self._ledger.allocate()
            dest = wal_segment_path(self.data_dir, self.options.node, seq)
            os.rename(path, dest)  # atomic: the records are in exactly one of the two places
            path.with_name(f"{path.name}.reason").unlink(missing_ok=True)
            fsync_dir(self._wal_dir)
            fsync_dir(d)
            seg = Segment(dest, dest.stat().st_size, first_received_ns(dest))
            self._ledger.add(seq, seg, queued=True)
            moved += 1
            log.info("requeued dead letters %s as WAL segment %s", path.name, dest.name)
        return moved


def _left(deadline: float | None) -> float | None:
    return None if deadline is None else max(0.0, deadline - time.monotonic())
