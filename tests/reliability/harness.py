"""A real `meshlens serve` subprocess that can be SIGKILLed, load that remembers what was
acknowledged, and the exactly-once check over what the store holds.

The server runs in its own session so `kill9` takes its decode workers with it (a real crash of
the whole collector). It can be started through `tests.reliability.serve_child` to shorten the
store's maintenance interval (crash-during-compaction tests).
"""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from meshlens.collector.store.layout import visible_files
from tests.collector.conftest import (
    REPO,
    ServeProcess,
    _serve_env,
    http_get,
    wait_until_ready,
)

TRACES_EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
SOAK = os.environ.get("MESHLENS_SOAK") == "1"


def launch(
    data_dir: Path,
    *args: str,
    knobs: dict[str, str] | None = None,
    env: dict[str, str] | None = None,
    flush_interval: str = "0.2s",
    timeout: float = 60.0,
) -> ServeProcess:
    """Start `meshlens serve` on ephemeral ports (own session) and wait for /readyz."""
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = data_dir.parent / f"{data_dir.name}-serve.log"
    module = "tests.reliability.serve_child" if knobs else "meshlens"
    cmd = [
        sys.executable,
        "-m",
        module,
        "serve",
        "--data-dir",
        str(data_dir),
        "--grpc-port",
        "0",
        "--http-port",
        "0",
        "--api-port",
        "0",
        "--flush-interval",
        flush_interval,
        *args,
    ]
    with open(log_path, "ab") as log_file:
        proc = subprocess.Popen(
            cmd,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            env={**_serve_env(env), **(knobs or {})},
            start_new_session=True,
        )
    sp = ServeProcess(proc, data_dir, log_path, tls="--tls-cert" in args)
    try:
        wait_until_ready(sp, timeout)
    except BaseException:
        kill9(sp)
        raise
    return sp


