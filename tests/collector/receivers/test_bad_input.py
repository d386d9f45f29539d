"""Malformed, oversized and hostile input on the gRPC port: a clear status, nothing stored from
the bad request, the server keeps serving, and nothing else is lost."""

from __future__ import annotations

import grpc
import pytest

from meshlens.collector.receivers import otlp
from tests.collector.conftest import ServeProcess
from tests.collector.protowire import varint as _varint
from tests.collector.receivers.grpc_client import export, stream_als
from tests.collector.receivers.payloads import (
    als_message,
    logs_request,
    metrics_request,
    traces_request,
)
from tests.collector.receivers.rows import count_rows

GARBAGE = [
    b"\xff\xff\xff\xff",  # invalid tag
    b"\x0a\x05ab",  # length-delimited field running past the end
    b"\x0a\x80",  # truncated varint
    b"\x0a\x03\x0a\x01\xff",  # a bad nested message
]


def _nested_any_value(depth: int) -> bytes:
    """A span attribute whose value nests `depth` kvlists: past protobuf's recursion limit."""
    value = b"\x0a\x00"
    for _ in range(depth):
        kv = b"\x0a\x01k" + b"\x12" + _varint(len(value)) + value  # KeyValue{key, value}
        kvlist = b"\x0a" + _varint(len(kv)) + kv  # KeyValueList{values}
        value = b"\x32" + _varint(len(kvlist)) + kvlist  # AnyValue{kvlist_value=6}
    attr = b"\x0a\x01a\x12" + _varint(len(value)) + value  # KeyValue
    span = (
        b"\x0a\x10"
        + bytes(range(1, 17))
        + b"\x12\x08"
        + bytes(range(1, 9))
        + b"\x4a"
        + _varint(len(attr))
        + attr
    )  # attributes = 9
    scope_spans = b"\x12" + _varint(len(span)) + span
    resource_spans = b"\x12" + _varint(len(scope_spans)) + scope_spans
    return b"\x0a" + _varint(len(resource_spans)) + resource_spans


def test_malformed_requests_are_invalid_argument_and_nothing_else_is_lost(
    running_serve: ServeProcess,
) -> None:
    good = {
        otlp.TRACES: traces_request(10).SerializeToString(),
        otlp.METRICS: metrics_request(4).SerializeToString(),
        otlp.LOGS: logs_request(6).SerializeToString(),
    }
    with grpc.insecure_channel(running_serve.grpc_target) as ch:
        for signal, raw in good.items():
            export(ch, signal, raw)
            for bad in [*GARBAGE, _nested_any_value(150)]:
                with pytest.raises(grpc.RpcError) as err:
                    export(ch, signal, bad)
                assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, bad
                assert err.value.details().startswith(f"cannot decode {signal.request.__name__}")
            export(ch, signal, raw)
    assert running_serve.stop() == 0
    d = running_serve.data_dir
    assert (count_rows(d, "spans"), count_rows(d, "metrics"), count_rows(d, "logs")) == (20, 8, 12)


def test_oversized_request_is_resource_exhausted_naming_the_limit(
    serve_factory: object,
) -> None:
    sp = serve_factory("--max-message-size", "64KiB")  # type: ignore[operator]
    big = traces_request(1000).SerializeToString()
    assert len(big) > 65536
    with grpc.insecure_channel(
        sp.grpc_target, options=[("grpc.max_send_message_length", -1)]
    ) as ch:
        with pytest.raises(grpc.RpcError) as err:
            export(ch, otlp.TRACES, big)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "65536" in err.value.details()
        with pytest.raises(grpc.RpcError) as err:
            stream_als(ch, [als_message(3, first=True), b"\x00" * 70000])
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        export(ch, otlp.TRACES, traces_request(5).SerializeToString())  # still serving
    assert sp.stop() == 0
    assert count_rows(sp.data_dir, "spans") == 5
    # The stream failed, so nothing on it was acknowledged. The message before the big one is
    # kept if the servicer had read it (3 rows); gRPC discards messages it buffered for a call
    # that failed before the application read them (0 rows). Never anything in between.
    assert count_rows(sp.data_dir, "requests") in (0, 3)


def test_malformed_als_message_ends_its_stream_only(running_serve: ServeProcess) -> None:
    with grpc.insecure_channel(running_serve.grpc_target) as ch:
        with pytest.raises(grpc.RpcError) as err:
            stream_als(ch, [als_message(4, first=True), b"\xff\xff\xff"])
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "StreamAccessLogsMessage" in err.value.details()
        stream_als(ch, [als_message(2, first=True), als_message(3, first=False)])
    assert running_serve.stop() == 0
    assert count_rows(running_serve.data_dir, "requests") == 4 + 2 + 3
