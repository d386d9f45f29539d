"""gRPC acknowledgement latency of `meshlens serve` while its API runs the heaviest queries.

    .venv/bin/python -m bench.ack_latency [--seconds 15] [--clients 3] [--modes pool inprocess]

What runs: `meshlens serve` (default flags, ephemeral ports, a temporary data directory) and,
in this process, a probe that sends one OTLP/gRPC ExportTraceServiceRequest of 100 spans every
20 ms (raw gRPC stub, 5 s deadline) and times each acknowledgement. First with the API idle,
then while `--clients` threads run, back to back, the heaviest SQL the API allows: 100,000
rows (the API's max_rows) of ~0.5 KB each, ~55 MB of JSON, under the 64MiB response cap
(conversion to Python and JSON dominates), and a 20M-row sort that spills; each with timeout
300 s (the API's maximum), capped by `--query-timeout`.

Modes: `pool` = query workers (the default: `--query-workers 2`); `inprocess` =
`--query-workers 0`, the queries in the collector's own threads (the behaviour before issue 18,
item 7). Columns: ack latency p50/p99/max in ms, probes sent and failed, API answers by status,
and peak RSS of the collector process alone (the workers' memory is not on the ingest path).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import grpc  # noqa: E402
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (  # noqa: E402
    ExportTraceServiceRequest,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue  # noqa: E402

TRACE_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
PROBE_INTERVAL_S = 0.02
HEAVY_QUERIES = (
    "SELECT i, repeat(md5(i::VARCHAR), 15) AS s, i * 1.5 AS f, now() AS t FROM range(100000) t(i)",
    "SELECT count(*), max(m) FROM (SELECT md5(i::VARCHAR) m FROM range(20000000) t(i) ORDER BY m)",
)


@dataclass
class Phase:
    latencies_ms: list[float] = field(default_factory=list)
    failed: int = 0
    api: Counter[int] = field(default_factory=Counter)
    api_s: list[float] = field(default_factory=list)


def spans(seq: int, rnd: random.Random) -> bytes:
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.add(key="service.name", value=AnyValue(string_value="bench"))
    ss = rs.scope_spans.add()
    now = time.time_ns()
    for i in range(100):
        s = ss.spans.add()
        s.trace_id = rnd.randbytes(16)
        s.span_id = (seq * 100 + i + 1).to_bytes(8, "big")
        s.name = "GET /items/{id}"
        s.start_time_unix_nano = now
        s.end_time_unix_nano = now + 1_000_000
    return req.SerializeToString()


def start_serve(data_dir: Path, extra: list[str]) -> tuple[subprocess.Popen[bytes], dict[str, int]]:
    data_dir.mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MESHLENS_")}
    env["PYTHONPATH"] = str(ROOT)
    cmd = [sys.executable, "-m", "meshlens", "serve", "--data-dir", str(data_dir)]
    cmd += ["--grpc-port", "0", "--http-port", "-1", "--api-port", "0", *extra]
    log = open(data_dir.parent / "serve.log", "ab")  # noqa: SIM115 (closed by the caller's exit)
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"meshlens serve exited with {proc.returncode}")
        try:
            doc = json.loads((data_dir / "serve.json").read_text())
            if doc.get("pid") == proc.pid:
                return proc, doc
        except (OSError, ValueError):
            pass
        time.sleep(0.1)
    proc.kill()
    raise SystemExit("meshlens serve did not become ready in 60 s")


def post_sql(api: int, sql: str, timeout: float = 330) -> int:
    body = json.dumps({"sql": sql, "max_rows": 100_000, "timeout": 300}).encode()
    req = urllib.request.Request(
        f"http://127.0.0.1:{api}/api/v1/sql",
        data=body,
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            resp.read()
            return resp.status
    except urllib.error.HTTPError as exc:
        exc.read()
        return exc.code
    except OSError:
        return -1


def rss_mib(pid: int) -> float:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    for line in text.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def probe(grpc_port: int, phase: Phase, stop: threading.Event, rnd: random.Random) -> None:
    seq = rnd.randrange(1 << 30)
    with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as ch:
        call = ch.unary_unary(TRACE_METHOD, request_serializer=None, response_deserializer=None)
        next_at = time.monotonic()
        while not stop.is_set():
            seq += 1
            body = spans(seq, rnd)
            t0 = time.perf_counter()
            try:
                call(body, timeout=5)
                phase.latencies_ms.append((time.perf_counter() - t0) * 1000)
            except grpc.RpcError:
                phase.failed += 1
            next_at += PROBE_INTERVAL_S
            stop.wait(max(0.0, next_at - time.monotonic()))


def run_phase(ports: dict[str, int], seconds: float, clients: int, rnd: random.Random) -> Phase:
    phase = Phase()
    stop = threading.Event()
    threads = [threading.Thread(target=probe, args=(ports["grpc_port"], phase, stop, rnd))]

    def client(k: int) -> None:
        n = k
        while not stop.is_set():
            t0 = time.perf_counter()
            phase.api[post_sql(ports["api_port"], HEAVY_QUERIES[n % len(HEAVY_QUERIES)])] += 1
            phase.api_s.append(time.perf_counter() - t0)
            n += 1

    threads += [threading.Thread(target=client, args=(k,), daemon=True) for k in range(clients)]
    for t in threads:
        t.start()
    time.sleep(seconds)
    stop.set()
    threads[0].join(30)
    for t in threads[1:]:
        t.join(360)  # a client finishes the query it is in: its latency counts too
    return phase


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seconds", type=float, default=15.0, help="per phase")
    ap.add_argument("--clients", type=int, default=3, help="concurrent heavy-query clients")
    ap.add_argument("--modes", nargs="+", default=["pool", "inprocess"])
    ap.add_argument("--serve-args", default="", help="extra `meshlens serve` flags")
    args = ap.parse_args()
    extra_by_mode = {"pool": [], "inprocess": ["--query-workers", "0"]}
    rows = []
    with tempfile.TemporaryDirectory(prefix="meshlens-ack-") as tmp:
        for mode in args.modes:
            extra = [*extra_by_mode[mode], *args.serve_args.split()]
            proc, ports = start_serve(Path(tmp) / mode / "data", extra)
            try:
                rnd = random.Random(1)
                if mode == "pool":  # workers start in the background: wait for one
                    deadline = time.monotonic() + 60
                    while post_sql(ports["api_port"], "SELECT 1", 10) != 200:
                        if time.monotonic() > deadline:
                            raise SystemExit("no query worker answered within 60 s")
                        time.sleep(0.2)
                idle = run_phase(ports, args.seconds, 0, rnd)
                busy = run_phase(ports, args.seconds, args.clients, rnd)
                rss = rss_mib(proc.pid)
            finally:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(60)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
            for name, ph in (("idle", idle), (f"{args.clients} heavy SQL clients", busy)):
                rows.append((mode, name, ph, rss))
    la = os.getloadavg()
    print(
        f"load average at end: {la[0]:.2f}, {la[1]:.2f}, {la[2]:.2f} ({os.cpu_count()} cores; "
        "other processes on the machine distort the numbers)"
    )
    print(
        f"{'mode':10} {'API':22} {'acks':>6} {'fail':>5} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'max ms':>8}  {'API answers':24} {'API p50 s':>9} {'peak RSS MiB':>12}"
    )
    for mode, name, ph, rss in rows:
        answers = ", ".join(f"{k}x{v}" for k, v in sorted(ph.api.items())) or "-"
        api_p50 = f"{statistics.median(ph.api_s):.1f}" if ph.api_s else "-"
        lat = ph.latencies_ms
        print(
            f"{mode:10} {name:22} {len(lat):>6} {ph.failed:>5} {pct(lat, 50):>8.1f} "
            f"{pct(lat, 99):>8.1f} {max(lat, default=float('nan')):>8.1f}  {answers:24} "
            f"{api_p50:>9} {rss:>12.0f}"
        )
    print(
        "API answers: status x count; 413 = response over --query-max-response (64MiB), "
        "conversion done and refused in the worker; peak RSS = the collector process alone"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
