"""The collector's own metrics on `/metrics` (Prometheus text), in an injected registry.

Receivers record one event per request (`SelfMetrics.request`); the store's numbers are read at
scrape time from `Store.stats()` (`StoreStatsCollector`), so nothing is double-booked and a
scrape sees the store as it is now. Other packages add collectors with `register`. No global
REGISTRY: two collectors in one process (tests) keep separate numbers.

    meshlens_receiver_requests_total{receiver,signal,outcome}
    meshlens_receiver_received_items_total{receiver,signal}    items in parsed requests
    meshlens_receiver_accepted_items_total{receiver,signal}    items durable in the WAL
    meshlens_receiver_rejected_items_total{receiver,signal,reason}
    meshlens_receiver_decode_errors_total{receiver,signal}     requests that did not parse
    meshlens_receiver_utf8_repaired_fields_total{receiver,signal}  string fields whose invalid
                                                               UTF-8 was replaced by U+FFFD
    meshlens_receiver_received_bytes_total{receiver,signal}
    meshlens_receiver_append_duration_seconds{receiver}        receipt -> durable (histogram)
    meshlens_receiver_inflight_bytes                           request bytes held right now
    meshlens_envoy_als_streams                                 open ALS streams
    meshlens_store_*                                           from Store.stats()
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Iterator
from typing import Any, Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

CONTENT_TYPE: Final = CONTENT_TYPE_LATEST
_APPEND_BUCKETS: Final = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)

# Store.stats() fields that only grow: exported as counters (`_total`); the rest are gauges.
# Fields not listed are exported as gauges under their own name, so a new stat shows up
# without a code change here.
_STORE_COUNTERS: Final = {
    "records_appended": "WAL records (requests, ALS messages) appended",
    "items_appended": "items (spans, points, log records, ALS entries) appended to the WAL",
    "bytes_appended": "bytes appended to the WAL",
    "append_failures": "appends refused because a WAL write or fsync failed",
    "overloaded_rejections": "appends refused because a memory or disk budget was full",
    "segments_converted": "WAL segments converted to Parquet",
    "records_converted": "WAL records converted to Parquet",
    "rows_written": "rows written to Parquet",
    "decode_errors": "WAL records the decoders rejected",
    "attributes_dropped": "attributes dropped over the attribute count limits",
    "timestamps_clamped": "rows stamped later than receipt + ingest_max_future, set to receipt",
    "rows_too_old": "rows older than receipt - ingest_max_age, dropped",
    "conversion_failures": "segment conversions that failed (retried)",
    "segments_dead_lettered": "WAL segments moved to deadletter/ after repeated failed conversions",
    "batches_written": "WAL group-commit batches written",
    "wal_bytes_truncated": "torn or corrupt WAL tail bytes dropped at recovery",
    "compactions": "compactions run",
    "files_compacted": "Parquet files merged by compaction",
    "files_deleted": "compacted Parquet inputs deleted",
    "partitions_expired": "partitions deleted by retention",
    "hours_paired": "settled hours whose requests were stored paired (the traffic view)",
}
_STORE_HELP: Final = {
    "bytes_in_flight": "bytes of appends waiting for the disk",
    "wal_bytes_pending": "WAL bytes not yet converted to Parquet",
    "wal_segments_pending": "WAL segments not yet converted to Parquet",
    "wal_lag_seconds": "age of the oldest WAL record not yet converted",
    "last_batch_records": "records in the last group-commit batch",
    "last_fsync_seconds": "duration of the last WAL write + fsync",
    "last_flush_seconds": "duration of the last WAL segment conversion to Parquet (flush)",
}


class SelfMetrics:
    """Receiver metrics in `registry` (a fresh CollectorRegistry when not given)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        r = self.registry
        rs = ("receiver", "signal")
        self._requests = Counter(
            "meshlens_receiver_requests",
            "requests (ALS: stream messages) by outcome",
            (*rs, "outcome"),
            registry=r,
        )
        self._received = Counter(
            "meshlens_receiver_received_items", "items in requests that parsed", rs, registry=r
        )
        self._accepted = Counter(
            "meshlens_receiver_accepted_items",
            "items durable in the WAL and acknowledged",
            rs,
            registry=r,
        )
        self._rejected = Counter(
            "meshlens_receiver_rejected_items",
            "items refused (invalid, over budget, store unavailable)",
            (*rs, "reason"),
            registry=r,
        )
        self._decode_errors = Counter(
            "meshlens_receiver_decode_errors",
            "requests refused because they did not parse",
            rs,
            registry=r,
        )
        self._utf8_repaired = Counter(
            "meshlens_receiver_utf8_repaired_fields",
            "string fields whose invalid UTF-8 bytes were replaced by U+FFFD (request kept)",
            rs,
            registry=r,
        )
        self._bytes = Counter(
            "meshlens_receiver_received_bytes", "request bytes received", rs, registry=r
        )
        self._append = Histogram(
            "meshlens_receiver_append_duration_seconds",
            "time from a parsed request to durable in the WAL",
            ("receiver",),
            buckets=_APPEND_BUCKETS,
            registry=r,
        )
        self.inflight_bytes = Gauge(
            "meshlens_receiver_inflight_bytes",
            "request bytes held by receivers right now",
            registry=r,
        )
        self.als_streams = Gauge("meshlens_envoy_als_streams", "open Envoy ALS streams", registry=r)
        self._children: dict[tuple[Any, ...], Any] = {}
        self._lock = threading.Lock()

    def _child(self, metric: Any, *labels: str) -> Any:
        # .labels() validates and hashes on every call; receivers call this per request.
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            with self._lock:
                child = self._children.setdefault(key, metric.labels(*labels))
        return child

    def request(
        self,
        receiver: str,
        signal: str,
        outcome: str,
        *,
        nbytes: int = 0,
        received: int = 0,
        accepted: int = 0,
        rejected: int = 0,
        reason: str = "",
        append_s: float | None = None,
    ) -> None:
        """Record one request's fate. outcome: ok | partial | invalid | too_large | overloaded |
        unavailable | unauthenticated."""
        self._child(self._requests, receiver, signal, outcome).inc()
        if nbytes:
            self._child(self._bytes, receiver, signal).inc(nbytes)
        if received:
            self._child(self._received, receiver, signal).inc(received)
        if accepted:
            self._child(self._accepted, receiver, signal).inc(accepted)
        if rejected:
            self._child(self._rejected, receiver, signal, reason or outcome).inc(rejected)
        if outcome == "invalid" and not received:
            self._child(self._decode_errors, receiver, signal).inc()
        if append_s is not None:
            self._child(self._append, receiver).observe(append_s)

    def utf8_repaired(self, receiver: str, signal: str, fields: int) -> None:
        """Count string fields repaired in one request (collector.decode.utf8)."""
        if fields:
            self._child(self._utf8_repaired, receiver, signal).inc(fields)

    def register(self, collector: Collector) -> None:
        self.registry.register(collector)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class StoreStatsCollector(Collector):
    """Exports a stats dataclass (Store.stats()) as meshlens_store_* at scrape time."""

    def __init__(self, stats: Callable[[], object]) -> None:
        self._stats = stats

    def describe(self) -> list[Metric]:
        return []  # dynamic: the families come from the stats dataclass's fields

    def collect(self) -> Iterator[Metric]:
        stats = self._stats()
        if not dataclasses.is_dataclass(stats):
            return
        for f in dataclasses.fields(stats):
            value = getattr(stats, f.name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                continue
            name = f"meshlens_store_{f.name}"
            if f.name in _STORE_COUNTERS:
                yield CounterMetricFamily(name, _STORE_COUNTERS[f.name], value=float(value))
            else:
                help_text = _STORE_HELP.get(f.name, f"store statistic {f.name}")
                yield GaugeMetricFamily(name, help_text, value=float(value))
