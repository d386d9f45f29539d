"""Conformance: OTLP/JSON as the OpenTelemetry project writes it, through meshlens' OTLP/HTTP
receiver (`handle_export`, no network) and decoders.

`upstream/` holds data (see SOURCES.md): opentelemetry-proto's example requests, unchanged, and
the inputs and expected outcomes of the OpenTelemetry Collector's own JSON unmarshaler tests,
extracted once into collector_json_cases.json. Expected values are read from those files (the
example JSON itself, the Go tests' inputs and outcomes). The OTLP specification and the
Collector's source are cited (repository, path, commit, lines), not copied.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import json_format
from google.protobuf.message import Message

from meshlens.collector.decode.otlp_json import otlp_json_to_proto
from meshlens.collector.decode.otlp_logs import decode_logs
from meshlens.collector.decode.otlp_metrics import decode_metrics
from meshlens.collector.decode.otlp_traces import decode_traces
from meshlens.collector.receivers import otlp
from meshlens.collector.receivers.ingest import Ingest
from meshlens.collector.receivers.otlp_http import handle_export
from meshlens.collector.selfmetrics import SelfMetrics
from meshlens.collector.store.records import RecordKind
from meshlens.httpd import Request

UPSTREAM = Path(__file__).parent / "upstream"
SIGNALS = {"traces": otlp.TRACES, "metrics": otlp.METRICS, "logs": otlp.LOGS}
EXAMPLES = {"traces": "trace.json", "metrics": "metrics.json", "logs": "logs.json"}


def _read(name: str) -> str:
    return (UPSTREAM / name).read_text(encoding="utf-8")


def _example(signal: str) -> Any:
    return json.loads(_read(EXAMPLES[signal]))


class _Store:
    """What Ingest needs of a store: keeps the appended payloads."""

    def __init__(self) -> None:
        self.appended: list[tuple[RecordKind, bytes, int]] = []

    def append(
        self, kind: RecordKind, payload: bytes, context: bytes = b"", items: int = 1
    ) -> None:
        self.appended.append((kind, payload, items))

    def submit(self, kind: RecordKind, payload: bytes, context: bytes = b"", items: int = 1) -> Any:
        raise NotImplementedError  # the HTTP receiver appends synchronously


def _post(signal: str, body: bytes | Any) -> tuple[int, Any, _Store]:
    """POST an OTLP/JSON body to the receiver; (HTTP status, decoded JSON answer, store)."""
    if not isinstance(body, bytes):
        body = json.dumps(body).encode()
    store = _Store()
    ingest = Ingest(store, SelfMetrics())
    sig = SIGNALS[signal]
    req = Request("POST", sig.http_path, {}, {"content-type": "application/json"}, body)
    resp = handle_export(ingest, sig, req)
    assert resp.content_type == "application/json"
    return resp.status, json.loads(resp.body), store


def _rejected(signal: str, body: bytes | Any) -> str:
    """The 400 answer's message (asserting it is one: INVALID_ARGUMENT, nothing stored)."""
    status, answer, store = _post(signal, body)
    assert status == 400, answer
    assert answer["code"] == 3 and store.appended == []
    message: str = answer["message"]
    assert message.startswith(f"cannot decode otlp/json {signal}: ")
    for python in ("Failed to parse", "Traceback", "NoneType", "invalid literal", "iterable"):
        assert python not in message
    said = message.removeprefix(f"cannot decode otlp/json {signal}: ")
    # The spec's "Bad Data": Status.details SHOULD hold a google.rpc.BadRequest describing it.
    for detail in answer.get("details", []):
        assert detail["@type"] == "type.googleapis.com/google.rpc.BadRequest"
        (violation,) = detail["fieldViolations"]
        assert f"{violation['field']}: {violation['description']}" == said
    return said


# ---- opentelemetry-proto examples/*.json: the example requests -------------------------------


