"""The C receive-path check (collector.decode._otlp_check) held to the Python reference.

`count(signal, payload)` may answer only when the reference (`otlp.check_reference`: upb parse,
then the item rules) accepts the whole request as it is, and then with the same item count;
otherwise it declines (None) and the reference decides. Checked on SDK-made, Envoy-shaped,
benchmark, receiver-test, generated, truncated and bit-flipped requests of all three signals,
and its schemas against the installed opentelemetry-proto descriptors.
"""

from __future__ import annotations

import random
import struct

import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from bench.decode_spans import SCENARIOS
from meshlens.collector.errors import DecodeError
from meshlens.collector.receivers import otlp
from tests.collector.decode.samples import (
    envoy_traces_request,
    sdk_logs_request,
    sdk_metrics_request,
    sdk_traces_request,
)
from tests.collector.decode.test_otlp_traces_fast import requests as trace_requests
from tests.collector.protowire import field as _f
from tests.collector.receivers.payloads import logs_request, metrics_request, traces_request

_otlp_check = pytest.importorskip("meshlens.collector.decode._otlp_check")


def agrees(signal: otlp.Signal, payload: bytes) -> int | None:
    """The C answer, after checking it against the reference; returns it."""
    got = _otlp_check.count(otlp.SIGNALS.index(signal), payload)
    try:
        ref: otlp.Checked | None = otlp.check_reference(signal, payload)
    except DecodeError:
        ref = None
    if got is not None:
        assert ref is not None, "C accepted what the reference refuses"
        assert (ref.items, ref.rejected) == (got, 0)
        assert ref.payload is payload
    return got


# ---- the schemas are the installed protos' -------------------------------------------------

_VARINTS = {
    FieldDescriptor.TYPE_INT32,
    FieldDescriptor.TYPE_INT64,
    FieldDescriptor.TYPE_UINT32,
    FieldDescriptor.TYPE_UINT64,
    FieldDescriptor.TYPE_SINT32,
    FieldDescriptor.TYPE_SINT64,
    FieldDescriptor.TYPE_BOOL,
    FieldDescriptor.TYPE_ENUM,
}
_I64 = {FieldDescriptor.TYPE_FIXED64, FieldDescriptor.TYPE_SFIXED64, FieldDescriptor.TYPE_DOUBLE}
_I32 = {FieldDescriptor.TYPE_FIXED32, FieldDescriptor.TYPE_SFIXED32, FieldDescriptor.TYPE_FLOAT}


def _kind(f: FieldDescriptor) -> str:
    if f.type == FieldDescriptor.TYPE_MESSAGE:
        return "message"
    if f.type == FieldDescriptor.TYPE_STRING:
        return "string"
    if f.type == FieldDescriptor.TYPE_BYTES:
        return "bytes"
    if f.type in _VARINTS:
        return "packed_varint" if f.is_repeated else "varint"
    if f.type in _I64:
        return "packed_i64" if f.is_repeated else "i64"
    assert f.type in _I32 and not f.is_repeated, f.full_name  # none in OTLP today
    return "i32"


def _descriptors(d: Descriptor, out: dict[str, dict[int, tuple[str, str | None]]]) -> None:
    if d.full_name in out:
        return
    out[d.full_name] = {
        f.number: (_kind(f), f.message_type.full_name if f.message_type else None) for f in d.fields
    }
    for f in d.fields:
        if f.message_type is not None:
            _descriptors(f.message_type, out)


def test_schemas_are_the_installed_descriptors() -> None:
    want: dict[str, dict[int, tuple[str, str | None]]] = {}
    for signal in otlp.SIGNALS:
        _descriptors(signal.request.DESCRIPTOR, want)
    assert _otlp_check.schema() == want


# ---- realistic requests: answered, and equal -----------------------------------------------


def _realistic() -> list[tuple[otlp.Signal, bytes]]:
    out = [
        (otlp.TRACES, sdk_traces_request()),
        (otlp.TRACES, envoy_traces_request().SerializeToString()),
        (otlp.TRACES, traces_request(7).SerializeToString()),
        (otlp.METRICS, sdk_metrics_request()),
        (otlp.METRICS, metrics_request(4).SerializeToString()),
        (otlp.LOGS, sdk_logs_request()),
        (otlp.LOGS, logs_request(6).SerializeToString()),
    ]
    out += [(otlp.TRACES, make(seed, 50)) for seed in range(3) for make in SCENARIOS.values()]
    return out


@pytest.mark.parametrize("case", range(len(_realistic())))
def test_realistic_requests_are_answered_in_c(case: int) -> None:
    signal, payload = _realistic()[case]
    assert agrees(signal, payload) is not None