def kill9(sp: ServeProcess) -> None:
    """SIGKILL the collector and its decode workers: no cleanup of any kind runs."""
    if sp.proc.poll() is None:
        try:
            os.killpg(sp.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    sp.proc.wait(30)
    sp.stopped_rc = sp.proc.returncode


def rss_mib(pid: int) -> float:
    """Resident memory of `pid` and its direct children (decode workers), MiB."""
    pids = [pid]
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            pids += [int(p) for p in (task / "children").read_text().split()]
    except OSError:
        pass
    total = 0
    for p in pids:
        try:
            m = re.search(r"VmRSS:\s+(\d+) kB", Path(f"/proc/{p}/status").read_text())
        except OSError:
            continue
        total += int(m.group(1)) if m else 0
    return total / 1024


def metric(
    sp: ServeProcess, name: str, labels: str = "", headers: dict[str, str] | None = None
) -> float:
    """Sum of the samples of `name` on /metrics whose labels contain `labels`."""
    status, body, _ = http_get(sp.api_url("/metrics"), headers)
    assert status == 200, body
    pat = re.compile(
        rf"^{re.escape(name)}(\{{[^}}]*{re.escape(labels)}[^}}]*\}})? (\S+)$", re.MULTILINE
    )
    return sum(float(m.group(2)) for m in pat.finditer(body.decode()))


# ---- load that remembers acknowledgements ----------------------------------------------------


def spans_request(first_id: int, n: int, ts_ns: int, rnd: random.Random) -> bytes:
    """`n` spans whose span ids are the integers first_id .. first_id+n-1 (big-endian)."""
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.add(key="service.name", value=AnyValue(string_value="reliability"))
    ss = rs.scope_spans.add()
    ss.scope.name = "tests.reliability"
    for i in range(n):
        s = ss.spans.add()
        s.trace_id = rnd.randbytes(15) + b"\x01"
        s.span_id = (first_id + i).to_bytes(8, "big")
        s.name = "GET /items/{id}"
        s.kind = Span.SPAN_KIND_SERVER
        s.start_time_unix_nano = ts_ns + i * 1000
        s.end_time_unix_nano = s.start_time_unix_nano + 1_500_000
        s.attributes.add(key="http.request.method", value=AnyValue(string_value="GET"))
        s.attributes.add(key="http.route", value=AnyValue(string_value="/items/{id}"))
        s.attributes.add(key="item", value=AnyValue(int_value=first_id + i))
    return req.SerializeToString()


@dataclass
class Ledger:
    """Which span ids were acknowledged and which were sent without an answer (in flight at a
    kill, or refused): the latter may or may not be stored, the former must be, exactly once."""

    next_id: int = 1
    acked: set[int] = field(default_factory=set)
    unacked: set[int] = field(default_factory=set)
    codes: dict[str, int] = field(default_factory=dict)
    # first error per status code: (details, trailing metadata)
    errors: dict[str, tuple[str, dict[str, str | bytes]]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def take(self, n: int) -> int:
        with self.lock:
            first = self.next_id
            self.next_id += n
            return first

    def record(self, first: int, n: int, code: str, error: grpc.RpcError | None = None) -> None:
        ids = range(first, first + n)
        with self.lock:
            (self.acked if code == "OK" else self.unacked).update(ids)
            self.codes[code] = self.codes.get(code, 0) + 1
            if error is not None and code not in self.errors:
                trailers = dict(error.trailing_metadata() or ())
                self.errors[code] = (str(error.details()), trailers)


@contextmanager
def span_load(
    target: str,
    ledger: Ledger,
    *,
    threads: int = 2,
    spans: int = 200,
    ts_ns: int | None = None,
    timeout: float = 10.0,
    pause_on_error: float = 0.05,
) -> Iterator[threading.Event]:
    """Threads exporting span batches to `target` until the context exits; every outcome
    goes to `ledger`. Yields the stop event."""
    stop = threading.Event()
    ts = ts_ns if ts_ns is not None else time.time_ns() - 60 * 10**9

    def worker(k: int) -> None:
        rnd = random.Random(k)
        with grpc.insecure_channel(target) as ch:
            call = ch.unary_unary(
                TRACES_EXPORT, request_serializer=None, response_deserializer=None
            )
            while not stop.is_set():
                first = ledger.take(spans)
                body = spans_request(first, spans, ts, rnd)
                error: grpc.RpcError | None = None
                try:
                    call(body, timeout=timeout)
                    code = "OK"
                except grpc.RpcError as exc:
                    code = exc.code().name
                    error = exc
                ledger.record(first, spans, code, error)
                if code != "OK":
                    time.sleep(pause_on_error)

    pool = [threading.Thread(target=worker, args=(k,), daemon=True) for k in range(threads)]
    for t in pool:
        t.start()
    try:
        yield stop
    finally:
        stop.set()
        for t in pool:
            t.join(timeout + 30)


def stored_span_ids(data_dir: Path) -> dict[int, int]:
    """span id (as the integer the ledger used) -> number of rows, over the visible files."""
    files = [str(f) for f in visible_files(data_dir, "spans")]
    if not files:
        return {}
    con = duckdb.connect()
    try:
        rows = con.execute(
            "select span_id, count(*) from read_parquet(?) group by span_id", [files]
        ).fetchall()
    finally:
        con.close()
    return {int(sid, 16): n for sid, n in rows}


def assert_exactly_once(data_dir: Path, ledger: Ledger) -> dict[int, int]:
    stored = stored_span_ids(data_dir)
    dupes = [k for k, n in stored.items() if n > 1]
    assert not dupes, f"{len(dupes)} spans stored more than once, e.g. {sorted(dupes)[:5]}"
    missing = sorted(ledger.acked - stored.keys())
    assert not missing, (
        f"{len(missing)} of {len(ledger.acked)} acknowledged spans lost, e.g. {missing[:5]}"
    )
    strangers = sorted(stored.keys() - ledger.acked - ledger.unacked)
    assert not strangers, f"{len(strangers)} stored spans were never sent, e.g. {strangers[:5]}"
    return stored
