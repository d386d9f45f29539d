"""The C span decoder (collector/decode/_otlp_wire.c via otlp_traces_fast) held to the reference.

`otlp_traces_fast.fast_table(payload)` must give exactly the `spans` table of the pure-Python
decoder (`otlp_traces.decode_traces`), or None (a decline: the request then goes to the
reference). Covered: the SDK exporter's encoding, Envoy tracer tags, the benchmark's requests,
random requests (hypothesis: every AnyValue type, nested arrays and kvlists, awkward doubles and
strings, both generations of semantic conventions, the attribute limits), byte-level mutants
(truncations, bit flips) and hand-made wire data the extension must decline.
"""

from __future__ import annotations

import math
import random
import struct
from collections.abc import Iterator, Sequence
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import (
    AnyValue,
    ArrayValue,
    KeyValue,
    KeyValueList,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from bench.decode_spans import SCENARIOS
from meshlens.collector.decode import limits, otlp_traces, otlp_traces_fast, registry, window
from meshlens.collector.errors import DecodeError
from meshlens.collector.store.records import Record, RecordKind
from meshlens.collector.store.wal_to_parquet import decode_all
from tests.collector.decode.samples import envoy_traces_request, kv, sdk_traces_request
from tests.collector.protowire import field as _field
from tests.collector.protowire import varint as _varint
from tests.collector.receivers.payloads import traces_request

BUILD_HINT = (
    "the span wire decoder (collector/decode/_otlp_wire.c) is not built: run `make` or "
    "`.venv/bin/python -m pip install -q --no-deps --no-build-isolation -e .`"
)
needs_c = pytest.mark.skipif(not otlp_traces_fast.AVAILABLE, reason=BUILD_HINT)
pytestmark = needs_c

RECEIVED_NS = 1_764_000_000_123_456_789
T0 = 1_764_000_000_000_000_000
DOUBLES = (0.1, 1e300, -0.0, 0.0, math.nan, math.inf, -math.inf, 5e-324, 1e16, 2.5, 1.0, 503.0,
           2.0**31, -(2.0**31), 1e22, 123456789.125)  # fmt: skip


@pytest.fixture(autouse=True)
def _default_limits() -> Iterator[None]:
    limits.set_current(limits.DecodeLimits())
    yield
    limits.set_current(None)


def _diff(ref: pa.Table, fast: pa.Table) -> str:
    """The first differing rows of each differing column, for a readable failure."""
    out = []
    if ref.schema != fast.schema:
        out.append(f"schema: {ref.schema} != {fast.schema}")
    for name in ref.column_names:
        a, b = ref.column(name).to_pylist(), fast.column(name).to_pylist()
        rows = [i for i, (x, y) in enumerate(zip(a, b, strict=False)) if repr(x) != repr(y)]
        if len(a) != len(b) or rows:
            i = rows[0] if rows else 0
            out.append(
                f"{name}: {len(rows)} rows differ, row {i}: ref {a[i : i + 1]} fast {b[i : i + 1]}"
            )
    return "\n".join(out)


def assert_same(
    payload: bytes, received_ns: int = RECEIVED_NS, *, must_decode: bool = True
) -> None:
    """fast_table equals the reference (or declines, where allowed); the wrapper always does."""
    try:
        ref: pa.Table | None = otlp_traces.decode_traces(payload, received_ns)
        ref_err = ""
    except DecodeError as exc:
        ref, ref_err = None, str(exc)
    try:
        fast = otlp_traces_fast.fast_table(payload, received_ns)
    except DecodeError:
        pytest.fail("fast_table raised DecodeError instead of declining")
    if fast is None:
        assert not must_decode or ref is None, "the extension declined a request it must decode"
    else:
        assert ref is not None, f"the reference raised ({ref_err}) but the extension decoded"
        fast.validate(full=True)  # buffers, offsets and null counts are consistent
        assert ref.equals(fast), _diff(ref, fast)
    try:
        wrapped = otlp_traces_fast.decode_traces(payload, received_ns)
    except DecodeError as exc:
        assert ref is None and str(exc) == ref_err
    else:
        assert ref is not None and ref.equals(wrapped), _diff(ref, wrapped)


# ---- realistic requests --------------------------------------------------------------------


def test_sdk_exporter_spans() -> None:
    assert_same(sdk_traces_request())


def test_envoy_tracer_tags() -> None:
    payload = envoy_traces_request().SerializeToString()
    assert_same(payload)
    row = otlp_traces_fast.fast_table(payload, RECEIVED_NS).to_pylist()[0]  # type: ignore[union-attr]
    assert (row["status_code"], row["http_status_code"]) == ("error", 503)
    assert row["server_address"] == "reviews.default.svc.cluster.local"


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_benchmark_requests(scenario: str) -> None:
    for seed in range(3):
        assert_same(SCENARIOS[scenario](seed, 100))


def test_receiver_test_requests() -> None:
    assert_same(traces_request(50).SerializeToString())
    assert_same(traces_request(5, bad=2).SerializeToString())


def test_empty_and_rootless_requests() -> None:
    assert_same(b"")
    req = ExportTraceServiceRequest()
    req.resource_spans.add()  # a resource without scopes still counts its resource
    sp = req.resource_spans.add().scope_spans.add().spans.add()
    sp.kind = 99  # type: ignore[assignment]
    sp.status.code = 7  # type: ignore[assignment]
    sp.end_time_unix_nano = 2**64 - 1
    assert_same(req.SerializeToString())
    assert_same(req.SerializeToString(), received_ns=0)


def _span_with(attrs: Sequence[KeyValue], kind: int = Span.SPAN_KIND_CLIENT) -> bytes:
    req = ExportTraceServiceRequest()
    sp = req.resource_spans.add().scope_spans.add().spans.add()
    sp.kind = kind  # type: ignore[assignment]
    sp.start_time_unix_nano = T0
    sp.end_time_unix_nano = T0 + 5
    sp.attributes.extend(attrs)
    return req.SerializeToString()


@pytest.mark.parametrize(
    "attrs",
    [
        [kv("server.address", "a"), kv("net.peer.name", "b")],
        [kv("net.peer.name", "peer"), kv("net.host.name", "host")],
        [kv("upstream_cluster", "outbound|9080|v1|reviews.default.svc.cluster.local")],
        [kv("upstream_cluster", "outbound|9080||"), kv("http.url", "http://X.Example:80/p")],
        [kv("upstream_cluster", "inbound|9080||"), kv("url.full", "https://u@Host%ZoNe:1/")],
        [kv("url.full", ""), kv("http.url", "//only.host/x?y#z")],
        [kv("url.full", "mailto:x@y"), kv("http.url", "http://a:b@c/")],
        [kv("http.url", "no-scheme-host/path"), kv("server.address", 8080)],
        [kv("http.status_code", " 503\t"), kv("rpc.grpc.status_code", "14")],
        [kv("http.status_code", "2147483648"), kv("grpc.status_code", 2.0)],
        [kv("http.response.status_code", 503.5), kv("http.status_code", "200")],
        [kv("http.response.status_code", True), kv("rpc.service", 1.5)],
        [kv("http.request.method", ""), kv("http.method", 0)],
        [kv("http.request.method", 0), kv("http.route", ["a"])],
        [kv("error", 1), kv("db.system.name", "pg"), kv("db.namespace", "x")],
        [kv("error", 1.0), kv("db.system", "mysql"), kv("db.name", b"\x00")],
        [kv("error", "True"), kv("messaging.system", "kafka"), kv("peer.service", math.nan)],
        [kv("error", True), kv("rpc.method", -0.0)],
    ],
)
def test_promoted_columns(attrs: list[KeyValue]) -> None:
    for kind in (Span.SPAN_KIND_SERVER, Span.SPAN_KIND_CLIENT):
        assert_same(_span_with(attrs, kind))


@pytest.mark.parametrize("value", DOUBLES)
def test_doubles_as_python_repr(value: float) -> None:
    assert_same(_span_with([kv("d", value), kv("http.status_code", value)]))


def test_key_order_duplicates_and_escapes() -> None:
    keys = ["b", "a", "a!", "a\x01", "a.b", 'q"', "back\\slash", "é", "日本", "\U0001f600", ""]
    assert_same(_span_with([kv(k, i) for i, k in enumerate(keys)]))
    assert_same(_span_with([kv(k, i) for i, k in enumerate([*keys, "a", "b", "a!"])]))
    nested = AnyValue(
        kvlist_value=KeyValueList(
            values=[
                KeyValue(key="z", value=AnyValue(int_value=1)),
                KeyValue(key="a"),
                KeyValue(key="z", value=AnyValue(string_value="\n\t\x7f\x1f")),
            ]
        )
    )
    assert_same(_span_with([KeyValue(key="kv", value=nested), KeyValue(key="none")]))


@pytest.mark.parametrize(
    "lim",
    [
        limits.DecodeLimits(span_attribute_count=3),
        limits.DecodeLimits(attribute_value_length=3),
        limits.DecodeLimits(span_attribute_count=0, resource_attribute_count=1),
        limits.DecodeLimits(span_attribute_count=2, attribute_value_length=1),
    ],
)
def test_limits_and_drop_counts(lim: limits.DecodeLimits) -> None:
    limits.set_current(lim)
    arr = AnyValue(
        array_value=ArrayValue(
            values=[AnyValue(string_value="héllo"), AnyValue(bytes_value=b"\x01\x02\x03\x04")]
        )
    )
    attrs = [
        kv("url.full", "http://abcdef/"),
        kv("s", "日本語テキスト"),
        KeyValue(key="a", value=arr),
        kv("nan", math.nan),
        kv("b", b"bytes"),
        kv("http.method", "GET"),
    ]
    payload = _span_with(attrs)
    before = limits.counts()["attributes_dropped"]
    otlp_traces.decode_traces(payload, RECEIVED_NS)
    by_ref = limits.counts()["attributes_dropped"] - before
    assert otlp_traces_fast.fast_table(payload, RECEIVED_NS) is not None
    assert limits.counts()["attributes_dropped"] - before == 2 * by_ref
    assert_same(payload)
    assert_same(sdk_traces_request())


# ---- random requests -----------------------------------------------------------------------

PROMOTED = ("http.request.method", "http.method", "http.route", "server.address",
            "net.host.name", "net.peer.name", "upstream_cluster", "error", "rpc.service",
            "rpc.method", "peer.service", "db.system", "db.system.name", "db.name",
            "db.namespace", "messaging.system")  # fmt: skip
STATUS_KEYS = ("http.response.status_code", "http.status_code", "rpc.grpc.status_code",
               "grpc.status_code")  # fmt: skip
URL_KEYS = ("url.full", "http.url")

texts = st.text(max_size=12) | st.sampled_from(["", "true", "GET", 'a"b\\c\n', "\x00", "é\u2028"])
scalars = st.one_of(
    texts.map(lambda s: AnyValue(string_value=s)),
    st.booleans().map(lambda b: AnyValue(bool_value=b)),
    st.integers(-(2**63), 2**63 - 1).map(lambda i: AnyValue(int_value=i)),
    st.sampled_from([0, 1, -1, 2**31 - 1, 2**31, -(2**31), 2**63 - 1]).map(
        lambda i: AnyValue(int_value=i)
    ),
    (st.floats() | st.sampled_from(DOUBLES)).map(lambda d: AnyValue(double_value=d)),
    st.binary(max_size=7).map(lambda b: AnyValue(bytes_value=b)),
    st.just(AnyValue()),
)
keys = st.sampled_from(["a", "a!", "a.b", "b", "é", "", "k\x01"]) | st.text(max_size=6)


def _array(vs: list[AnyValue]) -> AnyValue:
    return AnyValue(array_value=ArrayValue(values=vs))


def _kvlist(kvs: list[tuple[str, AnyValue]]) -> AnyValue:
    return AnyValue(kvlist_value=KeyValueList(values=[KeyValue(key=k, value=v) for k, v in kvs]))


any_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4).map(_array)
        | st.lists(st.tuples(keys, inner), max_size=4).map(_kvlist)
    ),
    max_leaves=8,
)
non_strings = any_values.filter(lambda v: v.WhichOneof("value") != "string_value")
status_texts = st.text(alphabet=" \t\x0b\x1c0123456789+-x", max_size=12) | st.sampled_from(
    ["503", " 200 ", "0000000200", "2147483647", "2147483648", "99999999999", ""]
)
url_texts = st.text(alphabet="aB9:/?#@%.-+_", max_size=24) | st.sampled_from(
    ["http://reviews:9080/reviews/0", "https://U:P@Host.Example:8443/x?y", "//h", "x:", ""]
)