def test_empty_requests_have_no_items() -> None:
    for signal in otlp.SIGNALS:
        assert agrees(signal, b"") == 0


def test_receive_path_uses_it() -> None:
    raw = traces_request(3).SerializeToString()
    checked = otlp.check(otlp.TRACES, raw)
    assert (checked.items, checked.rejected, checked.payload) == (3, 0, raw)


# ---- what the reference must decide --------------------------------------------------------


_IDS = _f(1, 2, b"\x01" * 16) + _f(2, 2, b"\x02" * 8)


def _span(body: bytes) -> bytes:
    return _f(1, 2, _f(2, 2, _f(2, 2, body)))


def _metric(body: bytes) -> bytes:
    return _f(1, 2, _f(2, 2, _f(2, 2, body)))


def _log(body: bytes) -> bytes:
    return _f(1, 2, _f(2, 2, _f(2, 2, body)))


_POINT = _f(1, 2, _f(3, 1, struct.pack("<Q", 1)))  # one NumberDataPoint

DECLINED: dict[str, tuple[otlp.Signal, bytes]] = {
    "invalid UTF-8 span name": (otlp.TRACES, _span(_IDS + _f(5, 2, b"\xff"))),
    "invalid UTF-8 in a nested kvlist key": (
        otlp.TRACES,
        _span(_IDS + _f(9, 2, _f(1, 2, b"k") + _f(2, 2, _f(6, 2, _f(1, 2, _f(1, 2, b"\xc3")))))),
    ),
    "a surrogate in a scope name": (
        otlp.TRACES,
        _f(1, 2, _f(2, 2, _f(1, 2, _f(1, 2, b"\xed\xa0\x80")))),
    ),
    "an unknown span field": (otlp.TRACES, _span(_IDS + _f(17, 0, b"\x01"))),
    "the removed Status field 1": (otlp.TRACES, _span(_IDS + _f(15, 2, _f(1, 0, b"\x01")))),
    "a known field with another wire type": (otlp.TRACES, _span(_IDS + _f(6, 2, b"x"))),
    "a span name sent as a varint": (otlp.TRACES, _span(_IDS + _f(5, 0, b"\x01"))),
    "an unknown AnyValue field": (
        otlp.TRACES,
        _span(_IDS + _f(9, 2, _f(1, 2, b"k") + _f(2, 2, _f(9, 2, b"")))),
    ),
    "a group": (otlp.TRACES, _span(_IDS + _f(16, 3, b"") + _f(16, 4, b""))),
    "a short trace id": (otlp.TRACES, _span(_f(1, 2, b"\x01" * 15) + _f(2, 2, b"\x02" * 8))),
    "a zero trace id": (otlp.TRACES, _span(_f(1, 2, bytes(16)) + _f(2, 2, b"\x02" * 8))),
    "no span id": (otlp.TRACES, _span(_f(1, 2, b"\x01" * 16))),
    "a zero span id": (otlp.TRACES, _span(_f(1, 2, b"\x01" * 16) + _f(2, 2, bytes(8)))),
    "a parent id of 4 bytes": (otlp.TRACES, _span(_IDS + _f(4, 2, b"\x03" * 4))),
    "a second trace id that is short": (otlp.TRACES, _span(_IDS + _f(1, 2, b"\x01"))),
    "a truncated span": (otlp.TRACES, _span(_IDS)[:-2]),
    "an unnamed metric": (otlp.METRICS, _metric(_f(5, 2, _POINT))),
    "a metric with two data fields": (
        otlp.METRICS,
        _metric(_f(1, 2, b"m") + _f(5, 2, _POINT) + _f(7, 2, _POINT)),
    ),
    "packed bucket counts cut mid-value": (
        otlp.METRICS,
        _metric(_f(1, 2, b"h") + _f(9, 2, _f(1, 2, _f(6, 2, b"\x00" * 12)))),
    ),
    "a packed varint cut short": (
        otlp.METRICS,
        _metric(_f(1, 2, b"e") + _f(10, 2, _f(1, 2, _f(8, 2, _f(2, 2, b"\x01\x80"))))),
    ),
    "a log record with a 3-byte trace id": (otlp.LOGS, _log(_f(9, 2, b"\x01\x02\x03"))),
    "invalid UTF-8 log body": (otlp.LOGS, _log(_f(5, 2, _f(1, 2, b"\x80")))),
}


def _deep(levels: int) -> bytes:
    value = _f(3, 0, b"\x01")  # AnyValue{int_value: 1}
    for _ in range(levels):
        value = _f(5, 2, _f(1, 2, value))  # AnyValue{array_value{values: [value]}}
    return _span(_IDS + _f(9, 2, _f(1, 2, b"k") + _f(2, 2, value)))


