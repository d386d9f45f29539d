"""Bounded fuzzing (hypothesis) of every decoder in the registry, the OTel access-log path, the
access-log line parser, the OTLP/HTTP JSON translation and both receivers end to end.

The property everywhere: rows or `DecodeError`, never another exception; a receiver answers a
4xx/gRPC error for garbage and keeps serving. tests/collector/decode/test_fuzz.py already fuzzes
the raw OTLP decoders; this covers the record-level functions the converter really calls (with
random record contexts), Envoy ALS, access-log lines and the servers. `MESHLENS_SOAK=1` raises
the example counts (tests/soak reruns these with more examples).
"""

from __future__ import annotations

import gzip
import json
import random
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pyarrow as pa
import pytest
from google.protobuf.json_format import MessageToDict
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from meshlens.collector.decode.access_log_text import parse_access_log_line
from meshlens.collector.decode.otlp_json import otlp_json_to_proto
from meshlens.collector.decode.registry import DECODERS, decoder_for
from meshlens.collector.errors import DecodeError
from meshlens.collector.receivers import otlp
from meshlens.collector.store.records import Record, RecordKind
from tests.collector.conftest import ServeProcess, http_get, http_post
from tests.collector.receivers.payloads import (
    als_message,
    istio_node,
    logs_request,
    metrics_request,
    traces_request,
)
from tests.reliability.harness import SOAK, kill9, launch, metric

EXAMPLES = 3000 if SOAK else 120
FUZZ = settings(
    max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck)
)

TEXT_LINE = (
    '[2026-11-25T21:30:07.471Z] "GET /reviews/0 HTTP/1.1" 503 UF,URX upstream_reset_before_'
    'response_started{connection_failure} - "-" 0 91 4 3 "10.0.0.1" "Python-urllib/3.11" '
    '"680259d7-d074-98b1-9055-0d00d7552302" "reviews:9080" "10.0.0.2:9080" '
    "outbound|9080|v1|reviews.default.svc.cluster.local 10.0.0.3:44056 10.96.0.1:9080 "
    "10.0.0.3:34220 outbound_.9080_.v1_.reviews.default.svc.cluster.local default"
)
JSON_LINE = json.dumps(
    {
        "start_time": "2026-11-25T21:30:07.471Z",
        "method": "GET",
        "path": "/ratings/0",
        "protocol": "HTTP/1.1",
        "response_code": 200,
        "response_flags": "-",
        "response_code_details": "via_upstream",
        "bytes_received": 0,
        "bytes_sent": 48,
        "duration": 3,
        "upstream_service_time": "2",
        "x_forwarded_for": None,
        "user_agent": "curl/8",
        "request_id": "abc",
        "authority": "ratings:9080",
        "upstream_host": "10.0.0.9:9080",
        "upstream_cluster": "inbound|9080||",
        "upstream_local_address": "127.0.0.6:1234",
        "downstream_local_address": "10.0.0.9:9080",
        "downstream_remote_address": "10.0.0.3:4567",
        "requested_server_name": "outbound_.9080_._.ratings.default.svc.cluster.local",
        "route_name": "default",
        "upstream_transport_failure_reason": None,
        "connection_termination_details": None,
    }
)


def _otel_als_logs() -> bytes:
    """OTLP logs as Istio's envoyOtelAls sends them: the text line as body, and an
    attribute-format record."""
    req = logs_request(2)
    sl = req.resource_logs[0].scope_logs[0]
    r = sl.log_records.add(time_unix_nano=1_764_000_000 * 10**9)
    r.body.string_value = TEXT_LINE
    a = sl.log_records.add(time_unix_nano=1_764_000_000 * 10**9)
    for k, v in json.loads(JSON_LINE).items():
        if v is not None:
            a.attributes.add(key=k, value=AnyValue(string_value=str(v)))
    return req.SerializeToString()


SAMPLES: dict[RecordKind, tuple[bytes, bytes]] = {  # (payload, context) as the WAL holds them
    RecordKind.OTLP_TRACES: (traces_request(5).SerializeToString(), b""),
    RecordKind.OTLP_METRICS: (metrics_request(4).SerializeToString(), b""),
    RecordKind.OTLP_LOGS: (_otel_als_logs(), b""),
    RecordKind.ENVOY_ALS: (
        als_message(3, first=False, code=503),
        istio_node().identifier.SerializeToString(),
    ),
    RecordKind.ACCESS_LOG_LINES: ((TEXT_LINE + "\n" + JSON_LINE + "\n").encode(), b"import"),
}
assert set(SAMPLES) == set(DECODERS), "a decoder was added: give it a sample here"


def rows_or_decode_error(kind: RecordKind, payload: bytes, context: bytes = b"") -> None:
    try:
        out = decoder_for(kind)(Record(kind, 1_764_000_000 * 10**9, payload, context))
    except DecodeError:
        return
    assert isinstance(out, dict)
    assert all(isinstance(t, pa.Table) for t in out.values())


