from __future__ import annotations

import base64
import copy
import json
import math
from typing import Any

import pytest
from google.protobuf import json_format
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from collector.decode.otlp_json import (
    REQUEST_TYPES,
    _Fallback,
    _fast,
    _general,
    otlp_json_to_proto,
)
from collector.decode.otlp_logs import decode_logs
from collector.decode.otlp_metrics import decode_metrics
from collector.decode.otlp_traces import decode_traces
from collector.errors import DecodeError
from tests.collector.decode.samples import (
    envoy_traces_request,
    sdk_logs_request,
    sdk_metrics_request,
    sdk_traces_request,
)

_IDS = {"traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id"}


def _hex_ids(node: Any) -> Any:
    """protobuf's JSON (base64 ids) -> OTLP JSON (hex ids)."""
    if isinstance(node, dict):
        return {k: base64.b64decode(v).hex() if k in _IDS else _hex_ids(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_hex_ids(v) for v in node]
    return node


def _otlp_json(message: Any, **kwargs: Any) -> bytes:
    return json.dumps(_hex_ids(json_format.MessageToDict(message, **kwargs))).encode()


@pytest.mark.parametrize("preserving_proto_field_name", [False, True])
def test_traces_json_equals_protobuf(preserving_proto_field_name: bool) -> None:
    payload = sdk_traces_request()
    message = ExportTraceServiceRequest.FromString(payload)
    body = _otlp_json(message, preserving_proto_field_name=preserving_proto_field_name)
    assert (b'"trace_id"' in body) is preserving_proto_field_name
    converted = otlp_json_to_proto("traces", body)
    assert ExportTraceServiceRequest.FromString(converted) == message
    assert decode_traces(converted, 1).equals(decode_traces(payload, 1))


def test_metrics_and_logs_json_equal_protobuf() -> None:
    metrics = sdk_metrics_request()
    body = _otlp_json(ExportMetricsServiceRequest.FromString(metrics), use_integers_for_enums=True)
    assert decode_metrics(otlp_json_to_proto("metrics", body)).equals(decode_metrics(metrics))
    logs = sdk_logs_request()
    body = _otlp_json(ExportLogsServiceRequest.FromString(logs))
    assert decode_logs(otlp_json_to_proto("logs", body))["logs"].equals(decode_logs(logs)["logs"])


def test_spec_style_json() -> None:
    # As in the OTLP spec's examples: hex ids, int64 as strings, enums as integers, and an
    # unknown field (receivers must ignore it).
    body = {
        "resourceSpans": [
            {
                "resource": {
                    "attributes": [{"key": "service.name", "value": {"stringValue": "my.service"}}]
                },
                "scopeSpans": [
                    {
                        "scope": {"name": "my.library", "version": "1.0.0"},
                        "spans": [
                            {
                                "traceId": "5B8EFFF798038103D269B633813FC60C",
                                "spanId": "EEE19B7EC3C1B174",
                                "parentSpanId": "",
                                "name": "I'm a server span",
                                "startTimeUnixNano": "1544712660000000000",
                                "endTimeUnixNano": 1544712661000000000,
                                "kind": 2,
                                "status": {"code": "STATUS_CODE_ERROR"},
                                "attributes": [
                                    {"key": "http.status_code", "value": {"intValue": "500"}}
                                ],
                                "futureField": {"x": 1},
                            }
                        ],
                    }
                ],
            }
        ]
    }
    row = decode_traces(otlp_json_to_proto("traces", json.dumps(body).encode())).to_pylist()[0]
    assert row["trace_id"] == "5b8efff798038103d269b633813fc60c"
    assert (row["span_id"], row["parent_span_id"]) == ("eee19b7ec3c1b174", "")
    assert (row["kind"], row["status_code"], row["http_status_code"]) == ("server", "error", 500)
    assert row["duration_ms"] == 1000.0
    assert row["service_name"] == "my.service" and row["scope_name"] == "my.library"


def test_envoy_span_round_trips() -> None:
    message = envoy_traces_request()
    converted = otlp_json_to_proto("traces", _otlp_json(message))
    assert ExportTraceServiceRequest.FromString(converted) == message


@pytest.mark.parametrize(
    ("kind", "body", "match"),
    [
        ("traces", b"{nope", r"invalid JSON at line 1 column 2"),
        ("traces", b"\xff\xfe", r"not UTF-8|invalid JSON"),
        ("traces", b"[1, 2]", r"body must be a JSON object, got list"),
        (
            "traces",
            b'{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"zz"}]}]}]}',
            r"ExportTraceServiceRequest\.resourceSpans\[0\]\.scopeSpans\[0\]"
            r"\.spans\[0\]\.traceId: 'zz' is not a hex",
        ),
        (
            "logs",
            b'{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"spanId":12}]}]}]}',
            r"logRecords\[0\]\.spanId: expected a hex string, got int",
        ),
        ("traces", b'{"resourceSpans":[{"scopeSpans":[{"spans":[{"kind":[2]}]}]}]}', r"kind"),
        (
            "metrics",
            b'{"resourceMetrics":[{"scopeMetrics":[{"metrics":[{"sum":{"dataPoints":[{"asInt":"x1"}]}}]}]}]}',
            r"asInt",
        ),
        ("logs", b'{"resourceLogs":{"a":1}}', r"resourceLogs"),
    ],
)
def test_bad_json_names_the_field(kind: str, body: bytes, match: str) -> None:
    with pytest.raises(DecodeError, match=match) as err:
        otlp_json_to_proto(kind, body)
    assert err.value.kind == f"otlp/json {kind}"


def test_empty_object_is_an_empty_request() -> None:
    assert otlp_json_to_proto("logs", b"{}") == b""


def test_unknown_signal_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="unknown OTLP signal 'profiles'"):
        otlp_json_to_proto("profiles", b"{}")