@st.composite
def attributes(draw: st.DrawFn) -> list[KeyValue]:
    out = []
    for _ in range(draw(st.integers(0, 8))):
        pick = draw(st.integers(0, 3))
        if pick == 0:
            key, value = draw(keys), draw(any_values)
        elif pick == 1:
            key, value = draw(st.sampled_from(PROMOTED)), draw(any_values)
        elif pick == 2:
            key = draw(st.sampled_from(STATUS_KEYS))
            value = draw(status_texts.map(lambda s: AnyValue(string_value=s)) | non_strings)
        else:
            key = draw(st.sampled_from(URL_KEYS))
            value = draw(url_texts.map(lambda s: AnyValue(string_value=s)) | non_strings)
        out.append(KeyValue(key=key, value=value))
    return out


@st.composite
def requests(draw: st.DrawFn) -> bytes:
    req = ExportTraceServiceRequest()
    for _ in range(draw(st.integers(0, 3))):
        rs = req.resource_spans.add()
        if draw(st.booleans()):
            rs.resource.attributes.extend(draw(attributes()))
            rs.resource.attributes.add(key="service.name", value=draw(any_values))
        for _ in range(draw(st.integers(0, 2))):
            ss = rs.scope_spans.add()
            ss.scope.name = draw(texts)
            for _ in range(draw(st.integers(0, 3))):
                sp = ss.spans.add()
                sp.trace_id = draw(st.binary(max_size=16))
                sp.span_id = draw(st.binary(max_size=8))
                sp.parent_span_id = draw(st.binary(max_size=8))
                sp.name = draw(texts)
                sp.kind = draw(st.integers(-2, 7))  # type: ignore[assignment]
                sp.start_time_unix_nano = draw(st.sampled_from([0, 1, T0, 2**64 - 1]))
                sp.end_time_unix_nano = draw(st.sampled_from([0, T0 - 1, T0 + 10**6, 2**64 - 1]))
                sp.status.code = draw(st.integers(-1, 3))  # type: ignore[assignment]
                sp.status.message = draw(texts)
                for _ in range(draw(st.integers(0, 2))):
                    sp.links.add(trace_id=draw(st.binary(max_size=16)), span_id=b"\x01")
                sp.attributes.extend(draw(attributes()))
    return req.SerializeToString()


