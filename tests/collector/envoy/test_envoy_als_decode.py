"""ALS v3 messages -> requests rows (no Envoy needed: messages built with our protos)."""

from __future__ import annotations

from pathlib import Path

import pytest
from google.protobuf import struct_pb2

from meshlens.collector.decode.envoy_als import (
    RESPONSE_FLAG_CODES,
    als_message_info,
    decode_als_record,
    response_flags_text,
)
from meshlens.collector.errors import DecodeError
from meshlens.collector.proto.gen import meshlens_als_pb2, meshlens_envoy_accesslog_pb2
from meshlens.collector.store.records import Record, RecordKind
from meshlens.collector.store.schema import REQUESTS

NODE_ID = "sidecar~10.0.0.7~productpage-v1-5f6b7c8d9-abcde.default~default.svc.cluster.local"


def _identifier() -> meshlens_als_pb2.StreamAccessLogsMessage.Identifier:
    ident = meshlens_als_pb2.StreamAccessLogsMessage.Identifier(log_name="http_envoy_accesslog")
    ident.node.id = NODE_ID
    ident.node.metadata.update(
        {
            "NAMESPACE": "default",
            "WORKLOAD_NAME": "productpage-v1",
            "SERVICE_ACCOUNT": "bookinfo-productpage",
            "LABELS": {"app": "productpage", "version": "v1"},
        }
    )
    return ident


def _record(msg: meshlens_als_pb2.StreamAccessLogsMessage, context: bytes = b"") -> Record:
    return Record(RecordKind.ENVOY_ALS, 1_700_000_000_000_000_000, msg.SerializeToString(), context)


def test_response_flag_codes_follow_field_numbers() -> None:
    fields = meshlens_envoy_accesslog_pb2.ResponseFlags.DESCRIPTOR.fields_by_name
    assert [fields[name].number for name, _ in RESPONSE_FLAG_CODES] == list(range(1, 28))


@pytest.mark.parametrize(
    ("set_fields", "expected"),
    [
        ((), "-"),
        (("no_healthy_upstream",), "UH"),
        (("upstream_connection_failure", "upstream_retry_limit_exceeded"), "UF,URX"),
        (("downstream_connection_termination",), "DC"),
        (("no_route_found",), "NR"),
        (("rate_limited",), "RL"),
        (("upstream_request_timeout",), "UT"),
        (("dns_resolution_failure",), "DF"),
    ],
)
def test_response_flags_text(set_fields: tuple[str, ...], expected: str) -> None:
    flags = meshlens_envoy_accesslog_pb2.ResponseFlags()
    for f in set_fields:
        setattr(flags, f, True)
    assert response_flags_text(flags) == expected


def test_unauthorized_is_uaex() -> None:
    flags = meshlens_envoy_accesslog_pb2.ResponseFlags()
    flags.unauthorized_details.reason = flags.Unauthorized.EXTERNAL_SERVICE
    assert response_flags_text(flags) == "UAEX"