# --- the fast path must convert exactly as json_format does, or step aside ------------------

# fmt: off
_LEAVES: st.SearchStrategy[Any] = st.sampled_from(
    [
        None, True, False, 0, 1, -1, 7, 2**31, 2**63, 2**64, -(2**63) - 1, 1.5, 2.0, -0.0,
        1e308, math.inf, math.nan, "", "x", "1", "-5", "+5", "1_0", "٣", " 2", "1e3", "NaN",
        "Infinity", "SPAN_KIND_SERVER", "STATUS_CODE_ERROR", "SEVERITY_NUMBER_WARN",
        "AGGREGATION_TEMPORALITY_DELTA", "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331",
        "B7AD6B7169203331", "b7 ad6b7169203331", "zz", "abc", "AQI=", "\ud800", [], {},
    ]
)
_KEYS = [
    "resourceSpans", "resource_spans", "resource", "attributes", "scopeSpans", "scope_spans",
    "scope", "name", "version", "spans", "traceId", "trace_id", "spanId", "parentSpanId",
    "parent_span_id", "kind", "startTimeUnixNano", "end_time_unix_nano", "status", "code",
    "message", "links", "events", "timeUnixNano", "flags", "droppedAttributesCount", "key",
    "value", "stringValue", "intValue", "boolValue", "doubleValue", "bytesValue", "arrayValue",
    "kvlistValue", "values", "string_value", "resourceLogs", "scopeLogs", "logRecords", "body",
    "severityNumber", "severityText", "observedTimeUnixNano", "resourceMetrics", "scopeMetrics",
    "metrics", "gauge", "sum", "histogram", "summary", "exponentialHistogram", "dataPoints",
    "asInt", "asDouble", "isMonotonic", "aggregationTemporality", "count", "bucketCounts",
    "explicitBounds", "quantileValues", "quantile", "scale", "positive", "offset", "unknownKey",
    "\ud800",
]
# fmt: on
_DOCS = st.recursive(
    _LEAVES,
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.sampled_from(_KEYS), children, max_size=4)
    ),
    max_leaves=30,
)


def _structured(signal: str) -> st.SearchStrategy[dict[str, object]]:
    top = {"traces": "resourceSpans", "metrics": "resourceMetrics", "logs": "resourceLogs"}
    return st.fixed_dictionaries({top[signal]: st.lists(_DOCS, max_size=3)})


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), signal=st.sampled_from(["traces", "metrics", "logs"]))
def test_fast_path_equals_json_format(data: st.DataObject, signal: str) -> None:
    doc = data.draw(st.one_of(_structured(signal), _DOCS.filter(lambda d: isinstance(d, dict))))
    request_type = REQUEST_TYPES[signal]
    try:
        fast: bytes | None = _fast(request_type, doc)
    except _Fallback:
        fast = None
    try:
        general: bytes | None = _general(request_type, copy.deepcopy(doc), signal)
    except DecodeError:
        general = None
    if fast is not None:
        assert general is not None, f"fast path accepted what json_format rejects: {doc!r}"
        assert request_type.FromString(fast) == request_type.FromString(general)


def test_fast_path_takes_plain_sdk_bodies() -> None:
    for signal, payload in (
        ("traces", sdk_traces_request()),
        ("metrics", sdk_metrics_request()),
        ("logs", sdk_logs_request()),
    ):
        request_type = REQUEST_TYPES[signal]
        doc = json.loads(_otlp_json(request_type.FromString(payload)))
        assert request_type.FromString(_fast(request_type, doc)) == request_type.FromString(payload)


def _paths(node: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [path]
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*path, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, (*path, i))
    return out


_SDK_DOCS = {
    signal: json.loads(_otlp_json(REQUEST_TYPES[signal].FromString(payload)))
    for signal, payload in (
        ("traces", sdk_traces_request() + envoy_traces_request().SerializeToString()),
        ("metrics", sdk_metrics_request()),
        ("logs", sdk_logs_request()),
    )
}


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    signal=st.sampled_from(sorted(_SDK_DOCS)),
    edits=st.lists(st.tuples(st.integers(min_value=0), _LEAVES), min_size=1, max_size=3),
)
def test_fast_path_equals_json_format_on_mutated_sdk_bodies(
    signal: str, edits: list[tuple[int, object]]
) -> None:
    doc = copy.deepcopy(_SDK_DOCS[signal])
    for pick, leaf in edits:
        paths = [p for p in _paths(doc) if p]
        *parent_path, last = paths[pick % len(paths)]
        parent = doc
        for step in parent_path:
            parent = parent[step]
        parent[last] = copy.deepcopy(leaf)
    request_type = REQUEST_TYPES[signal]
    try:
        fast: bytes | None = _fast(request_type, doc)
    except _Fallback:
        fast = None
    try:
        general: bytes | None = _general(request_type, copy.deepcopy(doc), signal)
    except DecodeError:
        general = None
    if fast is not None:
        assert general is not None, f"fast path accepted what json_format rejects: {doc!r}"
        assert request_type.FromString(fast) == request_type.FromString(general)
