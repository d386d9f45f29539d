"""End-to-end durable ingest: a load generator process -> `meshlens serve` over gRPC -> Parquet.

    .venv/bin/python -m bench.ingest [--seconds 10] [--concurrency 8] [--cpus 2 1]
                                     [--no-traces] [--no-als] [--no-bare] [--serve-args "..."]

What runs, each in its own process:
  * the load generator: pre-serialized ~600 KB ExportTraceServiceRequests (1000 SDK-style spans,
    bench/decode_spans.py's shape) sent as fast as they are acknowledged by `--concurrency`
    threads (RESOURCE_EXHAUSTED: wait the server's grpc-retry-pushback-ms, as an OTLP exporter
    does, then resend); for ALS, `--concurrency` client streams of pre-serialized
    StreamAccessLogsMessages (100 Istio-like HTTP entries each, ~400 B per entry).
  * `meshlens serve` with its default flags (durability fsync, its default decode workers, disk
    budget and memory budget) plus `--serve-args`, or the "bare" server: grpc.aio that only
    parses each request and counts its items (the ceiling of a Python receive path on this
    machine; no store), or for traces the peer: rotel (the Rust OTel collector the `rotel`
    wheel ships as rotel/rotel-agent) with its blackhole exporter on 127.0.0.1 (it receives,
    decodes and batches, then drops; no disk). `--no-rotel` leaves it out; it is skipped when
    the wheel is not installed.
  * optionally pinned to 1 core or 2 (`--cpus`, via sched_setaffinity, workers included; the
    load generator is not pinned) to show how throughput scales with cores.

Columns: acked/s = items acknowledged per second in the measured window (after a warm-up; for
ALS, entries handed to streams that all ended OK: the server answers a stream only once all its
messages are durable); MB/s of request bytes; sustained/s = every acknowledged item over the
time from the first request until the last one is in Parquet (queryable) -- the rate the
pipeline keeps up with, equal to acked/s only when conversion keeps up; drain = seconds from
the end of the load until every WAL segment is converted; WAL MiB = largest unconverted WAL
seen (the conversion backlog, bounded by --disk-budget); 429s = RESOURCE_EXHAUSTED answers;
exact = the rows in Parquet equal the acknowledged count (after SIGTERM, exit code 0); peak RSS
of the main process and with its decode workers; CPU microseconds per item in the main process
(receive path, WAL) and in the workers (conversion), counted over the whole run -- steadier than
the rates when other processes share the machine (not independent of them: busy cores share
caches). The bare server's and rotel's CPU per item are measured the same way (all in "main":
one process each) and the summary gives meshlens' CPU per item as a ratio to theirs. The load
average is printed: the machine is shared, and other processes take cores from the run.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SPANS_PER_REQUEST = 1000
ENTRIES_PER_MESSAGE = 100
TRACE_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
ALS_METHOD = "/envoy.service.accesslog.v3.AccessLogService/StreamAccessLogs"


# ---- payloads ---------------------------------------------------------------------------------


def trace_payloads(n: int) -> list[bytes]:
    from bench.decode_spans import sdk_request

    return [sdk_request(seed, SPANS_PER_REQUEST) for seed in range(n)]


def als_payloads(n: int) -> tuple[bytes, list[bytes]]:
    """(first message with the node identifier, later messages) of Istio-like HTTP entries."""
    from google.protobuf.struct_pb2 import Struct

    from meshlens.collector.proto.gen import meshlens_als_pb2, meshlens_envoy_core_pb2

    rnd = random.Random(7)

    def message(seed: int, first: bool) -> bytes:
        msg = meshlens_als_pb2.StreamAccessLogsMessage()
        if first:
            node = msg.identifier.node
            node.id = (
                "sidecar~10.0.0.7~productpage-v1-6b746f74dc-9stvs.default~default.svc.cluster.local"
            )
            node.cluster = "productpage.default"
            md = Struct()
            md.update(
                {
                    "NAMESPACE": "default",
                    "WORKLOAD_NAME": "productpage-v1",
                    "SERVICE_ACCOUNT": "bookinfo-productpage",
                    "LABELS": {"app": "productpage", "version": "v1"},
                }
            )
            node.metadata.CopyFrom(md)
            msg.identifier.log_name = "envoy_accesslog"
        for i in range(ENTRIES_PER_MESSAGE):
            e = msg.http_logs.log_entry.add()
            c = e.common_properties
            c.start_time.FromNanoseconds(1_767_225_600 * 10**9 + (seed * 1000 + i) * 10**6)
            c.duration.FromNanoseconds(rnd.randint(10**6, 10**8))
            c.time_to_last_rx_byte.FromNanoseconds(50_000)
            c.time_to_first_upstream_tx_byte.FromNanoseconds(150_000)
            c.time_to_last_downstream_tx_byte.FromNanoseconds(rnd.randint(10**6, 10**8))
            c.upstream_cluster = "outbound|9080|v1|reviews.default.svc.cluster.local"
            c.downstream_remote_address.socket_address.address = f"10.0.0.{i % 200}"
            c.downstream_remote_address.socket_address.port_value = 40000 + i
            c.downstream_local_address.socket_address.address = "10.96.12.7"
            c.downstream_local_address.socket_address.port_value = 9080
            c.upstream_remote_address.socket_address.address = f"10.0.1.{i % 200}"
            c.upstream_remote_address.socket_address.port_value = 9080
            c.upstream_local_address.socket_address.address = "10.0.0.7"
            c.upstream_local_address.socket_address.port_value = 50000 + i
            tls = c.tls_properties
            tls.tls_version = tls.TLSv1_3
            tls.peer_certificate_properties.subject_alt_name.add(
                uri="spiffe://cluster.local/ns/default/sa/bookinfo-reviews"
            )
            tls.local_certificate_properties.subject_alt_name.add(
                uri="spiffe://cluster.local/ns/default/sa/bookinfo-productpage"
            )
            c.route_name = "default"
            e.protocol_version = e.HTTP11
            e.request.request_method = meshlens_envoy_core_pb2.GET
            e.request.scheme = "http"
            e.request.authority = "reviews:9080"
            e.request.path = f"/reviews/{rnd.randint(0, 10**6)}"
            e.request.user_agent = "python-requests/2.32.3"
            e.request.request_id = f"{rnd.getrandbits(128):032x}"
            e.request.request_headers_bytes = 420
            e.response.response_code.value = rnd.choice((200, 200, 200, 503))
            e.response.response_headers_bytes = 180
            e.response.response_body_bytes = rnd.randint(100, 5000)
        return msg.SerializeToString()

    return message(0, True), [message(s, False) for s in range(1, n + 1)]


# ---- the load generator (its own process) -----------------------------------------------------


def load(target: str, kind: str, seconds: float, warmup: float, concurrency: int) -> dict[str, Any]:
    import grpc

    stop = threading.Event()
    counted = threading.Event()  # set once the warm-up is over
    totals = {"items": 0, "bytes": 0, "items_all": 0, "errors": 0, "rejected": 0}
    t_start = time.monotonic()
    lock = threading.Lock()
    channels = [
        grpc.insecure_channel(target, options=[("grpc.max_send_message_length", -1)])
        for _ in range(2)
    ]

    def add(items: int, nbytes: int) -> None:
        with lock:
            totals["items_all"] += items
            if counted.is_set() and not stop.is_set():
                totals["items"] += items
                totals["bytes"] += nbytes

    if kind == "traces":
        payloads = trace_payloads(8)

        def worker(i: int) -> None:
            call = channels[i % 2].unary_unary(
                TRACE_METHOD, request_serializer=None, response_deserializer=None
            )
            j = i
            while not stop.is_set():
                p = payloads[j % len(payloads)]
                j += 1
                try:
                    call(p, timeout=60)
                except grpc.RpcError as exc:
                    if exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                        # backpressure: wait as long as the server asks (an OTLP exporter does)
                        with lock:
                            totals["rejected"] += 1
                        time.sleep(_pushback_s(exc))
                        continue
                    with lock:
                        totals["errors"] += 1
                    print(f"load: {exc.code()} {exc.details()}", file=sys.stderr)
                    time.sleep(0.1)
                    continue
                add(SPANS_PER_REQUEST, len(p))
    else:
        first, later = als_payloads(16)

        def worker(i: int) -> None:
            call = channels[i % 2].stream_unary(
                ALS_METHOD, request_serializer=None, response_deserializer=None
            )

            def messages() -> Any:
                yield first
                add(ENTRIES_PER_MESSAGE, len(first))
                j = i
                while not stop.is_set():
                    m = later[j % len(later)]
                    j += 1
                    yield m
                    add(ENTRIES_PER_MESSAGE, len(m))

            try:
                call(messages(), timeout=seconds + warmup + 60)
            except grpc.RpcError as exc:
                with lock:
                    totals["errors"] += 1
                print(f"load: {exc.code()} {exc.details()}", file=sys.stderr)

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(concurrency)]
    for t in threads:
        t.start()
    time.sleep(warmup)
    t0 = time.monotonic()
    counted.set()
    print("measuring", flush=True)  # the parent samples server metrics from here
    time.sleep(seconds)
    elapsed = time.monotonic() - t0
    stop.set()
    for t in threads:
        t.join(timeout=120)
    # Since the first request: with the drain time, the end-to-end (sustained) rate.
    return {**totals, "seconds": elapsed, "total_seconds": time.monotonic() - t_start}


def _pushback_s(exc: Any) -> float:
    for key, value in exc.trailing_metadata() or ():
        if key == "grpc-retry-pushback-ms":
            return int(value) / 1000
    return 0.1


# ---- servers ----------------------------------------------------------------------------------


def bare_server(port_file: str) -> None:
    """gRPC that only parses: the receive path's ceiling on this machine."""
    import asyncio

    import grpc
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    from meshlens.collector.proto.gen.meshlens_als_pb2 import StreamAccessLogsMessage

    async def export(raw: bytes, context: Any) -> bytes:
        req = ExportTraceServiceRequest.FromString(raw)
        sum(len(ss.spans) for rs in req.resource_spans for ss in rs.scope_spans)
        return b""

    async def als(requests: Any, context: Any) -> bytes:
        async for raw in requests:
            m = StreamAccessLogsMessage.FromString(raw)
            len(m.http_logs.log_entry)
        return b""

    async def main() -> None:
        server = grpc.aio.server(options=[("grpc.max_receive_message_length", 64 << 20)])
        server.add_generic_rpc_handlers(
            [
                grpc.method_handlers_generic_handler(
                    "opentelemetry.proto.collector.trace.v1.TraceService",
                    {"Export": grpc.unary_unary_rpc_method_handler(export)},
                ),
                grpc.method_handlers_generic_handler(
                    "envoy.service.accesslog.v3.AccessLogService",
                    {"StreamAccessLogs": grpc.stream_unary_rpc_method_handler(als)},
                ),
            ]
        )
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        Path(port_file).write_text(json.dumps({"pid": os.getpid(), "grpc_port": port}))
        await server.wait_for_termination()

    asyncio.run(main())


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    grpc_port: int
    api_port: int | None
    data_dir: Path | None

    def rss_mib(self) -> tuple[float, float]:
        """(RSS of the server process, RSS of it and its children, the decode workers)."""
        pids = [self.proc.pid]
        try:
            for task in Path(f"/proc/{self.proc.pid}/task").iterdir():
                pids += [int(p) for p in (task / "children").read_text().split()]
        except OSError:
            pass
        sizes = []
        for pid in pids:
            try:
                m = re.search(r"VmRSS:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text())
            except OSError:
                continue
            sizes.append(int(m.group(1)) / 1024 if m else 0.0)
        return (sizes[0] if sizes else 0.0), sum(sizes)

    def cpu_seconds(self) -> tuple[float, float]:
        """(CPU seconds used by the server process, by its live children: the decode workers)."""
        tick = os.sysconf("SC_CLK_TCK")

        def used(pid: int) -> float:
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
            except OSError:
                return 0.0
            return (int(fields[11]) + int(fields[12])) / tick  # utime + stime

        kids: list[int] = []
        try:
            for task in Path(f"/proc/{self.proc.pid}/task").iterdir():
                kids += [int(p) for p in (task / "children").read_text().split()]
        except OSError:
            pass
        return used(self.proc.pid), sum(used(k) for k in kids)


def _pin(cpus: int | None) -> Any:
    if cpus is None:
        return None
    return lambda: os.sched_setaffinity(0, set(range(cpus)))


def _wait_file(path: Path, proc: subprocess.Popen[bytes], timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
        try:
            doc: dict[str, Any] = json.loads(path.read_text())
            if doc.get("pid") == proc.pid:
                return doc
        except (OSError, ValueError):
            pass
        time.sleep(0.05)
    raise SystemExit(f"server not ready after {timeout}s")


def start_meshlens(tmp: Path, cpus: int | None, extra: list[str]) -> Server:
    data_dir = Path(tempfile.mkdtemp(dir=tmp, prefix="data-"))
    log = open(tmp / f"{data_dir.name}.log", "wb")  # noqa: SIM115 (lives as long as the server)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "meshlens",
            "serve",
            "--data-dir",
            str(data_dir),
            "--grpc-port",
            "0",
            "--http-port",
            "-1",
            "--api-port",
            "0",
            "--log-level",
            "warning",
            "--retention",
            "0",
            *extra,
        ],  # the payloads' timestamps are fixed, maybe old
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
        preexec_fn=_pin(cpus),
    )
    doc = _wait_file(data_dir / "serve.json", proc)
    return Server(proc, doc["grpc_port"], doc["api_port"], data_dir)


