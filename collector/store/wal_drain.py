"""The converter thread: closed WAL segments -> `convert_segment` (worker processes) -> delete.

Up to `decode_workers` segments convert at once in a `ProcessPoolExecutor` (spawned, not forked:
forking a process with gRPC threads running is unsafe), so decoding does not compete with the
receive path for the GIL; with 0 workers they convert one at a time in this thread. A WAL
segment is deleted only after its Parquet files are fsynced. A failed conversion keeps the
segment and is retried with backoff (a crashed worker's pool is replaced); at shutdown a failing
segment is left in the WAL for the next start instead of holding the shutdown hostage.

Poison segments: after `max_attempts` failed tries a segment moves to `<data>/deadletter/`
(`converter.dead_letter_segment`) so it stops costing a worker forever. Environmental failures
(OSError such as a full disk, a decoder that cannot be imported) are retried without counting:
they are not the segment's fault. A dead worker fails every segment of its pool, so a pool
crash does not count against a segment that shared it; the segment becomes a suspect and is
tried again alone, where a crash can only be its own and counts.

Workers start with `child_process.init_child`: they ignore SIGINT/SIGTERM (the parent drains
them at shutdown) and die with the parent. The converter thread creates and shuts down every
pool, so the thread that spawned the workers (PR_SET_PDEATHSIG follows it) outlives them.
"""

from __future__ import annotations

import functools
import heapq
import logging
import multiprocessing
import os
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

from meshlens.child_process import init_child
from meshlens.collector.store.ledger import Ledger, Segment
from meshlens.collector.store.wal_to_parquet import (
    ConvertResult,
    DecoderUnavailable,
    convert_segment,
    dead_letter_segment,
    warm_up,
)
from meshlens.durable_file import fsync_dir

log = logging.getLogger(__name__)

# Counts of the decode limits that the store's statistics carry (StoreStats fields).
LIMITED_COUNTS = frozenset({"attributes_dropped", "timestamps_clamped", "rows_too_old"})

MAX_RETRY_DELAY = 30.0
SUSPECT_RETRY_DELAY = 0.1  # a segment that only shared a crashed pool is retried (alone) soon


class PoolUnavailable(BrokenProcessPool):
    """The pool was already broken when the segment was submitted: it never ran."""


@dataclass(frozen=True, slots=True)
class ConverterOptions:
    node: str
    decode_workers: int
    decoders: tuple[tuple[int, str], ...]
    fsync: bool
    max_attempts: int = 5  # failed tries before the segment is dead-lettered (0 = never)


