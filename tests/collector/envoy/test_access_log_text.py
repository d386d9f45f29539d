"""Istio text/JSON access-log lines and Envoy OTel access logs -> requests rows."""

from __future__ import annotations

import json

import pytest

from meshlens.collector.decode.access_log_text import (
    Rejected,
    decode_lines_record,
    parse_access_log_line,
    parse_entry,
    parse_json_fields,
    parse_lines,
    read_entries,
    strip_k8s_prefix,
)
from meshlens.collector.decode.otel_als import otel_access_log_to_request
from meshlens.collector.store.records import Record, RecordKind
from meshlens.collector.store.schema import REQUESTS

# istio.io "Envoy Access Logs" task (default text format), client and server sidecar.
ISTIO_DOC_OUT = (
    '[2020-11-25T21:26:18.409Z] "GET /status/418 HTTP/1.1" 418 - via_upstream - "-" 0 135 4 4 '
    '"-" "curl/7.73.0-DEV" "84961386-6d84-929d-98bd-c5aee93b5c88" "httpbin:8000" '
    '"10.44.1.27:80" outbound|8000||httpbin.foo.svc.cluster.local 10.44.1.23:37652 '
    "10.0.45.184:8000 10.44.1.23:46520 - default"
)
ISTIO_DOC_IN = (
    '[2020-11-25T21:26:18.409Z] "GET /status/418 HTTP/1.1" 418 - via_upstream - "-" 0 135 3 1 '
    '"-" "curl/7.73.0-DEV" "84961386-6d84-929d-98bd-c5aee93b5c88" "httpbin:8000" '
    '"127.0.0.1:80" inbound|8000|| 127.0.0.1:41854 10.44.1.27:80 10.44.1.23:37652 '
    "outbound_.8000_._.httpbin.foo.svc.cluster.local default"
)
# Emitted by Envoy 1.40 with Istio's format (our local mesh): a UH from an empty subset.
ENVOY_UH = (
    '[2026-11-25T21:30:07.491Z] "GET /x HTTP/1.1" 503 UH no_healthy_upstream - "-" 0 19 0 - '
    '"-" "Python-urllib/3.11" "6829c63c-7708-99f8-ad88-8492592ed53e" "127.0.0.1:52381" "-" '
    "outbound|9080|v2|reviews.default.svc.cluster.local - 127.0.0.1:52381 127.0.0.1:34236 - "
    "default\n"
)
ENVOY_DC = (
    '[2026-11-25T21:30:07.485Z] "GET /status/500 HTTP/1.1" 500 DC downstream_remote_disconnect '
    '- "-" 0 0 2 0 "-" "Python-urllib/3.11" "1b306c82-2b3a-98c5-8371-5cb9fcf42869" '
    '"127.0.0.1:52381" "127.0.0.1:42255" inbound|9080|| 127.0.0.1:51392 127.0.0.1:57907 '
    "127.0.0.1:44056 - default\n"
)
# Istio 1.5-era format: mixer status quoted field, no details fields.
ISTIO_OLD = (
    '[2020-03-06T09:31:27.354Z] "GET /status/418 HTTP/1.1" 418 - "-" "-" 0 135 5 2 "-" '
    '"curl/7.60.0" "d209e46f-9ed5-9b61-bbdd-43e22662702a" "httpbin:8000" "127.0.0.1:80" '
    "inbound|8000|http|httpbin.foo.svc.cluster.local 127.0.0.1:46180 10.44.1.27:80 "
    "10.44.1.23:37652 outbound_.8000_._.httpbin.foo.svc.cluster.local default"
)
# Envoy's own default format (envoy docs), no Istio tail.
ENVOY_DEFAULT = (
    '[2016-04-15T20:17:00.310Z] "POST /api/v1/locations HTTP/2" 204 - 154 0 226 100 '
    '"10.0.35.28" "nsq2http" "cc21d9b0-cf5c-432b-8c7e-98aeb7988cd2" "locations" '
    '"tcp://10.0.2.1:80"'
)
TCP_BLACKHOLE = (
    '[2024-01-01T00:00:00.000Z] "- - -" 0 UH - - "-" 0 0 0 - "-" "-" "-" "-" "-" '
    "BlackHoleCluster - 10.0.0.5:3306 10.0.0.9:4444 - -"
)
# Istio's JSON encoding (EnvoyJSONLogFormatIstio), istio.io example.
ISTIO_JSON = json.dumps(
    {
        "upstream_host": "10.44.1.27:80",
        "downstream_remote_address": "10.44.1.23:46520",
        "downstream_local_address": "10.0.45.184:8000",
        "duration": 4,
        "upstream_local_address": "10.44.1.23:37652",
        "path": "/status/418",
        "protocol": "HTTP/1.1",
        "response_code": 418,
        "x_forwarded_for": None,
        "upstream_transport_failure_reason": None,
        "user_agent": "curl/7.73.0-DEV",
        "bytes_received": 0,
        "authority": "httpbin:8000",
        "request_id": "84961386-6d84-929d-98bd-c5aee93b5c88",
        "upstream_service_time": "4",
        "route_name": "default",
        "bytes_sent": 135,
        "response_code_details": "via_upstream",
        "start_time": "2020-11-25T21:26:18.409Z",
        "response_flags": "-",
        "requested_server_name": None,
        "method": "GET",
        "connection_termination_details": None,
        "upstream_cluster": "outbound|8000||httpbin.foo.svc.cluster.local",
    }
)