def start_bare(tmp: Path, cpus: int | None) -> Server:
    port_file = tmp / f"bare-{time.time_ns()}.json"
    proc = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "_bare", str(port_file)],
        cwd=ROOT,
        preexec_fn=_pin(cpus),
    )
    doc = _wait_file(port_file, proc)
    return Server(proc, doc["grpc_port"], None, None)


def rotel_binary() -> Path | None:
    """The Rust OTel collector shipped in the `rotel` wheel (rotel/rotel-agent), if installed."""
    try:
        import rotel
    except ImportError:
        return None
    path = Path(rotel.__file__).resolve().parent / "rotel-agent"
    return path if os.access(path, os.X_OK) else None


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_rotel(tmp: Path, cpus: int | None) -> Server:
    """rotel with the blackhole exporter: receives, decodes and batches OTLP, then drops it
    (no disk): the peer for traces. Foreground process, pinned like the others."""
    binary = rotel_binary()
    assert binary is not None
    port = _free_port()
    log = tmp / f"rotel-{port}.log"
    proc = subprocess.Popen(
        [
            str(binary),
            "start",
            "--otlp-grpc-endpoint",
            f"127.0.0.1:{port}",
            "--otlp-http-endpoint",
            f"127.0.0.1:{_free_port()}",
            "--otlp-grpc-max-recv-msg-size-mib",
            "16",
            "--exporter",
            "blackhole",
            "--pid-file",
            str(tmp / f"rotel-{port}.pid"),
            "--log-file",
            str(log),
        ],
        cwd=tmp,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
        preexec_fn=_pin(cpus),
    )
    import socket

    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"rotel did not start: {log.read_text()[-2000:]}") from None
            time.sleep(0.1)
    return Server(proc, port, None, None)


