"""The store's book of WAL segments not yet converted, its sequence numbers and its counters.

The writer thread, the converter thread, the maintenance thread and callers of `Store.stats`
share one lock (`Ledger.lock`); the writer's and converter's wake-up conditions are built on it.

Sequence numbers name WAL segments and their Parquet files, so they must never repeat or go
back, even when the WAL is empty and the clock stepped back (a lower number could fall inside a
compacted file's range and be hidden by it). A bound above every number handed out is persisted
in `wal/<node>.seq` ahead of use: one small fsynced write an hour.
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from meshlens.collector.store import wal
from meshlens.durable_file import write_atomic

log = logging.getLogger(__name__)

RESERVE_AHEAD_US: Final = 3600 * 1_000_000


@dataclass(slots=True)
class Segment:
    path: Path
    size: int
    first_ns: int  # receive time of its first record (for the WAL lag)
    limit: int | None = None  # bytes known good once closed (None: scan to the first bad frame)
    attempts: int = 0  # failed conversions so far that were the segment's own fault
    suspect: bool = False  # shared a worker pool that crashed: convert it alone next time


class Ledger:
    def __init__(self, wal_dir: Path, node: str) -> None:
        self.wal_dir = wal_dir
        self.node = node
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)  # a segment left the ledger
        self.ready = threading.Condition(self.lock)  # a segment is queued (wakes the converter)
        self.segments: dict[int, Segment] = {}  # every unconverted segment, active included
        self.queue: list[tuple[float, int]] = []  # (not before, seq) of closed segments
        self.counters: dict[str, float] = {}
        self.gauges: dict[str, float] = {}
        self.seq = 0  # highest number handed out
        self._reserved = 0
        self._reserve_lock = threading.Lock()

    # ---- sequence numbers ----------------------------------------------------------------

    @property
    def seq_path(self) -> Path:
        return self.wal_dir / f"{self.node}.seq"

    def load_reservation(self) -> None:
        try:
            self._reserved = int(self.seq_path.read_text().strip() or 0)
        except FileNotFoundError:
            self._reserved = 0
        except (OSError, ValueError) as exc:
            log.warning("ignoring unreadable %s: %s", self.seq_path, exc)
            self._reserved = 0
        with self.lock:
            self.seq = max(self.seq, self._reserved)

    def note_seq(self, seq: int) -> None:
        """`seq` was used (found in the WAL): never hand it out again."""
        with self.lock:
            self.seq = max(self.seq, seq)

    def allocate(self) -> int:
        """A new sequence number, above every earlier one and durably reserved."""
        with self.lock:
            seq = max(self.seq + 1, time.time_ns() // 1000)
            self.seq = seq
        with self._reserve_lock:
            if seq > self._reserved:
                self._write_reservation(seq + RESERVE_AHEAD_US)
        return seq

    def _write_reservation(self, value: int) -> None:
        write_atomic(self.seq_path, f"{value}\n", fsync_parent=True)
        self._reserved = value

    # ---- segments --------------------------------------------------------------------------

    def add(self, seq: int, seg: Segment, *, queued: bool) -> None:
        with self.lock:
            self.seq = max(self.seq, seq)
            self.segments[seq] = seg
            if queued:
                heapq.heappush(self.queue, (0.0, seq))
                self.ready.notify()

    def grow(self, seq: int, size: int) -> None:
        with self.lock:
            self.segments[seq].size = size

    def close(self, seq: int, size: int) -> bool:
        """The active segment is complete at `size` bytes: queue it for conversion. False (and
        forgotten) when it holds no record."""
        with self.lock:
            keep = size > len(wal.MAGIC)
            if keep:
                self.segments[seq].limit = size
                heapq.heappush(self.queue, (0.0, seq))
                self.ready.notify()
            else:
                self.segments.pop(seq, None)
            self.changed.notify_all()
            return keep

    def drop(self, seq: int) -> None:
        with self.lock:
            self.segments.pop(seq, None)
            self.changed.notify_all()

    def retry(self, seq: int, delay: float) -> None:
        with self.lock:
            heapq.heappush(self.queue, (time.monotonic() + delay, seq))
            self.ready.notify()

    def pending_bytes(self) -> int:
        """Unconverted WAL bytes; the caller holds `lock`."""
        return sum(s.size for s in self.segments.values())

    def below_seq(self) -> int:
        """Every number below this one is converted (compaction may merge those files)."""
        with self.lock:
            return min(min(self.segments, default=self.seq + 1), self.seq + 1)

    def wait_converted(self, timeout: float, nudge: Callable[[int], None]) -> bool:
        """Wait until every segment numbered up to now is converted. `nudge(target)` (called
        with the lock held) asks the writer to roll its active segment."""
        deadline = time.monotonic() + timeout
        with self.lock:
            target = self.seq
            while any(s <= target for s in self.segments):
                nudge(target)
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.changed.wait(min(left, 0.5))
            return True

    # ---- counters ------------------------------------------------------------------------

    def count(self, **deltas: float) -> None:
        with self.lock:
            for name, n in deltas.items():
                self.counters[name] = self.counters.get(name, 0) + n

    def snapshot(self) -> dict[str, float]:
        """Counters, gauges and the WAL backlog; the caller holds `lock`."""
        values = {**self.counters, **self.gauges}
        oldest = min((s.first_ns for s in self.segments.values() if s.first_ns), default=0)
        values["wal_lag_seconds"] = max(0.0, (time.time_ns() - oldest) / 1e9) if oldest else 0.0
        values["wal_bytes_pending"] = self.pending_bytes()
        values["wal_segments_pending"] = len(self.segments)
        return values


def first_received_ns(path: Path) -> int:
    """received_ns of a segment's first record (for the WAL lag after recovery)."""
    want = len(wal.MAGIC) + wal.FRAME.size + 9  # magic, frame header, kind (u8), received (u64)
    try:
        with open(path, "rb") as f:
            head = f.read(want)
        return int.from_bytes(head[-8:], "little") if len(head) == want else 0
    except OSError:
        return 0
