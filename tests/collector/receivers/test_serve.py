"""`meshlens serve` as a process: ports learned from serve.json, the ready line, /healthz,
/readyz, /metrics, gRPC health, clean exits on SIGTERM and SIGINT, clear startup errors."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from meshlens.collector.receivers import otlp
from meshlens.collector.receivers.otlp import SIGNALS
from tests.collector.conftest import REPO, ServeProcess, http_get
from tests.collector.receivers.grpc_client import export, stream_als
from tests.collector.receivers.payloads import als_message, traces_request
from tests.collector.receivers.rows import count_rows


def _metric(text: str, line_start: str) -> float:
    values = [
        float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(line_start)
    ]
    assert values, f"no sample {line_start!r}"
    return sum(values)


def test_ready_line_state_file_and_probes(running_serve: ServeProcess) -> None:
    sp = running_serve
    doc = json.loads((sp.data_dir / "serve.json").read_text())
    assert doc == {
        "pid": sp.proc.pid,
        "grpc_port": sp.grpc_port,
        "http_port": sp.http_port,
        "api_port": sp.api_port,
    }
    assert (
        f"meshlens serve ready grpc={sp.grpc_port} http={sp.http_port} api={sp.api_port}"
        in sp.log()
    )
    assert http_get(sp.api_url("/healthz"))[:2] == (200, b'{"status": "ok"}')
    assert http_get(sp.api_url("/readyz"))[:2] == (200, b'{"status": "ready"}')
    with grpc.insecure_channel(sp.grpc_target) as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        for service in [
            "",
            *(s.service for s in SIGNALS),
            "envoy.service.accesslog.v3.AccessLogService",
        ]:
            resp = stub.Check(health_pb2.HealthCheckRequest(service=service))
            assert resp.status == health_pb2.HealthCheckResponse.SERVING, service


def test_metrics_count_received_accepted_rejected_and_the_store(
    running_serve: ServeProcess,
) -> None:
    sp = running_serve
    with grpc.insecure_channel(sp.grpc_target) as ch:
        export(ch, otlp.TRACES, traces_request(10).SerializeToString())
        export(ch, otlp.TRACES, traces_request(5, bad=2).SerializeToString())
        try:
            export(ch, otlp.TRACES, b"\xff\xff")
        except grpc.RpcError:
            pass
        stream_als(ch, [als_message(3, first=True), als_message(4, first=False)])
    status, body, headers = http_get(sp.api_url("/metrics"))
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    text = body.decode()
    rs = 'receiver="otlp_grpc",signal="traces"'
    assert _metric(text, f"meshlens_receiver_received_items_total{{{rs}}}") == 17
    assert _metric(text, f"meshlens_receiver_accepted_items_total{{{rs}}}") == 15
    assert _metric(text, f'meshlens_receiver_rejected_items_total{{reason="invalid",{rs}}}') == 2
    assert _metric(text, f"meshlens_receiver_decode_errors_total{{{rs}}}") == 1
    assert _metric(text, f'meshlens_receiver_requests_total{{outcome="partial",{rs}}}') == 1
    als = 'receiver="envoy_als",signal="access_logs"'
    assert _metric(text, f"meshlens_receiver_accepted_items_total{{{als}}}") == 7
    assert _metric(text, "meshlens_receiver_append_duration_seconds_count") == 4
    assert _metric(text, "meshlens_store_items_appended_total") == 22
    for name in (
        "meshlens_store_wal_bytes_pending",
        "meshlens_store_wal_lag_seconds",
        "meshlens_store_last_flush_seconds",
        "meshlens_envoy_als_streams",
    ):
        _metric(text, name)


def test_sigint_is_a_clean_exit_too(running_serve: ServeProcess) -> None:
    with grpc.insecure_channel(running_serve.grpc_target) as ch:
        export(ch, otlp.TRACES, traces_request(9).SerializeToString())
    assert running_serve.stop(sig=signal.SIGINT) == 0
    assert count_rows(running_serve.data_dir, "spans") == 9
    assert "SIGINT received" in running_serve.log()


def test_a_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "meshlens",
                "serve",
                "--data-dir",
                str(tmp_path / "d"),
                "--grpc-port",
                str(port),
                "--http-port",
                "0",
                "--api-port",
                "0",
            ],
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=60,
        )
    assert out.returncode == 2, out.stderr
    assert f"--grpc-port {port}" in out.stderr and "Traceback" not in out.stderr


def test_readyz_is_503_until_started_and_after_stop(
    collector_factory: Callable[..., Any], tmp_path: Path
) -> None:
    from meshlens.cli import build_parser
    from meshlens.httpd import Request
    from meshlens.server import Collector

    parser, _ = build_parser("serve")
    c = Collector(parser.parse_args(["--data-dir", str(tmp_path / "x")]))
    req = Request("GET", "/readyz", {}, {}, b"")
    assert c._readyz(req).status == 503
    running = collector_factory()
    assert running._readyz(req).status == 200
    running.stop()
    resp = running._readyz(req)
    assert resp.status == 503 and b"stopping" in resp.body


def test_sigterm_during_sustained_ingest_loses_no_acknowledged_span(
    running_serve: ServeProcess,
) -> None:
    import threading

    acked = [0]
    errors: list[grpc.StatusCode] = []
    stop = threading.Event()

    def client(seed: int) -> None:
        with grpc.insecure_channel(running_serve.grpc_target) as ch:
            i = 0
            while not stop.is_set():
                raw = traces_request(100, seed=seed * 100_000 + i).SerializeToString()
                i += 1
                try:
                    export(ch, otlp.TRACES, raw)
                except grpc.RpcError as exc:
                    errors.append(exc.code())
                    return  # the server is going away
                acked[0] += 100

    threads = [threading.Thread(target=client, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    wait_for_acks = 0
    while acked[0] < 3000 and wait_for_acks < 600:  # some ingest before the signal
        wait_for_acks += 1
        threading.Event().wait(0.05)
    assert running_serve.stop() == 0
    stop.set()
    for t in threads:
        t.join(30)
    # refused while stopping: UNAVAILABLE, or CANCELLED when the call raced the shutdown
    assert set(errors) <= {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED}
    assert count_rows(running_serve.data_dir, "spans") == acked[0] > 0
