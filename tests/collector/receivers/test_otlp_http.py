"""OTLP/HTTP: the real SDK HTTP exporters, hand-made JSON and protobuf bodies, gzip, and the
status codes the OTLP spec asks for."""

from __future__ import annotations

import gzip
import json
from typing import Any

import pytest
from google.rpc import status_pb2
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from tests.collector.conftest import ServeProcess, http_post
from tests.collector.receivers.payloads import traces_request
from tests.collector.receivers.rows import count_rows, query, wait_rows
from tests.collector.receivers.sdk import send_logs, send_metrics, send_spans

PB = {"Content-Type": "application/x-protobuf"}
JS = {"Content-Type": "application/json"}


def _json_traces(ids: list[tuple[str, str]]) -> bytes:
    spans = [
        {
            "traceId": t,
            "spanId": s,
            "name": "GET /cart",
            "kind": "SPAN_KIND_SERVER",
            "startTimeUnixNano": "1767225600000000000",
            "endTimeUnixNano": "1767225600005000000",
            "attributes": [{"key": "http.request.method", "value": {"stringValue": "GET"}}],
        }
        for t, s in ids
    ]
    return json.dumps(
        {
            "resourceSpans": [
                {
                    "resource": {
                        "attributes": [{"key": "service.name", "value": {"stringValue": "cart"}}]
                    },
                    "scopeSpans": [{"scope": {"name": "json"}, "spans": spans}],
                }
            ]
        }
    ).encode()


def test_sdk_http_exporters_protobuf_and_gzip(running_serve: ServeProcess) -> None:
    url = running_serve.otlp_url
    send_spans(OTLPSpanExporter(endpoint=url("/v1/traces"), compression=Compression.Gzip), 300)
    send_logs(OTLPLogExporter(endpoint=url("/v1/logs")), 12)
    expected = send_metrics(
        OTLPMetricExporter(endpoint=url("/v1/metrics"), compression=Compression.Gzip)
    )
    assert wait_rows(running_serve.data_dir, "spans", 300) == 300
    assert wait_rows(running_serve.data_dir, "logs", 12) == 12
    wait_rows(running_serve.data_dir, "metrics", len(expected))
    assert dict(query(running_serve.data_dir, "metrics", "name, kind")) == expected


def test_json_body_with_hex_ids_and_partial_success(collector_factory: Any) -> None:
    c = collector_factory()
    url = f"http://127.0.0.1:{c.ports.http}/v1/traces"
    good = [(f"{i:032x}", f"{i + 1:016x}") for i in range(1, 4)]
    status, body, headers = http_post(url, _json_traces(good), JS)
    assert status == 200 and headers["Content-Type"] == "application/json"
    assert json.loads(body) == {}
    # One span with a 2-byte trace id: rejected, reported, the others stored.
    status, body, _ = http_post(url, _json_traces([*good, ("0102", "00000000000000aa")]), JS)
    assert status == 200
    ps = json.loads(body)["partialSuccess"]
    assert ps["rejectedSpans"] == "1" and "trace_id" in ps["errorMessage"]
    assert c.store.wait_converted(10)
    assert count_rows(c.data_dir, "spans") == 6
    rows = query(c.data_dir, "spans", "trace_id", "span_id = '0000000000000002'")
    assert rows == [("00000000000000000000000000000001",)] * 2


def test_gzip_protobuf_body_and_protobuf_response(collector_factory: Any) -> None:
    c = collector_factory()
    raw = traces_request(40, bad=1).SerializeToString()
    status, body, headers = http_post(
        f"http://127.0.0.1:{c.ports.http}/v1/traces",
        gzip.compress(raw),
        {**PB, "Content-Encoding": "gzip"},
    )
    assert status == 200 and headers["Content-Type"] == "application/x-protobuf"
    assert ExportTraceServiceResponse.FromString(body).partial_success.rejected_spans == 1
    assert c.store.wait_converted(10)
    assert count_rows(c.data_dir, "spans") == 40


@pytest.mark.parametrize(
    ("headers", "body", "status"),
    [
        (PB, b"\xff\xff\xff\xff", 400),
        (JS, b"{not json", 400),
        (JS, b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "zz"}]}]}]}', 400),
        ({"Content-Type": "text/plain"}, b"hello", 415),
        ({**PB, "Content-Encoding": "br"}, b"x", 415),
        ({**PB, "Content-Encoding": "gzip"}, b"not gzip at all", 400),
    ],
    ids=["bad-protobuf", "bad-json", "bad-hex-id", "text-plain", "brotli", "bad-gzip"],
)
def test_bad_requests_get_spec_status_and_nothing_is_stored(
    collector_factory: Any, headers: dict[str, str], body: bytes, status: int
) -> None:
    c = collector_factory()
    url = f"http://127.0.0.1:{c.ports.http}/v1/traces"
    got, resp, _resp_headers = http_post(url, body, headers)
    assert got == status, resp
    if got == 400 and headers is PB:
        st = status_pb2.Status.FromString(resp)
        assert st.code == 3 and "malformed protobuf" in st.message
    elif got == 400 and headers is JS:
        assert json.loads(resp)["code"] == 3
    # the server keeps serving, and the next good request is stored
    assert http_post(url, traces_request(5).SerializeToString(), PB)[0] == 200
    assert c.store.wait_converted(10)
    assert count_rows(c.data_dir, "spans") == 5


def test_body_over_the_limit_is_413_even_when_gzip_hides_it(collector_factory: Any) -> None:
    c = collector_factory("--max-message-size", "64KiB")
    url = f"http://127.0.0.1:{c.ports.http}/v1/traces"
    big = traces_request(1000).SerializeToString()
    assert len(big) > 64 * 1024 > len(gzip.compress(big))
    status, body, _ = http_post(url, big, PB)
    assert status == 413 and b"65536" in body
    status, body, _ = http_post(url, gzip.compress(big), {**PB, "Content-Encoding": "gzip"})
    assert status == 413 and b"65536" in body
    assert http_post(url, traces_request(3).SerializeToString(), PB)[0] == 200
