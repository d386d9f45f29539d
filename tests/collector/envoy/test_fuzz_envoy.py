"""Hostile input never crashes the Envoy decoders: a DecodeError or rows, nothing else."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshlens.collector.decode.access_log_text import parse_access_log_line
from meshlens.collector.decode.envoy_als import als_message_info, decode_als_record
from meshlens.collector.decode.identity import parse_upstream_cluster, peer_from_header
from meshlens.collector.decode.otel_als import otel_access_log_to_request
from meshlens.collector.errors import DecodeError
from meshlens.collector.proto.gen import meshlens_als_pb2
from meshlens.collector.store.records import Record, RecordKind
from tests.collector.envoy.test_access_log_text import ISTIO_DOC_IN, ISTIO_JSON

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(st.binary(max_size=400), st.binary(max_size=60))
def test_als_random_bytes(payload: bytes, context: bytes) -> None:
    try:
        out = decode_als_record(Record(RecordKind.ENVOY_ALS, 1, payload, context))
    except DecodeError:
        return
    assert out["requests"].column("reporter").null_count == 0


def _valid_message() -> bytes:
    msg = meshlens_als_pb2.StreamAccessLogsMessage()
    e = msg.http_logs.log_entry.add()
    e.common_properties.upstream_cluster = "inbound|9080||"
    e.common_properties.tls_properties.peer_certificate_properties.subject_alt_name.add().uri = (
        "spiffe://cluster.local/ns/default/sa/x"
    )
    e.request.request_headers["x-envoy-peer-metadata"] = "bm90IGEgc3RydWN0"
    e.response.response_code.value = 200
    return msg.SerializeToString()


@FAST
@given(st.integers(min_value=0, max_value=200), st.integers(min_value=0, max_value=255))
def test_als_bit_flips(position: int, value: int) -> None:
    raw = bytearray(_valid_message())
    raw[position % len(raw)] = value
    try:
        als_message_info(bytes(raw))
        decode_als_record(Record(RecordKind.ENVOY_ALS, 1, bytes(raw)))
    except DecodeError:
        pass


@FAST
@given(st.text(max_size=300))
def test_text_lines_never_raise(line: str) -> None:
    row = parse_access_log_line(line)
    assert row is None or row["ts"] is not None


@FAST
@given(st.integers(min_value=0, max_value=len(ISTIO_DOC_IN) - 1), st.text(max_size=5))
def test_mutated_istio_lines(position: int, insert: str) -> None:
    for base in (ISTIO_DOC_IN, ISTIO_JSON):
        p = position % len(base)
        parse_access_log_line(base[:p] + insert + base[p + 1 :])


@FAST
@given(
    st.text(max_size=80), st.dictionaries(st.text(max_size=10), st.text(max_size=20), max_size=5)
)
def test_otel_records_never_raise(body: str, attrs: dict[str, str]) -> None:
    otel_access_log_to_request(body, attrs, attrs, 1)


@FAST
@given(st.text(max_size=80))
def test_identity_parsers_never_raise(text: str) -> None:
    parse_upstream_cluster(text)
    peer_from_header(text)