def test_istio_docs_outbound_line() -> None:
    r = parse_access_log_line(ISTIO_DOC_OUT)
    assert r is not None
    assert r["ts"] == 1606339578409000
    assert (r["reporter"], r["protocol"], r["method"], r["path"]) == (
        "source",
        "http",
        "GET",
        "/status/418",
    )
    assert (r["response_code"], r["response_flags"], r["response_code_details"]) == (
        418,
        "-",
        "via_upstream",
    )
    assert (r["request_bytes"], r["response_bytes"], r["duration_ms"]) == (0, 135, 4.0)
    assert r["destination_service"] == "httpbin.foo.svc.cluster.local"
    assert (r["destination_service_name"], r["destination_namespace"]) == ("httpbin", "foo")
    assert r["request_id"] == "84961386-6d84-929d-98bd-c5aee93b5c88"
    assert r["authority"] == "httpbin:8000"
    assert r["user_agent"] == "curl/7.73.0-DEV"
    assert r["destination_port"] == 8000
    assert r["source_address"] == "10.44.1.23"
    assert r["mtls"] is None
    assert r["origin"] == "file"
    assert r["source_workload"] == "unknown"


def test_istio_docs_inbound_line() -> None:
    r = parse_access_log_line(ISTIO_DOC_IN)
    assert r is not None
    assert r["reporter"] == "destination"
    assert r["upstream_cluster"] == "inbound|8000||"
    assert r["destination_service"] == "httpbin.foo.svc.cluster.local"  # from the SNI
    assert r["mtls"] is True  # Istio's mTLS SNI
    assert r["duration_ms"] == 3.0


def test_json_line_matches_text_line() -> None:
    j = parse_access_log_line(ISTIO_JSON)
    t = parse_access_log_line(ISTIO_DOC_OUT)
    assert j is not None and t is not None
    for k in (
        "ts",
        "reporter",
        "response_code",
        "response_flags",
        "destination_service",
        "request_bytes",
        "response_bytes",
        "duration_ms",
        "request_id",
        "method",
        "path",
        "upstream_cluster",
        "destination_port",
    ):
        assert j[k] == t[k], k


@pytest.mark.parametrize(
    ("line", "code", "flags", "reporter", "cluster"),
    [
        (ENVOY_UH, 503, "UH", "source", "outbound|9080|v2|reviews.default.svc.cluster.local"),
        (ENVOY_DC, 500, "DC", "destination", "inbound|9080||"),
        (ISTIO_OLD, 418, "-", "destination", "inbound|8000|http|httpbin.foo.svc.cluster.local"),
        (ENVOY_DEFAULT, 204, "-", "source", "unknown"),
        (TCP_BLACKHOLE, 0, "UH", "source", "BlackHoleCluster"),
    ],
)
def test_line_variants(line: str, code: int, flags: str, reporter: str, cluster: str) -> None:
    r = parse_access_log_line(line)
    assert r is not None
    assert (r["response_code"], r["response_flags"], r["reporter"], r["upstream_cluster"]) == (
        code,
        flags,
        reporter,
        cluster,
    )


def test_uh_line_details() -> None:
    r = parse_access_log_line(ENVOY_UH)
    assert r is not None
    assert r["destination_version"] == "v2"
    assert r["response_code_details"] == "no_healthy_upstream"


def test_tcp_line() -> None:
    r = parse_access_log_line(TCP_BLACKHOLE)
    assert r is not None
    assert r["protocol"] == "tcp"
    assert r["method"] is None
    assert r["destination_service"] == "10.0.0.5"  # original destination, no service