def count_parquet_rows(data_dir: Path, table: str) -> int:
    import duckdb

    from meshlens.collector.store.layout import visible_files

    files = [str(f) for f in visible_files(data_dir, table)]
    if not files:
        return 0
    con = duckdb.connect()
    try:
        return int(con.execute("select count(*) from read_parquet(?)", [files]).fetchall()[0][0])
    finally:
        con.close()


# ---- one measurement --------------------------------------------------------------------------


def measure(server: Server, kind: str, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "_load",
        f"127.0.0.1:{server.grpc_port}",
        kind,
        str(args.seconds),
        str(args.warmup),
        str(args.concurrency),
    ]
    cpu0 = server.cpu_seconds()  # idle and warm: from here on, all CPU is for the load
    gen = subprocess.Popen(cmd, stdout=subprocess.PIPE, cwd=ROOT, text=True)
    assert gen.stdout is not None
    line = gen.stdout.readline()  # "measuring"
    assert line.strip() == "measuring", line
    is_meshlens = server.api_port is not None
    t0 = time.monotonic()
    peak = (0.0, 0.0)
    backlog = 0
    while gen.poll() is None and time.monotonic() - t0 < args.seconds:
        peak = _max2(peak, server.rss_mib())
        backlog = max(backlog, _wal_bytes(server))
        time.sleep(0.25)
    out, _ = gen.communicate(timeout=300)
    res = json.loads(out.strip().splitlines()[-1])
    # Client-side counts: acknowledged requests (traces); messages handed to a stream whose
    # response later came back OK (ALS: the server answers only once every message is durable;
    # HTTP/2 flow control keeps the unacknowledged part to a few MB).
    row: dict[str, Any] = {
        "rate": res["items"] / res["seconds"],
        "mbps": res["bytes"] / res["seconds"] / 1e6,
        "errors": res["errors"],
        "rejected": res["rejected"],
        "sent": res["items_all"],
    }
    if is_meshlens:
        # Drain: until every WAL segment is converted (no /metrics polling: a scrape also runs
        # the analytics exporters, which would perturb what is measured here).
        assert server.data_dir is not None
        wal = server.data_dir / "wal"
        t1 = time.monotonic()
        while any(wal.glob("*.wal")) and time.monotonic() - t1 < 600:
            peak = _max2(peak, server.rss_mib())
            time.sleep(0.2)
        row["drain"] = time.monotonic() - t1
        # Sustained: every item acknowledged, from the first request until the last is in
        # Parquet (queryable). Equals the acked rate only when conversion keeps up.
        row["sustained"] = res["items_all"] / (res["total_seconds"] + row["drain"])
        row["backlog"] = backlog / 2**20
    # CPU per item of every server (meshlens: receive path in the main process, conversion in
    # the workers, drain included), over the whole run: steadier than the rates on a shared
    # machine, and the peer's and the floor's make the ratio.
    cpu1 = server.cpu_seconds()
    n = max(1, res["items_all"])
    row["cpu_us"] = ((cpu1[0] - cpu0[0]) / n * 1e6, (cpu1[1] - cpu0[1]) / n * 1e6)
    row["rss"] = _max2(peak, server.rss_mib())
    return row