def _mutate(data: bytes, edits: list[tuple[int, int]], cut: int) -> bytes:
    buf = bytearray(data)
    for pos, byte in edits:
        if buf:
            buf[pos % len(buf)] = byte
    return bytes(buf[: max(0, len(buf) - cut)])


_kinds = st.sampled_from(sorted(DECODERS, key=int))
_edits = st.lists(st.tuples(st.integers(min_value=0), st.integers(0, 255)), min_size=1, max_size=12)


@FUZZ
@given(kind=_kinds, payload=st.binary(max_size=600), context=st.binary(max_size=64))
def test_every_registered_decoder_on_random_bytes(
    kind: RecordKind, payload: bytes, context: bytes
) -> None:
    rows_or_decode_error(kind, payload, context)


@FUZZ
@given(
    kind=_kinds, edits=_edits, cut=st.integers(0, 80), ctx_edits=_edits, mutate_ctx=st.booleans()
)
def test_every_registered_decoder_on_mutated_valid_records(
    kind: RecordKind,
    edits: list[tuple[int, int]],
    cut: int,
    ctx_edits: list[tuple[int, int]],
    mutate_ctx: bool,
) -> None:
    payload, context = SAMPLES[kind]
    if mutate_ctx:
        context = _mutate(context, ctx_edits, 0)
    rows_or_decode_error(kind, _mutate(payload, edits, cut), context)


_tokens = st.sampled_from(
    [
        "-",
        '"-"',
        "0",
        "-1",
        "99999999999999999999",
        "1e309",
        "nan",
        "[",
        "]",
        '"',
        "{",
        "}",
        "|",
        "||",
        "outbound|",
        "inbound|||",
        "outbound|9080|v1|",
        "::1",
        "[::1]:80",
        "a:b:c",
        "2026-13-45T99:99:99Z",
        "\x00",
        "é",
        " ",
        "UF,URX,",
        "HTTP/9",
        "\\",
        "%",
        "\t",
    ]
)


@FUZZ
@given(
    positions=st.lists(st.tuples(st.integers(0, 40), _tokens), min_size=1, max_size=6),
    truncate=st.integers(0, 300),
)
def test_access_log_text_lines_with_hostile_fields(
    positions: list[tuple[int, str]], truncate: int
) -> None:
    parts = TEXT_LINE.split(" ")
    for pos, tok in positions:
        parts[pos % len(parts)] = tok
    line = " ".join(parts)
    line = line[: len(line) - truncate] if truncate < len(line) else line
    row = parse_access_log_line(line)
    assert row is None or isinstance(row, dict)
    rows_or_decode_error(RecordKind.ACCESS_LOG_LINES, line.encode())
    # the same line as the body of an Envoy OTel access log
    req = logs_request(0)
    req.resource_logs[0].scope_logs[0].log_records.add(time_unix_nano=1).body.string_value = line
    rows_or_decode_error(RecordKind.OTLP_LOGS, req.SerializeToString())


_scalar = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats()
    | st.text(max_size=30)
    | _tokens
)


@FUZZ
@given(
    values=st.dictionaries(st.sampled_from(sorted(json.loads(JSON_LINE))), _scalar, max_size=8),
    prefix=st.sampled_from(["", "2026-11-25T21:30:07.471Z stdout F ", "istio-proxy "]),
)
def test_access_log_json_lines_with_hostile_values(values: dict[str, object], prefix: str) -> None:
    doc = {**json.loads(JSON_LINE), **values}
    line = prefix + json.dumps(doc)
    assert parse_access_log_line(line) is None or True  # must not raise
    rows_or_decode_error(RecordKind.ACCESS_LOG_LINES, line.encode())
    req = logs_request(0)
    rec = req.resource_logs[0].scope_logs[0].log_records.add(time_unix_nano=1)
    for k, v in doc.items():
        if isinstance(v, bool) or v is None:
            continue
        if isinstance(v, int) and abs(v) < 2**63:
            rec.attributes.add(key=k, value=AnyValue(int_value=v))
        elif isinstance(v, float):
            rec.attributes.add(key=k, value=AnyValue(double_value=v))
        else:
            rec.attributes.add(key=k, value=AnyValue(string_value=str(v)))
    rows_or_decode_error(RecordKind.OTLP_LOGS, req.SerializeToString())


_JSON_DOCS = {
    "traces": MessageToDict(traces_request(2)),
    "metrics": MessageToDict(metrics_request(2)),
    "logs": MessageToDict(ExportLogsServiceRequest.FromString(_otel_als_logs())),
}
_KIND = {
    "traces": RecordKind.OTLP_TRACES,
    "metrics": RecordKind.OTLP_METRICS,
    "logs": RecordKind.OTLP_LOGS,
}


def _paths(node: object, prefix: tuple[object, ...] = ()) -> Iterator[tuple[object, ...]]:
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, (*prefix, i))


