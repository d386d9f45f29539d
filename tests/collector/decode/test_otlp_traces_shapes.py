"""The C span decoder's cache of key sets ("shapes") held to the Python reference.

_otlp_wire.c remembers the last few key sets it saw (escaped JSON keys, promoted columns, sorted
order) and, when a span repeats one byte for byte, writes its values straight into the
attributes JSON. The tests in test_otlp_traces_fast.py rarely repeat a key set across spans;
these do: spans drawing from a few shapes with changing values, missing values, repeated and
promoted keys, escapes, limits, shapes too big for the cache, batches of requests, and a key
that differs from a cached one only by an invalid byte.
"""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from meshlens.collector.decode import limits, otlp_traces, otlp_traces_fast
from meshlens.collector.store.records import Record, RecordKind
from tests.collector.decode.test_otlp_traces_fast import (
    LIMITS,
    PROMOTED,
    RECEIVED_NS,
    STATUS_KEYS,
    URL_KEYS,
    _diff,
    any_values,
    assert_same,
    keys,
    needs_c,
    non_strings,
    status_texts,
    texts,
    url_texts,
)

pytestmark = needs_c

key_pool = keys | st.sampled_from(
    (*PROMOTED, *STATUS_KEYS, *URL_KEYS, "a\x01", 'q"', "a b", "a", "é", "x" * 30)
)
ODD_VALUES = [
    AnyValue(string_value="true"),
    AnyValue(bool_value=True),
    AnyValue(int_value=1),
    AnyValue(double_value=1.0),
    AnyValue(string_value="x" * 20 + "é"),
    AnyValue(string_value="y" * 200),  # past the short-string path
    AnyValue(bytes_value=b"\xff" * 5),
]


@pytest.fixture(autouse=True)
def _default_limits() -> Iterator[None]:
    limits.set_current(limits.DecodeLimits())
    yield
    limits.set_current(None)


def _value_for(key: str) -> st.SearchStrategy[AnyValue]:
    if key in STATUS_KEYS:
        return status_texts.map(lambda s: AnyValue(string_value=s)) | non_strings
    if key in URL_KEYS:
        return url_texts.map(lambda s: AnyValue(string_value=s)) | non_strings
    return any_values | texts.map(lambda s: AnyValue(string_value=s)) | st.sampled_from(ODD_VALUES)


@st.composite
def shaped_requests(draw: st.DrawFn) -> bytes:
    """Up to 14 spans, each taking its keys from one of up to 6 shapes."""
    shapes = draw(st.lists(st.lists(key_pool, min_size=1, max_size=9), min_size=1, max_size=6))
    req = ExportTraceServiceRequest()
    ss = req.resource_spans.add().scope_spans.add()
    for i in range(draw(st.integers(1, 14))):
        sp = ss.spans.add()
        sp.trace_id = bytes(16)
        sp.span_id = bytes([i]) * 8
        sp.kind = i % 4  # type: ignore[assignment]
        for k in draw(st.sampled_from(shapes)):
            if draw(st.integers(0, 9)) == 0:
                sp.attributes.add(key=k)  # a key without a value
            else:
                sp.attributes.add(key=k, value=draw(_value_for(k)))
    return req.SerializeToString()


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    shaped_requests(),
    st.sampled_from((*LIMITS, limits.DecodeLimits(attribute_value_length=3))),
)
def test_repeated_key_sets(payload: bytes, lim: limits.DecodeLimits) -> None:
    limits.set_current(lim)
    assert_same(payload, RECEIVED_NS)


@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(shaped_requests(), min_size=2, max_size=6))
def test_batches_share_the_cache(payloads: list[bytes]) -> None:
    recs = [Record(RecordKind.OTLP_TRACES, RECEIVED_NS + i, p) for i, p in enumerate(payloads)]
    fast = otlp_traces_fast._fast([r.payload for r in recs], [r.received_ns for r in recs])
    if fast is None:  # declined: the converter decodes these in Python
        return
    ref = pa.concat_tables([otlp_traces.decode_traces(r.payload, r.received_ns) for r in recs])
    assert ref.equals(fast[0]), _diff(ref, fast[0])


@pytest.mark.parametrize(("nkeys", "klen"), [(63, 5), (64, 5), (65, 5), (20, 120), (10, 300)])
def test_shapes_at_and_past_the_cache_size(nkeys: int, klen: int) -> None:
    req = ExportTraceServiceRequest()
    ss = req.resource_spans.add().scope_spans.add()
    for i in range(5):
        sp = ss.spans.add()
        for k in range(nkeys):
            key = f"k{k:03d}" + ("\x01" * (klen - 4) if k % 3 == 0 else "z" * (klen - 4))
            sp.attributes.add(key=key, value=AnyValue(string_value=f"v{i}{k}"))
        # a promoted key sent twice: the last one wins, cached or not
        sp.attributes.add(key="http.method", value=AnyValue(string_value=f"M{i}"))
        sp.attributes.add(key="http.method", value=AnyValue(string_value=f"N{i}"))
    assert_same(req.SerializeToString())


def test_invalid_key_byte_after_a_cached_key_is_declined() -> None:
    req = ExportTraceServiceRequest()
    ss = req.resource_spans.add().scope_spans.add()
    for _ in range(3):
        ss.spans.add().attributes.add(key="abc", value=AnyValue(string_value="x"))
    payload = req.SerializeToString()
    assert_same(payload)
    first_bad = payload.replace(b"abc", b"ab\xff", 1)
    last_bad = payload[::-1].replace(b"cba", b"\xffba", 1)[::-1]
    for bad in (first_bad, last_bad):
        assert otlp_traces_fast.fast_table(bad, RECEIVED_NS) is None
        assert_same(bad, must_decode=False)