def _wal_bytes(server: Server) -> int:
    """Unconverted WAL bytes on disk (the conversion backlog)."""
    if server.data_dir is None:
        return 0
    total = 0
    for f in (server.data_dir / "wal").glob("*.wal"):
        try:
            total += f.stat().st_size
        except OSError:
            pass
    return total


def _max2(a: tuple[float, float], b: tuple[float, float]) -> tuple[float, float]:
    return max(a[0], b[0]), max(a[1], b[1])


def stop(server: Server) -> int:
    server.proc.send_signal(signal.SIGTERM)
    return server.proc.wait(timeout=300)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "_load":
        target, kind, seconds, warmup, conc = argv[1:6]
        print(json.dumps(load(target, kind, float(seconds), float(warmup), int(conc))), flush=True)
        return 0
    if argv and argv[0] == "_bare":
        bare_server(argv[1])
        return 0
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--seconds", type=float, default=10.0, help="measured window per run")
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument(
        "--cpus",
        type=int,
        nargs="*",
        default=[2, 1],
        help="pin the server to this many cores (one run each)",
    )
    p.add_argument("--no-als", action="store_true")
    p.add_argument("--no-traces", action="store_true")
    p.add_argument("--no-bare", action="store_true")
    p.add_argument("--no-rotel", action="store_true", help="leave out the rotel peer (traces)")
    p.add_argument("--serve-args", default="", help="extra flags for meshlens serve")
    args = p.parse_args(argv)
    kinds = [k for k, off in (("traces", args.no_traces), ("als", args.no_als)) if not off]
    rows = []
    load_before = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    with tempfile.TemporaryDirectory(prefix="meshlens-bench-") as tmpname:
        tmp = Path(tmpname)
        for cpus in args.cpus:
            for kind in kinds:
                if not args.no_bare:
                    bare = start_bare(tmp, cpus)
                    try:
                        r = measure(bare, kind, args)
                    finally:
                        bare.proc.terminate()
                        bare.proc.wait(30)
                    rows.append(("bare parse", cpus, kind, r, ""))
                if kind == "traces" and not args.no_rotel and rotel_binary() is not None:
                    peer = start_rotel(tmp, cpus)
                    try:
                        r = measure(peer, kind, args)
                    finally:
                        peer.proc.terminate()
                        peer.proc.wait(30)
                    rows.append(("rotel blackhole", cpus, kind, r, ""))
                srv = start_meshlens(tmp, cpus, args.serve_args.split())
                try:
                    r = measure(srv, kind, args)
                finally:
                    rc = stop(srv)
                table = "spans" if kind == "traces" else "requests"
                assert srv.data_dir is not None
                stored = count_parquet_rows(srv.data_dir, table)
                # every item the load generator saw acknowledged (traces) or sent and the
                # stream closed cleanly (ALS) must be in Parquet exactly once
                exact = "yes" if stored == r["sent"] and rc == 0 else f"no ({stored}/{r['sent']})"
                rows.append(("meshlens serve", cpus, kind, r, exact))
                print(f"... {rows[-1][0]} cpus={cpus} {kind}: {r['rate']:,.0f}/s", file=sys.stderr)
    print()
    print(
        f"load average (1/5/15 min) at start: {load_before}; at end: "
        + ", ".join(f"{x:.2f}" for x in os.getloadavg())
        + " (2 cores; other processes on the machine distort the numbers)"
    )
    print(
        f"{'server':<15} {'cpus':>4} {'signal':<7} {'acked/s':>9} {'MB/s':>6} "
        f"{'sustained/s':>11} {'drain s':>7} {'WAL MiB':>7} {'429s':>5} {'exact':>6} "
        f"{'RSS main':>8} {'+workers':>8} {'errors':>6} {'cpu µs/item main':>16} {'workers':>7}"
    )
    for name, cpus, kind, r, exact in rows:
        drain = f"{r['drain']:.1f}" if "drain" in r else "-"
        sustained = f"{r['sustained']:,.0f}" if "sustained" in r else "-"
        backlog = f"{r['backlog']:.0f}" if "backlog" in r else "-"
        cpu_main, cpu_w = (f"{x:.2f}" for x in r["cpu_us"]) if "cpu_us" in r else ("-", "-")
        print(
            f"{name:<15} {cpus:>4} {kind:<7} {r['rate']:>9,.0f} {r['mbps']:>6.1f} "
            f"{sustained:>11} {drain:>7} {backlog:>7} {r['rejected']:>5} {exact or '-':>6} "
            f"{r['rss'][0]:>8.0f} {r['rss'][1]:>8.0f} {r['errors']:>6} {cpu_main:>16} {cpu_w:>7}"
        )
    by = {(n, c, k): r.get("sustained", r["rate"]) for n, c, k, r, _ in rows}
    for cpus in args.cpus:
        for kind in kinds:
            a = by.get(("meshlens serve", cpus, kind))
            # the floor (bare parse) and the peer (rotel, traces only), same run and cores
            for ref in ("bare parse", "rotel blackhole"):
                b = by.get((ref, cpus, kind))
                if a and b:
                    print(f"meshlens sustained / {ref}, {kind}, {cpus} cpu(s): {a / b:.0%}")
    cpu = {(n, c, k): sum(r["cpu_us"]) for n, c, k, r, _ in rows}
    for name, cpus, kind, r, _ in rows:
        if name == "meshlens serve":
            per = sum(r["cpu_us"])
            ratios = ", ".join(
                f"{per / cpu[(ref, cpus, kind)]:.2f}x {ref}'s"
                for ref in ("bare parse", "rotel blackhole")
                if cpu.get((ref, cpus, kind))
            )
            print(
                f"meshlens {kind} ({cpus} cpu run): {per:.2f} CPU-µs per item in all "
                f"({ratios or 'no peer'}) -> at most {1e6 / per:,.0f}/s per free core, "
                f"{2e6 / per:,.0f}/s on 2 free cores"
            )
    for kind in kinds:
        one, two = by.get(("meshlens serve", 1, kind)), by.get(("meshlens serve", 2, kind))
        if one and two:
            print(f"meshlens {kind} sustained: 2 cores / 1 core = {two / one:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