def test_envoy_default_format_and_old_istio() -> None:
    d = parse_access_log_line(ENVOY_DEFAULT)
    assert d is not None
    assert (d["method"], d["path"], d["request_bytes"], d["duration_ms"]) == (
        "POST",
        "/api/v1/locations",
        154,
        226.0,
    )
    assert d["authority"] == "locations"
    old = parse_access_log_line(ISTIO_OLD)
    assert old is not None
    assert old["mtls"] is True
    assert old["destination_service"] == "httpbin.foo.svc.cluster.local"


@pytest.mark.parametrize(
    "prefix",
    [
        "",
        "2020-11-25T21:26:18.412345678Z ",
        "[pod/httpbin-74fb669cc6-k7d9h/istio-proxy] ",
        "[pod/httpbin-74fb669cc6-k7d9h/istio-proxy] 2020-11-25T21:26:18.412345678Z ",
    ],
)
def test_kubectl_prefixes(prefix: str) -> None:
    assert strip_k8s_prefix(prefix + ISTIO_DOC_OUT) == ISTIO_DOC_OUT
    r = parse_access_log_line(prefix + ISTIO_DOC_OUT)
    assert r is not None and r["response_code"] == 418
    assert parse_access_log_line(prefix + ISTIO_JSON) is not None


@pytest.mark.parametrize(
    "line",
    [
        "",
        "2024-01-01T00:00:00.000000Z info Envoy proxy is ready",
        "[2024-01-01 00:00:00.000][1][info][main] starting main dispatch loop",
        '{"level":"info","msg":"not an access log"}',
        "{not json",
        '[2020-11-25T21:26:18.409Z] "GET /x HTTP/1.1" 200 - truncated',
        '[not-a-time] "GET / HTTP/1.1" 200 - - - "-" 0 0 1 1 "-" "-" "-" "-" "-" c a b d - -',
    ],
)
def test_not_access_logs(line: str) -> None:
    assert parse_access_log_line(line) is None


def test_decode_lines_record() -> None:
    payload = "\n".join([ISTIO_DOC_OUT, "garbage", ISTIO_JSON, "", ISTIO_DOC_IN]).encode()
    t = decode_lines_record(Record(RecordKind.ACCESS_LOG_LINES, 0, payload, b"file.log"))[
        "requests"
    ]
    assert t.schema == REQUESTS
    assert t.num_rows == 3
    assert t.column("origin").to_pylist() == ["file"] * 3


def test_otel_body_line_with_istio_labels() -> None:
    row = otel_access_log_to_request(
        ISTIO_DOC_IN + "\n",
        {
            "pod": "httpbin-74fb669cc6-k7d9h",
            "namespace": "foo",
            "cluster": "Kubernetes",
            "mesh": "cluster.local",
        },
        {},
        1_606_339_578_409_000_000,
    )
    assert row is not None
    assert row["origin"] == "otel_als"
    assert row["destination_workload"] == "httpbin"  # pod name without replicaset suffixes
    assert row["destination_namespace"] == "foo"
    assert row["reporter"] == "destination"


def test_otel_defaults_have_no_identity_of_reporter() -> None:
    # Istio's default: body only, no attributes, no resource labels.
    row = otel_access_log_to_request(ISTIO_DOC_OUT, {}, {}, 0)
    assert row is not None
    assert row["source_workload"] == "unknown"
    assert row["destination_service"] == "httpbin.foo.svc.cluster.local"


def test_otel_attribute_format_and_node_name_resource() -> None:
    attrs = {
        "start_time": "2024-05-01T10:00:00.000Z",
        "method": "POST",
        "path": "/pkg.Svc/Call",
        "response_code": 200,
        "response_flags": "-",
        "duration": 7,
        "upstream_cluster": "outbound|50051||grpc.default.svc.cluster.local",
        "authority": "grpc:50051",
        "bytes_received": 5,
        "bytes_sent": 9,
        "grpc_status": "0",
    }
    resource = {"node_name": "sidecar~10.0.0.1~web-v2-6b7c8d9f5-zzzzz.shop~shop.svc.cluster.local"}
    row = otel_access_log_to_request("", attrs, resource, 0)
    assert row is not None
    assert row["protocol"] == "grpc"
    assert row["grpc_status"] == "0"
    assert (row["source_workload"], row["source_namespace"]) == ("web-v2", "shop")
    assert row["node_id"] == resource["node_name"]
    assert row["duration_ms"] == 7.0