def test_http_entries_with_identifier_from_context() -> None:
    msg = meshlens_als_pb2.StreamAccessLogsMessage()  # a later message: no identifier
    e = msg.http_logs.log_entry.add()
    c = e.common_properties
    c.upstream_cluster = "outbound|9080|v2|reviews.default.svc.cluster.local"
    c.start_time.FromMilliseconds(1_700_000_000_123)
    c.duration.FromMilliseconds(42)
    c.downstream_remote_address.socket_address.address = "10.0.0.7"
    peer = struct_pb2.Struct()
    peer.update(
        {
            "workload": "reviews-v2",
            "namespace": "default",
            "service": "reviews",
            "revision": "v2",
            "version": "v2",
        }
    )
    c.filter_state_objects["upstream_peer"].Pack(peer)
    e.request.request_method = 3  # POST
    e.request.path = "/reviews.Reviews/Get"
    e.request.authority = "reviews:9080"
    e.request.request_id = "rid-1"
    e.request.request_body_bytes = 12
    e.request.request_headers["content-type"] = "application/grpc"
    e.request.request_headers["traceparent"] = (
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    )
    e.response.response_code.value = 200
    e.response.response_body_bytes = 34
    e.response.response_trailers["grpc-status"] = "14"
    t = decode_als_record(_record(msg, _identifier().SerializeToString()))["requests"]
    assert t.schema == REQUESTS
    (row,) = t.to_pylist()
    assert row["reporter"] == "source"
    assert row["protocol"] == "grpc"
    assert row["grpc_status"] == "14"
    assert row["method"] == "POST"
    assert row["duration_ms"] == 42.0
    assert row["ts"].timestamp() == pytest.approx(1_700_000_000.123)
    assert (row["source_workload"], row["source_canonical_service"], row["source_version"]) == (
        "productpage-v1",
        "productpage",
        "v1",
    )
    assert row["source_principal"] == "spiffe://cluster.local/ns/default/sa/bookinfo-productpage"
    assert (
        row["destination_workload"],
        row["destination_canonical_service"],
        row["destination_version"],
    ) == ("reviews-v2", "reviews", "v2")
    assert row["destination_service"] == "reviews.default.svc.cluster.local"
    assert (row["request_bytes"], row["response_bytes"]) == (12, 34)
    assert row["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert row["request_id"] == "rid-1"
    assert row["node_id"] == NODE_ID
    assert row["origin"] == "envoy_als"
    assert row["mtls"] is None
    assert row["destination_port"] == 9080


def test_tcp_entries_and_own_identifier() -> None:
    msg = meshlens_als_pb2.StreamAccessLogsMessage()
    msg.identifier.CopyFrom(_identifier())
    e = msg.tcp_logs.log_entry.add()
    c = e.common_properties
    c.upstream_cluster = "inbound|3306||"
    c.tls_properties.local_certificate_properties.subject_alt_name.add().uri = (
        "spiffe://cluster.local/ns/default/sa/mysql"
    )
    c.tls_properties.peer_certificate_properties.subject_alt_name.add().uri = (
        "spiffe://cluster.local/ns/default/sa/ratings"
    )
    c.tls_properties.tls_sni_hostname = "outbound_.3306_._.mysql.default.svc.cluster.local"
    c.response_flags.upstream_connection_failure = True
    e.connection_properties.received_bytes = 100
    e.connection_properties.sent_bytes = 200
    (row,) = decode_als_record(_record(msg))["requests"].to_pylist()
    assert row["protocol"] == "tcp"
    assert row["reporter"] == "destination"
    assert row["response_code"] == 0
    assert row["response_flags"] == "UF"
    assert (row["request_bytes"], row["response_bytes"]) == (100, 200)
    assert row["mtls"] is True
    assert row["source_principal"] == "spiffe://cluster.local/ns/default/sa/ratings"
    assert row["destination_principal"] == "spiffe://cluster.local/ns/default/sa/mysql"
    assert row["destination_service"] == "mysql.default.svc.cluster.local"
    # no start time: the record's receive time
    assert row["ts"].timestamp() == pytest.approx(1_700_000_000.0)
    assert row["method"] is None


def test_unknown_node_gives_unknown_not_null() -> None:
    msg = meshlens_als_pb2.StreamAccessLogsMessage()
    msg.http_logs.log_entry.add().common_properties.upstream_cluster = "inbound|80||"
    t = decode_als_record(_record(msg))["requests"]
    row = t.to_pylist()[0]
    for col in (
        "source_workload",
        "destination_workload",
        "destination_service",
        "node_id",
        "source_principal",
        "destination_principal",
    ):
        assert row[col] == "unknown", col
    assert row["response_flags"] == "-"
    assert row["grpc_status"] == ""


def test_message_info_and_errors() -> None:
    msg = meshlens_als_pb2.StreamAccessLogsMessage()
    msg.identifier.CopyFrom(_identifier())
    for _ in range(3):
        msg.http_logs.log_entry.add()
    ident, n = als_message_info(msg.SerializeToString())
    assert n == 3
    assert ident is not None
    got = meshlens_als_pb2.StreamAccessLogsMessage.Identifier.FromString(ident)
    assert got == _identifier()
    assert als_message_info(b"") == (None, 0)
    with pytest.raises(DecodeError, match="envoy ALS message"):
        als_message_info(b"\x0a\xff\xff")
    with pytest.raises(DecodeError, match="envoy ALS message"):
        decode_als_record(Record(RecordKind.ENVOY_ALS, 0, b"\x12\x05abc"))
    with pytest.raises(DecodeError, match="identifier"):
        decode_als_record(Record(RecordKind.ENVOY_ALS, 0, b"", b"\x0a\xff"))


def test_intermediate_entries_are_skipped() -> None:
    msg = meshlens_als_pb2.StreamAccessLogsMessage()
    for intermediate in (True, True, False):
        e = msg.tcp_logs.log_entry.add()
        e.common_properties.upstream_cluster = "outbound|3306||mysql.db.svc.cluster.local"
        e.common_properties.intermediate_log_entry = intermediate
        e.connection_properties.received_bytes = 10
    t = decode_als_record(_record(msg))["requests"]
    assert t.num_rows == 1


def test_our_protos_leave_opentelemetry_protos_intact() -> None:
    # the xds-protos trap: an old opentelemetry copy overwrote the current one
    from opentelemetry.proto.trace.v1 import trace_pb2

    from meshlens.collector.proto.gen import meshlens_als_pb2_grpc

    assert "scope_spans" in trace_pb2.ResourceSpans.DESCRIPTOR.fields_by_name
    assert hasattr(meshlens_als_pb2_grpc, "AccessLogServiceServicer")
    svc = meshlens_als_pb2.DESCRIPTOR.services_by_name["AccessLogService"]
    assert svc.full_name == "envoy.service.accesslog.v3.AccessLogService"
    method = svc.methods_by_name["StreamAccessLogs"]
    assert method.client_streaming and not method.server_streaming


def test_generated_code_is_current(tmp_path: Path) -> None:
    from meshlens.collector.proto import generate

    generate.generate(tmp_path)
    gen = Path(generate.GEN)
    for produced in (tmp_path / generate.PACKAGE_PATH).iterdir():
        assert produced.read_text() == (gen / produced.name).read_text(), (
            f"{produced.name} is stale: run `make proto`"
        )
