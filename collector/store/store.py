"""The durable store: WAL with group commit, background conversion to Parquet, maintenance.

    append() --frame--> batch --(writer thread: write + one fsync per batch)--> ack
                                 |
                         segment rolls every flush_interval (or at a size cap)
                                 v
              converter thread -> convert_segment (worker processes) -> Parquet, then delete WAL
                                 v
              maintenance thread -> compaction, retention

Many receiver threads call `append`; each joins the open batch and sleeps until the writer
thread has written (and, with durability "fsync", fsynced) that batch. A write or fsync error
fails every append of the batch with `StoreUnavailable`, cuts the segment back to its last good
byte and rolls to a new one, so the store keeps working once the disk has room again.

A WAL segment is deleted only after its Parquet files are fsynced; Parquet names come from the
segment number, so converting a segment again after a crash rewrites the same files. One
process per (data_dir, node) may write: a lock file under wal/ enforces it.
"""

from __future__ import annotations

import fcntl
import functools
import heapq
import logging
import multiprocessing
import os
import threading
import time
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from collector.errors import Overloaded, StoreUnavailable
from collector.store import compaction, retention, wal
from collector.store.converter import DEAD_LETTER_DIR, ConvertResult, convert_segment, warm_up
from collector.store.layout import check_node, parse_wal_segment_name, wal_dir, wal_segment_path
from collector.store.records import Record, RecordKind
from collector.store.writer import fsync_dir

log = logging.getLogger(__name__)

MiB: Final = 1024 * 1024
RESERVE_AHEAD_US: Final = 3600 * 1_000_000


@dataclass(frozen=True, slots=True)
class StoreOptions:
    node: str = "local"
    durability: str = "fsync"  # "fsync": ack after fsync; "none": ack after write()
    flush_interval: float = 1.0  # seconds a non-empty segment stays open
    segment_max_bytes: int = 16 * MiB  # smaller segments convert in parallel, sooner
    memory_budget: int = 512 * MiB  # bytes of appends waiting for the disk
    disk_budget: int = 0  # unconverted WAL bytes before appends are refused (0 = no limit)
    decode_workers: int = 1  # worker processes; 0 = convert in the converter thread
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
    conversion_failures: int = 0  # segment conversions that failed and will be retried
    batches_written: int = 0
    last_batch_records: int = 0
    last_fsync_seconds: float = 0.0
    last_flush_seconds: float = 0.0  # duration of the last segment conversion
    wal_bytes_truncated: int = 0  # torn/corrupt tail bytes dropped at recovery
    compactions: int = 0
    files_compacted: int = 0
    files_deleted: int = 0  # compacted inputs removed after the grace period
    partitions_expired: int = 0


class _Batch:
    __slots__ = ("done", "error", "first_ns", "frames", "items", "nbytes", "records")

    def __init__(self) -> None:
        self.frames: list[bytes] = []
        self.nbytes = 0
        self.records = 0
        self.items = 0
        self.first_ns = 0
        self.done = threading.Event()
        self.error: StoreUnavailable | None = None


@dataclass(slots=True)
class _Segment:
    path: Path
    size: int
    first_ns: int
    limit: int | None = None  # bytes known good (None: scan to the first bad frame)
    attempts: int = 0


@dataclass(slots=True)
class _Counters:
    values: dict[str, float] = field(default_factory=dict)

    def add(self, name: str, n: float = 1) -> None:
        self.values[name] = self.values.get(name, 0) + n


