from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from google.protobuf import json_format
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from collector.decode.otlp_json import otlp_json_to_proto
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
            r"ExportTraceServiceRequest\.resourceSpans\[0\]\.scopeSpans\[0\]\.spans\[0\]\.traceId: 'zz' is not a hex",
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