def test_trace_example() -> None:
    status, answer, store = _post("traces", _read("trace.json").encode())
    assert (status, answer) == (200, {})
    ((kind, payload, items),) = store.appended
    assert (kind, items) == (RecordKind.OTLP_TRACES, 1)
    (row,) = decode_traces(payload).to_pylist()
    (span,) = _example("traces")["resourceSpans"][0]["scopeSpans"][0]["spans"]
    # ids are case-insensitive hex (the example writes them in upper case)
    assert row["trace_id"] == span["traceId"].lower() == "5b8efff798038103d269b633813fc60c"
    assert row["span_id"] == span["spanId"].lower()
    assert row["parent_span_id"] == span["parentSpanId"].lower()
    assert (row["name"], row["kind"]) == (span["name"], "server")  # "kind": 2
    assert row["start_ts"].timestamp() * 1e9 == int(span["startTimeUnixNano"])
    assert row["duration_ms"] == 1000.0
    assert (row["service_name"], row["scope_name"]) == ("my.service", "my.library")
    assert json.loads(row["attributes"]) == {"my.span.attr": "some value"}


def test_metrics_example() -> None:
    status, answer, store = _post("metrics", _read("metrics.json").encode())
    assert (status, answer) == (200, {})
    ((_kind, payload, items),) = store.appended
    assert items == 4  # one data point per metric
    rows = {r["name"]: r for r in decode_metrics(payload).to_pylist()}
    metrics = _example("metrics")["resourceMetrics"][0]["scopeMetrics"][0]["metrics"]
    assert list(rows) == [m["name"] for m in metrics]
    kinds = {"sum": "sum", "gauge": "gauge", "histogram": "histogram"}
    kinds["exponentialHistogram"] = "exponential_histogram"
    for m in metrics:
        (which,) = set(m) & set(kinds)
        (point,) = m[which]["dataPoints"]
        row = rows[m["name"]]
        assert (row["kind"], row["unit"]) == (kinds[which], m["unit"])
        assert row["temporality"] == ("delta" if which != "gauge" else "")  # "1": DELTA
        if "asDouble" in point:
            assert row["value"] == point["asDouble"]
        if "count" in point:  # uint64 as a decimal string
            assert (row["count"], row["sum"]) == (int(point["count"]), point["sum"])
    assert rows["my.counter"]["is_monotonic"] is True
    assert rows["my.histogram"]["bucket_bounds"] == [1.0]
    assert rows["my.histogram"]["bucket_counts"] == [1, 1]  # ["1","1"]


@pytest.mark.parametrize("name", ["logs.json", "events.json"])
def test_logs_examples(name: str) -> None:
    status, answer, store = _post("logs", _read(name).encode())
    assert (status, answer) == (200, {})
    ((_kind, payload, items),) = store.appended
    assert items == 1
    (row,) = decode_logs(payload)["logs"].to_pylist()
    (record,) = json.loads(_read(name))["resourceLogs"][0]["scopeLogs"][0]["logRecords"]
    assert row["severity_number"] == record["severityNumber"]
    assert row["severity_text"] == record["severityText"]
    assert row["trace_id"] == record.get("traceId", "").lower()
    assert row["span_id"] == record.get("spanId", "").lower()
    attrs = json.loads(row["attributes"])
    if name == "logs.json":
        assert row["body"] == "Example log record"
        assert attrs["int.attribute"] == 10  # intValue "10"
        assert attrs["array.attribute"] == ["many", "values"]
        assert attrs["map.attribute"] == {"some.map.key": "some value"}
    else:  # an event: body is a kvlist, eventName a newer field
        assert json.loads(row["body"])["type"] == 0
        assert attrs == {"event.attribute": "some event attribute"}


# ---- the OTLP specification's JSON rules ------------------------------------------------------
# open-telemetry/opentelemetry-proto docs/specification.md at
# ac2c4b5d1f3a6079de62f9afec860158ecc8af09, section "JSON Protobuf Encoding" (L445-488).