DECLINED["nesting deeper than the walk goes"] = (otlp.TRACES, _deep(30))


@pytest.mark.parametrize("name", list(DECLINED))
def test_unusual_input_is_left_to_the_reference(name: str) -> None:
    signal, payload = DECLINED[name]
    assert agrees(signal, payload) is None


def test_nesting_within_the_limit_is_answered() -> None:
    assert agrees(otlp.TRACES, _deep(10)) == 1


def test_unpacked_repeated_values_are_answered() -> None:
    point = _f(1, 2, _f(6, 1, struct.pack("<Q", 2)) + _f(6, 1, struct.pack("<Q", 3)))
    assert agrees(otlp.METRICS, _metric(_f(1, 2, b"h") + _f(9, 2, point))) == 1


@pytest.mark.parametrize(
    ("signal", "payload", "rejected"),
    [
        (otlp.TRACES, traces_request(5, bad=2).SerializeToString(), 2),
        (otlp.METRICS, metrics_request(4, unnamed_points=3).SerializeToString(), 3),
        (otlp.LOGS, logs_request(6, bad=1).SerializeToString(), 1),
    ],
    ids=["traces", "metrics", "logs"],
)
def test_partial_success_comes_from_the_reference(
    signal: otlp.Signal, payload: bytes, rejected: int
) -> None:
    assert agrees(signal, payload) is None
    assert otlp.check(signal, payload).rejected == rejected


# ---- generated and mutated -----------------------------------------------------------------


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(trace_requests())
def test_generated_trace_requests(payload: bytes) -> None:
    agrees(otlp.TRACES, payload)


@st.composite
def metric_requests(draw: st.DrawFn) -> bytes:
    req = ExportMetricsServiceRequest()
    for _ in range(draw(st.integers(0, 2))):
        sm = req.resource_metrics.add().scope_metrics.add()
        for _ in range(draw(st.integers(0, 3))):
            m = sm.metrics.add(name=draw(st.sampled_from(["", "m", "é"])))
            kind = draw(st.sampled_from(["gauge", "sum", "histogram", "exp", "summary", "none"]))
            for i in range(draw(st.integers(0, 3))):
                if kind in ("gauge", "sum"):
                    getattr(m, kind).data_points.add(as_int=i)
                elif kind == "histogram":
                    m.histogram.data_points.add(bucket_counts=[i, 1], explicit_bounds=[0.5])
                elif kind == "exp":
                    dp = m.exponential_histogram.data_points.add(scale=-i)
                    dp.positive.bucket_counts.extend([i, 2**40])
                elif kind == "summary":
                    m.summary.data_points.add().quantile_values.add(quantile=0.5, value=i)
    return req.SerializeToString()


@st.composite
def log_requests(draw: st.DrawFn) -> bytes:
    req = ExportLogsServiceRequest()
    sl = req.resource_logs.add().scope_logs.add()
    for _ in range(draw(st.integers(0, 4))):
        r = sl.log_records.add(severity_text=draw(st.text(max_size=4)))
        r.trace_id = draw(st.sampled_from([b"", bytes(16), b"\x01" * 16, b"\x01" * 3]))
        r.span_id = draw(st.sampled_from([b"", b"\x02" * 8, b"\x02"]))
        r.body.CopyFrom(AnyValue(string_value=draw(st.text(max_size=6))))
    return req.SerializeToString()


@settings(max_examples=200, deadline=None)
@given(metric_requests())
def test_generated_metric_requests(payload: bytes) -> None:
    agrees(otlp.METRICS, payload)


@settings(max_examples=200, deadline=None)
@given(log_requests())
def test_generated_log_requests(payload: bytes) -> None:
    agrees(otlp.LOGS, payload)


def _seeds() -> list[tuple[otlp.Signal, bytes]]:
    return [
        (otlp.TRACES, sdk_traces_request()),
        (otlp.TRACES, envoy_traces_request().SerializeToString()),
        (otlp.METRICS, sdk_metrics_request()),
        (otlp.LOGS, sdk_logs_request()),
    ]


def test_truncations_agree_with_the_reference() -> None:
    for signal, payload in _seeds():
        for end in range(len(payload)):
            agrees(signal, payload[:end])


def test_bit_flips_agree_with_the_reference() -> None:
    rnd = random.Random(11)
    answered = 0
    for signal, payload in _seeds():
        for _ in range(800):
            mutant = bytearray(payload)
            for _ in range(rnd.randint(1, 3)):
                i = rnd.randrange(len(mutant))
                mutant[i] ^= 1 << rnd.randrange(8)
            answered += agrees(signal, bytes(mutant)) is not None
    assert answered > 0  # some flips (in ids, numbers, ASCII text) leave a valid request
