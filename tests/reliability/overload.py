"""A burst far over the sustainable ingest rate against a real `meshlens serve` (shared by the
short test and the soak): bounded collector memory, RESOURCE_EXHAUSTED/UNAVAILABLE with retry
hints instead of unbounded queues, every acknowledged span stored, recovery afterwards."""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from tests.collector.conftest import ServeProcess, wait_for
from tests.collector.receivers.rows import count_rows
from tests.reliability.harness import (
    TRACES_EXPORT,
    kill9,
    launch,
    metric,
    rss_mib,
    spans_request,
)

SPANS = 1000  # per request, ~100 KB serialized
# Budgets small enough that this machine's conversion rate (tens of thousands of spans/s) is
# far below what 16 senders offer, so backpressure must engage within the burst.
# The memory bound is the ingest path's (the collector and its decode workers, which rss_mib
# sums): query workers are left out, they have their own --query-memory budget
# (tests/collector/test_query_isolation.py).
SERVE_ARGS = ("--disk-budget", "24MiB", "--memory-budget", "64MiB", "--query-workers", "0")


@dataclass
class OverloadReport:
    seconds: float = 0.0
    offered_rps: float = 0.0  # requests/s attempted
    codes: dict[str, int] = field(default_factory=dict)
    retry_hints: dict[str, str] = field(default_factory=dict)
    peak_rss_mib: float = 0.0
    acked_spans: int = 0
    stored_spans: int = 0
    recovery_s: float = 0.0


def burst(sp: ServeProcess, seconds: float, threads: int = 16) -> OverloadReport:
    rnd = random.Random(5)
    payloads = [
        spans_request(1 + k * SPANS, SPANS, time.time_ns() - 60 * 10**9, rnd) for k in range(8)
    ]
    report = OverloadReport(seconds=seconds)
    lock = threading.Lock()
    stop = threading.Event()
    acked = [0]
    sent = [0]

    def worker(k: int) -> None:
        with grpc.insecure_channel(sp.grpc_target) as ch:
            call = ch.unary_unary(
                TRACES_EXPORT, request_serializer=None, response_deserializer=None
            )
            j = k
            while not stop.is_set():
                try:
                    call(payloads[j % len(payloads)], timeout=30)
                    code = "OK"
                except grpc.RpcError as exc:
                    code = exc.code().name
                    trailers = dict(exc.trailing_metadata() or ())
                    with lock:
                        report.retry_hints.setdefault(
                            code, str(trailers.get("grpc-retry-pushback-ms", ""))
                        )
                j += 1
                with lock:
                    sent[0] += 1
                    report.codes[code] = report.codes.get(code, 0) + 1
                    if code == "OK":
                        acked[0] += 1

    pool = [threading.Thread(target=worker, args=(k,), daemon=True) for k in range(threads)]
    t0 = time.monotonic()
    for t in pool:
        t.start()
    while time.monotonic() - t0 < seconds:
        report.peak_rss_mib = max(report.peak_rss_mib, rss_mib(sp.proc.pid))
        time.sleep(0.2)
    stop.set()
    for t in pool:
        t.join(60)
    report.offered_rps = sent[0] / (time.monotonic() - t0)
    report.acked_spans = acked[0] * SPANS

    # Recovery: the backlog drains and a normal request is accepted again.
    t1 = time.monotonic()
    with grpc.insecure_channel(sp.grpc_target) as ch:
        call = ch.unary_unary(TRACES_EXPORT, request_serializer=None, response_deserializer=None)

        def accepted() -> bool:
            report.peak_rss_mib = max(report.peak_rss_mib, rss_mib(sp.proc.pid))
            try:
                call(payloads[0], timeout=10)
            except grpc.RpcError:
                return False
            return True

        wait_for(accepted, 120, "a request accepted after the burst", interval=0.2)
    report.acked_spans += SPANS
    wait_for(
        lambda: metric(sp, "meshlens_store_wal_bytes_pending") == 0,
        120,
        "the WAL backlog converted",
        interval=0.2,
    )
    report.recovery_s = time.monotonic() - t1
    return report


def run_overload(data_dir: Path, seconds: float) -> OverloadReport:
    sp = launch(data_dir, *SERVE_ARGS, flush_interval="0.5s")
    try:
        report = burst(sp, seconds)
        assert sp.stop(timeout=120) == 0, sp.log()[-3000:]
    finally:
        if sp.proc.poll() is None:
            kill9(sp)
    report.stored_spans = count_rows(data_dir, "spans")
    return report