class Converter:
    def __init__(self, data_dir: Path, ledger: Ledger, opts: ConverterOptions) -> None:
        self.data_dir = data_dir
        self.ledger = ledger
        self.opts = opts
        self._inflight: dict[int, Future[ConvertResult]] = {}
        self._gen_of: dict[int, int] = {}  # seq -> pool generation it was submitted to
        self._completed: list[tuple[int, Future[ConvertResult]]] = []
        self._closing = False
        self._pool: ProcessPoolExecutor | None = None
        self._pool_gen = 0
        self._thread = threading.Thread(target=self._run, name="meshlens-converter", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float | None) -> None:
        """Convert everything queued (the writer has stopped), then stop."""
        with self.ledger.lock:
            self._closing = True
            self.ledger.ready.notify_all()
        self._thread.join(timeout)
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)

    def _new_pool(self) -> ProcessPoolExecutor:
        workers = self.opts.decode_workers
        pool = ProcessPoolExecutor(
            workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=init_child,
            initargs=(os.getpid(),),
        )
        for _ in range(workers):  # start and import now, not at the first segment
            pool.submit(warm_up, dict(self.opts.decoders))
        return pool

    def _run(self) -> None:
        # Pools are made, and shut down, by this thread: workers die with the thread that
        # spawned them (PR_SET_PDEATHSIG), and this one outlives every conversion.
        if self.opts.decode_workers > 0:
            self._pool = self._new_pool()
        try:
            self._loop()
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=True, cancel_futures=True)

    def _loop(self) -> None:
        cap = max(1, self.opts.decode_workers)
        ledger = self.ledger
        while True:
            with ledger.lock:
                while not self._completed:
                    now = time.monotonic()
                    due = bool(ledger.queue) and ledger.queue[0][0] <= now
                    if due and self._room(cap) > 0:
                        break
                    if self._closing and not ledger.queue and not self._inflight:
                        return
                    # Due but no room: a completion notifies `ready`, no need to poll.
                    idle = not ledger.queue or due
                    wait = 0.5 if idle else max(0.01, ledger.queue[0][0] - now)
                    ledger.ready.wait(min(wait, 0.5))
                completed, self._completed = self._completed, []
                todo: list[tuple[int, Segment]] = []
                now = time.monotonic()
                while ledger.queue and ledger.queue[0][0] <= now and self._room(cap, todo) > 0:
                    _, seq = heapq.heappop(ledger.queue)
                    if seq in ledger.segments and seq not in self._inflight:
                        todo.append((seq, ledger.segments[seq]))
            for seq, fut in completed:
                self._finish(seq, fut)
            for seq, seg in todo:
                self._submit(seq, seg)

    def _room(self, cap: int, todo: Sequence[tuple[int, Segment]] = ()) -> int:
        """How many more segments may start now; the caller holds the ledger lock. A suspect
        (it shared a pool that crashed) runs alone, so a crash then is its own."""
        running = [self.ledger.segments.get(q) for q in self._inflight] + [g for _, g in todo]
        if any(g is not None and g.suspect for g in running):
            return 0
        head = self.ledger.segments.get(self.ledger.queue[0][1]) if self.ledger.queue else None
        if head is not None and head.suspect:
            return 0 if running else 1
        return cap - len(running)

    def _submit(self, seq: int, seg: Segment) -> None:
        o = self.opts
        args = (
            str(self.data_dir),
            o.node,
            seq,
            str(seg.path),
            seg.limit,
            dict(o.decoders),
            o.fsync,
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
                fut.set_exception(PoolUnavailable(str(exc)))
        with self.ledger.lock:
            self._inflight[seq] = fut
            self._gen_of[seq] = self._pool_gen
        fut.add_done_callback(functools.partial(self._on_done, seq))

    def _on_done(self, seq: int, fut: Future[ConvertResult]) -> None:
        with self.ledger.lock:
            self._completed.append((seq, fut))
            self.ledger.ready.notify()

    def _finish(self, seq: int, fut: Future[ConvertResult]) -> None:
        ledger = self.ledger
        with ledger.lock:
            self._inflight.pop(seq, None)
            gen = self._gen_of.pop(seq, -1)
            seg = ledger.segments.get(seq)
        if seg is None:
            return
        try:
            result = fut.result()
        except Exception as exc:
            self._failed(seq, seg, exc, gen)
            return
        try:
            seg.path.unlink()
            fsync_dir(ledger.wal_dir)
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
        ledger.count(
            segments_converted=1,
            records_converted=result.records,
            rows_written=sum(result.rows.values()),
            decode_errors=result.decode_errors,
            **{k: n for k, n in result.limited.items() if k in LIMITED_COUNTS},
        )
        with ledger.lock:
            ledger.gauges["last_flush_seconds"] = result.seconds
        ledger.drop(seq)
        log.debug(
            "converted %s: %d records -> %s in %.3fs",
            seg.path.name,
            result.records,
            result.rows,
            result.seconds,
        )

    def _failed(self, seq: int, seg: Segment, exc: BaseException, gen: int) -> None:
        if isinstance(exc, FileNotFoundError) and not seg.path.exists():
            log.error("WAL segment %s vanished before conversion", seg.path)
            self.ledger.drop(seq)
            return
        self.ledger.count(conversion_failures=1)
        with self.ledger.lock:
            closing = self._closing
        if closing:
            # The segment stays in the WAL (and in the ledger, so compaction keeps clear of its
            # number) and is converted at the next start.
            log.error(
                "converting WAL segment %s failed at shutdown (%r); it stays in the WAL "
                "and is converted at the next start",
                seg.path.name,
                exc,
            )
            return
        crashed = isinstance(exc, BrokenProcessPool)
        if crashed and self._pool is not None and gen == self._pool_gen:
            # A worker died (crash, OOM kill): every future of that pool fails; renew it once.
            old, self._pool = self._pool, self._new_pool()
            self._pool_gen += 1
            old.shutdown(wait=False, cancel_futures=True)
        counts = self._counts(seg, exc, crashed)
        if counts:
            seg.attempts += 1
        limit = self.opts.max_attempts
        if counts and limit > 0 and seg.attempts >= limit:
            self._dead_letter(seq, seg, exc)
            return
        if crashed and not counts:
            seg.suspect = True
            delay = SUSPECT_RETRY_DELAY
        else:
            delay = min(MAX_RETRY_DELAY, 0.5 * 2 ** min(max(seg.attempts, 1), 6))
        log.error(
            "converting WAL segment %s failed (%s, retry in %.1fs): %r",
            seg.path.name,
            f"try {seg.attempts} of {limit}" if counts and limit else "not counted",
            delay,
            exc,
        )
        self.ledger.retry(seq, delay)

    def _counts(self, seg: Segment, exc: BaseException, crashed: bool) -> bool:
        """Whether this failure is the segment's own (a try towards the dead-letter limit)."""
        if crashed:
            # Alone in its pool (a suspect) the crash was this segment's.
            return seg.suspect and not isinstance(exc, PoolUnavailable)
        # The disk or the installation, not the segment: retried as long as it takes.
        return not isinstance(exc, OSError | DecoderUnavailable)

    def _dead_letter(self, seq: int, seg: Segment, exc: BaseException) -> None:
        try:
            dest = dead_letter_segment(
                self.data_dir, self.opts.node, seq, seg.path, repr(exc), fsync=self.opts.fsync
            )
        except OSError as err:  # keep it in the WAL; a later try may move it
            log.error("cannot move WAL segment %s to the dead letters: %s", seg.path, err)
            self.ledger.retry(seq, MAX_RETRY_DELAY)
            return
        self.ledger.count(segments_dead_lettered=1)
        self.ledger.drop(seq)
        log.error(
            "WAL segment %s failed %d conversions (last: %r); moved to %s "
            "(requeue with Store.requeue_dead_letters, see README)",
            seg.path.name,
            seg.attempts,
            exc,
            dest,
        )
