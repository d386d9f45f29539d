"""Envoy access-log decoding throughput: ALS v3 messages and Istio text lines -> `requests`.

    .venv/bin/python bench/decode_als.py [--messages 50] [--entries 500] [--lines 50000]

ALS: pre-serialized StreamAccessLogsMessages (as the WAL holds them) of `--entries` HTTP
entries each, half client-side (outbound|...) and half server-side (inbound|..., mTLS
certificates, metadata-exchange headers), decoded with the stream's Identifier as context by
the Python reference (`decode_als_record`, one record at a time) and by what the converter runs
(`envoy_als_fast.records_tables`: the C wire decoder, BATCH_RECORDS records per call, best of
three). Text: Istio default-format lines through `decode_lines_record`. One process; prints
entries/s per scenario.
"""

from __future__ import annotations

import argparse
import base64
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from google.protobuf import struct_pb2

from meshlens.collector.decode import envoy_als_fast
from meshlens.collector.decode.access_log_text import decode_lines_record
from meshlens.collector.decode.envoy_als import decode_als_record
from meshlens.collector.proto.gen import meshlens_als_pb2
from meshlens.collector.store.records import Record, RecordKind
from meshlens.collector.store.wal_to_parquet import BATCH_RECORDS

T0 = 1_764_000_000


def identifier() -> bytes:
    ident = meshlens_als_pb2.StreamAccessLogsMessage.Identifier(log_name="http_envoy_accesslog")
    ident.node.id = "sidecar~10.0.0.7~reviews-v1-5f6b7c8d9-abcde.default~default.svc.cluster.local"
    ident.node.metadata.update(
        {
            "NAMESPACE": "default",
            "WORKLOAD_NAME": "reviews-v1",
            "SERVICE_ACCOUNT": "reviews",
            "LABELS": {"app": "reviews", "version": "v1"},
            "MESH_ID": "cluster.local",
        }
    )
    return ident.SerializeToString()


def message(seed: int, n: int) -> bytes:
    peer = struct_pb2.Struct()
    peer.update(
        {
            "NAMESPACE": "default",
            "WORKLOAD_NAME": "productpage-v1",
            "LABELS": {"app": "productpage", "version": "v1"},
        }
    )
    mx = base64.b64encode(peer.SerializeToString()).decode()
    msg = meshlens_als_pb2.StreamAccessLogsMessage()
    for i in range(n):
        e = msg.http_logs.log_entry.add()
        c = e.common_properties
        c.start_time.seconds = T0 + seed
        c.start_time.nanos = i * 1000
        c.duration.nanos = 3_000_000 + i
        c.downstream_remote_address.socket_address.address = f"10.0.{i % 200}.{seed % 250}"
        c.downstream_remote_address.socket_address.port_value = 40000 + i
        if i % 2:
            c.upstream_cluster = "inbound|9080||"
            tls = c.tls_properties
            tls.local_certificate_properties.subject_alt_name.add().uri = (
                "spiffe://cluster.local/ns/default/sa/reviews"
            )
            tls.peer_certificate_properties.subject_alt_name.add().uri = (
                "spiffe://cluster.local/ns/default/sa/productpage"
            )
            tls.tls_sni_hostname = "outbound_.9080_.v1_.reviews.default.svc.cluster.local"
            e.request.request_headers["x-envoy-peer-metadata"] = mx
        else:
            c.upstream_cluster = "outbound|9080|v2|ratings.default.svc.cluster.local"
        e.request.request_method = 1
        e.request.authority = "reviews:9080"
        e.request.path = f"/reviews/{i}"
        e.request.request_id = f"{seed:08x}-{i:04x}-4000-8000-000000000000"
        e.request.user_agent = "python-requests/2.32"
        e.request.request_headers["traceparent"] = f"00-{seed:016x}{i:016x}-00f067aa0ba902b7-01"
        e.response.response_code.value = 200 if i % 50 else 503
        e.response.response_body_bytes = 300 + i
        if i % 50 == 0:
            c.response_flags.upstream_connection_failure = True
    return msg.SerializeToString()


LINE = (
    '[2026-11-25T21:30:07.471Z] "GET /a HTTP/1.1" 200 - via_upstream - "-" 0 54 4 3 "-" '
    '"Python-urllib/3.11" "680259d7-d074-98b1-9055-0d00d7552302" "reviews:9080" '
    '"127.0.0.1:57907" outbound|9080|v1|reviews.default.svc.cluster.local 127.0.0.1:44056 '
    "127.0.0.1:52381 127.0.0.1:34220 - default"
)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=50)
    ap.add_argument("--entries", type=int, default=500)
    ap.add_argument("--lines", type=int, default=50_000)
    a = ap.parse_args()
    ctx = identifier()
    payloads = [message(s, a.entries) for s in range(a.messages)]
    records = [Record(RecordKind.ENVOY_ALS, 0, p, ctx) for p in payloads]
    decode_als_record(records[0])  # warm-up
    t, c = time.perf_counter(), time.process_time()
    rows = 0
    for r in records:
        rows += decode_als_record(r)["requests"].num_rows
    als_s, als_cpu = time.perf_counter() - t, time.process_time() - c
    avg = sum(len(p) for p in payloads) / rows
    # What the converter runs: batches of BATCH_RECORDS records through the C wire decoder.
    fast = None
    if envoy_als_fast.AVAILABLE:
        for _ in range(3):  # best of three: the first pass also pays allocator warm-up
            t, c = time.perf_counter(), time.process_time()
            frows = 0
            for i in range(0, len(records), BATCH_RECORDS):
                batch = records[i : i + BATCH_RECORDS]
                frows += envoy_als_fast.records_tables(batch)["requests"].num_rows
            run = (frows, time.perf_counter() - t, time.process_time() - c)
            fast = run if fast is None or run[2] < fast[2] else fast
    text = "\n".join([LINE] * a.lines).encode()
    t, c = time.perf_counter(), time.process_time()
    trows = decode_lines_record(Record(RecordKind.ACCESS_LOG_LINES, 0, text))["requests"].num_rows
    text_s, text_cpu = time.perf_counter() - t, time.process_time() - c
    # CPU time too: on a busy machine wall time measures the neighbours.
    print(
        f"{'scenario':<30}{'entries':>9}{'wall s':>8}{'cpu s':>8}{'/s (wall)':>11}{'/s (cpu)':>11}"
    )
    scenarios = [(f"ALS HTTP, Python ({avg:.0f} B)", rows, als_s, als_cpu)]
    if fast is not None:
        scenarios.append((f"ALS HTTP, C ({avg:.0f} B)", *fast))
    else:
        print("the C wire decoder is not built (make / pip install -e .): Python only")
    scenarios.append(("Istio text lines", trows, text_s, text_cpu))
    for name, n, wall, cpu in scenarios:
        print(f"{name:<30}{n:>9}{wall:>8.2f}{cpu:>8.2f}{n / wall:>11,.0f}{n / cpu:>11,.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