@pytest.mark.parametrize(
    ("printed", "stored"),
    [("OK", "0"), ("Unavailable", "14"), ("DEADLINE_EXCEEDED", "4"), ("14", "14"), ("-", "")],
)
def test_grpc_status_names_are_stored_as_codes(printed: str, stored: str) -> None:
    # Istio's OTel/file providers use %GRPC_STATUS(CAMEL_STRING)%: names, not numbers.
    attrs = {
        "start_time": "2024-05-01T10:00:00.000Z",
        "method": "POST",
        "path": "/pkg.Svc/Call",
        "response_code": 200,
        "response_flags": "-",
        "duration": 7,
        "upstream_cluster": "outbound|50051||grpc.default.svc.cluster.local",
        "authority": "grpc:50051",
        "grpc_status": printed,
        "content_type": "application/grpc",
    }
    row = otel_access_log_to_request("", attrs, {}, 0)
    assert row is not None and row["protocol"] == "grpc"
    assert row["grpc_status"] == stored


def test_otel_non_access_logs() -> None:
    assert otel_access_log_to_request("user logged in", {"level": "info"}, {}, 1) is None
    assert otel_access_log_to_request("", {}, {"service.name": "x"}, 1) is None


def test_otel_envoy_builtin_resource_labels() -> None:
    # Envoy's built-in labels when Istio does not disable them
    resource = {
        "log_name": "otel_envoy_accesslog",
        "zone_name": "",
        "cluster_name": "reviews.bookinfo",
        "node_name": "sidecar~10.0.0.3~reviews-v2-7f9c8d6b5-x2x4p.bookinfo~"
        "bookinfo.svc.cluster.local",
    }
    row = otel_access_log_to_request(ISTIO_DOC_IN, {}, resource, 0)
    assert row is not None
    assert (row["destination_workload"], row["destination_namespace"]) == ("reviews-v2", "bookinfo")
    assert row["destination_canonical_service"] == "reviews"


# ---- multi-line entries, kubectl prefixes on every line, and reasons --------------------------

_PRETTY = json.dumps(json.loads(ISTIO_JSON), indent=2)  # a JSON format under TEXT encoding


def _numbered(text: str) -> list[tuple[int, str]]:
    return list(enumerate(text.split("\n"), 1))


def _split(items: list[object]) -> tuple[list[dict[str, object]], list[Rejected]]:
    rows = [i for i in items if isinstance(i, dict)]
    rejected = [i for i in items if isinstance(i, Rejected)]
    assert len(rows) + len(rejected) == len(items)
    return rows, rejected


@pytest.mark.parametrize(
    "prefix",
    [
        "",
        "2020-11-25T21:26:18.412345678Z ",
        "[pod/sleep-6d68f6b8c5-x2x4p/istio-proxy] ",
        "[pod/sleep-6d68f6b8c5-x2x4p/istio-proxy] 2020-11-25T21:26:18.412345678Z ",
        "2020-11-25T21:26:18.412345678Z stdout F ",  # a node's CRI log file
    ],
)
def test_multi_line_json_entries_with_prefixes(prefix: str) -> None:
    text = "\n".join([_PRETTY, ISTIO_DOC_IN, _PRETTY, ""])
    lines = [(n, prefix + line) for n, line in _numbered(text)]
    rows, rejected = _split(list(parse_lines(lines)))
    assert rejected == []
    assert [r["response_code"] for r in rows] == [418, 418, 418]
    single = parse_access_log_line(ISTIO_JSON)
    assert rows[0] == single == rows[2]


def test_read_entries_line_numbers() -> None:
    n = _PRETTY.count("\n") + 1
    entries = list(read_entries(_numbered(_PRETTY + "\n\n" + _PRETTY)))
    assert [(e.first, e.last, e.lines, e.broken) for e in entries] == [
        (1, n, n, ""),
        (n + 2, 2 * n + 1, n, ""),
    ]


def test_interleaved_agent_line_inside_a_json_entry() -> None:
    # istio-agent writes to stderr, Envoy's access log to stdout: the runtime interleaves lines
    pretty = _PRETTY.split("\n")
    agent = "2020-11-25T21:26:19.000000Z\tinfo\tEnvoy proxy is ready"
    text = "\n".join([*pretty[:5], agent, ISTIO_DOC_OUT, *pretty[5:]])
    rows, rejected = _split(list(parse_lines(_numbered(text))))
    assert [r["response_code"] for r in rows] == [418, 418]
    assert [(r.first, r.reason) for r in rejected] == [(6, "not an access-log line")]


def test_interleaved_json_agent_line_inside_a_json_entry() -> None:
    pretty = _PRETTY.split("\n")
    agent = '{"level":"info","time":"2020-11-25T21:26:19.000000Z","msg":"Envoy proxy is ready"}'
    text = "\n".join([*pretty[:3], agent, *pretty[3:]])
    rows, rejected = _split(list(parse_lines(_numbered(text))))
    assert [r["response_code"] for r in rows] == [418]
    assert [(r.first, r.reason) for r in rejected] == [
        (
            4,
            "JSON object without access-log fields (start_time, method, response_code, "
            "upstream_cluster, ...)",
        )
    ]