def _replace(doc: object, path: tuple[object, ...], value: object) -> object:
    if not path:
        return value
    head, rest = path[0], path[1:]
    if isinstance(doc, dict):
        return {**doc, head: _replace(doc[head], rest, value)}
    assert isinstance(doc, list) and isinstance(head, int)
    out = list(doc)
    out[head] = _replace(doc[head], rest, value)
    return out


_json_values = st.recursive(
    _scalar,
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=12), c, max_size=3),
    max_leaves=8,
)


@FUZZ
@given(kind=st.sampled_from(sorted(_JSON_DOCS)), data=st.data())
def test_otlp_json_with_one_value_replaced_anywhere(kind: str, data: st.DataObject) -> None:
    doc: object = _JSON_DOCS[kind]
    for _ in range(data.draw(st.integers(1, 3))):
        paths = list(_paths(doc))
        path = data.draw(st.sampled_from(paths))
        doc = _replace(doc, path, data.draw(_json_values))
    try:
        payload = otlp_json_to_proto(kind, json.dumps(doc).encode())
    except DecodeError:
        return
    rows_or_decode_error(_KIND[kind], payload)


# ---- the receivers, end to end -------------------------------------------------------------


@pytest.fixture(scope="module")
def fuzz_serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    sp = launch(tmp_path_factory.mktemp("fuzz") / "data", "--max-message-size", "256KiB")
    yield sp
    if sp.proc.poll() is None:
        kill9(sp)


_CT = st.sampled_from(
    [
        "application/x-protobuf",
        "application/json",
        "text/plain",
        "",
        "application/json; charset=utf-8",
        "application/x-protobuf; x=1",
    ]
)
_BODY = (
    st.binary(max_size=800)
    | st.sampled_from([b"{}", b"[]", b"null", b'{"resourceSpans": 7}', b"\x1f\x8b"])
    | _json_values.map(lambda v: json.dumps(v).encode())
)


@FUZZ
@given(
    path=st.sampled_from(["/v1/traces", "/v1/metrics", "/v1/logs"]),
    ctype=_CT,
    body=_BODY,
    gz=st.booleans(),
    bad_gzip=st.booleans(),
)
def test_otlp_http_random_bodies_get_4xx_or_200_and_the_server_keeps_serving(
    fuzz_serve: ServeProcess,
    path: str,
    ctype: str,
    body: bytes,
    gz: bool,
    bad_gzip: bool,
) -> None:
    headers = {"Content-Type": ctype}
    if gz:
        headers["Content-Encoding"] = "gzip"
        body = body if bad_gzip else gzip.compress(body)
    status, resp, _ = http_post(fuzz_serve.otlp_url(path), body, headers)
    assert status in (200, 400, 413, 415), (status, resp)
    assert fuzz_serve.proc.poll() is None


@FUZZ
@given(
    signal=st.sampled_from([otlp.TRACES, otlp.METRICS, otlp.LOGS]),
    body=st.binary(max_size=800),
    als=st.lists(st.binary(max_size=200), min_size=1, max_size=3),
)
def test_grpc_random_bodies_get_a_status_and_the_server_keeps_serving(
    fuzz_serve: ServeProcess,
    signal: otlp.Signal,
    body: bytes,
    als: list[bytes],
) -> None:
    from tests.collector.receivers.grpc_client import export, stream_als

    ok = (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED)
    with grpc.insecure_channel(fuzz_serve.grpc_target) as ch:
        for call in (lambda: export(ch, signal, body), lambda: stream_als(ch, als)):
            try:
                call()
            except grpc.RpcError as exc:
                assert exc.code() in ok, (exc.code(), exc.details())


def test_after_fuzzing_the_collector_still_converts_and_serves(
    fuzz_serve: ServeProcess,
) -> None:
    """Runs last in this module: whatever the fuzzers stored converts (decode errors are
    counted, conversion never fails), valid data still goes in, nothing crashed."""
    spans = traces_request(9, seed=int(time.time())).SerializeToString()
    assert (
        http_post(
            fuzz_serve.otlp_url("/v1/traces"), spans, {"Content-Type": "application/x-protobuf"}
        )[0]
        == 200
    )
    assert http_get(fuzz_serve.api_url("/readyz"))[0] == 200
    from tests.collector.conftest import wait_for

    wait_for(
        lambda: metric(fuzz_serve, "meshlens_store_wal_bytes_pending") == 0, 30, "the WAL converted"
    )
    assert metric(fuzz_serve, "meshlens_store_conversion_failures") == 0, fuzz_serve.log()
    assert fuzz_serve.stop() == 0
    log = fuzz_serve.log()
    assert "Traceback" not in log, log[-4000:]


def _unused() -> None:  # keep imports used by type checkers honest
    _ = (Path, random, ExportTraceServiceRequest, ExportMetricsServiceRequest)
