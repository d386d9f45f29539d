"""Group commit: many appending threads, one writer thread, one write + fsync per batch.

Each `append` joins the open batch and sleeps until the writer thread has written (and, with
durability "fsync", fsynced) that batch; while the writer syncs one batch the next one fills.
A write or fsync error fails every append of the batch with `StoreUnavailable` (never an ack
for bytes not on disk), cuts the segment back to its last good byte and rolls to a new segment,
so writing resumes once the disk has room again.

The active segment rolls (is closed and queued for conversion) every `flush_interval` when it is
not empty, at `segment_max_bytes`, on request (`request_roll`) and at shutdown.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from meshlens.collector.errors import Overloaded, StoreUnavailable
from meshlens.collector.store import wal
from meshlens.collector.store.layout import wal_segment_path
from meshlens.collector.store.ledger import Ledger, Segment
from meshlens.durable_file import fsync_dir

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class WriterOptions:
    node: str
    fsync: bool
    flush_interval: float
    segment_max_bytes: int
    memory_budget: int
    disk_budget: int


class Batch:
    """The records of one group commit. An appender holds its batch until it is durable:
    `wait()` blocks a thread; `add_done_callback` suits an event loop (no thread parked)."""

    __slots__ = (
        "_callbacks",
        "_lock",
        "done",
        "error",
        "first_ns",
        "frames",
        "items",
        "nbytes",
        "records",
    )

    def __init__(self) -> None:
        self.frames: list[bytes] = []  # the buffers of its frames, in order (one writev)
        self.nbytes = 0
        self.records = 0
        self.items = 0
        self.first_ns = 0
        self.done = threading.Event()
        self.error: StoreUnavailable | None = None
        self._lock = threading.Lock()
        self._callbacks: list[Callable[[Batch], None]] | None = []

    def wait(self) -> None:
        """Block until written (and fsynced); raise StoreUnavailable if that failed."""
        self.done.wait()
        if self.error is not None:
            raise StoreUnavailable(self.error.path, self.error.reason)

    def add_done_callback(self, fn: Callable[[Batch], None]) -> None:
        """Call `fn(batch)` once the batch is done (in the writer thread, or now if it is)."""
        with self._lock:
            if self._callbacks is not None:
                self._callbacks.append(fn)
                return
        fn(self)

    def finish(self) -> None:
        """Mark done and run the callbacks (the writer thread, once)."""
        self.done.set()
        with self._lock:
            callbacks, self._callbacks = self._callbacks, None
        for fn in callbacks or ():
            try:
                fn(self)
            except Exception:  # a waiter's bug must not stop the writer
                log.exception("WAL batch callback failed")


class WalWriter:
    def __init__(self, data_dir: Path, ledger: Ledger, opts: WriterOptions) -> None:
        self.data_dir = data_dir
        self.ledger = ledger
        self.opts = opts
        self._wal_dir = ledger.wal_dir
        self._wake = threading.Condition(ledger.lock)
        self._batch = Batch()
        self._in_flight = 0
        self._state = "running"  # -> "closing" (drain, roll, exit) or "failed" (a bug)
        self._active: wal.WalFile | None = None
        self._active_seq = 0
        self._active_opened = 0.0
        self._roll_requested = False
        self._thread = threading.Thread(target=self._run, name="meshlens-wal-writer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float | None) -> None:
        """Write what is queued, roll the active segment, stop the thread."""
        with self.ledger.lock:
            if self._state == "running":
                self._state = "closing"
            self._wake.notify_all()
        self._thread.join(timeout)

    @property
    def in_flight(self) -> int:
        return self._in_flight

    # ---- appenders -----------------------------------------------------------------------

    def append(self, frame: Sequence[bytes], items: int, refuse: str | None) -> None:
        """Queue one framed record and wait until it is durable. `refuse`: why the store does
        not take writes (checked under the lock), or None."""
        self.enqueue(frame, items, refuse).wait()

    def enqueue(self, frame: Sequence[bytes], items: int, refuse: str | None) -> Batch:
        """Queue one framed record, as its buffers (`wal.frame_parts(...)`, or
        `[wal.frame(...)]`), without waiting; the returned batch says when it is durable.
        Raises StoreUnavailable / Overloaded at once."""
        n = sum(len(b) for b in frame)
        ledger = self.ledger
        with ledger.lock:
            if refuse is None and self._state != "running":
                refuse = f"WAL writer {self._state}"
            if refuse is not None:
                raise StoreUnavailable(str(self._wal_dir), refuse)
            budget = self.opts.memory_budget
            if self._in_flight and self._in_flight + n > budget:
                ledger.counters["overloaded_rejections"] = (
                    ledger.counters.get("overloaded_rejections", 0) + 1
                )
                raise Overloaded(f"memory budget ({budget} bytes in flight)", self._retry_after())
            disk = self.opts.disk_budget
            if disk and ledger.pending_bytes() + self._in_flight > disk:  # incl. unwritten
                ledger.counters["overloaded_rejections"] = (
                    ledger.counters.get("overloaded_rejections", 0) + 1
                )
                raise Overloaded(
                    f"disk budget ({disk} bytes of unconverted WAL)", self._disk_retry_after()
                )
            batch = self._batch
            batch.frames.extend(frame)
            batch.nbytes += n
            batch.records += 1
            batch.items += items
            if not batch.first_ns:
                batch.first_ns = time.time_ns()
            self._in_flight += n
            self._wake.notify()
        return batch

    def _disk_retry_after(self) -> float:
        """About when converting one segment frees room: the last conversion's duration while
        closed segments wait, else the flush interval (nothing converts before the roll).
        The caller holds the lock."""
        interval = max(1.0, self.opts.flush_interval)
        closed = len(self.ledger.segments) - (self._active is not None)
        if closed <= 0:
            return interval
        took = self.ledger.gauges.get("last_flush_seconds", 0.0)
        return round(min(interval, max(0.1, took)), 3)

    def _retry_after(self) -> float:
        return round(max(0.1, 2 * self.ledger.gauges.get("last_fsync_seconds", 0.0)), 3)

    def request_roll(self, target: int) -> None:
        """Roll the active segment if its number is at most `target` (caller holds the lock)."""
        if self._active is not None and self._active_seq <= target:
            self._roll_requested = True
            self._wake.notify_all()

    # ---- the writer thread ---------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._loop()
        except BaseException as exc:  # a bug here must not leave appenders waiting forever
            log.exception("WAL writer stopped")
            with self.ledger.lock:
                self._state = "failed"
                batch, self._batch = self._batch, Batch()
            batch.error = StoreUnavailable(str(self._wal_dir), f"WAL writer failed: {exc!r}")
            batch.finish()
            raise

    def _loop(self) -> None:
        interval = self.opts.flush_interval
        while True:
            with self.ledger.lock:
                while not (self._batch.frames or self._state != "running"):
                    if self._active is None:
                        self._roll_requested = False
                        self._wake.wait()
                        continue
                    left = self._active_opened + interval - time.monotonic()
                    if left <= 0 or self._roll_requested:
                        break
                    self._wake.wait(left)
                batch = self._batch
                if batch.frames:
                    self._batch = Batch()
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
                or active.size >= self.opts.segment_max_bytes
                or time.monotonic() - self._active_opened >= interval
            ):
                self._roll()
            if closing:
                with self.ledger.lock:
                    if not self._batch.frames and self._active is None:
                        return

    def _open_segment(self, first_ns: int) -> None:
        seq = self.ledger.allocate()
        path = wal_segment_path(self.data_dir, self.opts.node, seq)
        try:
            seg = wal.WalFile(path)
            if self.opts.fsync:
                fsync_dir(self._wal_dir)  # the new name must survive a crash too
        except OSError:
            try:
                path.unlink(missing_ok=True)
            except OSError:
                pass
            raise
        self._active, self._active_seq, self._active_opened = seg, seq, time.monotonic()
        self.ledger.add(seq, Segment(path, seg.size, first_ns), queued=False)

    def _write_batch(self, batch: Batch) -> None:
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
            seg.write(batch.frames)
            if self.opts.fsync:
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
        ledger = self.ledger
        with ledger.lock:
            self._in_flight -= batch.nbytes
            c = ledger.counters
            if error is None:
                assert self._active is not None
                for name, n in (
                    ("records_appended", batch.records),
                    ("items_appended", batch.items),
                    ("bytes_appended", batch.nbytes),
                    ("batches_written", 1),
                ):
                    c[name] = c.get(name, 0) + n
                ledger.gauges["last_batch_records"] = batch.records
                ledger.gauges["last_fsync_seconds"] = elapsed
                ledger.segments[self._active_seq].size = self._active.size
            else:
                c["append_failures"] = c.get("append_failures", 0) + batch.records
        if error is not None:
            reason = (error.strerror if isinstance(error, OSError) else None) or repr(error)
            log.error(
                "WAL write to %s failed (%s); %d appends refused", where, reason, batch.records
            )
            batch.error = StoreUnavailable(where, f"WAL write failed: {reason}")
            if self._active is not None:
                self._active.broken = True  # roll: start the next batch on a fresh segment
        batch.finish()

    def _roll(self) -> None:
        """Close the active segment and hand it to the converter."""
        seg, seq = self._active, self._active_seq
        assert seg is not None
        self._active = None
        try:
            if seg.broken:  # cut a failed batch's bytes once more (space may be back by now)
                os.ftruncate(seg.fd, seg.size)
            if self.opts.fsync:
                seg.sync()
        except OSError as exc:
            log.error("cleaning up %s at roll failed: %s", seg.path, exc)
        seg.close()
        if not self.ledger.close(seq, seg.size):
            try:
                seg.path.unlink(missing_ok=True)
            except OSError as exc:
                log.warning("cannot remove empty WAL segment %s: %s", seg.path, exc)
