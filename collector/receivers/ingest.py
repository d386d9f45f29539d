"""The sink every receiver shares: durable append, self-metrics, drain on stop.

`Ingest.append` blocks until the store says the record is durable (group-commit fsync), so
callers acknowledge only after it returns. The store enforces the memory and disk budgets
(`Overloaded` -> RESOURCE_EXHAUSTED / 429 with its retry hint); Ingest tracks the bytes and
requests it holds so shutdown can wait for them before the store closes.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from meshlens.collector.decode import utf8
from meshlens.collector.errors import CollectorError, DecodeError, StoreUnavailable
from meshlens.collector.receivers import otlp
from meshlens.collector.receivers.failures import classify
from meshlens.collector.selfmetrics import SelfMetrics
from meshlens.collector.store.records import RecordKind


class Pending(Protocol):
    """A queued append (collector.store.wal_append.Batch)."""

    error: StoreUnavailable | None

    def add_done_callback(self, fn: Callable[[Any], None]) -> None: ...


class Appender(Protocol):
    """What Ingest needs of collector.store.store.Store."""

    def append(
        self, kind: RecordKind, payload: bytes, context: bytes = b"", items: int = 1
    ) -> None: ...

    def submit(
        self, kind: RecordKind, payload: bytes, context: bytes = b"", items: int = 1
    ) -> Pending: ...


class Ingest:
    def __init__(self, store: Appender, metrics: SelfMetrics) -> None:
        self._store = store
        self.metrics = metrics
        self._inflight = 0
        self._requests = 0
        self._closed = False
        self._cond = threading.Condition()

    @property
    def inflight_bytes(self) -> int:
        return self._inflight

    def _acquire(self, n: int) -> None:
        with self._cond:
            if self._closed:
                raise StoreUnavailable("-", "the collector is shutting down")
            self._inflight += n
            self._requests += 1
        self.metrics.inflight_bytes.inc(n)

    def _release(self, n: int) -> None:
        with self._cond:
            self._inflight -= n
            self._requests -= 1
            if self._requests == 0:
                self._cond.notify_all()
        self.metrics.inflight_bytes.dec(n)

    def append(
        self, kind: RecordKind, payload: bytes, *, items: int, context: bytes = b""
    ) -> float:
        """Append durably; returns the seconds it took. Raises Overloaded / StoreUnavailable."""
        n = len(payload) + len(context)
        self._acquire(n)
        try:
            t0 = time.perf_counter()
            self._store.append(kind, payload, context, items)
            return time.perf_counter() - t0
        finally:
            self._release(n)

    def submit(
        self, kind: RecordKind, payload: bytes, *, items: int, context: bytes = b""
    ) -> asyncio.Future[float]:
        """`append` for an event loop, without a thread per append: queue the record and
        return a future that gets the seconds until it was durable, or StoreUnavailable.
        Refusals (Overloaded, StoreUnavailable, PayloadTooLarge) raise at once."""
        loop = asyncio.get_running_loop()
        n = len(payload) + len(context)
        self._acquire(n)
        t0 = time.perf_counter()
        try:
            pending = self._store.submit(kind, payload, context, items)
        except BaseException:
            self._release(n)
            raise
        fut: asyncio.Future[float] = loop.create_future()

        def settle() -> None:  # on the loop
            if fut.done():  # the waiter went away (stream cancelled)
                return
            if pending.error is not None:
                fut.set_exception(StoreUnavailable(pending.error.path, pending.error.reason))
            else:
                fut.set_result(time.perf_counter() - t0)

        def durable(_batch: object) -> None:  # in the WAL writer thread
            self._release(n)
            try:
                loop.call_soon_threadsafe(settle)
            except RuntimeError:  # the loop is closed: nobody waits any more
                pass

        pending.add_done_callback(durable)
        return fut

    def close(self, timeout_s: float) -> bool:
        """Refuse new appends and wait for the ones in flight; False if some did not finish."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            self._closed = True
            while self._requests:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def _check_repairing(self, receiver: str, signal: otlp.Signal, raw: bytes) -> otlp.Checked:
        """`otlp.check`; a request refused for invalid UTF-8 in string fields is checked
        again with those bytes replaced (one bad attribute must not lose its neighbours)."""
        try:
            return otlp.check(signal, raw)
        except DecodeError as exc:
            try:
                fixed = utf8.repair(signal.request.DESCRIPTOR, raw)
            except ValueError:
                raise exc from None  # malformed wire data: the parser's message says more
            if not fixed.fields:
                raise
        checked = otlp.check(signal, fixed.payload)
        self.metrics.utf8_repaired(receiver, signal.name, fixed.fields)
        return checked

    def otlp(self, receiver: str, signal: otlp.Signal, raw: bytes) -> otlp.Checked:
        """Check, store and count one OTLP export request; the caller acks the result or maps
        the raised CollectorError with `failures.classify`."""
        try:
            checked = self._check_repairing(receiver, signal, raw)
        except DecodeError:
            self.metrics.request(receiver, signal.name, "invalid", nbytes=len(raw))
            raise
        received = checked.items + checked.rejected
        append_s = None
        if checked.items:
            try:
                append_s = self.append(signal.kind, checked.payload, items=checked.items)
            except CollectorError as exc:
                reason = classify(exc).reason
                self.metrics.request(
                    receiver,
                    signal.name,
                    reason,
                    nbytes=len(raw),
                    received=received,
                    rejected=received,
                    reason=reason,
                )
                raise
        self.metrics.request(
            receiver,
            signal.name,
            "partial" if checked.rejected else "ok",
            nbytes=len(raw),
            received=received,
            accepted=checked.items,
            rejected=checked.rejected,
            reason="invalid",
            append_s=append_s,
        )
        return checked
