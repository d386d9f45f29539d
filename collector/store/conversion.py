"""The converter thread: closed WAL segments -> `convert_segment` (worker processes) -> delete.

Up to `decode_workers` segments convert at once in a `ProcessPoolExecutor` (spawned, not forked:
forking a process with gRPC threads running is unsafe), so decoding does not compete with the
receive path for the GIL; with 0 workers they convert one at a time in this thread. A WAL
segment is deleted only after its Parquet files are fsynced. A failed conversion keeps the
segment and is retried with backoff (a crashed worker's pool is replaced); at shutdown a failing
segment is left in the WAL for the next start instead of holding the shutdown hostage.
"""

from __future__ import annotations

import functools
import heapq
import logging
import multiprocessing
import threading
import time
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

from collector.store.converter import ConvertResult, convert_segment, warm_up
from collector.store.ledger import Ledger, Segment
from collector.store.writer import fsync_dir

log = logging.getLogger(__name__)

MAX_RETRY_DELAY = 30.0


@dataclass(frozen=True, slots=True)
class ConverterOptions:
    node: str
    decode_workers: int
    decoders: tuple[tuple[int, str], ...]
    fsync: bool


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
        if self.opts.decode_workers > 0:
            self._pool = self._new_pool()
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
        pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
        for _ in range(workers):  # start and import now, not at the first segment
            pool.submit(warm_up, dict(self.opts.decoders))
        return pool

    def _run(self) -> None:
        cap = max(1, self.opts.decode_workers)
        ledger = self.ledger
        while True:
            with ledger.lock:
                while not self._completed:
                    now = time.monotonic()
                    due = bool(ledger.queue) and ledger.queue[0][0] <= now
                    if due and len(self._inflight) < cap:
                        break
                    if self._closing and not ledger.queue and not self._inflight:
                        return
                    wait = 0.5 if not ledger.queue else max(0.01, ledger.queue[0][0] - now)
                    ledger.ready.wait(min(wait, 0.5))
                completed, self._completed = self._completed, []
                todo: list[tuple[int, Segment]] = []
                now = time.monotonic()
                while (
                    ledger.queue
                    and ledger.queue[0][0] <= now
                    and len(self._inflight) + len(todo) < cap
                ):
                    _, seq = heapq.heappop(ledger.queue)
                    if seq in ledger.segments and seq not in self._inflight:
                        todo.append((seq, ledger.segments[seq]))
            for seq, fut in completed:
                self._finish(seq, fut)
            for seq, seg in todo:
                self._submit(seq, seg)

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
                fut.set_exception(BrokenProcessPool(str(exc)))
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
        seg.attempts += 1
        delay = min(MAX_RETRY_DELAY, 0.5 * 2 ** min(seg.attempts, 6))
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
        self.ledger.retry(seq, delay)