def _everywhere(doc: Any, edit: Any) -> Any:
    """`doc` with `edit(obj)` applied to every JSON object in it (a copy)."""
    doc = copy.deepcopy(doc)
    stack = [doc]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            stack.extend(node.values())
            edit(node)
        elif isinstance(node, list):
            stack.extend(node)
    return doc


@pytest.mark.parametrize("signal", sorted(EXAMPLES))
def test_unknown_fields_are_ignored_at_every_level(signal: str) -> None:
    """Spec L468-471: OTLP/JSON receivers MUST ignore message fields with unknown names."""
    doc = _example(signal)

    def add(obj: dict[str, Any]) -> None:
        obj["someFutureField"] = {"nested": [1, "x", None, {"a": True}]}
        obj["another_one"] = None

    expected = otlp_json_to_proto(signal, json.dumps(doc).encode())
    assert otlp_json_to_proto(signal, json.dumps(_everywhere(doc, add)).encode()) == expected


@pytest.mark.parametrize("signal", sorted(EXAMPLES))
def test_int64_as_numbers_and_strings(signal: str) -> None:
    """Spec L480-483: 64-bit integers are decimal strings, and either numbers or strings are
    accepted when decoding."""
    doc = _example(signal)
    int64 = re.compile(r"(?:[a-z]+TimeUnixNano|timeUnixNano|count|zeroCount|intValue)")

    def as_numbers(obj: dict[str, Any]) -> None:
        for key, value in obj.items():
            if int64.fullmatch(key) and isinstance(value, str):
                obj[key] = int(value)

    expected = otlp_json_to_proto(signal, json.dumps(doc).encode())
    changed = _everywhere(doc, as_numbers)
    assert changed != doc
    assert otlp_json_to_proto(signal, json.dumps(changed).encode()) == expected


