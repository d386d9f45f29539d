from __future__ import annotations

import json
import math
from datetime import UTC, datetime

import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span as PbSpan
from opentelemetry.proto.trace.v1.trace_pb2 import Status
from opentelemetry.trace import SpanKind, StatusCode

from meshlens.collector.decode.otlp_traces import decode_traces, decode_traces_record
from meshlens.collector.decode.registry import decode_record
from meshlens.collector.errors import DecodeError
from meshlens.collector.store.records import Record, RecordKind
from meshlens.collector.store.schema import SPANS
from tests.collector.decode.samples import envoy_traces_request, kv, sdk_spans

_KIND = {
    SpanKind.INTERNAL: "internal",
    SpanKind.SERVER: "server",
    SpanKind.CLIENT: "client",
    SpanKind.PRODUCER: "producer",
    SpanKind.CONSUMER: "consumer",
}


def _ts(ns: int) -> datetime:
    return datetime.fromtimestamp(ns // 1000 / 1e6, tz=UTC).replace(
        microsecond=(ns // 1000) % 10**6
    )


def _json(d: object) -> str:
    return json.dumps(d, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def test_sdk_spans_decode_to_exact_rows() -> None:
    spans = sdk_spans()
    table = decode_traces(encode_spans(spans).SerializeToString(), received_ns=1)
    assert table.schema == SPANS
    rows = {r["span_id"]: r for r in table.to_pylist()}
    assert len(rows) == len(spans) == 6
    resource = _json(dict(spans[0].resource.attributes))
    for span in spans:
        ctx = span.get_span_context()
        assert ctx is not None and span.attributes is not None
        assert span.start_time is not None and span.end_time is not None
        row = rows[f"{ctx.span_id:016x}"]
        attrs = {k: list(v) if isinstance(v, tuple) else v for k, v in span.attributes.items()}
        assert row["trace_id"] == f"{ctx.trace_id:032x}"
        assert row["parent_span_id"] == (f"{span.parent.span_id:016x}" if span.parent else "")
        assert row["name"] == span.name
        assert row["kind"] == _KIND[span.kind]
        assert row["start_ts"] == _ts(span.start_time)
        assert row["end_ts"] == _ts(span.end_time)
        assert row["duration_ms"] == pytest.approx((span.end_time - span.start_time) / 1e6)
        assert (row["service_name"], row["service_namespace"], row["service_version"]) == (
            "checkout",
            "shop",
            "1.2.3",
        )
        assert row["status_code"] == span.status.status_code.name.lower()
        assert row["status_message"] == (span.status.description or "")
        assert row["attributes"] == _json(attrs)
        assert row["resource_attributes"] == resource
        assert row["scope_name"] == "shop.http"
        links = [
            {"span_id": f"{lk.context.span_id:016x}", "trace_id": f"{lk.context.trace_id:032x}"}
            for lk in span.links
        ]
        assert json.loads(row["links"]) == links

    by_name = {r["name"]: r for r in rows.values()}
    server = by_name["GET /cart/{id}"]  # new semantic conventions
    assert (server["http_method"], server["http_status_code"], server["http_route"]) == (
        "GET",
        200,
        "/cart/{id}",
    )
    assert server["server_address"] == "checkout.shop.svc"
    client = by_name["HTTP GET"]  # old semantic conventions
    assert (client["http_method"], client["http_status_code"]) == ("GET", 503)
    assert (client["server_address"], client["peer_service"]) == ("reviews", "reviews")
    assert (client["status_code"], client["status_message"]) == ("error", "upstream failed")
    db = by_name["SELECT cart"]
    assert (db["db_system"], db["db_name"]) == ("postgresql", "carts")
    rpc = by_name["rpc"]
    assert (rpc["rpc_service"], rpc["rpc_method"], rpc["rpc_grpc_status_code"]) == (
        "cart.Cart",
        "Get",
        0,
    )
    assert rpc["status_code"] == "ok"
    assert by_name["publish"]["messaging_system"] == "kafka"
    assert by_name["work"]["attributes"] == "{}"
    assert by_name["work"]["http_method"] is None
    assert StatusCode.UNSET.name.lower() == by_name["work"]["status_code"]


def test_envoy_tracer_span_lands_in_columns() -> None:
    row = decode_traces(envoy_traces_request().SerializeToString()).to_pylist()[0]
    assert row["service_name"] == "productpage.default"  # from the tracer's service_name
    assert (row["service_namespace"], row["service_version"]) == ("unknown", "unknown")
    assert row["kind"] == "client"
    assert row["http_method"] == "GET"
    assert row["http_status_code"] == 503  # Envoy sends tags as strings
    assert row["status_code"] == "error"  # from the `error: "true"` tag
    assert row["server_address"] == "reviews.default.svc.cluster.local"  # from upstream_cluster
    assert row["duration_ms"] == 2.0
    assert row["start_ts"] == datetime(2025, 11, 24, 16, 0, 0, 123456, tzinfo=UTC)
    attrs = json.loads(row["attributes"])
    assert attrs["upstream_cluster"] == "outbound|9080|v1|reviews.default.svc.cluster.local"
    assert attrs["response_flags"] == "UH"
    assert attrs["guid:x-request-id"] == "4c2e8a63-1d1f-4f0a-9f0e-6c8d1b2a3c4d"


@pytest.mark.parametrize(
    ("kind", "attributes", "expected"),
    [
        (PbSpan.SPAN_KIND_SERVER, {"server.address": "a", "net.host.name": "b"}, "a"),
        (PbSpan.SPAN_KIND_SERVER, {"net.host.name": "b", "net.peer.name": "c"}, "b"),
        (PbSpan.SPAN_KIND_CLIENT, {"net.host.name": "b", "net.peer.name": "c"}, "c"),
        (PbSpan.SPAN_KIND_SERVER, {"http.url": "http://reviews:9080/reviews/0"}, "reviews"),
        (PbSpan.SPAN_KIND_CLIENT, {"url.full": "https://[::1]:8443/x"}, "::1"),
        (PbSpan.SPAN_KIND_CLIENT, {"url.full": "http://[bad/x"}, None),
        (PbSpan.SPAN_KIND_SERVER, {"upstream_cluster": "inbound|9080||"}, None),
    ],
)
def test_server_address_fallbacks(
    kind: int, attributes: dict[str, str], expected: str | None
) -> None:
    req = ExportTraceServiceRequest()
    sp = req.resource_spans.add().scope_spans.add().spans.add(kind=kind)
    sp.attributes.extend(kv(k, v) for k, v in attributes.items())
    assert decode_traces(req.SerializeToString()).column("server_address").to_pylist() == [expected]


def test_registry_and_record_entry_points_agree() -> None:
    payload = envoy_traces_request().SerializeToString()
    record = Record(RecordKind.OTLP_TRACES, 5, payload)
    assert decode_record(record)["spans"].equals(decode_traces_record(record)["spans"])


def test_weird_values_never_crash() -> None:
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()  # no resource at all
    sp = rs.scope_spans.add().spans.add()
    sp.kind = 99  # type: ignore[assignment]  # an enum value from the future
    sp.status.code = 7  # type: ignore[assignment]
    sp.start_time_unix_nano = 0  # missing: falls back to the receive time
    sp.end_time_unix_nano = 2**64 - 1
    nested = AnyValue()
    nested.kvlist_value.values.add(key="inner", value=AnyValue(bytes_value=b"\x00\xff"))
    sp.attributes.extend(
        [
            kv("nan", math.nan),
            kv("inf", -math.inf),
            kv("big", 2**63 - 1),
            kv("http.status_code", 2**40),  # does not fit INTEGER: NULL, kept in JSON
            kv("http.method", 7),
            KeyValue(key="nested", value=nested),
            KeyValue(key="empty"),
            kv("dup", 1),
            kv("dup", 2),
        ]
    )
    row = decode_traces(req.SerializeToString(), received_ns=1_764_000_000_000_000_000).to_pylist()[
        0
    ]
    assert row["service_name"] == "unknown"
    assert row["resource_attributes"] == "{}"
    assert (row["kind"], row["status_code"]) == ("internal", "unset")
    assert row["start_ts"] == datetime(2025, 11, 24, 16, 0, tzinfo=UTC)
    assert row["duration_ms"] > 0
    assert row["trace_id"] == "" and row["parent_span_id"] == ""
    assert row["http_status_code"] is None
    assert row["http_method"] == "7"
    assert json.loads(row["attributes"]) == {
        "nan": "NaN",
        "inf": "-Infinity",
        "big": 2**63 - 1,
        "http.status_code": 2**40,
        "http.method": 7,
        "nested": {"inner": "AP8="},
        "empty": None,
        "dup": 2,
    }


def test_end_before_start_gives_zero_duration() -> None:
    req = ExportTraceServiceRequest()
    sp = req.resource_spans.add().scope_spans.add().spans.add()
    sp.start_time_unix_nano = 2_000_000_000
    sp.end_time_unix_nano = 1_000_000_000
    assert decode_traces(req.SerializeToString()).column("duration_ms").to_pylist() == [0.0]


def test_empty_request_gives_empty_table() -> None:
    table = decode_traces(b"")
    assert table.num_rows == 0 and table.schema == SPANS


@pytest.mark.parametrize(
    ("payload", "match"),
    [
        (b"\xff\xff\xff", "cannot decode otlp traces: invalid ExportTraceServiceRequest"),
        (b"\x0a\x05\x12\x03\x12\x01", "cannot decode otlp traces"),
    ],
)
def test_malformed_payload_is_a_decode_error(payload: bytes, match: str) -> None:
    with pytest.raises(DecodeError, match=match):
        decode_traces(payload)


def test_bad_attribute_bytes_name_the_place() -> None:
    # A span whose attribute field (9) holds bytes that are not a KeyValue: the shallow parse
    # accepts it, the attribute parse must turn it into a DecodeError that says where.
    span = b"\x4a\x02\xff\xff"  # field 9, 2 bytes
    scope_spans = b"\x12" + bytes([len(span)]) + span
    resource_spans = b"\x12" + bytes([len(scope_spans)]) + scope_spans
    payload = b"\x0a" + bytes([len(resource_spans)]) + resource_spans
    with pytest.raises(DecodeError, match=r"resource_spans\[0\]\.scope_spans\[0\]") as err:
        decode_traces(payload)
    assert err.value.kind == "otlp traces"


def test_decode_records_concatenates_requests() -> None:
    from meshlens.collector.decode.registry import decode_records

    payloads = [
        envoy_traces_request().SerializeToString(),
        encode_spans(sdk_spans()).SerializeToString(),
    ]
    out = decode_records(Record(RecordKind.OTLP_TRACES, 1, p) for p in payloads)
    assert out["spans"].num_rows == 7 and out["spans"].schema == SPANS


def test_bad_status_bytes_name_the_place() -> None:
    span = b"\x7a\x02\xff\xff"  # field 15 (status), 2 bytes that are not a Status
    scope_spans = b"\x12" + bytes([len(span)]) + span
    resource_spans = b"\x12" + bytes([len(scope_spans)]) + scope_spans
    payload = b"\x0a" + bytes([len(resource_spans)]) + resource_spans
    with pytest.raises(DecodeError, match=r"invalid span in resource_spans\[0\]\.scope_spans\[0\]"):
        decode_traces(payload)


def test_status_message_and_codes() -> None:
    req = ExportTraceServiceRequest()
    spans = req.resource_spans.add().scope_spans.add().spans
    spans.add().status.code = Status.STATUS_CODE_ERROR
    spans.add().status.message = "only a message"
    spans.add().status.SetInParent()
    table = decode_traces(req.SerializeToString())
    assert table.column("status_code").to_pylist() == ["error", "unset", "unset"]
    assert table.column("status_message").to_pylist() == ["", "only a message", ""]
