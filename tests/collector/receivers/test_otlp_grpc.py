"""Real OTel SDK gRPC exporters -> a real `meshlens serve` -> exactly the rows that were sent."""

from __future__ import annotations

import json
import subprocess
import sys

import grpc
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

from tests.collector.conftest import REPO, ServeProcess
from tests.collector.receivers.rows import count_rows, query, wait_rows
from tests.collector.receivers.sdk import send_logs, send_metrics, send_spans


def test_sdk_spans_are_queryable_with_meshlens_sql(running_serve: ServeProcess) -> None:
    n = 1234
    send_spans(OTLPSpanExporter(endpoint=running_serve.grpc_target, insecure=True), n)
    # Acknowledged data is queryable within seconds, while the server keeps running.
    assert wait_rows(running_serve.data_dir, "spans", n, timeout=10) == n
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "meshlens",
            "sql",
            "--data-dir",
            str(running_serve.data_dir),
            "--format",
            "json",
            "select service_name, count(*) as n from spans group by 1",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        check=True,
    )
    assert json.loads(out.stdout) == [{"service_name": "checkout", "n": n}]


def test_sigterm_flushes_everything_and_exits_zero(running_serve: ServeProcess) -> None:
    n = 777
    # gzip-compressed gRPC (grpc undoes it, within --max-message-size)
    send_spans(
        OTLPSpanExporter(
            endpoint=running_serve.grpc_target, insecure=True, compression=grpc.Compression.Gzip
        ),
        n,
    )
    assert running_serve.stop() == 0
    assert not (running_serve.data_dir / "serve.json").exists()
    assert count_rows(running_serve.data_dir, "spans") == n
    assert not list((running_serve.data_dir / "wal").glob("*.wal"))  # all converted


def test_sdk_metrics_of_every_kind(running_serve: ServeProcess) -> None:
    expected = send_metrics(OTLPMetricExporter(endpoint=running_serve.grpc_target, insecure=True))
    wait_rows(running_serve.data_dir, "metrics", len(expected))
    rows = dict(query(running_serve.data_dir, "metrics", "name, kind"))
    assert rows == expected


def test_sdk_logs(running_serve: ServeProcess) -> None:
    send_logs(OTLPLogExporter(endpoint=running_serve.grpc_target, insecure=True), 25)
    assert wait_rows(running_serve.data_dir, "logs", 25) == 25
    bodies = {b for (b,) in query(running_serve.data_dir, "logs", "body")}
    assert "payment 7 declined" in bodies