def test_ids_are_hex_in_either_case_and_never_base64() -> None:
    """Spec L451-458: traceId and spanId are case-insensitive hex strings, not base64."""
    doc = _example("traces")
    span = doc["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    upper = otlp_json_to_proto("traces", json.dumps(doc).encode())
    span["traceId"] = span["traceId"].lower()
    assert otlp_json_to_proto("traces", json.dumps(doc).encode()) == upper
    span["traceId"] = "W47/95gDgQPSabYzgT/GDA=="  # the same 16 bytes in base64
    assert _rejected("traces", doc).startswith(
        "resourceSpans[0].scopeSpans[0].spans[0].traceId: expected 32 hex digits, got "
    )


def test_enums_are_integers_and_names_are_tolerated() -> None:
    """Spec L460-466: only integer enum values are allowed (senders MUST NOT use names); like the
    Collector, meshlens accepts known names."""
    doc = _example("traces")
    expected = otlp_json_to_proto("traces", json.dumps(doc).encode())
    doc["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["kind"] = "SPAN_KIND_SERVER"
    assert otlp_json_to_proto("traces", json.dumps(doc).encode()) == expected


def test_proto_field_names_are_tolerated_as_the_collector_does() -> None:
    """The spec (L473-478) says original (snake_case) field names are not valid keys; the
    Collector reads both spellings (open-telemetry/opentelemetry-collector
    pdata/internal/generated_proto_span.go at 934999fbab274d10cbf18704b4594a6fb2049887,
    `Span.UnmarshalJSON` L267-322: `case "traceId", "trace_id":` at L270), and so does
    meshlens."""
    doc = _example("traces")
    expected = otlp_json_to_proto("traces", json.dumps(doc).encode())

    def snake(obj: dict[str, Any]) -> None:
        for key in list(obj):
            if key not in ("key", "value") and re.search("[A-Z]", key):
                obj[re.sub("([A-Z])", lambda m: "_" + m.group(1).lower(), key)] = obj.pop(key)

    assert otlp_json_to_proto("traces", json.dumps(_everywhere(doc, snake)).encode()) == expected


# ---- the Collector's JSON unmarshaler tests (pdata/*/json_test.go) ----------------------------
# Their full requests and their cases (JSON snippet, outcome) are in collector_json_cases.json,
# each with the Go file and line range it comes from.

_COLLECTOR = json.loads(_read("collector_json_cases.json"))
# Where each Go test puts its snippet, as a JSON path into a request ("" = the request).
_PLACES = {
    "ptrace": {
        "TestJSONUnmarshalInvalid": "",
        "TestUnmarshalJsoniterTraceData": "",
        "TestUnmarshalJsoniterResourceSpans": "resourceSpans[0]",
        "TestUnmarshalJsoniterScopeSpans": "resourceSpans[0].scopeSpans[0]",
        "TestUnmarshalJsoniterSpan": "resourceSpans[0].scopeSpans[0].spans[0]",
        "TestUnmarshalJsoniterSpanInvalidTraceIDField": "resourceSpans[0].scopeSpans[0].spans[0]",
        "TestUnmarshalJsoniterSpanInvalidSpanIDField": "resourceSpans[0].scopeSpans[0].spans[0]",
        "TestUnmarshalJsoniterSpanInvalidParentSpanIDField": (
            "resourceSpans[0].scopeSpans[0].spans[0]"
        ),
        "TestUnmarshalJsoniterSpanStatus": "resourceSpans[0].scopeSpans[0].spans[0].status",
        "TestUnmarshalJsoniterSpanLink": "resourceSpans[0].scopeSpans[0].spans[0].links[0]",
        "TestUnmarshalJsoniterSpanLinkInvalidTraceIDField": (
            "resourceSpans[0].scopeSpans[0].spans[0].links[0]"
        ),
        "TestUnmarshalJsoniterSpanLinkInvalidSpanIDField": (
            "resourceSpans[0].scopeSpans[0].spans[0].links[0]"
        ),
        "TestUnmarshalJsoniterSpanEvent": "resourceSpans[0].scopeSpans[0].spans[0].events[0]",
    },
    "plog": {
        "TestJSONUnmarshalInvalid": "",
        "TestUnmarshalJsoniterLogsData": "",
        "TestUnmarshalJsoniterResourceLogs": "resourceLogs[0]",
        "TestUnmarshalJsoniterScopeLogs": "resourceLogs[0].scopeLogs[0]",
        "TestUnmarshalJsoniterLogRecord": "resourceLogs[0].scopeLogs[0].logRecords[0]",
        "TestUnmarshalJsoniterLogWrongTraceID": "resourceLogs[0].scopeLogs[0].logRecords[0]",
        "TestUnmarshalJsoniterLogWrongSpanID": "resourceLogs[0].scopeLogs[0].logRecords[0]",
    },
    "pmetric": {
        "TestUnmarshalJsoniterMetricsData": "",
        "TestUnmarshalJsoniterResourceMetrics": "resourceMetrics[0]",
        "TestUnmarshalJsoniterScopeMetrics": "resourceMetrics[0].scopeMetrics[0]",
        "TestUnmarshalJsoniterNumberDataPoint": (
            "resourceMetrics[0].scopeMetrics[0].metrics[0].gauge.dataPoints[0]"
        ),
        "TestUnmarshalJsoniterHistogramDataPoint": (
            "resourceMetrics[0].scopeMetrics[0].metrics[0].histogram.dataPoints[0]"
        ),
        "TestUnmarshalJsoniterExponentialHistogramDataPoint": (
            "resourceMetrics[0].scopeMetrics[0].metrics[0].exponentialHistogram.dataPoints[0]"
        ),
        "TestUnmarshalJsoniterExponentialHistogramDataPointBuckets": (
            "resourceMetrics[0].scopeMetrics[0].metrics[0].exponentialHistogram.dataPoints[0]"
            ".positive"
        ),
        "TestUnmarshalJsoniterSummaryDataPoint": (
            "resourceMetrics[0].scopeMetrics[0].metrics[0].summary.dataPoints[0]"
        ),
        "TestUnmarshalJsoniterQuantileValue": (
            "resourceMetrics[0].scopeMetrics[0].metrics[0].summary.dataPoints[0].quantileValues[0]"
        ),
        "TestExemplarInvalidTraceID": (
            "resourceMetrics[0].scopeMetrics[0].metrics[0].gauge.dataPoints[0].exemplars[0]"
        ),
        "TestExemplarInvalidSpanID": (
            "resourceMetrics[0].scopeMetrics[0].metrics[0].gauge.dataPoints[0].exemplars[0]"
        ),
        "TestExemplar": (
            "resourceMetrics[0].scopeMetrics[0].metrics[0].gauge.dataPoints[0].exemplars[0]"
        ),
    },
}
_SIGNAL_OF = {"ptrace": "traces", "plog": "logs", "pmetric": "metrics"}


def _place(path: str, snippet: Any) -> Any:
    """A request with `snippet` at `path` (each step a one-element array or an object)."""
    doc: Any = snippet
    for step in reversed(re.findall(r"(\w+)(\[0\])?", path)):
        key, index = step
        doc = {key: [doc] if index else doc}
    return doc


def _go_cases() -> list[tuple[str, str, Any, str]]:
    """(package, Go test, JSON snippet, what the Go test expects) for every mapped case: "ok",
    "error", or the name of the field the error must name."""
    cases = []
    for case in _COLLECTOR["cases"]:
        package = case["path"].split("/")[1]  # pdata/<package>/json_test.go
        assert _SIGNAL_OF[package] == case["signal"]
        if case["name"] in _PLACES[package]:
            expect = case.get("error_names", case["outcome"])
            cases.append((package, case["name"], case["input"], expect))
    return cases


def test_every_mapped_go_case_is_found() -> None:
    found = {(p, n) for p, n, _s, _e in _go_cases()}
    assert found == {(p, n) for p, places in _PLACES.items() for n in places}


@pytest.mark.parametrize(
    ("package", "name", "snippet", "expect"), _go_cases(), ids=lambda v: str(v)[:60]
)
def test_collector_unmarshaler_cases(package: str, name: str, snippet: Any, expect: str) -> None:
    signal = _SIGNAL_OF[package]
    place = _PLACES[package][name]
    doc = _place(place, snippet)
    if expect == "ok":  # unknown fields ignored, the rest converted
        # (converted only: the receive path would then refuse a span without ids or a metric
        # without a name, which these bare snippets are)
        request = SIGNALS[signal].request()
        request.ParseFromString(otlp_json_to_proto(signal, json.dumps(doc).encode()))
        assert request.ByteSize() > 0 or place == ""
    elif expect == "error":
        assert _rejected(signal, doc).startswith("resource")
    else:  # the Go test wants the error to name this field; so does meshlens
        message = _rejected(signal, doc)
        digits = 32 if expect == "traceId" else 16
        assert message == (
            f'{place}.{expect}: expected {digits} hex digits, got "--" '
            "('-' at position 0 is not a hex digit)"
        )


def _full(signal: str) -> Any:
    """The Go tests' `<signal>JSON` request (a copy)."""
    (request,) = [r for r in _COLLECTOR["requests"] if r["signal"] == signal]
    assert request["name"] == f"{signal}JSON"
    return copy.deepcopy(request["json"])


def test_collector_traces_json() -> None:
    doc = _full("traces")
    status, answer, store = _post("traces", doc)
    # The second span ({"name":"testSpan2","status":{}}) has no ids: converted, then rejected
    # by the receive path exactly as a protobuf request with it would be.
    assert status == 200 and answer["partialSuccess"]["rejectedSpans"] == "1"
    ((_kind, payload, items),) = store.appended
    assert items == 1
    (row,) = decode_traces(payload).to_pylist()
    span = doc["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    assert (row["trace_id"], row["span_id"]) == (span["traceId"], span["spanId"])
    assert row["parent_span_id"] == span["parentSpanId"]
    assert (row["kind"], row["status_code"], row["status_message"]) == ("client", "ok", "message")
    assert row["service_name"] == "testService"
    attrs = json.loads(row["attributes"])
    assert attrs["int"] == 1 and attrs["bool"] is True and attrs["array"] == [1, "str"]
    assert attrs["kvList"] == {"int": 1, "string": "string"}
    (link,) = json.loads(row["links"])
    assert link["trace_id"] == span["links"][0]["traceId"]
    # Everything, bytes and flags included, equals the protobuf the Collector's test builds.
    message = _parsed("traces", payload)
    got = message.resource_spans[0].scope_spans[0].spans[0]  # type: ignore[attr-defined]
    assert got.attributes[4].value.bytes_value == b"foo"  # "Zm9v"
    assert (got.flags, got.links[0].flags, got.trace_state) == (1, 1, "state")
    assert (got.dropped_attributes_count, got.dropped_events_count, got.dropped_links_count) == (
        1,
        1,
        1,
    )
    assert got.events[0].time_unix_nano == 1684620382541971000


def _parsed(signal: str, payload: bytes) -> Message:
    message = SIGNALS[signal].request()
    message.ParseFromString(payload)
    return message


def test_collector_logs_and_metrics_json() -> None:
    status, answer, store = _post("logs", _full("logs"))
    assert (status, answer) == (200, {})
    (row,) = decode_logs(store.appended[0][1])["logs"].to_pylist()
    record = _full("logs")["resourceLogs"][0]["scopeLogs"][0]["logRecords"][0]
    assert (row["severity_number"], row["severity_text"], row["body"]) == (
        17,
        "Error",
        "hello world",
    )
    assert (row["trace_id"], row["span_id"]) == (record["traceId"], record["spanId"])
    got = _parsed("logs", store.appended[0][1])
    assert got.resource_logs[0].scope_logs[0].log_records[0].event_name == "someEvent"  # type: ignore[attr-defined]
    # metricsJSON: one metric with metadata and no data points: accepted, nothing to store
    status, answer, store = _post("metrics", _full("metrics"))
    assert (status, answer, store.appended) == (200, {}, [])
    metric = otlp_json_to_proto("metrics", json.dumps(_full("metrics")).encode())
    parsed = _parsed("metrics", metric)
    (m,) = parsed.resource_metrics[0].scope_metrics[0].metrics  # type: ignore[attr-defined]
    assert (m.name, m.metadata[0].key, m.metadata[0].value.string_value) == (
        "testMetric",
        "metadatakey",
        "metadatavalue",
    )


def test_the_collector_rejects_unknown_enum_names_and_bad_integers_too() -> None:
    """As the Collector does (open-telemetry/opentelemetry-collector
    pdata/internal/json/iterator.go at 934999fbab274d10cbf18704b4594a6fb2049887):
    `ReadEnumValue` (L215-233) reports an unknown name as an error ("unknown string value",
    L224), and the integer readers (L49-121) parse strings as base 10 only
    (`strconv.ParseInt`/`ParseUint(..., 10, ...)`, e.g. L111)."""
    doc = _example("traces")
    doc["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["kind"] = "SERVER"
    assert _rejected("traces", doc).startswith(
        'resourceSpans[0].scopeSpans[0].spans[0].kind: unknown SpanKind "SERVER"'
    )


# ---- malformed variants of the examples: 400, naming the field and the problem --------------

_SPAN = "resourceSpans[0].scopeSpans[0].spans[0]"
_METRICS = "resourceMetrics[0].scopeMetrics[0].metrics"
_RECORD = "resourceLogs[0].scopeLogs[0].logRecords[0]"


def _set(doc: Any, path: str, value: Any) -> Any:
    doc = copy.deepcopy(doc)
    *parents, last = re.findall(r"\w+|\[\d+\]", path)
    node = doc
    for step in parents:
        node = node[int(step[1:-1])] if step.startswith("[") else node[step]
    if last.startswith("["):
        node[int(last[1:-1])] = value
    else:
        node[last] = value
    return doc


@pytest.mark.parametrize(
    ("signal", "path", "value", "problem"),
    [
        # ids
        (
            "traces",
            f"{_SPAN}.traceId",
            "5B8EFFF798038103D269B633813FC60",
            "expected 32 hex digits, got 31",
        ),
        (
            "traces",
            f"{_SPAN}.spanId",
            "EEE19B7EC3C1B17G",
            'expected 16 hex digits, got "EEE19B7EC3C1B17G" '
            "('G' at position 15 is not a hex digit)",
        ),
        ("traces", f"{_SPAN}.parentSpanId", 17, "expected 16 hex digits, got a number 17"),
        ("logs", f"{_RECORD}.traceId", "5B8EFFF7 98038103D269B633813FC60C", "' ' at position 8"),
        # enums
        ("traces", f"{_SPAN}.kind", "SPAN_KIND_SERVERR", 'unknown SpanKind "SPAN_KIND_SERVERR"'),
        ("traces", f"{_SPAN}.kind", [2], "expected an integer (a SpanKind), got an array [2]"),
        ("traces", f"{_SPAN}.kind", 4294967298, "4294967298 is out of range for enum"),
        (
            "metrics",
            f"{_METRICS}[0].sum.aggregationTemporality",
            "CUMULATIVE",
            'unknown AggregationTemporality "CUMULATIVE"',
        ),
        ("logs", f"{_RECORD}.severityNumber", "INFO", 'unknown SeverityNumber "INFO"'),
        # 64-bit integers
        (
            "traces",
            f"{_SPAN}.startTimeUnixNano",
            "1544712660000000000ns",
            "expected an integer (a number or a decimal string), "
            'got a string "1544712660000000000ns"',
        ),
        (
            "traces",
            f"{_SPAN}.endTimeUnixNano",
            "-1544712661000000000",
            "is out of range for fixed64 [0, 18446744073709551615]",
        ),
        ("metrics", f"{_METRICS}[2].histogram.dataPoints[0].count", "2.5", 'got a string "2.5"'),
        (
            "metrics",
            f"{_METRICS}[2].histogram.dataPoints[0].bucketCounts[1]",
            "one",
            'got a string "one"',
        ),
        ("logs", f"{_RECORD}.attributes[2].value.intValue", "10.5", 'got a string "10.5"'),
        (
            "logs",
            f"{_RECORD}.attributes[2].value.intValue",
            "99999999999999999999",
            "out of range for int64",
        ),
        # other wrong types
        ("traces", f"{_SPAN}.name", 42, "expected a string, got a number 42"),
        (
            "traces",
            f"{_SPAN}.attributes",
            {"my.span.attr": "some value"},
            "expected an array, got an object",
        ),
        ("traces", "resourceSpans[0].resource", [], "expected an object, got an array []"),
        (
            "metrics",
            f"{_METRICS}[0].sum.isMonotonic",
            "true",
            'expected true or false, got a string "true"',
        ),
        (
            "metrics",
            f"{_METRICS}[1].gauge.dataPoints[0].asDouble",
            "ten",
            'expected a number (or "NaN", "Infinity", "-Infinity"), got a string "ten"',
        ),
        (
            "metrics",
            f"{_METRICS}[2].histogram.dataPoints[0].explicitBounds",
            [1, None],
            "null is not allowed in an array",
        ),
        ("logs", f"{_RECORD}.body", {"stringValue": 1}, "expected a string, got a number 1"),
        (
            "logs",
            f"{_RECORD}.attributes[5].value.kvlistValue.values[0].value",
            {"boolValue": "yes"},
            'expected true or false, got a string "yes"',
        ),
        (
            "logs",
            f"{_RECORD}.attributes[0]",
            "string.attribute=some string",
            "expected an object, got a string",
        ),
    ],
)
def test_malformed_variants_name_the_field(
    signal: str, path: str, value: Any, problem: str
) -> None:
    body = _set(_example(signal), path, value)
    message = _rejected(signal, body)
    assert "details" in _post(signal, body)[1]  # with the BadRequest naming the field
    where, _, said = message.partition(": ")
    assert where == path or where.startswith((f"{path}.", f"{path}["))  # or what is in it
    assert problem in said, message


@pytest.mark.parametrize("signal", sorted(EXAMPLES))
def test_truncated_bodies(signal: str) -> None:
    body = _read(EXAMPLES[signal]).encode()
    for cut in (1, len(body) // 3, len(body) // 2, len(body) - 2):
        message = _rejected(signal, body[:cut])
        assert message.startswith("JSON ends early at line "), message
        assert "(truncated body?)" in message


_LATIN1 = b'{"resourceLogs": [{"resource": {"attributes": [{"key": "k", "value": '
_LATIN1 += '{"stringValue": "caf\xe9"}}]}}]}'.encode("latin-1")


@pytest.mark.parametrize(
    ("signal", "body", "problem"),
    [
        ("traces", b"", "empty body (expected a JSON object)"),
        (
            "traces",
            b"[" + (UPSTREAM / "trace.json").read_bytes() + b"]",
            "body must be a JSON object (an ExportTraceServiceRequest), got an array",
        ),
        ("logs", b'"resourceLogs"', "got a string"),
        (
            "metrics",
            b'{"resourceMetrics": {"scopeMetrics": []}}',
            "resourceMetrics: expected an array, got an object",
        ),
        (
            "traces",
            b'{"resourceSpans": [{"scopeSpans": {"spans": []}}]}',
            "resourceSpans[0].scopeSpans: expected an array, got an object",
        ),
        (
            "traces",
            b'{"resourceSpans": [], "resourceSpans": 5}',
            "resourceSpans: expected an array, got a number 5",
        ),
        (
            "logs",
            _LATIN1,
            f"body is not UTF-8 (byte {_LATIN1.index(0xE9)}: b'\\xe9')",
        ),
        (
            "traces",
            json.dumps(_set(_example("traces"), f"{_SPAN}.trace_id", "5b8e" * 8)).encode(),
            "trace_id: set twice (as 'traceId' and 'trace_id')",
        ),
        (
            "traces",
            b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"name": "\\ud83d"}]}]}]}',
            "name: text with an unpaired surrogate",
        ),
    ],
)
def test_wrong_shapes(signal: str, body: bytes, problem: str) -> None:
    assert problem in _rejected(signal, body)


def test_a_trace_body_posted_to_the_logs_path_is_an_empty_request() -> None:
    # Its only key is unknown to ExportLogsServiceRequest, and unknown keys are ignored.
    status, answer, store = _post("logs", _read("trace.json").encode())
    assert (status, answer, store.appended) == (200, {}, [])


def test_the_json_and_protobuf_paths_store_the_same_bytes() -> None:
    for signal, name in EXAMPLES.items():
        _status, _answer, store = _post(signal, _read(name).encode())
        ((_kind, payload, _items),) = store.appended
        reference = SIGNALS[signal].request()
        hexids = _everywhere(json.loads(_read(name)), _base64_ids)
        json_format.ParseDict(hexids, reference)
        assert payload == reference.SerializeToString()


def _base64_ids(obj: dict[str, Any]) -> None:
    import base64

    for key in ("traceId", "spanId", "parentSpanId"):
        if isinstance(obj.get(key), str):
            obj[key] = base64.b64encode(bytes.fromhex(obj[key])).decode()
