"""Over budget or disk full: RESOURCE_EXHAUSTED / UNAVAILABLE (429 / 503) with retry hints the
OTel exporters read, never an ack for data that is not on disk, and service resumes after."""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from typing import Any

import grpc
import pytest
from google.rpc.error_details_pb2 import RetryInfo

from meshlens.collector.receivers import envoy_als, otlp
from meshlens.collector.store import wal
from tests.collector.conftest import ServeProcess, http_post
from tests.collector.receivers.grpc_client import export, stream_als
from tests.collector.receivers.payloads import als_message, traces_request
from tests.collector.receivers.rows import count_rows

PB = {"Content-Type": "application/x-protobuf"}


def _retry_delay(err: grpc.RpcError) -> float:
    trailers = dict(err.trailing_metadata())
    info = RetryInfo.FromString(trailers["google.rpc.retryinfo-bin"])
    delay = info.retry_delay.seconds + info.retry_delay.nanos / 1e9
    assert int(trailers["grpc-retry-pushback-ms"]) == int(delay * 1000)
    return delay


def test_disk_budget_full_is_resource_exhausted_with_retry_info(
    serve_factory: Callable[..., ServeProcess],
) -> None:
    # Nothing is converted for 30 s, so after the first request the WAL is over its budget.
    sp = serve_factory("--disk-budget", "1", "--flush-interval", "30s")
    spans = traces_request(5).SerializeToString()
    with grpc.insecure_channel(sp.grpc_target) as ch:
        export(ch, otlp.TRACES, spans)
        with pytest.raises(grpc.RpcError) as err:
            export(ch, otlp.TRACES, spans)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "disk budget" in err.value.details()
        assert _retry_delay(err.value) == 30.0
    status, _body, headers = http_post(sp.otlp_url("/v1/traces"), spans, PB)
    assert status == 429 and headers["Retry-After"] == "30"
    assert sp.stop() == 0
    assert count_rows(sp.data_dir, "spans") == 5  # only the acknowledged request


def test_disk_full_is_unavailable_and_the_collector_recovers(
    collector_factory: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    c = collector_factory()
    spans = traces_request(6).SerializeToString()
    target = f"127.0.0.1:{c.ports.grpc}"

    def disk_full(self: wal.WalFile, parts: list[memoryview]) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with grpc.insecure_channel(target) as ch:
        export(ch, otlp.TRACES, spans)
        monkeypatch.setattr(wal.WalFile, "_write", disk_full)
        with pytest.raises(grpc.RpcError) as err:
            export(ch, otlp.TRACES, spans)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "No space left on device" in err.value.details()
        assert _retry_delay(err.value) > 0
        with pytest.raises(grpc.RpcError) as err:
            stream_als(ch, [als_message(2, first=True)])
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        status, _body, headers = http_post(f"http://127.0.0.1:{c.ports.http}/v1/traces", spans, PB)
        assert status == 503 and int(headers["Retry-After"]) >= 1
        assert c.ready  # a full disk is not a crash
        monkeypatch.undo()
        export(ch, otlp.TRACES, spans)
        stream_als(ch, [als_message(2, first=True)])
    assert c.store.wait_converted(10)
    assert count_rows(c.data_dir, "spans") == 12
    assert count_rows(c.data_dir, "requests") == 2
    text = c.metrics.render().decode()
    assert 'meshlens_receiver_requests_total{outcome="unavailable",receiver="otlp_grpc"' in text


def test_als_stream_waits_out_a_full_budget_then_gives_up(
    collector_factory: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(envoy_als, "OVERLOAD_WAIT_S", 0.5)
    c = collector_factory("--disk-budget", "1", "--flush-interval", "30s")
    with grpc.insecure_channel(f"127.0.0.1:{c.ports.grpc}") as ch:
        with pytest.raises(grpc.RpcError) as err:
            stream_als(ch, [als_message(2, first=True), als_message(3, first=False)])
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "disk budget" in err.value.details()
    assert c.store.wait_converted(10)
    assert count_rows(c.data_dir, "requests") == 2