LIMITS = (
    limits.DecodeLimits(),
    limits.DecodeLimits(span_attribute_count=2, attribute_value_length=2),
    limits.DecodeLimits(span_attribute_count=0, resource_attribute_count=0),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(requests(), st.sampled_from(LIMITS), st.sampled_from([0, RECEIVED_NS]))
def test_random_requests(payload: bytes, lim: limits.DecodeLimits, received_ns: int) -> None:
    limits.set_current(lim)
    assert_same(payload, received_ns)


# ---- mutants -------------------------------------------------------------------------------


def _mutant_seeds() -> list[bytes]:
    arr = _array([AnyValue(double_value=0.1), _kvlist([("k", AnyValue(bytes_value=b"x"))])])
    return [
        sdk_traces_request(),
        envoy_traces_request().SerializeToString(),
        _span_with([KeyValue(key="nested", value=arr), kv("http.url", "http://h/")]),
    ]


def test_truncations_equal_the_reference_or_both_fail() -> None:
    for payload in _mutant_seeds():
        for end in range(0, len(payload), max(1, len(payload) // 300)):
            assert_same(payload[:end], must_decode=False)


def test_bit_flips_equal_the_reference_or_both_fail() -> None:
    rnd = random.Random(7)
    for payload in _mutant_seeds():
        for _ in range(600):
            mutant = bytearray(payload)
            for _ in range(rnd.randint(1, 3)):
                i = rnd.randrange(len(mutant))
                mutant[i] ^= 1 << rnd.randrange(8)
            assert_same(bytes(mutant), must_decode=False)


# ---- declines ------------------------------------------------------------------------------


def _request(span: bytes) -> bytes:
    return _field(1, 2, _field(2, 2, _field(2, 2, span)))


def _attr(kv_bytes: bytes) -> bytes:
    return _request(_field(9, 2, kv_bytes))


def _nested(depth: int) -> bytes:
    value = _field(3, 0, _varint(1))
    for _ in range(depth):
        value = _field(5, 2, _field(1, 2, value))
    return _field(1, 2, b"k") + _field(2, 2, value)


DECLINED: dict[str, bytes] = {
    "invalid UTF-8 span name": _request(_field(5, 2, b"\xff")),
    "invalid UTF-8 attribute key": _attr(_field(1, 2, b"\xc3")),
    "a group wire type": _request(_field(20, 3, b"") + _field(20, 4, b"")),
    "a known field with another wire type": _request(_field(6, 2, b"x")),
    "a varint over 64 bits": _request(_field(6, 0, b"\xff" * 9 + b"\x7f")),
    "two AnyValue value fields": _attr(_field(2, 2, _field(3, 0, b"\x01") + _field(1, 2, b"x"))),
    "string_value_strindex": _attr(_field(2, 2, _field(8, 0, b"\x01"))),
    "key_strindex": _attr(_field(3, 0, b"\x01")),
    "a value sent twice": _attr(_field(2, 2, b"") + _field(2, 2, b"")),
    "nesting deeper than the extension goes": _attr(_nested(40)),
    "a status code with non-ASCII text": _request(
        _field(
            9, 2, _field(1, 2, b"http.status_code") + _field(2, 2, _field(1, 2, "５０３".encode()))
        )
    ),
    "a URL with a space": _request(
        _field(9, 2, _field(1, 2, b"http.url") + _field(2, 2, _field(1, 2, b" http://h/")))
    ),
    "a URL with a bracketed host": _request(
        _field(9, 2, _field(1, 2, b"url.full") + _field(2, 2, _field(1, 2, b"http://[::1]/")))
    ),
    "a scope after the spans": _field(
        1, 2, _field(2, 2, _field(2, 2, _field(5, 2, b"op")) + _field(1, 2, _field(1, 2, b"s")))
    ),
    "a truncated span": _request(_field(1, 2, b"0123456789abcdef"))[:-3],
    "a double cut short": _attr(
        _field(1, 2, b"d") + _field(2, 2, _field(4, 1, struct.pack("<d", 1.5))[:-1])
    ),
}


@pytest.mark.parametrize("name", list(DECLINED))
def test_unusual_input_is_declined_not_guessed(name: str) -> None:
    payload = DECLINED[name]
    assert otlp_traces_fast.fast_table(payload, RECEIVED_NS) is None
    assert_same(payload, must_decode=False)


def test_many_attributes_without_a_count_limit_are_declined() -> None:
    limits.set_current(limits.DecodeLimits(span_attribute_count=0))
    payload = _span_with([kv(f"k{i}", i) for i in range(600)])
    assert otlp_traces_fast.fast_table(payload, RECEIVED_NS) is None
    assert_same(payload, must_decode=False)
    limits.set_current(limits.DecodeLimits(span_attribute_count=128))
    assert_same(payload)  # the limit applies first: 128 entries are decoded in C


def test_nesting_within_the_limit_is_decoded() -> None:
    assert_same(_attr(_nested(10)))


# ---- wiring --------------------------------------------------------------------------------


def test_registry_uses_the_fast_decoder() -> None:
    assert registry.DECODERS[RecordKind.OTLP_TRACES].startswith(
        "meshlens.collector.decode.otlp_traces_fast:"
    )
    payload = sdk_traces_request()
    record = Record(RecordKind.OTLP_TRACES, RECEIVED_NS, payload)
    got = otlp_traces_fast.decode_traces_record(record)["spans"]
    assert got.equals(otlp_traces.decode_traces(payload, RECEIVED_NS))


def test_without_the_extension_python_decodes(monkeypatch: Any) -> None:
    monkeypatch.setattr(otlp_traces_fast, "_wire", None)
    payload = envoy_traces_request().SerializeToString()
    assert otlp_traces_fast.fast_table(payload) is None
    assert otlp_traces_fast.decode_traces(payload, 5).equals(otlp_traces.decode_traces(payload, 5))


# ---- many requests per call (registry.BATCH_DECODERS) --------------------------------------


def _windowed_reference(records: Sequence[Record]) -> pa.Table:
    tables = [
        window.apply({"spans": otlp_traces.decode_traces(r.payload, r.received_ns)}, r.received_ns)[
            "spans"
        ]
        for r in records
    ]
    return pa.concat_tables(tables)


def _batch_records() -> list[Record]:
    future = ExportTraceServiceRequest.FromString(sdk_traces_request())
    for sp in future.resource_spans[0].scope_spans[0].spans:
        sp.start_time_unix_nano += 10 * 3600 * 10**9  # clamped to the receipt time
    payloads = [
        sdk_traces_request(),
        b"",
        envoy_traces_request().SerializeToString(),
        future.SerializeToString(),
        _span_with([kv("http.status_code", "５０３")]),  # declined: Python decodes it
        *(SCENARIOS["envoy tracer tags"](seed, 3) for seed in range(5)),
    ]
    return [Record(RecordKind.OTLP_TRACES, RECEIVED_NS + i, p) for i, p in enumerate(payloads)]


def test_batches_equal_the_reference_record_by_record() -> None:
    records = _batch_records()
    ref = _windowed_reference(records)
    assert ref.num_rows > 20
    got = otlp_traces_fast.records_tables(records)["spans"]
    assert ref.equals(got), _diff(ref, got)
    without = [r for r in records if b"\xef\xbc" not in r.payload]  # no decline: one C call
    assert otlp_traces_fast._fast([r.payload for r in without], [0] * len(without)) is not None
    got = otlp_traces_fast.records_tables(without)["spans"]
    assert _windowed_reference(without).equals(got)


def test_a_bad_record_fails_the_batch_and_the_converter_isolates_it() -> None:
    records = _batch_records()
    bad = Record(RecordKind.OTLP_TRACES, RECEIVED_NS, b"\xff\xff\xff")
    with pytest.raises(DecodeError):
        otlp_traces_fast.records_tables([*records, bad])
    bodies = [r.encode() for r in (*records[:3], bad, *records[3:])]
    tables, failed, _ = decode_all(bodies, {})
    assert failed == [bad.encode()]
    assert _windowed_reference(records).equals(tables["spans"])


def test_groups_bound_the_bytes_of_one_call(monkeypatch: Any) -> None:
    records = _batch_records()
    monkeypatch.setattr(otlp_traces_fast, "GROUP_BYTES", 700)
    groups = list(otlp_traces_fast._groups(records))
    assert [r for g in groups for r in g] == records
    assert all(len(g) == 1 or sum(len(r.payload) for r in g) <= 700 for g in groups)
    assert 1 < len(groups) < len(records)
    got = otlp_traces_fast.records_tables(records)["spans"]
    assert _windowed_reference(records).equals(got)
