"""The cheap receive-side check of OTLP requests and the answers built from it (no sockets)."""

from __future__ import annotations

import grpc
import pytest

from meshlens.collector.errors import DecodeError, Overloaded, PayloadTooLarge, StoreUnavailable
from meshlens.collector.receivers import otlp
from meshlens.collector.receivers.failures import classify
from tests.collector.receivers.payloads import logs_request, metrics_request, traces_request


def test_valid_request_is_stored_byte_for_byte() -> None:
    raw = traces_request(7).SerializeToString()
    checked = otlp.check(otlp.TRACES, raw)
    assert checked.payload is raw
    assert (checked.items, checked.rejected) == (7, 0)
    assert otlp.response(otlp.TRACES, checked).SerializeToString() == b""


def test_spans_with_invalid_ids_are_rejected_in_partial_success() -> None:
    raw = traces_request(5, bad=2).SerializeToString()
    checked = otlp.check(otlp.TRACES, raw)
    assert (checked.items, checked.rejected) == (5, 2)
    stored = otlp.TRACES.request.FromString(checked.payload)
    spans = stored.resource_spans[0].scope_spans[0].spans  # type: ignore[attr-defined]
    assert len(spans) == 5 and all(len(s.trace_id) == 16 for s in spans)
    ps = otlp.response(otlp.TRACES, checked).partial_success  # type: ignore[attr-defined]
    assert ps.rejected_spans == 2
    assert "trace_id must be 16" in ps.error_message


def test_request_with_only_invalid_items_is_a_decode_error() -> None:
    raw = traces_request(0, bad=3).SerializeToString()
    with pytest.raises(DecodeError, match="all 3 spans rejected"):
        otlp.check(otlp.TRACES, raw)


def test_metrics_count_data_points_and_reject_unnamed_metrics() -> None:
    checked = otlp.check(otlp.METRICS, metrics_request(4, unnamed_points=3).SerializeToString())
    assert (checked.items, checked.rejected) == (4, 3)
    ps = otlp.response(otlp.METRICS, checked).partial_success  # type: ignore[attr-defined]
    assert ps.rejected_data_points == 3


def test_logs_count_records_and_reject_bad_trace_ids() -> None:
    checked = otlp.check(otlp.LOGS, logs_request(6, bad=1).SerializeToString())
    assert (checked.items, checked.rejected) == (6, 1)


@pytest.mark.parametrize("signal", otlp.SIGNALS, ids=lambda s: s.name)
@pytest.mark.parametrize("raw", [b"\xff\xff\xff\xff", b"\x0a\x05ab", b"\x0a\x80"])
def test_malformed_protobuf_is_a_decode_error_naming_the_message(
    signal: otlp.Signal, raw: bytes
) -> None:
    with pytest.raises(DecodeError, match=r"Export\w+ServiceRequest: malformed protobuf"):
        otlp.check(signal, raw)


def test_empty_request_is_valid_with_nothing_to_store() -> None:
    checked = otlp.check(otlp.LOGS, b"")
    assert (checked.items, checked.rejected) == (0, 0)


def test_failure_mapping() -> None:
    f = classify(DecodeError("x", "bad"))
    assert (f.grpc_code, f.http_status, f.retry_after_s) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        400,
        None,
    )
    f = classify(PayloadTooLarge(10, 5))
    assert (f.grpc_code, f.http_status) == (grpc.StatusCode.RESOURCE_EXHAUSTED, 413)
    f = classify(Overloaded("memory budget", 1.5))
    assert (f.grpc_code, f.http_status) == (grpc.StatusCode.RESOURCE_EXHAUSTED, 429)
    assert f.http_headers() == {"Retry-After": "2"}
    trailers = dict(f.grpc_trailers())
    assert trailers["grpc-retry-pushback-ms"] == "1500"
    f = classify(StoreUnavailable("/data/wal", "No space left on device"))
    assert (f.grpc_code, f.http_status) == (grpc.StatusCode.UNAVAILABLE, 503)
    assert "No space left" in f.message and f.retry_after_s