class Store:
    def __init__(self, data_dir: Path, options: StoreOptions | None = None) -> None:
        self.data_dir = Path(data_dir)
        self.options = options or StoreOptions()
        check_node(self.options.node)
        if self.options.durability not in ("fsync", "none"):
            raise ValueError(
                f"durability must be 'fsync' or 'none', not {self.options.durability!r}"
            )
        self._wal_dir = wal_dir(self.data_dir)
        self._fsync = self.options.durability == "fsync"
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)  # wakes the writer
        self._conv = threading.Condition(self._lock)  # wakes the converter
        self._changed = threading.Condition(self._lock)  # conversion progress, for waiters
        self._stop = threading.Event()  # stops maintenance
        self._maint_lock = threading.Lock()
        self._state = "new"
        self._batch = _Batch()
        self._in_flight = 0
        self._seq = 0
        self._reserved = 0  # persisted bound: sequence numbers up to it may have been used
        self._reserve_lock = threading.Lock()
        self._active: wal.SegmentFile | None = None
        self._active_seq = 0
        self._active_opened = 0.0
        self._roll_requested = False
        self._segments: dict[int, _Segment] = {}  # every unconverted segment, active included
        self._queue: list[tuple[float, int]] = []  # (ready at, seq) closed segments to convert
        self._inflight: dict[int, Future[ConvertResult]] = {}
        self._completed: list[tuple[int, Future[ConvertResult]]] = []
        self._converter_done = False
        self._pool: ProcessPoolExecutor | None = None
        self._pool_gen = 0
        self._submitted_gen: dict[int, int] = {}
        self._lock_fd = -1
        self._c = _Counters()
        self._gauges: dict[str, float] = {}
        self._threads: list[threading.Thread] = []

    # ---- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Lock the WAL, recover it (truncate torn tails, queue complete segments for
        conversion) and start the writer, converter and maintenance threads."""
        with self._lock:
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
        if self.options.decode_workers > 0:
            self._pool = self._new_pool()
        with self._lock:
            self._state = "running"
        for name, target in (
            ("wal-writer", self._writer_loop),
            ("wal-converter", self._converter_loop),
            ("store-maintenance", self._maintenance_loop),
        ):
            t = threading.Thread(target=target, name=f"meshlens-{name}", daemon=True)
            t.start()
            self._threads.append(t)

    def close(self, timeout: float | None = None) -> None:
        """Stop accepting, write and fsync what is pending, convert every segment, stop."""
        with self._lock:
            if self._state in ("closing", "closed"):
                return
            if self._state == "new":
                self._state = "closed"
                return
            self._state = "closing"
            self._work.notify_all()
        deadline = None if timeout is None else time.monotonic() + timeout
        writer, converter, maintenance = self._threads
        self._stop.set()
        writer.join(_left(deadline))
        with self._lock:
            self._converter_done = True
            self._conv.notify_all()
        converter.join(_left(deadline))
        maintenance.join(_left(deadline))
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1
        with self._lock:
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
        Raises StoreUnavailable (write/fsync failed, or not running) or Overloaded."""
        data = wal.frame(Record(kind, time.time_ns(), payload, context).encode())
        n = len(data)
        with self._lock:
            if self._state != "running":
                raise StoreUnavailable(str(self._wal_dir), f"store is {self._state}")
            budget = self.options.memory_budget
            if self._in_flight and self._in_flight + n > budget:
                self._c.add("overloaded_rejections")
                raise Overloaded(f"memory budget ({budget} bytes in flight)", self._retry_after())
            disk = self.options.disk_budget
            if disk and self._pending_bytes() > disk:
                self._c.add("overloaded_rejections")
                raise Overloaded(
                    f"disk budget ({disk} bytes of unconverted WAL)",
                    max(1.0, self.options.flush_interval),
                )
            batch = self._batch
            batch.frames.append(data)
            batch.nbytes += n
            batch.records += 1
            batch.items += items
            if not batch.first_ns:
                batch.first_ns = time.time_ns()
            self._in_flight += n
            self._work.notify()
        batch.done.wait()
        if batch.error is not None:
            raise StoreUnavailable(batch.error.path, batch.error.reason)

    def _retry_after(self) -> float:
        return round(max(0.1, 2 * self._gauges.get("last_fsync_seconds", 0.0)), 3)

    def _pending_bytes(self) -> int:
        return sum(s.size for s in self._segments.values())

    # ---- writer thread -----------------------------------------------------------------------

    def _writer_loop(self) -> None:
        try:
            self._write_forever()
        except BaseException as exc:  # a bug here must not leave appenders waiting forever
            log.exception("WAL writer stopped")
            with self._lock:
                self._state = "failed"
                batch, self._batch = self._batch, _Batch()
            batch.error = StoreUnavailable(str(self._wal_dir), f"WAL writer failed: {exc!r}")
            batch.done.set()
            raise

    def _write_forever(self) -> None:
        interval = self.options.flush_interval
        while True:
            with self._lock:
                while True:
                    if self._batch.frames or self._state != "running":
                        break
                    if self._active is not None:
                        left = self._active_opened + interval - time.monotonic()
                        if left <= 0 or self._roll_requested:
                            break
                        self._work.wait(left)
                    else:
                        self._roll_requested = False
                        self._work.wait()
                batch = self._batch
                if batch.frames:
                    self._batch = _Batch()
                closing = self._state != "running"
                roll = self._roll_requested
                self._roll_requested = False
            if batch.frames:
                self._write_batch(batch)
            active = self._active
            if active is not None and (
                roll
                or closing
                or active.broken
                or active.size >= self.options.segment_max_bytes
                or time.monotonic() - self._active_opened >= interval
            ):
                self._roll()
            if closing:
                with self._lock:
                    if not self._batch.frames and self._active is None:
                        return

    def _open_segment(self, first_ns: int) -> None:
        with self._lock:
            seq = max(self._seq + 1, time.time_ns() // 1000)
            self._seq = seq
        path = wal_segment_path(self.data_dir, self.options.node, seq)
        try:
            self._reserve(seq)
            seg = wal.SegmentFile(path)
            if self._fsync:
                fsync_dir(self._wal_dir)  # the new name must survive a crash too
        except OSError:
            try:
                path.unlink(missing_ok=True)
            except OSError:
                pass
            raise
        self._active, self._active_seq, self._active_opened = seg, seq, time.monotonic()
        with self._lock:
            self._segments[seq] = _Segment(path, seg.size, first_ns)

    def _reserve(self, seq: int) -> None:
        """Persist a bound above every sequence number handed out, ahead of use (one small
        fsynced write an hour). Numbers must never repeat or go back, even when the WAL is empty
        and the clock stepped back: a lower number could fall inside a compacted file's range
        and be hidden by it."""
        with self._reserve_lock:
            if seq > self._reserved:
                self._write_reservation(seq + RESERVE_AHEAD_US)

    def _write_reservation(self, value: int) -> None:
        path = self._seq_path()
        tmp = path.with_name(f".{path.name}.tmp")
        with open(tmp, "w") as f:
            f.write(f"{value}\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(self._wal_dir)
        self._reserved = value

    def _seq_path(self) -> Path:
        return self._wal_dir / f"{self.options.node}.seq"

    def _write_batch(self, batch: _Batch) -> None:
        data = b"".join(batch.frames)
        t0 = time.monotonic()
        error: Exception | None = None
        where = str(self._wal_dir)
        try:
            if self._active is None:
                self._open_segment(batch.first_ns)
            seg = self._active
            assert seg is not None
            where = str(seg.path)
            before = seg.size
            seg.write(data)
            if self._fsync:
                try:
                    seg.sync()
                except OSError:
                    # After a failed fsync the page cache state is unknown: cut back and roll.
                    seg.size = before
                    seg.rollback()
                    seg.broken = True
                    raise
        except Exception as exc:  # OSError mostly; anything else must still answer the waiters
            error = exc
        elapsed = time.monotonic() - t0
        with self._lock:
            self._in_flight -= batch.nbytes
            if error is None:
                self._c.add("records_appended", batch.records)
                self._c.add("items_appended", batch.items)
                self._c.add("bytes_appended", batch.nbytes)
                self._c.add("batches_written")
                self._gauges["last_batch_records"] = batch.records
                self._gauges["last_fsync_seconds"] = elapsed
                assert self._active is not None
                self._segments[self._active_seq].size = self._active.size
            else:
                self._c.add("append_failures", batch.records)
        if error is not None:
            reason = (error.strerror if isinstance(error, OSError) else None) or repr(error)
            log.error(
                "WAL write to %s failed (%s); %d appends refused", where, reason, batch.records
            )
            batch.error = StoreUnavailable(where, f"WAL write failed: {reason}")
            if self._active is not None:
                self._active.broken = True  # roll: start the next batch on a fresh segment
        batch.done.set()

    def _roll(self) -> None:
        """Close the active segment and hand it to the converter."""
        seg, seq = self._active, self._active_seq
        assert seg is not None
        self._active = None
        try:
            if seg.broken:  # cut a failed batch's bytes once more (space may be back by now)
                os.ftruncate(seg.fd, seg.size)
            if self._fsync:
                seg.sync()
        except OSError as exc:
            log.error("cleaning up %s at roll failed: %s", seg.path, exc)
        seg.close()
        with self._lock:
            if seg.size <= len(wal.MAGIC):  # nothing acknowledged in it
                self._segments.pop(seq, None)
                empty = True
            else:
                self._segments[seq].limit = seg.size
                heapq.heappush(self._queue, (0.0, seq))
                self._conv.notify()
                empty = False
            self._changed.notify_all()
        if empty:
            try:
                seg.path.unlink(missing_ok=True)
            except OSError as exc:
                log.warning("cannot remove empty WAL segment %s: %s", seg.path, exc)

    # ---- converter thread --------------------------------------------------------------------

    def _new_pool(self) -> ProcessPoolExecutor:
        # spawn, not fork: forking a process with gRPC threads running is unsafe.
        pool = ProcessPoolExecutor(
            max_workers=self.options.decode_workers,
            mp_context=multiprocessing.get_context("spawn"),
        )
        for _ in range(self.options.decode_workers):  # start and import now, not at 1st segment
            pool.submit(warm_up, dict(self.options.decoders))
        return pool

    def _converter_loop(self) -> None:
        cap = max(1, self.options.decode_workers)
        while True:
            with self._lock:
                while True:
                    if self._completed:
                        break
                    now = time.monotonic()
                    ready = bool(self._queue) and self._queue[0][0] <= now
                    if ready and len(self._inflight) < cap:
                        break
                    if self._converter_done and not self._queue and not self._inflight:
                        return
                    wait = 0.5 if not self._queue else max(0.01, self._queue[0][0] - now)
                    self._conv.wait(min(wait, 0.5))
                completed, self._completed = self._completed, []
                todo: list[tuple[int, _Segment]] = []
                now = time.monotonic()
                while (
                    self._queue
                    and self._queue[0][0] <= now
                    and len(self._inflight) + len(todo) < cap
                ):
                    _, seq = heapq.heappop(self._queue)
                    if seq in self._segments and seq not in self._inflight:
                        todo.append((seq, self._segments[seq]))
            for seq, fut in completed:
                self._finish(seq, fut)
            for seq, seg in todo:
                self._submit(seq, seg)

    def _submit(self, seq: int, seg: _Segment) -> None:
        args = (
            str(self.data_dir),
            self.options.node,
            seq,
            str(seg.path),
            seg.limit,
            dict(self.options.decoders),
            self._fsync,
        )
        fut: Future[ConvertResult]
        if self._pool is None:
            fut = Future()
            try:
                fut.set_result(convert_segment(*args))
            except Exception as exc:
                fut.set_exception(exc)
        else:
            try:
                fut = self._pool.submit(convert_segment, *args)
            except (BrokenProcessPool, RuntimeError) as exc:
                fut = Future()
                fut.set_exception(BrokenProcessPool(str(exc)))
        with self._lock:
            self._inflight[seq] = fut
            self._submitted_gen[seq] = self._pool_gen
        fut.add_done_callback(functools.partial(self._on_done, seq))

    def _on_done(self, seq: int, fut: Future[ConvertResult]) -> None:
        with self._lock:
            self._completed.append((seq, fut))
            self._conv.notify()

    def _finish(self, seq: int, fut: Future[ConvertResult]) -> None:
        with self._lock:
            self._inflight.pop(seq, None)
            gen = self._submitted_gen.pop(seq, -1)
            seg = self._segments.get(seq)
        if seg is None:
            return
        try:
            result = fut.result()
        except Exception as exc:
            self._conversion_failed(seq, seg, exc, gen)
            return
        try:
            seg.path.unlink()
            fsync_dir(self._wal_dir)
        except FileNotFoundError:
            pass
        except OSError as exc:  # the Parquet files are complete; a replay rewrites them
            log.warning("cannot delete converted WAL segment %s: %s", seg.path, exc)
        if result.decode_errors:
            log.warning(
                "WAL segment %s: %d of %d records could not be decoded; kept in %s: %s",
                seg.path.name,
                result.decode_errors,
                result.records,
                result.files[0],
                "; ".join(result.error_samples),
            )
        with self._lock:
            self._segments.pop(seq, None)
            self._c.add("segments_converted")
            self._c.add("records_converted", result.records)
            self._c.add("rows_written", sum(result.rows.values()))
            self._c.add("decode_errors", result.decode_errors)
            self._gauges["last_flush_seconds"] = result.seconds
            self._changed.notify_all()
        log.debug(
            "converted %s: %d records -> %s in %.3fs",
            seg.path.name,
            result.records,
            result.rows,
            result.seconds,
        )

    def _conversion_failed(self, seq: int, seg: _Segment, exc: BaseException, gen: int) -> None:
        if isinstance(exc, FileNotFoundError) and not seg.path.exists():
            log.error("WAL segment %s vanished before conversion", seg.path)
            with self._lock:
                self._segments.pop(seq, None)
                self._changed.notify_all()
            return
        with self._lock:
            closing = self._converter_done
        if closing:
            # Do not hold shutdown hostage: the segment stays in the WAL (and in _segments, so
            # compaction keeps clear of its number) and is converted at the next start.
            log.error(
                "converting WAL segment %s failed at shutdown (%r); it stays in the WAL and is "
                "converted at the next start",
                seg.path.name,
                exc,
            )
            with self._lock:
                self._c.add("conversion_failures")
            return
        seg.attempts += 1
        delay = min(30.0, 0.5 * 2 ** min(seg.attempts, 6))
        log.error(
            "converting WAL segment %s failed (attempt %d, retry in %.1fs): %r",
            seg.path.name,
            seg.attempts,
            delay,
            exc,
        )
        if isinstance(exc, BrokenProcessPool) and self._pool is not None and gen == self._pool_gen:
            # A worker died (crash, OOM kill): every future of that pool fails; renew it once.
            old, self._pool = self._pool, self._new_pool()
            self._pool_gen += 1
            old.shutdown(wait=False, cancel_futures=True)
        with self._lock:
            self._c.add("conversion_failures")
            heapq.heappush(self._queue, (time.monotonic() + delay, seq))
            self._conv.notify()

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
        try:
            self._reserved = int(self._seq_path().read_text().strip() or 0)
        except FileNotFoundError:
            self._reserved = 0
        except (OSError, ValueError) as exc:
            log.warning("ignoring unreadable %s: %s", self._seq_path(), exc)
            self._reserved = 0
        self._seq = max(self._seq, self._reserved)
        for seq, path in sorted(found):
            self._seq = max(self._seq, seq)
            result = wal.repair(path)
            if result.problem is not None:
                self._c.add("wal_bytes_truncated", result.tail_bytes)
            if not path.exists():
                continue
            if result.frames == 0:
                path.unlink()
                continue
            self._segments[seq] = _Segment(path, result.good_bytes, _first_received_ns(path))
            heapq.heappush(self._queue, (0.0, seq))
        if found:
            log.info("WAL recovery: %d segments to convert in %s", len(self._queue), self._wal_dir)

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
        with self._lock:
            below = min(self._segments, default=self._seq + 1)
            below = min(below, self._seq + 1)
        done = compaction.compact_node(
            self.data_dir,
            self.options.node,
            now=now,
            compact_after=self.options.compact_after,
            below_seq=below,
            grace=self.options.compact_grace,
        )
        expired = 0
        if self.options.retention > 0:
            expired = retention.expire(self.data_dir, now=now, retention=self.options.retention)
        with self._lock:
            self._c.add("compactions", done.outputs)
            self._c.add("files_compacted", done.inputs)
            self._c.add("files_deleted", done.deleted)
            self._c.add("partitions_expired", expired)

    # ---- observation -------------------------------------------------------------------------

    def stats(self) -> StoreStats:
        with self._lock:
            v = dict(self._c.values)
            v.update(self._gauges)
            now_ns = time.time_ns()
            oldest = min((s.first_ns for s in self._segments.values() if s.first_ns), default=0)
            lag = max(0.0, (now_ns - oldest) / 1e9) if oldest else 0.0
            v.update(
                bytes_in_flight=self._in_flight,
                wal_bytes_pending=self._pending_bytes(),
                wal_segments_pending=len(self._segments),
                wal_lag_seconds=lag,
            )
        ints = {k for k, f in StoreStats.__dataclass_fields__.items() if f.type in ("int", int)}
        fields: dict[str, Any] = {k: (int(x) if k in ints else float(x)) for k, x in v.items()}
        return StoreStats(**fields)

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
            with self._lock:
                if self._state != "running":
                    raise StoreUnavailable(str(self._wal_dir), f"store is {self._state}")
                seq = max(self._seq + 1, time.time_ns() // 1000)
                self._seq = seq
            self._reserve(seq)
            dest = wal_segment_path(self.data_dir, self.options.node, seq)
            os.rename(path, dest)  # atomic: the records are in exactly one of the two places
            fsync_dir(self._wal_dir)
            fsync_dir(d)
            with self._lock:
                self._segments[seq] = _Segment(dest, dest.stat().st_size, _first_received_ns(dest))
                heapq.heappush(self._queue, (0.0, seq))
                self._conv.notify()
            moved += 1
            log.info("requeued dead letters %s as WAL segment %s", path.name, dest.name)
        return moved

    def wait_converted(self, timeout: float = 30.0) -> bool:
        """Roll the active segment and wait until everything appended so far is in Parquet."""
        deadline = time.monotonic() + timeout
        with self._lock:
            target = self._seq
            self._roll_requested = True
            self._work.notify_all()
            while any(s <= target for s in self._segments):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(min(left, 0.5))
                if self._active is not None and self._active_seq <= target:
                    self._roll_requested = True
                    self._work.notify_all()
            return True


def _left(deadline: float | None) -> float | None:
    return None if deadline is None else max(0.0, deadline - time.monotonic())


def _first_received_ns(path: Path) -> int:
    """received_ns of a segment's first record (for the WAL lag after recovery)."""
    try:
        with open(path, "rb") as f:
            head = f.read(len(wal.MAGIC) + wal.FRAME.size + 9)
        return int.from_bytes(head[-8:], "little") if len(head) == len(wal.MAGIC) + 17 else 0
    except OSError:
        return 0
