from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from opentelemetry._logs import LogRecord
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from meshlens.collector.decode.otlp_logs import decode_logs, decode_logs_record
from meshlens.collector.decode.registry import decode_record
from meshlens.collector.errors import DecodeError
from meshlens.collector.store.records import Record, RecordKind
from meshlens.collector.store.schema import LOGS, REQUESTS
from tests.collector.decode.samples import kv, sdk_logs_request

ISTIO_LINE = (
    '[2026-11-25T10:00:00.123Z] "GET /reviews/0 HTTP/1.1" 200 - via_upstream - "-" 0 295 5 4 '
    '"-" "curl/8.0" "4c2e8a63-1d1f-4f0a-9f0e-6c8d1b2a3c4d" "reviews:9080" "10.0.0.7:9080" '
    "outbound|9080|v1|reviews.default.svc.cluster.local 10.0.0.5:40000 10.96.0.10:9080 "
    "10.0.0.5:39998 - default"
)


def test_sdk_logs_decode_to_exact_rows() -> None:
    out = decode_logs(sdk_logs_request(), received_ns=1)
    assert out["requests"].num_rows == 0 and out["requests"].schema == REQUESTS
    table = out["logs"]
    assert table.schema == LOGS
    first, second = table.to_pylist()
    resource = json.loads(first.pop("resource_attributes"))
    assert resource["service.name"] == "checkout"
    assert first == {
        "ts": datetime(2025, 11, 24, 16, 0, 0, 1, tzinfo=UTC),
        "severity_text": "WARN",
        "severity_number": 13,
        "body": "cart is empty",
        "service_name": "checkout",
        "trace_id": "0af7651916cd43dd8448eb211c80319c",
        "span_id": "b7ad6b7169203331",
        "attributes": '{"user.id":7}',
    }
    # no timestamp: the observed time; a structured body: JSON text
    assert second["ts"] == datetime(2025, 11, 24, 16, 0, 0, 2, tzinfo=UTC)
    assert second["body"] == '{"k":[1,2]}'
    assert (second["trace_id"], second["span_id"], second["severity_number"]) == ("", "", 0)


def test_istio_text_access_log_goes_to_requests() -> None:
    access_log = LogRecord(timestamp=1_764_064_800_123_000_000, body=ISTIO_LINE)
    record = Record(RecordKind.OTLP_LOGS, 1, sdk_logs_request([access_log]))
    out = decode_logs_record(record)
    assert out["logs"].num_rows == 2  # the two application logs stay logs
    requests = out["requests"]
    assert requests.schema == REQUESTS
    (row,) = requests.to_pylist()
    assert row["origin"] == "otel_als"
    assert (row["reporter"], row["method"], row["path"], row["response_code"]) == (
        "source",
        "GET",
        "/reviews/0",
        200,
    )
    assert row["destination_service"] == "reviews.default.svc.cluster.local"
    assert row["destination_version"] == "v1"
    assert row["request_id"] == "4c2e8a63-1d1f-4f0a-9f0e-6c8d1b2a3c4d"


def test_attribute_format_access_log_goes_to_requests() -> None:
    req = ExportLogsServiceRequest()
    rl = req.resource_logs.add()
    rl.resource.attributes.extend(
        [kv("k8s.namespace.name", "default"), kv("k8s.pod.name", "reviews-v1-abc12-xyz34")]
    )
    lr = rl.scope_logs.add().log_records.add(time_unix_nano=1_764_064_800_000_000_000)
    lr.attributes.extend(
        [
            kv("upstream_cluster", "inbound|9080||"),
            kv("response_code", 503),
            kv("method", "GET"),
            kv("path", "/reviews/1"),
            kv("response_flags", "UF"),
            kv("duration", 12),
        ]
    )
    out = decode_logs(req.SerializeToString())
    assert out["logs"].num_rows == 0
    (row,) = out["requests"].to_pylist()
    assert (row["reporter"], row["response_code"], row["response_flags"]) == (
        "destination",
        503,
        "UF",
    )
    assert row["destination_namespace"] == "default"


def test_stand_in_converter_decides() -> None:
    seen: list[tuple[str, dict[str, object], dict[str, object], int]] = []

    def converter(
        body: str, attributes: dict[str, object], resource: dict[str, object], ts_ns: int
    ) -> dict[str, Any] | None:
        seen.append((body, attributes, resource, ts_ns))
        if body != "cart is empty":
            return None
        return {"ts": ts_ns // 1000, "method": "GET", "origin": "otel_als"}

    out = decode_logs(sdk_logs_request(), converter=converter)
    assert [s[0] for s in seen] == ["cart is empty", '{"k":[1,2]}']
    assert seen[0][1] == {"user.id": 7}
    assert seen[0][2]["service.name"] == "checkout"
    assert seen[0][3] == 1_764_000_000_000_001_000
    assert out["logs"].column("body").to_pylist() == ['{"k":[1,2]}']
    (row,) = out["requests"].to_pylist()
    assert row["method"] == "GET" and row["reporter"] == "unknown"


def test_a_failing_converter_keeps_the_record_as_a_log() -> None:
    def converter(*_args: object) -> dict[str, Any] | None:
        raise KeyError("bug")

    out = decode_logs(sdk_logs_request(), converter=converter)
    assert out["logs"].num_rows == 2 and out["requests"].num_rows == 0


def test_no_timestamps_use_the_receive_time() -> None:
    req = ExportLogsServiceRequest()
    req.resource_logs.add().scope_logs.add().log_records.add().body.string_value = "x"
    record = Record(RecordKind.OTLP_LOGS, 1_764_000_000_000_000_000, req.SerializeToString())
    (row,) = decode_record(record)["logs"].to_pylist()
    assert row["ts"] == datetime(2025, 11, 24, 16, 0, tzinfo=UTC)
    assert (row["service_name"], row["resource_attributes"], row["body"]) == ("unknown", "{}", "x")


def test_malformed_logs_payload() -> None:
    with pytest.raises(
        DecodeError, match="cannot decode otlp logs: invalid ExportLogsServiceRequest"
    ):
        decode_logs(b"\x0a\x10\x01")
    # a body field that is not an AnyValue
    lr = b"\x2a\x02\xff\xff"
    scope = b"\x12" + bytes([len(lr)]) + lr
    rl = b"\x12" + bytes([len(scope)]) + scope
    with pytest.raises(DecodeError, match=r"resource_logs\[0\]\.scope_logs\[0\]\.log_records\[0\]"):
        decode_logs(b"\x0a" + bytes([len(rl)]) + rl)
