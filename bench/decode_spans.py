"""Span decoding throughput: OTLP ExportTraceServiceRequest bytes -> `spans` Arrow table.

    .venv/bin/python bench/decode_spans.py [--requests 40] [--spans 1000] [--procs 1 2]

Pre-serialized 1000-span requests (as the WAL holds them), every span with fresh ids and
high-cardinality attributes, decoded in 1..N worker processes by the Python reference
(`collector.decode.otlp_traces.decode_traces`) and by the C wire decoder with the reference as
fallback (`collector.decode.otlp_traces_fast.decode_traces`; column `decoder`). Prints one
row per (scenario, decoder, processes): the best of --repeat runs, as wall throughput and per
CPU-second of the decoding processes (the latter is the steadier number on a shared machine).

    .venv/bin/python bench/decode_spans.py --decoders fast reference

A second table times the receive path's check of the same requests, in this process: the
Python reference (`collector.receivers.otlp.check_reference`: upb parse, then the item rules)
and the C walk the receiver asks first (`collector.decode._otlp_check.count`).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from meshlens.collector.decode import otlp_traces, otlp_traces_fast

DECODERS: dict[str, Callable[[bytes], Any]] = {
    "reference": otlp_traces.decode_traces,
    "fast": otlp_traces_fast.decode_traces,
}

T0 = 1_764_000_000_000_000_000


def _kv(key: str, value: object) -> KeyValue:
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    return KeyValue(key=key, value=AnyValue(string_value=str(value)))


def _resource(rs: Any, service: str) -> None:
    rs.resource.attributes.extend(
        [
            _kv("service.name", service),
            _kv("service.namespace", "shop"),
            _kv("service.version", "v1"),
            _kv("telemetry.sdk.language", "python"),
            _kv("telemetry.sdk.name", "opentelemetry"),
            _kv("telemetry.sdk.version", "1.45.2"),
            _kv("host.name", "node-1"),
        ]
    )


def sdk_request(seed: int, n: int) -> bytes:
    """SDK-style server/client spans, new semantic conventions (~600 B per span)."""
    rnd = random.Random(seed)
    req = ExportTraceServiceRequest()
    for s in range(5):
        rs = req.resource_spans.add()
        _resource(rs, f"svc-{s}")
        ss = rs.scope_spans.add()
        ss.scope.name = "opentelemetry.instrumentation.flask"
        for i in range(n // 5):
            sp = ss.spans.add()
            sp.trace_id, sp.span_id = rnd.randbytes(16), rnd.randbytes(8)
            sp.parent_span_id = rnd.randbytes(8)
            server = i % 2 == 0
            path = f"/api/v1/products/{rnd.randint(1, 10**9)}"
            sp.kind = Span.SPAN_KIND_SERVER if server else Span.SPAN_KIND_CLIENT
            sp.name = "GET /api/v1/products/{id}"
            sp.start_time_unix_nano = T0 + seed * 10**9 + i * 10**6
            sp.end_time_unix_nano = sp.start_time_unix_nano + rnd.randint(10**5, 5 * 10**7)
            sp.attributes.extend(
                [
                    _kv("http.request.method", "GET"),
                    _kv("http.route", "/api/v1/products/{id}"),
                    _kv("http.response.status_code", rnd.choice((200, 200, 200, 404, 503))),
                    _kv("url.path", path),
                    _kv("url.full", f"http://products-{s}.shop.svc.cluster.local:8080{path}"),
                    _kv("url.scheme", "http"),
                    _kv("server.address", f"products-{s}.shop.svc.cluster.local"),
                    _kv("server.port", 8080),
                    _kv("network.protocol.version", "1.1"),
                    _kv("network.peer.address", f"10.0.{s}.{i % 50}"),
                    _kv("user_agent.original", "python-requests/2.32.3"),
                    _kv("client.address", f"10.1.{s}.{i % 50}"),
                    _kv("http.request.body.size", rnd.randint(0, 4096)),
                ]
            )
    return req.SerializeToString()


def envoy_request(seed: int, n: int) -> bytes:
    """Envoy OpenTelemetry tracer spans: string tags, a unique x-request-id per span."""
    rnd = random.Random(seed)
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.append(_kv("service.name", "productpage.default"))
    ss = rs.scope_spans.add()
    for i in range(n):
        sp = ss.spans.add()
        sp.trace_id, sp.span_id = rnd.randbytes(16), rnd.randbytes(8)
        sp.parent_span_id = rnd.randbytes(8)
        sp.kind = Span.SPAN_KIND_CLIENT if i % 2 else Span.SPAN_KIND_SERVER
        sp.name = "reviews.default.svc.cluster.local:9080/*"
        sp.start_time_unix_nano = T0 + seed * 10**9 + i * 10**6
        sp.end_time_unix_nano = sp.start_time_unix_nano + rnd.randint(10**5, 5 * 10**7)
        sp.attributes.extend(
            [
                _kv("component", "proxy"),
                _kv(
                    "node_id",
                    "sidecar~10.0.0.5~productpage-v1-abc12-xyz34.default~default.svc.cluster.local",
                ),
                _kv("zone", ""),
                _kv("guid:x-request-id", f"{rnd.getrandbits(128):032x}"),
                _kv("http.url", "http://reviews:9080/reviews/0"),
                _kv("http.method", "GET"),
                _kv("downstream_cluster", "-"),
                _kv("user_agent", "curl/8.5.0"),
                _kv("http.protocol", "HTTP/1.1"),
                _kv("peer.address", "10.0.0.5"),
                _kv("request_size", "0"),
                _kv("response_size", "295"),
                _kv("upstream_cluster", "outbound|9080|v1|reviews.default.svc.cluster.local"),
                _kv("upstream_cluster.name", "outbound|9080|v1|reviews.default.svc.cluster.local"),
                _kv("http.status_code", rnd.choice(("200", "200", "503"))),
                _kv("response_flags", "-"),
            ]
        )
    return req.SerializeToString()


def unique_request(seed: int, n: int) -> bytes:
    """Worst case for the attribute cache: every attribute value differs."""
    rnd = random.Random(seed)
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    _resource(rs, "unique")
    ss = rs.scope_spans.add()
    for i in range(n):
        sp = ss.spans.add()
        sp.trace_id, sp.span_id = rnd.randbytes(16), rnd.randbytes(8)
        sp.name = "op"
        sp.start_time_unix_nano = T0 + i
        sp.end_time_unix_nano = T0 + i + 1000
        sp.attributes.extend([_kv(f"attr.{k}", f"v{rnd.getrandbits(40)}") for k in range(10)])
    return req.SerializeToString()


SCENARIOS: dict[str, Callable[[int, int], bytes]] = {
    "sdk (new semconv)": sdk_request,
    "envoy tracer tags": envoy_request,
    "all values unique": unique_request,
}


def _decode_all(payloads: list[bytes], decoder: str) -> tuple[int, float, float]:
    """(rows, wall seconds, CPU seconds of this process)."""
    decode_traces = DECODERS[decoder]
    t0, c0 = time.perf_counter(), time.process_time()
    rows = sum(decode_traces(p).num_rows for p in payloads)
    return rows, time.perf_counter() - t0, time.process_time() - c0


def _worker(args: tuple[list[bytes], Any, str]) -> tuple[int, float, float]:
    payloads, barrier, decoder = args
    DECODERS[decoder](payloads[0])  # warm-up (imports, caches)
    barrier.wait()
    return _decode_all(payloads[1:], decoder)


def run(payloads: list[bytes], procs: int, decoder: str) -> tuple[int, float, float]:
    """(rows, wall seconds, CPU seconds summed over the worker processes)."""
    if procs == 1:
        DECODERS[decoder](payloads[0])
        return _decode_all(payloads[1:], decoder)
    ctx = mp.get_context("fork")
    with ctx.Manager() as manager:
        barrier = manager.Barrier(procs)
        with ctx.Pool(procs) as pool:
            results = pool.map(_worker, [(payloads, barrier, decoder)] * procs)
    # Wall time of the slowest worker (all started together at the barrier).
    return sum(r[0] for r in results), max(r[1] for r in results), sum(r[2] for r in results)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--spans", type=int, default=1000)
    parser.add_argument("--procs", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--decoders", nargs="+", choices=list(DECODERS), default=list(DECODERS))
    parser.add_argument(
        "--repeat", type=int, default=3, help="runs per row; the best is shown (like timeit)"
    )
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    header = ("scenario", "decoder", "B/span", "procs", "spans", "wall s", "spans/s",
              "spans/cpu-s", "cpu-µs/span")  # fmt: skip
    print(f"{header[0]:<20} " + " ".join(f"{h:>11}" for h in header[1:]))
    for name, make in SCENARIOS.items():
        payloads = [make(seed, args.spans) for seed in range(args.requests + 1)]
        size = sum(len(p) for p in payloads) / (len(payloads) * args.spans)
        for decoder in args.decoders:
            for procs in args.procs:
                runs = [run(payloads, procs, decoder) for _ in range(args.repeat)]
                rows = runs[0][0]
                wall = min(r[1] for r in runs)
                cpu = min(r[2] for r in runs)
                cells = (decoder, f"{size:.0f}", str(procs), str(rows), f"{wall:.2f}",
                         f"{rows / wall:,.0f}", f"{rows / cpu:,.0f}",
                         f"{cpu / rows * 1e6:.2f}")  # fmt: skip
                print(f"{name:<20} " + " ".join(f"{c:>11}" for c in cells))
    print_checks(args.requests, args.spans, args.repeat)
    print(f"load average after: {os.getloadavg()[0]:.2f}")


def print_checks(requests: int, spans: int, repeat: int) -> None:
    """CPU-µs per span of the receive-path check: reference vs C (one process)."""
    from meshlens.collector.receivers import otlp

    try:
        from meshlens.collector.decode._otlp_check import count
    except ImportError:
        print("receive-path check: the C extension is not built")
        return

    checks: dict[str, Callable[[bytes], object]] = {
        "reference": lambda p: otlp.check_reference(otlp.TRACES, p),
        "C": lambda p: count(0, p),
    }
    print()
    print(f"{'receive-path check':<20} {'check':>11} {'cpu-µs/span':>11} {'x reference':>11}")
    for name, make in SCENARIOS.items():
        payloads = [make(seed, spans) for seed in range(requests)]
        cost: dict[str, float] = {}
        for label, check in checks.items():
            best = float("inf")
            for _ in range(repeat):
                c0 = time.process_time()
                for p in payloads:
                    check(p)
                best = min(best, time.process_time() - c0)
            cost[label] = best / (requests * spans) * 1e6
            ratio = cost[label] / cost["reference"]
            print(f"{name:<20} {label:>11} {cost[label]:>11.2f} {ratio:>10.2f}x")


if __name__ == "__main__":
    main()