def test_broken_entries_are_reported_and_lose_nothing_else() -> None:
    pretty = _PRETTY.split("\n")
    truncated = pretty[:6]  # the proxy was killed mid-entry, say
    text = "\n".join([*truncated, *pretty, ISTIO_JSON, *truncated])
    rows, rejected = _split(list(parse_lines(_numbered(text))))
    assert len(rows) == 2
    first, last = rejected
    assert (first.first, first.last, first.lines) == (1, 6, 6)
    assert first.reason == "JSON object not closed before line 7 starts another"
    start = 6 + len(pretty) + 2
    assert (last.first, last.last) == (start, start + 5)
    assert last.reason == "the input ended before the JSON object was closed"
    assert last.excerpt.startswith('"upstream_host"')


def test_an_unclosed_object_gives_up_after_max_lines() -> None:
    text = "\n".join(["{", *(f'"k{i}": {i},' for i in range(20)), ISTIO_JSON])
    entries = list(read_entries(_numbered(text), max_lines=10))
    assert entries[0].broken == "JSON object not closed within 10 lines"
    assert (entries[0].first, entries[0].last) == (1, 10)
    rows, rejected = _split([parse_entry(e) for e in entries])
    assert len(rows) == 1  # the entry after it
    assert [r.where for r in rejected] == ["1-10", *(str(n) for n in range(11, 22))]


def test_two_objects_on_one_line_and_crlf() -> None:
    text = ISTIO_JSON + ISTIO_JSON + "\r\n" + ISTIO_DOC_OUT + "\r\n"
    rows, rejected = _split(list(parse_lines(_numbered(text))))
    assert (len(rows), rejected) == (3, [])


def test_cri_partial_lines_are_joined() -> None:
    ts = "2020-11-25T21:26:18.412345678Z"
    half = len(ISTIO_DOC_OUT) // 2
    lines = [
        (1, f"{ts} stdout P {ISTIO_DOC_OUT[:half]}"),
        (2, f"{ts} stdout F {ISTIO_DOC_OUT[half:]}"),
        (3, f"{ts} stderr F info Envoy proxy is ready"),
    ]
    rows, rejected = _split(list(parse_lines(lines)))
    assert [r["response_code"] for r in rows] == [418]
    assert [(r.first, r.reason) for r in rejected] == [(3, "not an access-log line")]


def test_unquoted_operators_that_print_a_dash() -> None:
    # boeboe's format in istio/istio#12232 leaves %DURATION% etc. unquoted; Envoy prints "-"
    # for a value it does not have, e.g. %RESPONSE_DURATION% of a request with no response.
    line = ISTIO_JSON[:-1] + ', "response_duration": -, "note": "a: -, b"}'
    row = parse_access_log_line(line)
    assert row is not None and row["response_code"] == 418
    fields = parse_json_fields(line)
    assert fields is not None and fields["note"] == "a: -, b"
    assert fields["response_duration"] is None


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("hello world", "not an access-log line"),
        ("[2024-01-01 00:00:00.000][1][info][main] starting main dispatch loop", "not an acc"),
        ('[not-a-time] "GET / HTTP/1.1" 200 -', "start time 'not-a-time' is not an RFC 3339"),
        ('[2020-11-25T21:26:18.409Z] "GET /x HTTP/1.1" 200 - truncated', "not in Istio's"),
        ('{"level":"info","msg":"x"}', "JSON object without access-log fields"),
        ("[1, 2]", "not an access-log line"),
        ('{"method": "GET", "response_code": 200}', "no start_time field"),
        ('{"method": "GET", "start_time": "yesterday"}', "start_time 'yesterday' is not an RFC"),
        (
            '{"method": "GET", "start_time": "2024-01-01T00:00:00Z", "duration": "1E400"}',
            "duration '1E400' is out of range",
        ),
        ('{"method": "GET",\n "start_time": x}', "invalid JSON at line 2 column 16"),
    ],
)
def test_reasons(text: str, reason: str) -> None:
    (item,) = list(parse_lines(_numbered(text)))
    assert isinstance(item, Rejected)
    assert item.reason.startswith(reason), item.reason
    assert item.first == 1


def test_decode_lines_record_reads_multi_line_entries() -> None:
    payload = "\n".join([_PRETTY, "garbage", ISTIO_DOC_IN]).encode()
    t = decode_lines_record(Record(RecordKind.ACCESS_LOG_LINES, 0, payload, b"file.log"))
    assert t["requests"].num_rows == 2
