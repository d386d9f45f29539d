"""The C wire decoder (collector/decode/_als_wire.c via envoy_als_fast) held to the reference.

`envoy_als_fast.fast_table(records)` must give exactly the `requests` table of the pure-Python
decoder (`envoy_als.als_columns_tables(...)["requests"]`), or None (a decline: the batch then
goes to the reference). Covered: realistic Istio messages (client and server side, mTLS,
passthrough, peer metadata in filter state and headers, TCP), hand-made wire data it must
decline, random messages (hypothesis) and a few thousand byte-level mutants.

Documented leniency: the C side does not validate fields it does not read (UTF-8 of strings it
skips, nested messages it keeps raw), so for a batch the reference rejects with DecodeError it
may still return a table (the receiver validates every message with upb before it is stored).
It must never crash, and never raise anything but DecodeError for bad wire data.
"""

from __future__ import annotations

import base64
import importlib
import random
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

import pyarrow as pa
import pytest
from google.protobuf import struct_pb2, wrappers_pb2
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from meshlens.collector.decode import envoy_als, envoy_als_fast, limits, registry
from meshlens.collector.errors import DecodeError
from meshlens.collector.proto.gen import meshlens_als_pb2, meshlens_envoy_accesslog_pb2
from meshlens.collector.store.parquet_write import conform
from meshlens.collector.store.records import Record, RecordKind
from meshlens.collector.store.schema import REQUESTS
from meshlens.collector.store.wal_to_parquet import decode_all

Message = meshlens_als_pb2.StreamAccessLogsMessage
Identifier = Message.Identifier
HTTPEntry = meshlens_envoy_accesslog_pb2.HTTPAccessLogEntry
TCPEntry = meshlens_envoy_accesslog_pb2.TCPAccessLogEntry

BUILD_HINT = (
    "the ALS wire decoder (collector/decode/_als_wire.c) is not built: run `make` or "
    "`.venv/bin/python -m pip install -q --no-deps --no-build-isolation -e .` "
    "(needs a C compiler and the Python headers)"
)
needs_c = pytest.mark.skipif(not envoy_als_fast.AVAILABLE, reason=BUILD_HINT)

RECEIVED_NS = 1_764_000_000_123_456_789
T0_MS = 1_764_000_000_000
OUTBOUND_REVIEWS = "outbound|9080|v1|reviews.default.svc.cluster.local"
OUTBOUND_RATINGS = "outbound|9080|v2|ratings.default.svc.cluster.local"
INBOUND = "inbound|9080||"
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
SPIFFE_REVIEWS = "spiffe://cluster.local/ns/default/sa/bookinfo-reviews"
SPIFFE_PRODUCTPAGE = "spiffe://cluster.local/ns/default/sa/bookinfo-productpage"
SNI_REVIEWS = "outbound_.9080_.v1_.reviews.default.svc.cluster.local"
FLAG_FIELDS = tuple(name for name, _ in envoy_als.RESPONSE_FLAG_CODES)


def _wire() -> ModuleType:
    wire = envoy_als_fast._wire
    assert wire is not None, BUILD_HINT
    return wire


# ---- building messages --------------------------------------------------------------------


def _identifier(node_id: str, metadata: dict[str, Any] | None = None) -> Any:
    ident = Identifier(log_name="http_envoy_accesslog")
    ident.node.id = node_id
    if metadata is not None:
        ident.node.metadata.update(metadata)
    return ident


REVIEWS = _identifier(
    "sidecar~10.0.0.7~reviews-v1-5f6b7c8d9-abcde.default~default.svc.cluster.local",
    {
        "NAMESPACE": "default",
        "WORKLOAD_NAME": "reviews-v1",
        "SERVICE_ACCOUNT": "bookinfo-reviews",
        "LABELS": {"app": "reviews", "version": "v1"},
        "MESH_ID": "cluster.local",
        "CLUSTER_ID": "Kubernetes",
    },
)
# node id only (no metadata): namespace and pod come from the id
PRODUCTPAGE = _identifier(
    "sidecar~10.0.0.9~productpage-v1-6b746f74dc-9stvs.default~default.svc.cluster.local"
)
GATEWAY = _identifier(
    "router~10.0.3.1~istio-ingressgateway-5d9f7c9b8-x2x7q.istio-system"
    "~istio-system.svc.cluster.local",
    {"NAMESPACE": "istio-system", "SERVICE_ACCOUNT": "ingress", "TRUST_DOMAIN": "example.org"},
)
IDENTIFIERS = (REVIEWS, PRODUCTPAGE, GATEWAY)
CONTEXTS = (b"", *(i.SerializeToString() for i in IDENTIFIERS))


def _struct(fields: dict[str, Any]) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    s.update(fields)
    return s


# Istio peer metadata in its two key schemes (identity.peer_from_mapping).
PEER_TOKENS = {
    "workload": "ratings-v1",
    "namespace": "default",
    "service": "ratings",
    "revision": "v1",
    "version": "v1",
    "name": "ratings-v1-7d8f9c6b5-k2x9z",
    "cluster": "Kubernetes",
    "identity": "spiffe://cluster.local/ns/default/sa/bookinfo-ratings",
}
PEER_NODE = {
    "NAMESPACE": "default",
    "WORKLOAD_NAME": "productpage-v1",
    "NAME": "productpage-v1-6b746f74dc-9stvs",
    "LABELS": {
        "app": "productpage",
        "version": "v1",
        "service.istio.io/canonical-name": "productpage",
    },
    "CLUSTER_ID": "Kubernetes",
}
STRUCT_URL = "type.googleapis.com/google.protobuf.Struct"
STRING_URL = "type.googleapis.com/google.protobuf.StringValue"
BYTES_URL = "type.googleapis.com/google.protobuf.BytesValue"
# (type_url, value) of filter-state objects as Envoy logs them.
PEER_ANYS: tuple[tuple[str, bytes], ...] = (
    (STRUCT_URL, _struct(PEER_TOKENS).SerializeToString()),
    (STRUCT_URL, _struct(PEER_NODE).SerializeToString()),
    (STRUCT_URL, b""),
    (STRUCT_URL, b"\xff\xff"),  # undecodable: no peer
    (
        STRING_URL,
        wrappers_pb2.StringValue(
            value="namespace=default,workload=details-v1,service=details,version=v1"
        ).SerializeToString(),
    ),
    (
        BYTES_URL,
        wrappers_pb2.BytesValue(value=_struct(PEER_TOKENS).SerializeToString()).SerializeToString(),
    ),
    # the FlatBuffers FlatNode of the old Wasm metadata exchange: not decoded
    ("type.googleapis.com/envoy.extensions.filters.common.expr.v3.CelState", b"\x10\x00\x0cfb"),
)
MX_NODE = base64.b64encode(_struct(PEER_NODE).SerializeToString()).decode()
MX_TOKENS = base64.b64encode(_struct(PEER_TOKENS).SerializeToString()).decode()


def _set_any(common: Any, key: str, peer: tuple[str, bytes]) -> None:
    obj = common.filter_state_objects[key]
    obj.type_url, obj.value = peer


def _socket(addr: Any, host: str, port: int | None) -> None:
    addr.socket_address.address = host
    if port is not None:
        addr.socket_address.port_value = port


def _http(msg: Any, cluster: str = OUTBOUND_REVIEWS, i: int = 0) -> Any:
    """A typical sidecar HTTP entry (tests change what they are about)."""
    e = msg.http_logs.log_entry.add()
    c = e.common_properties
    c.upstream_cluster = cluster
    c.start_time.FromMilliseconds(T0_MS + 7 * i)
    c.duration.FromNanoseconds(3_000_000 + 1_001 * i)
    c.time_to_last_downstream_tx_byte.FromNanoseconds(2_000_000 + i)
    _socket(c.downstream_remote_address, f"10.0.0.{9 + i}", 40000 + i)
    _socket(c.downstream_local_address, "10.96.12.7", 9080)
    _socket(c.upstream_remote_address, f"10.0.1.{i}", 9080)
    _socket(c.upstream_local_address, "10.0.0.7", 50000 + i)
    c.route_name = "default"
    e.protocol_version = HTTPEntry.HTTP11
    e.request.request_method = 1  # GET
    e.request.scheme = "http"
    e.request.authority = "reviews:9080"
    e.request.path = f"/reviews/{i}"
    e.request.user_agent = "python-requests/2.32.3"
    e.request.request_headers_bytes = 420
    e.response.response_code.value = 200
    e.response.response_headers_bytes = 180
    e.response.response_body_bytes = 300 + i
    e.response.response_code_details = "via_upstream"
    return e


def _tcp(msg: Any, cluster: str, i: int = 0) -> Any:
    e = msg.tcp_logs.log_entry.add()
    c = e.common_properties
    c.upstream_cluster = cluster
    c.start_time.FromMilliseconds(T0_MS + 11 * i)
    c.duration.FromMilliseconds(1500 + i)
    _socket(c.downstream_remote_address, f"10.0.2.{i}", 41000 + i)
    _socket(c.downstream_local_address, "10.96.0.20", 3306)
    _socket(c.upstream_remote_address, f"10.0.3.{i}", 3306)
    e.connection_properties.received_bytes = 1000 + i
    e.connection_properties.sent_bytes = 5000 + i
    return e


def _mtls(common: Any, local: str, peer: str | None, sni: str = SNI_REVIEWS) -> None:
    tls = common.tls_properties
    tls.tls_version = tls.TLSv1_3
    tls.local_certificate_properties.subject_alt_name.add(uri=local)
    tls.local_certificate_properties.subject_alt_name.add(dns="reviews.default.svc")
    if peer is not None:
        tls.peer_certificate_properties.subject_alt_name.add(dns="productpage.default.svc")
        tls.peer_certificate_properties.subject_alt_name.add(uri=peer)
    tls.tls_sni_hostname = sni


def _record(msg: Any, context: bytes = b"", received_ns: int = RECEIVED_NS) -> Record:
    payload = msg if isinstance(msg, bytes) else msg.SerializeToString()
    return Record(RecordKind.ENVOY_ALS, received_ns, payload, context)


# raw wire pieces, for what the protobuf API cannot build
def _varint(v: int) -> bytes:
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _tag(field: int, wire_type: int) -> bytes:
    return _varint(field << 3 | wire_type)


def _len_field(field: int, data: bytes) -> bytes:
    return _tag(field, 2) + _varint(len(data)) + data


# ---- comparing ----------------------------------------------------------------------------


def _reference(records: Sequence[Record]) -> pa.Table:
    envoy_als._RESOLVED.clear()  # each side resolves identity itself
    parts = [envoy_als.als_record_columns(r) for r in records]
    table: pa.Table = envoy_als.als_columns_tables(parts)["requests"]
    return table


def _fast(records: Sequence[Record]) -> pa.Table | None:
    envoy_als._RESOLVED.clear()
    table = envoy_als_fast.fast_table(records)
    if table is not None:
        table.validate(full=True)  # the buffers the C side built are well-formed Arrow
    return table


def _difference(ref: pa.Table, fast: pa.Table) -> str:
    if not ref.schema.equals(fast.schema):
        return f"schemas differ:\nreference {ref.schema}\nC {fast.schema}"
    if ref.num_rows != fast.num_rows:
        return f"rows: reference {ref.num_rows}, C {fast.num_rows}"
    for name in ref.column_names:
        a, b = ref.column(name).to_pylist(), fast.column(name).to_pylist()
        rows = [i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y]
        if rows:
            i = rows[0]
            return (
                f"column {name!r} differs in {len(rows)} of {len(a)} rows; "
                f"first at row {i}: reference {a[i]!r}, C {b[i]!r}"
            )
    return "tables differ, though no column differs as Python values"


def assert_same(records: Sequence[Record]) -> pa.Table:
    """The C path decodes the batch (no decline) to exactly the reference's table."""
    ref = _reference(records)
    fast = _fast(records)
    assert fast is not None, "the C decoder declined a batch it should decode"
    assert ref.equals(fast), _difference(ref, fast)
    return ref


def _outcome(fn: Callable[[], pa.Table | None]) -> tuple[pa.Table | None, Exception | None]:
    try:
        return fn(), None
    except Exception as exc:  # compared below
        return None, exc


def check_batch(records: Sequence[Record]) -> str:
    """What may happen to any batch: the C path declines (None), or gives the reference's
    table; for a batch the reference rejects with DecodeError it may decline, raise
    DecodeError, or (leniency) give a table; nothing else. Returns what happened."""
    ref, ref_exc = _outcome(lambda: _reference(records))
    fast, fast_exc = _outcome(lambda: _fast(records))
    if fast_exc is not None:
        if isinstance(fast_exc, DecodeError):
            assert isinstance(ref_exc, DecodeError), (
                f"fast_table raised {fast_exc!r}; the reference gave {ref_exc!r}"
            )
            return "both DecodeError"
        # a Python-side failure both share (e.g. a cluster port over int32)
        assert ref_exc is not None and type(fast_exc) is type(ref_exc), (
            f"fast_table raised {type(fast_exc).__module__}.{fast_exc!r}; "
            f"the reference gave {ref_exc!r}"
        )
        return "both raised"
    if fast is None:
        return "declined"
    if ref_exc is None:
        assert ref is not None
        assert ref.equals(fast), _difference(ref, fast)
        return "equal"
    assert isinstance(ref_exc, DecodeError), (
        f"C decoded a batch the reference fails on with {ref_exc!r}"
    )
    return "lenient"


# ---- 1. built -----------------------------------------------------------------------------


def test_extension_is_built() -> None:
    assert envoy_als_fast.AVAILABLE, BUILD_HINT


@needs_c
def test_decode_checks_its_arguments() -> None:
    wire = _wire()
    with pytest.raises(ValueError, match="differ in length"):
        wire.decode([b""], [], [0])
    with pytest.raises(TypeError, match="not bytes"):
        wire.decode(["text"], [0], [0])
    out = wire.decode([], [], [])
    assert out is not None and out["rows"] == 0


# ---- 2. realistic and varied messages -----------------------------------------------------

SCENARIOS: dict[str, Callable[[], list[Record]]] = {}
# a few facts each scenario's reference table must show (so the scenario tests what it says)
EXPECT: dict[str, Callable[[pa.Table], bool]] = {}


def scenario(
    expect: Callable[[pa.Table], bool] | None = None,
) -> Callable[[Callable[[], list[Record]]], Callable[[], list[Record]]]:
    def register(fn: Callable[[], list[Record]]) -> Callable[[], list[Record]]:
        SCENARIOS[fn.__name__] = fn
        if expect is not None:
            EXPECT[fn.__name__] = expect
        return fn

    return register


def _col(t: pa.Table, name: str) -> list[Any]:
    values: list[Any] = t.column(name).to_pylist()
    return values


@scenario(
    lambda t: (
        _col(t, "reporter") == ["source"] * 5
        and "ratings-v1" in _col(t, "destination_workload")
        and "productpage-v1" in _col(t, "destination_workload")
    )
)
def client_side_http() -> list[Record]:
    msg = Message()
    e = _http(msg, OUTBOUND_REVIEWS, 0)  # upstream_peer as a Struct of metadata tokens
    _set_any(e.common_properties, "upstream_peer", PEER_ANYS[0])
    _set_any(e.common_properties, "envoy.network.upstream_server_name", (STRING_URL, b"\n\x01x"))
    e.request.request_headers["traceparent"] = TRACEPARENT
    e.request.request_headers["x-request-id"] = "680259d7-d074-98b1-9055-0d00d7552302"
    e = _http(msg, OUTBOUND_RATINGS, 1)  # StringValue pairs; request_id field wins
    _set_any(e.common_properties, "upstream_peer", PEER_ANYS[4])
    _set_any(e.common_properties, "downstream_peer", PEER_ANYS[1])
    e.request.request_id = "rid-field"
    e.request.request_headers["x-request-id"] = "rid-header"
    e = _http(msg, "outbound|9080||productpage.default.svc.cluster.local", 2)
    e.response.response_headers["x-envoy-peer-metadata"] = MX_NODE  # peer from the header
    e.request.request_headers["x-envoy-peer-metadata-id"] = "sidecar~10.0.0.9~x.default~d"
    e = _http(msg, OUTBOUND_REVIEWS, 3)  # the first entry's identity again (same key)
    _set_any(e.common_properties, "envoy.network.upstream_server_name", (STRING_URL, b"\n\x01x"))
    _set_any(e.common_properties, "upstream_peer", PEER_ANYS[0])
    e = _http(msg, OUTBOUND_REVIEWS, 4)  # wasm FlatNode: not decoded, unknown peer
    _set_any(e.common_properties, "wasm.upstream_peer", PEER_ANYS[6])
    return [_record(msg, REVIEWS.SerializeToString())]


@scenario(
    lambda t: (
        _col(t, "reporter").count("destination") == 6
        and _col(t, "mtls")[:3] == [True, False, True]
        and SPIFFE_PRODUCTPAGE in _col(t, "source_principal")
    )
)
def server_side_mtls_http() -> list[Record]:
    msg = Message()
    e = _http(msg, INBOUND, 0)
    _mtls(e.common_properties, SPIFFE_REVIEWS, SPIFFE_PRODUCTPAGE)
    _set_any(e.common_properties, "downstream_peer", PEER_ANYS[1])
    e.request.request_headers["x-envoy-peer-metadata"] = MX_NODE
    e = _http(msg, INBOUND, 1)  # TLS without a peer certificate: not mTLS
    _mtls(e.common_properties, SPIFFE_REVIEWS, None, sni="")
    e.request.authority = "reviews"
    e = _http(msg, "", 2)  # no cluster (UH before connect) but a peer cert: inbound
    _mtls(e.common_properties, SPIFFE_REVIEWS, SPIFFE_PRODUCTPAGE)
    e.common_properties.response_flags.no_healthy_upstream = True
    e.response.response_code.value = 503
    e = _http(msg, "inbound-vip|9080|http|reviews.default.svc.cluster.local", 3)
    _mtls(e.common_properties, SPIFFE_REVIEWS, SPIFFE_PRODUCTPAGE, sni="")
    e.common_properties.tls_properties.peer_certificate_properties.subject = "CN=productpage"
    e.request.request_headers["x-envoy-peer-metadata"] = MX_TOKENS
    e = _http(msg, INBOUND, 4)  # header mx only, no TLS properties at all
    e.request.request_headers["x-envoy-peer-metadata"] = "not base64!"
    e = _http(msg, INBOUND, 5)  # downstream_peer in a BytesValue holding a Struct
    _mtls(e.common_properties, SPIFFE_REVIEWS, "spiffe://example.org/ns/shop/sa/cart")
    _set_any(e.common_properties, "downstream_peer", PEER_ANYS[5])
    _set_any(e.common_properties, "upstream_peer", PEER_ANYS[3])
    return [_record(msg, REVIEWS.SerializeToString())]


@scenario(
    lambda t: (
        len(set(_col(t, "destination_service"))) >= 5
        and "10.1.0.2" in _col(t, "destination_service")
    )
)
def passthrough_and_blackhole() -> list[Record]:
    msg = Message()
    hosts = ("10.1.0.1", "10.1.0.2", "10.1.0.1", "93.184.216.34", "")
    for i, (cluster, host) in enumerate(
        [("PassthroughCluster", h) for h in hosts]
        + [("BlackHoleCluster", h) for h in ("10.2.0.1", "10.2.0.2")]
        + [(" PassthroughCluster ", "10.3.0.1"), ("InboundPassthroughClusterIpv4", "10.3.0.2")]
    ):
        e = _http(msg, cluster, i)
        e.request.authority = ""
        c = e.common_properties
        c.upstream_remote_address.socket_address.address = host
        if i == 4:
            c.upstream_remote_address.pipe.path = "/var/run/up.sock"  # no socket address
    e = _http(msg, "PassthroughCluster", 20)
    e.request.authority = "httpbin.org"
    e = _http(msg, "PassthroughCluster", 21)  # no port anywhere: destination_port null
    e.request.authority = ""
    e.common_properties.ClearField("downstream_local_address")
    return [_record(msg, PRODUCTPAGE.SerializeToString())]


@scenario(lambda t: set(_col(t, "protocol")) == {"tcp"} and t.num_rows == 6)
def tcp_entries() -> list[Record]:
    msg = Message()
    _tcp(msg, "outbound|3306||mysql.default.svc.cluster.local", 0)
    e = _tcp(msg, "inbound|3306||", 1)
    _mtls(e.common_properties, SPIFFE_REVIEWS, SPIFFE_PRODUCTPAGE, "outbound_.3306_._.mysql")
    _set_any(e.common_properties, "downstream_peer", PEER_ANYS[0])
    e = _tcp(msg, "PassthroughCluster", 2)
    e.common_properties.connection_termination_details = "idle timeout"
    e.common_properties.response_flags.upstream_connection_failure = True
    e = _tcp(msg, "PassthroughCluster", 3)  # periodic flush of a long connection: skipped
    e.common_properties.intermediate_log_entry = True
    e = _tcp(msg, "BlackHoleCluster", 4)
    e.ClearField("connection_properties")
    _tcp(msg, "", 5).common_properties.ClearField("start_time")
    e = _tcp(msg, "outbound|27017||mongo.db.svc.cluster.local", 6)
    _set_any(e.common_properties, "upstream_peer", PEER_ANYS[1])
    return [_record(msg, GATEWAY.SerializeToString())]


@scenario(lambda t: "UAEX" in _col(t, "response_flags") and "UF,URX" in _col(t, "response_flags"))
def response_flags() -> list[Record]:
    msg = Message()
    combos: list[tuple[str, ...]] = [
        (),
        ("no_healthy_upstream",),
        ("upstream_connection_failure", "upstream_retry_limit_exceeded"),
        ("unauthorized_details",),
        ("rate_limited", "unauthorized_details", "dns_resolution_failure"),
        FLAG_FIELDS,
        ("downstream_connection_termination", "local_reset", "stream_idle_timeout"),
    ]
    for i, combo in enumerate(combos):
        flags = _http(msg, OUTBOUND_REVIEWS, i).common_properties.response_flags
        flags.SetInParent()  # present, maybe with no flag set: '-'
        for name in combo:
            if name == "unauthorized_details":
                flags.unauthorized_details.SetInParent()
                flags.unauthorized_details.reason = i % 2
            else:
                setattr(flags, name, True)
    _http(msg, OUTBOUND_REVIEWS, 9).common_properties.ClearField("response_flags")
    return [_record(msg, REVIEWS.SerializeToString())]


@scenario(lambda t: None in _col(t, "duration_ms") and len(set(_col(t, "ts"))) >= 3)
def durations_and_start_times() -> list[Record]:
    msg = Message()
    _http(msg, OUTBOUND_REVIEWS, 0)  # duration
    c = _http(msg, OUTBOUND_REVIEWS, 1).common_properties  # only time_to_last_downstream_tx
    c.ClearField("duration")
    c = _http(msg, OUTBOUND_REVIEWS, 2).common_properties  # neither
    c.ClearField("duration")
    c.ClearField("time_to_last_downstream_tx_byte")
    c = _http(msg, OUTBOUND_REVIEWS, 3).common_properties  # no start: the receive time
    c.ClearField("start_time")
    c = _http(msg, OUTBOUND_REVIEWS, 4).common_properties
    c.start_time.seconds, c.start_time.nanos = 1_764_000_000, 999_999_999
    c.duration.seconds, c.duration.nanos = 86_400 * 365, 123_456_789
    c = _http(msg, OUTBOUND_REVIEWS, 5).common_properties  # present but zero: receive time too
    c.start_time.SetInParent()
    c.start_time.seconds = 0
    c.start_time.nanos = 0
    c.duration.SetInParent()
    c.duration.seconds, c.duration.nanos = 0, 0
    c = _http(msg, OUTBOUND_REVIEWS, 6).common_properties  # sub-microsecond nanos
    c.start_time.seconds, c.start_time.nanos = 1_764_000_001, 999
    c.duration.seconds, c.duration.nanos = 0, 1
    c = _http(msg, OUTBOUND_REVIEWS, 7).common_properties  # before the epoch
    c.start_time.seconds, c.start_time.nanos = -1, 500_000_000
    c = _http(msg, OUTBOUND_REVIEWS, 8).common_properties
    c.intermediate_log_entry = True  # skipped
    c = _http(msg, OUTBOUND_REVIEWS, 9).common_properties
    c.intermediate_log_entry = False
    return [_record(msg, REVIEWS.SerializeToString(), received_ns=1_700_000_000_987_654_321)]


@scenario(
    lambda t: (
        _col(t, "protocol") == ["grpc"] * 5 + ["http"] * 2
        and _col(t, "grpc_status")[:3] == ["14", "0", ""]
    )
)
def grpc_detection() -> list[Record]:
    msg = Message()
    e = _http(msg, OUTBOUND_RATINGS, 0)  # trailers
    e.response.response_trailers["grpc-status"] = "14"
    e.response.response_headers["grpc-status"] = "0"
    e = _http(msg, OUTBOUND_RATINGS, 1)  # response header (trailers-only reply)
    e.response.response_headers["grpc-status"] = "0"
    e.response.response_trailers["grpc-status"] = ""
    e = _http(msg, OUTBOUND_RATINGS, 2)  # request content-type
    e.request.request_headers["content-type"] = "application/grpc"
    e = _http(msg, OUTBOUND_RATINGS, 3)  # response content-type
    e.request.request_headers["content-type"] = ""
    e.response.response_headers["content-type"] = "application/grpc+proto"
    e = _http(msg, OUTBOUND_RATINGS, 4)  # request content-type wins over the response one
    e.request.request_headers["content-type"] = "application/grpc-web"
    e.response.response_headers["content-type"] = "text/html"
    e = _http(msg, OUTBOUND_RATINGS, 5)
    e.request.request_headers["content-type"] = "application/json"
    e.response.response_headers["content-type"] = "application/grpc"
    e = _http(msg, OUTBOUND_RATINGS, 6)
    e.response.response_trailers["other"] = "x"
    return [_record(msg, REVIEWS.SerializeToString())]


TRACE_HEADERS: list[dict[str, str]] = [
    {"traceparent": TRACEPARENT},
    {"traceparent": TRACEPARENT.upper()},
    {"traceparent": "00-4bf92f3577b34da6-00f067aa0ba902b7-01", "x-b3-traceid": "abc"},  # short
    {"traceparent": "garbage", "b3": "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1"},
    {"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7"},  # 3 parts
    {"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-x-01-extra-parts"},
    {"x-b3-traceid": "463AC35C9F6413AD"},  # 64-bit, uppercase: padded, lowered
    {"x-b3-traceid": "463ac35c9f6413ad48485a3953bb6124"},
    {"x-b3-traceid": "0123456789abcdef0123456789abcdef01"},  # over 32: kept
    {"b3": "a3ce929d0e0e4736-00f067aa0ba902b7-1-05e3ac9a4f6e3b90"},
    {"b3": "0"},  # sampling decision only: no trace id
    {"b3": "-"},
    {"traceparent": "", "x-b3-traceid": "", "b3": "ABC-1"},
    {"user-agent": "curl/8.0"},  # headers, none about tracing
    {},
]


@scenario(lambda t: "00000000000000000000000000000abc" in _col(t, "trace_id"))
def trace_ids() -> list[Record]:
    msg = Message()
    for i, headers in enumerate(TRACE_HEADERS):
        e = _http(msg, OUTBOUND_REVIEWS, i)
        for k, v in headers.items():
            e.request.request_headers[k] = v
    return [_record(msg, REVIEWS.SerializeToString())]


@scenario(lambda t: "" in _col(t, "path") and None in _col(t, "user_agent"))
def request_fields() -> list[Record]:
    msg = Message()
    e = _http(msg, OUTBOUND_REVIEWS, 0)  # request_id field
    e.request.request_id = "rid-field"
    e = _http(msg, OUTBOUND_REVIEWS, 1)  # x-request-id header
    e.request.request_headers["x-request-id"] = "rid-header"
    _http(msg, OUTBOUND_REVIEWS, 2)  # neither: ''
    e = _http(msg, OUTBOUND_REVIEWS, 3)  # original_path beats path
    e.request.original_path = "/api/v1/reviews/3?x=1"
    e.request.path = "/reviews/3"
    e = _http(msg, OUTBOUND_REVIEWS, 4)  # no path at all
    e.request.path = ""
    e = _http(msg, OUTBOUND_REVIEWS, 5)  # user agent / code details empty
    e.request.user_agent = ""
    e.response.response_code_details = ""
    e = _http(msg, OUTBOUND_REVIEWS, 6)  # unicode text in the columns read
    e.request.user_agent = "naïve/1.0 ☃"
    e.request.path = "/caf\u00e9/\U0001f600"
    e.response.response_code_details = "upstream_reset_before_response_started{connection_failure}"
    e = _http(msg, OUTBOUND_REVIEWS, 7)  # no response at all; bytes at the limits
    e.ClearField("response")
    e.request.request_body_bytes = 2**63 - 1
    e = _http(msg, OUTBOUND_REVIEWS, 8)
    e.response.response_code.value = 2**31 - 1
    e.response.response_body_bytes = 0
    e = _http(msg, OUTBOUND_REVIEWS, 9)  # a response without a code: 0
    e.response.ClearField("response_code")
    e = _http(msg, OUTBOUND_REVIEWS, 10)  # no request message
    e.ClearField("request")
    return [_record(msg, REVIEWS.SerializeToString())]


@scenario(
    lambda t: _col(t, "method")[:3] == [None, "GET", "HEAD"] and None in _col(t, "method")[10:]
)
def request_methods() -> list[Record]:
    msg = Message()
    for i, method in enumerate([*range(10), 10, 11, 255, -1, -(2**31), 2**31 - 1]):
        _http(msg, OUTBOUND_REVIEWS, i).request.request_method = method
    return [_record(msg, REVIEWS.SerializeToString())]


@scenario(lambda t: _col(t, "destination_port")[:6] == [0, None, None, None, 8080, 9080])
def local_addresses() -> list[Record]:
    msg = Message()
    cluster = "PassthroughCluster"  # no port in the cluster name: the local address's
    _http(msg, cluster, 0).common_properties.downstream_local_address.socket_address.port_value = 0
    c = _http(msg, cluster, 1).common_properties
    c.downstream_local_address.socket_address.ClearField("port_value")  # no port
    c = _http(msg, cluster, 2).common_properties
    c.downstream_local_address.pipe.path = "/var/run/envoy.sock"  # pipe address
    c.downstream_remote_address.pipe.path = "/var/run/app.sock"
    c = _http(msg, cluster, 3).common_properties
    c.downstream_local_address.envoy_internal_address.server_listener_name = "inner"
    c.downstream_remote_address.socket_address.address = ""
    c = _http(msg, cluster, 4).common_properties
    c.downstream_local_address.socket_address.port_value = 8080
    c.downstream_remote_address.socket_address.address = "::ffff:10.0.0.1"
    _http(msg, OUTBOUND_REVIEWS, 5).common_properties.downstream_local_address.Clear()
    c = _http(msg, "outbound|abc|v1|reviews.default.svc.cluster.local", 6).common_properties
    c.downstream_local_address.socket_address.port_value = 65535
    c = _http(msg, "inbound|0||", 7).common_properties  # port 0 in the cluster name
    c.downstream_local_address.socket_address.port_value = 15006
    c.ClearField("downstream_remote_address")
    return [_record(msg, PRODUCTPAGE.SerializeToString())]


@scenario(lambda t: len(set(_col(t, "node_id"))) == 4 and "unknown" in _col(t, "node_id"))
def identifiers_and_contexts() -> list[Record]:
    records = []
    first = Message()  # a stream's first message: its own identifier, no context yet
    first.identifier.CopyFrom(GATEWAY)
    _http(first, INBOUND, 0)
    records.append(_record(first))
    later = Message()  # later messages: the identifier as context
    _http(later, INBOUND, 1)
    records.append(_record(later, GATEWAY.SerializeToString()))
    both = Message()  # identifier and a different context: the context wins
    both.identifier.CopyFrom(PRODUCTPAGE)
    _http(both, OUTBOUND_REVIEWS, 2)
    records.append(_record(both, REVIEWS.SerializeToString()))
    orphan = Message()  # neither: unknown local workload
    _http(orphan, OUTBOUND_REVIEWS, 3)
    records.append(_record(orphan))
    tcp = Message()
    _tcp(tcp, "inbound|3306||", 4)
    records.append(_record(tcp, PRODUCTPAGE.SerializeToString()))
    records.append(_record(Message()))  # empty message
    only_ident = Message()
    only_ident.identifier.CopyFrom(REVIEWS)
    records.append(_record(only_ident))
    records.append(_record(Message(), REVIEWS.SerializeToString()))  # empty, with a context
    empty_http = Message()
    empty_http.http_logs.SetInParent()  # the oneof set, no entries
    records.append(_record(empty_http, GATEWAY.SerializeToString()))
    empty_tcp = Message()
    empty_tcp.tcp_logs.SetInParent()
    records.append(_record(empty_tcp))
    nameless = Identifier(log_name="no node")  # an identifier without a node
    records.append(_record(later, nameless.SerializeToString()))
    return records


@scenario(lambda t: t.num_rows == 4 * 100 + 3 * 40)
def bench_messages() -> list[Record]:
    # bench/ builds realistic messages (imported by name: bench/ is outside mypy's packages)
    bench_ingest = importlib.import_module("bench.ingest")
    bench_als = importlib.import_module("bench.decode_als")
    first, later = bench_ingest.als_payloads(3)
    ctx = Message.FromString(first).identifier.SerializeToString()
    records = [_record(first)] + [_record(p, ctx) for p in later]
    bench_ctx = bench_als.identifier()
    records += [_record(bench_als.message(seed, 40), bench_ctx) for seed in range(3)]
    return records


@needs_c
@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_scenario_matches_reference(name: str) -> None:
    ref = assert_same(SCENARIOS[name]())
    expect = EXPECT.get(name)
    assert expect is None or expect(ref), f"scenario {name} does not show what it is about"


@needs_c
def test_all_scenarios_in_one_batch() -> None:
    # many records, several local workloads and contexts: identity keys across records
    records = [r for name in sorted(SCENARIOS) for r in SCENARIOS[name]()]
    assert_same(records)
    assert_same(records[::-1])


@needs_c
def test_identity_cache_warm_from_the_other_path() -> None:
    # production shares envoy_als._RESOLVED between both paths: a warm cache changes nothing
    records = [r for name in sorted(SCENARIOS) for r in SCENARIOS[name]()]
    ref = _reference(records)
    fast = envoy_als_fast.fast_table(records)  # cache filled by the reference
    assert fast is not None and ref.equals(fast), _difference(ref, fast)
    again = envoy_als.als_columns_tables([envoy_als.als_record_columns(r) for r in records])
    assert again["requests"].equals(ref)


@needs_c
def test_records_tables_uses_the_fast_path() -> None:
    records = SCENARIOS["server_side_mtls_http"]()
    ref = _reference(records)
    got = envoy_als_fast.records_tables(records)
    assert list(got) == ["requests"] and got["requests"].equals(ref)


# ---- 3. random messages -------------------------------------------------------------------

_ASCII = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=12)
_TEXT = st.one_of(_ASCII, _ASCII, _ASCII, st.text(max_size=6))  # mostly ASCII, some Unicode
_HEX = "0123456789abcdefABCDEF"
_CLUSTERS = (
    OUTBOUND_REVIEWS,
    OUTBOUND_RATINGS,
    "outbound|9080||productpage.default.svc.cluster.local",
    "outbound|443||httpbin.org",
    "outbound|abc|v1|x",
    INBOUND,
    "inbound|3306||",
    "inbound-vip|9080|http|reviews.default.svc.cluster.local",
    "PassthroughCluster",
    " PassthroughCluster",
    "BlackHoleCluster",
    "InboundPassthroughClusterIpv4",
    "",
    "-",
    "xds-grpc",
)
_HOSTS = ("10.0.0.7", "10.1.2.3", "10.1.2.4", "", "::1", "93.184.216.34")
_AUTHORITIES = ("", "reviews:9080", "reviews", "ratings.default", "httpbin.org", "[::1]:8080")
_SANS = (
    ("uri", SPIFFE_REVIEWS),
    ("uri", SPIFFE_PRODUCTPAGE),
    ("uri", "spiffe://example.org/ns/shop/sa/cart"),
    ("uri", "urn:not-spiffe"),
    ("dns", "reviews.default.svc"),
)
_SNIS = ("", SNI_REVIEWS, "outbound_.9080_._.ratings.default.svc.cluster.local", "httpbin.org")
_FS_KEYS = (
    "upstream_peer",
    "downstream_peer",
    "wasm.upstream_peer",
    "wasm.downstream_peer",
    "envoy.network.upstream_server_name",
)
_TRACEPARENT = st.one_of(
    st.builds("00-{}-00f067aa0ba902b7-01".format, st.text(_HEX, min_size=32, max_size=32)),
    st.sampled_from(["", "garbage", "00-abc-def-01", "00-" + "a" * 32, "-----", TRACEPARENT]),
    _TEXT,
)
_B3 = st.one_of(
    st.builds("{}-{}-1".format, st.text(_HEX, min_size=1, max_size=32), st.text(_HEX, max_size=16)),
    st.sampled_from(["", "0", "-", "1"]),
    _TEXT,
)
_REQUEST_HEADERS = st.fixed_dictionaries(
    {},
    optional={
        "traceparent": _TRACEPARENT,
        "x-b3-traceid": st.text(_HEX, max_size=34) | _TEXT,
        "b3": _B3,
        "x-request-id": st.sampled_from(["", "rid-h"]) | _TEXT,
        "content-type": st.sampled_from(["", "application/grpc", "application/json"]),
        "x-envoy-peer-metadata": st.sampled_from([MX_NODE, MX_TOKENS, "", "-", "bad!"]),
        "user-agent": _TEXT,
    },
)
_RESPONSE_HEADERS = st.fixed_dictionaries(
    {},
    optional={
        "grpc-status": st.sampled_from(["", "0", "14"]),
        "content-type": st.sampled_from(["", "application/grpc+proto", "text/plain"]),
        "x-envoy-peer-metadata": st.sampled_from([MX_NODE, MX_TOKENS, "", "bad!"]),
    },
)


# an unknown field (a newer Envoy's): skipped by both decoders
_UNKNOWN = st.sampled_from(
    [b"", b"", _tag(99, 0) + _varint(7), _len_field(98, b"new"), _tag(97, 5) + b"\0" * 4]
)


def _draw_address(draw: st.DrawFn, addr: Any, ports: Sequence[int]) -> None:
    choice = draw(st.sampled_from(["none", "socket", "socket without port", "pipe", "internal"]))
    if choice == "pipe":
        addr.pipe.path = "/var/run/x.sock"
    elif choice == "internal":
        addr.envoy_internal_address.server_listener_name = "inner"
    elif choice != "none":
        addr.socket_address.address = draw(st.sampled_from(_HOSTS))
        if choice == "socket":
            addr.socket_address.port_value = draw(st.sampled_from(ports))


def _draw_time(draw: st.DrawFn, t: Any, max_seconds: int) -> None:
    if draw(st.booleans()):
        t.SetInParent()
        t.seconds = draw(st.integers(-(10**6), max_seconds) | st.just(0))
        t.nanos = draw(st.integers(-999_999_999, 999_999_999) | st.just(0))


def _draw_common(draw: st.DrawFn, c: Any) -> None:
    c.upstream_cluster = draw(st.sampled_from(_CLUSTERS))
    _draw_time(draw, c.start_time, 4 * 10**9)
    _draw_time(draw, c.duration, 10**7)
    _draw_time(draw, c.time_to_last_downstream_tx_byte, 10**7)
    _draw_time(draw, c.time_to_last_rx_byte, 10)  # read by neither
    for addr in (
        c.downstream_remote_address,
        c.downstream_local_address,
        c.upstream_remote_address,
    ):
        _draw_address(draw, addr, (0, 80, 9080, 15006, 65535))
    if draw(st.booleans()):
        tls = c.tls_properties
        tls.SetInParent()
        tls.tls_version = draw(st.integers(0, 4))
        for props in (tls.local_certificate_properties, tls.peer_certificate_properties):
            for kind, value in draw(st.lists(st.sampled_from(_SANS), max_size=2)):
                setattr(props.subject_alt_name.add(), kind, value)
            props.subject = draw(st.sampled_from(["", "CN=x"]))
        tls.tls_sni_hostname = draw(st.sampled_from(_SNIS))
    for key in draw(st.lists(st.sampled_from(_FS_KEYS), max_size=3, unique=True)):
        _set_any(c, key, draw(st.sampled_from(PEER_ANYS)))
    if draw(st.booleans()):
        flags = c.response_flags
        flags.SetInParent()
        for name in draw(st.lists(st.sampled_from(FLAG_FIELDS), max_size=4, unique=True)):
            if name == "unauthorized_details":
                flags.unauthorized_details.SetInParent()
            else:
                setattr(flags, name, True)
    c.connection_termination_details = draw(st.sampled_from(["", "idle timeout"]))
    c.intermediate_log_entry = draw(st.integers(0, 5)) == 0
    c.route_name = draw(st.sampled_from(["", "default"]))
    if draw(st.integers(0, 3)) == 0:
        _draw_unknown(draw, c, c.downstream_local_address, c.response_flags, c.start_time)


def _draw_unknown(draw: st.DrawFn, *messages: Any) -> None:
    """Now and then an unknown field (a newer Envoy's) inside nested messages."""
    for m in messages:
        m.MergeFromString(draw(_UNKNOWN))


@st.composite
def _http_entry(draw: st.DrawFn) -> bytes:
    e: Any = HTTPEntry()  # (enum fields take any int: open enums)
    if draw(st.integers(0, 9)):
        _draw_common(draw, e.common_properties)
    e.protocol_version = draw(st.integers(0, 4))
    if draw(st.integers(0, 9)):
        r = e.request
        r.SetInParent()
        r.request_method = draw(st.sampled_from([*range(11), 255, -1, 2**31 - 1]))
        r.authority = draw(st.sampled_from(_AUTHORITIES) | _TEXT)
        r.path = draw(st.sampled_from(["", "/", "/reviews/1"]) | _TEXT)
        r.original_path = draw(st.sampled_from(["", "/api/reviews/1"]))
        r.user_agent = draw(st.sampled_from(["", "curl/8.0"]) | _TEXT)
        r.request_id = draw(st.sampled_from(["", "rid-f"]))
        r.request_body_bytes = draw(st.integers(0, 2**40) | st.just(2**63 - 1))
        for k, v in draw(_REQUEST_HEADERS).items():
            r.request_headers[k] = v
    if draw(st.integers(0, 9)):
        resp = e.response
        resp.SetInParent()
        if draw(st.booleans()):
            resp.response_code.value = draw(st.sampled_from([0, 200, 404, 503, 2**31 - 1]))
        resp.response_body_bytes = draw(st.integers(0, 2**40))
        for k, v in draw(_RESPONSE_HEADERS).items():
            resp.response_headers[k] = v
        if draw(st.booleans()):
            resp.response_trailers["grpc-status"] = draw(st.sampled_from(["", "0", "2"]))
        resp.response_code_details = draw(st.sampled_from(["", "via_upstream"]) | _TEXT)
    if draw(st.integers(0, 3)) == 0:
        _draw_unknown(draw, e.request, e.response)
    return bytes(e.SerializeToString())


@st.composite
def _tcp_entry(draw: st.DrawFn) -> bytes:
    e: Any = TCPEntry()
    if draw(st.integers(0, 9)):
        _draw_common(draw, e.common_properties)
    if draw(st.booleans()):
        e.connection_properties.received_bytes = draw(st.integers(0, 2**40))
        e.connection_properties.sent_bytes = draw(st.integers(0, 2**63 - 1))
    return bytes(e.SerializeToString())


@st.composite
def _payload(draw: st.DrawFn) -> bytes:
    out = b""
    if draw(st.booleans()):
        out += _len_field(1, draw(st.sampled_from(IDENTIFIERS)).SerializeToString())
    kind = draw(st.sampled_from(["http", "tcp", "none"]))
    if kind != "none":
        entries = draw(st.lists(_http_entry() if kind == "http" else _tcp_entry(), max_size=4))
        body = b"".join(_len_field(1, e + draw(_UNKNOWN)) for e in entries)
        out += _len_field(2 if kind == "http" else 3, body + draw(_UNKNOWN))
    return out + draw(_UNKNOWN)


@st.composite
def _records(draw: st.DrawFn) -> Record:
    payload = draw(_payload())
    if draw(st.integers(0, 9)) == 0:
        # two messages in one payload: protobuf merges them (the C side declines)
        payload += draw(_payload())
    context = draw(st.sampled_from(CONTEXTS))
    return Record(RecordKind.ENVOY_ALS, draw(st.integers(0, 2**62)), payload, context)


@needs_c
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(records=st.lists(_records(), min_size=1, max_size=3))
def test_random_messages_match_reference(records: list[Record]) -> None:
    event(check_batch(records))  # --hypothesis-show-statistics: how often it declined


# ---- 4. mutated wire data -----------------------------------------------------------------

MUTANTS = 5000


def _mutate(rnd: random.Random, data: bytes) -> bytes:
    b = bytearray(data)
    for _ in range(rnd.randint(1, 3)):
        op = rnd.randrange(7)
        pos = rnd.randrange(len(b) + 1)
        if op == 0 and b:  # flip a bit
            b[pos % len(b)] ^= 1 << rnd.randrange(8)
        elif op == 1 and b:  # a byte that means something on the wire
            b[pos % len(b)] = rnd.choice([0x00, 0x01, 0x07, 0x08, 0x0A, 0x12, 0x7F, 0x80, 0xFF])
        elif op == 2 and b:  # any byte
            b[pos % len(b)] = rnd.randrange(256)
        elif op == 3:  # truncate
            del b[pos:]
        elif op == 4:  # insert
            b[pos:pos] = bytes(rnd.randrange(256) for _ in range(rnd.randint(1, 4)))
        elif op == 5:  # delete a range
            del b[pos : pos + rnd.randint(1, 8)]
        else:  # copy a slice elsewhere (repeated fields, nested garbage)
            start = rnd.randrange(len(b) + 1)
            chunk = b[start : start + rnd.randint(1, 40)]
            b[pos:pos] = chunk
    return bytes(b)


@needs_c
def test_mutated_messages_never_crash() -> None:
    wire = _wire()
    rnd = random.Random(20261125)
    seeds = [
        r
        for name in sorted(SCENARIOS)
        if name != "bench_messages"  # (large: slow to decode thousands of times)
        for r in SCENARIOS[name]()
        if r.payload
    ]
    seen: dict[str, int] = {}
    for _ in range(MUTANTS):
        base = rnd.choice(seeds)
        payload = _mutate(rnd, base.payload)
        out = wire.decode([payload], [0], [0])  # a dict or None, never an exception
        assert out is None or (isinstance(out, dict) and out["rows"] >= 0)
        context = base.context if rnd.random() < 0.7 else b""
        what = check_batch([Record(RecordKind.ENVOY_ALS, RECEIVED_NS, payload, context)])
        seen[what] = seen.get(what, 0) + 1
    # the mutants exercised both sides of the comparison, not only declines
    assert seen.get("equal", 0) > MUTANTS // 20, seen
    assert seen.get("declined", 0) > MUTANTS // 20, seen


# ---- 5. declines --------------------------------------------------------------------------


def _http_message(cluster: str = OUTBOUND_REVIEWS, i: int = 0) -> Any:
    msg = Message()
    _http(msg, cluster, i)
    return msg


def _entry_message(entry: bytes, field: int = 2) -> bytes:
    return _len_field(field, _len_field(1, entry))


def _twice_common() -> bytes:
    e = _http_message().http_logs.log_entry[0]
    extra = meshlens_envoy_accesslog_pb2.AccessLogCommon(upstream_cluster=OUTBOUND_RATINGS)
    extra.response_flags.no_route_found = True
    return _entry_message(e.SerializeToString() + _len_field(1, extra.SerializeToString()))


def _named_port() -> bytes:
    msg = _http_message("PassthroughCluster")
    msg.http_logs.log_entry[
        0
    ].common_properties.downstream_local_address.socket_address.named_port = "http"
    return bytes(msg.SerializeToString())


def _with(setup: Callable[[Any], None], cluster: str = OUTBOUND_REVIEWS) -> bytes:
    msg = _http_message(cluster)
    setup(msg.http_logs.log_entry[0])
    return bytes(msg.SerializeToString())


def _tcp_then_http() -> bytes:
    tcp = Message()
    _tcp(tcp, "inbound|3306||")
    return bytes(tcp.SerializeToString() + _http_message().SerializeToString())


def _group_in_entry() -> bytes:
    e = _http_message().http_logs.log_entry[0].SerializeToString()
    return _entry_message(e + _tag(50, 3) + _tag(1, 0) + b"\x01" + _tag(50, 4))


def _socket_twice() -> bytes:
    e = _http_message("PassthroughCluster").http_logs.log_entry[0]
    sock = e.common_properties.downstream_local_address.socket_address
    sock.port_value = 8080
    again = _len_field(1, _tag(3, 0) + _varint(9090))  # Address.socket_address, merged
    common = e.common_properties.SerializeToString() + _len_field(3, again)
    e.ClearField("common_properties")
    return _entry_message(_len_field(1, common) + e.SerializeToString())


def _start_twice() -> bytes:
    e = _http_message().http_logs.log_entry[0]
    later = _len_field(5, _tag(2, 0) + _varint(5_000))  # start_time.nanos merged in
    return _entry_message(
        _len_field(1, e.common_properties.SerializeToString() + later) + e.SerializeToString()
    )


def _set_trace(e: Any, key: str, value: str) -> None:
    e.request.request_headers[key] = value


def _header_entry(extra: bytes) -> bytes:
    """An entry whose request_headers map entry (traceparent) holds another field too: upb
    keeps such an entry as an unknown field of HTTPRequestProperties, not in the map."""
    e = _http_message().http_logs.log_entry[0]
    pair = _len_field(1, b"traceparent") + _len_field(2, TRACEPARENT.encode()) + extra
    e.request.MergeFromString(_len_field(13, pair))
    return _entry_message(e.SerializeToString())


DECLINED: dict[str, bytes] = {
    "http_logs twice": _http_message(OUTBOUND_REVIEWS, 0).SerializeToString()
    + _http_message(OUTBOUND_RATINGS, 1).SerializeToString(),
    "tcp_logs then http_logs": _tcp_then_http(),
    "common_properties twice": _twice_common(),
    "named_port": _named_port(),
    "socket_address twice": _socket_twice(),
    "start_time twice": _start_twice(),
    "response_code 2**31": _with(lambda e: setattr(e.response.response_code, "value", 2**31)),
    "request_body_bytes 2**63": _with(lambda e: setattr(e.request, "request_body_bytes", 2**63)),
    "local port 2**31": _with(
        lambda e: setattr(
            e.common_properties.downstream_local_address.socket_address, "port_value", 2**31
        ),
        "PassthroughCluster",
    ),
    "start_time over int64 microseconds": _with(
        lambda e: setattr(e.common_properties.start_time, "seconds", 10**13)
    ),
    "non-ASCII traceparent": _with(
        lambda e: _set_trace(e, "traceparent", "00-4bf92f3577b34da6a3ce929d0e0e473é-00f0-01")
    ),
    "non-ASCII x-b3-traceid": _with(lambda e: _set_trace(e, "x-b3-traceid", "İ463ac35c9f6413ad")),
    "non-ASCII b3": _with(lambda e: _set_trace(e, "b3", "ß-1")),
    "group in an entry": _group_in_entry(),
    "unknown field in a header map entry": _header_entry(_tag(6, 0) + _varint(49)),
    "header map value as varint": _header_entry(_tag(2, 0) + _varint(1)),
    "wire type mismatch (cluster as varint)": _entry_message(
        _len_field(1, _tag(15, 0) + _varint(1))
    ),
}


@needs_c
@pytest.mark.parametrize("name", sorted(DECLINED))
@pytest.mark.parametrize("context", [b"", REVIEWS.SerializeToString()], ids=["own", "context"])
def test_declined_batches_fall_back_to_the_reference(name: str, context: bytes) -> None:
    records = [
        _record(_http_message(OUTBOUND_REVIEWS, 5), context),  # a normal record first
        _record(DECLINED[name], context),
    ]
    assert envoy_als_fast.fast_table(records) is None
    assert _wire().decode([records[1].payload], [0], [0]) is None
    ref, ref_exc = _outcome(lambda: _reference(records))
    got, got_exc = _outcome(lambda: envoy_als_fast.records_tables(records)["requests"])
    if ref_exc is not None:
        assert type(got_exc) is type(ref_exc), f"reference {ref_exc!r}, records_tables {got_exc!r}"
        assert str(got_exc) == str(ref_exc)
    else:
        assert ref is not None and got is not None
        assert ref.equals(got), _difference(ref, got)


def test_declines_are_what_they_say() -> None:
    # the hand-made wire data means what the names say, for the reference decoder
    def one(name: str) -> Any:
        return Message.FromString(DECLINED[name]).http_logs.log_entry

    assert len(one("http_logs twice")) == 2
    assert len(one("tcp_logs then http_logs")) == 1
    common = one("common_properties twice")[0].common_properties
    assert common.upstream_cluster == OUTBOUND_RATINGS and common.response_flags.no_route_found
    sock = one("socket_address twice")[0].common_properties.downstream_local_address
    assert sock.socket_address.port_value == 9090 and sock.socket_address.address == "10.96.12.7"
    assert one("start_time twice")[0].common_properties.start_time.nanos == 5_000
    assert one("group in an entry")[0].common_properties.upstream_cluster == OUTBOUND_REVIEWS
    assert one("response_code 2**31")[0].response.response_code.value == 2**31
    for name in ("unknown field in a header map entry", "header map value as varint"):
        assert dict(one(name)[0].request.request_headers) == {}, name


@needs_c
@pytest.mark.parametrize("context", [REVIEWS.SerializeToString(), b""], ids=["context", "own"])
def test_bad_bytes_where_the_c_side_does_not_look(context: bytes) -> None:
    # Invalid UTF-8 in a string the C side skips (here the TLS SNI): the reference rejects
    # the message; the C side may decline or (leniency) decode it, but the wrapper must not
    # let anything but collector's DecodeError out (it re-parses the first entry of each
    # identity key with upb to resolve identity).
    msg = _http_message(INBOUND)
    msg.http_logs.log_entry[0].common_properties.tls_properties.tls_sni_hostname = "abcd"
    payload = msg.SerializeToString().replace(b"abcd", b"\xffbcd")
    records = [_record(payload, context)]
    with pytest.raises(DecodeError):
        _reference(records)
    assert check_batch(records) in ("declined", "both DecodeError", "lenient")
    with pytest.raises(DecodeError):
        envoy_als_fast.records_tables(records)


@needs_c
@pytest.mark.parametrize(
    "bad",
    [b"\xff", b"\xed\xa0\x80", b"\xc0\xaf", b"\xf4\x90\x80\x80", b"\xe2\x82"],
    ids=["invalid byte", "surrogate", "overlong", "above U+10FFFF", "cut short"],
)
def test_invalid_utf8_where_the_c_side_reads_is_never_decoded(bad: bytes) -> None:
    # The request path is a string the C side reads (validated by the shared _utf8_valid.h);
    # whatever it answers, text upb refuses never becomes rows: a second entry, and the same
    # length so only the UTF-8 is wrong.
    msg = _http_message(INBOUND)
    entries = msg.http_logs.log_entry
    entries.add().CopyFrom(entries[0])
    entries[1].request.path = "/abcd"
    payload = msg.SerializeToString().replace(b"/abcd", b"/" + bad + b"d" * (4 - len(bad)))
    assert check_batch([_record(payload, b"")]) in ("declined", "both DecodeError")
    ok = msg.SerializeToString().replace(b"/abcd", "/écd".encode())  # same length, valid
    assert check_batch([_record(ok, b"")]) == "equal"


@needs_c
def test_cluster_ports_out_of_range_are_no_port_on_both_paths() -> None:
    # The C side reads the port of an Istio cluster name through Python (identity): a number
    # that is no TCP port (or not ASCII digits) is no port on both paths, not a failed record.
    for port in ("99999999999", "65536", "²"):
        msg = _http_message(f"outbound|{port}|v1|reviews.default.svc.cluster.local")
        assert check_batch([_record(msg, REVIEWS.SerializeToString())]) == "equal", port


# ---- 6. the converter uses it -------------------------------------------------------------


def test_converter_batches_als_through_the_fast_decoder() -> None:
    part, tables = registry.BATCH_DECODERS[RecordKind.ENVOY_ALS]
    module, _, name = part.partition(":")
    assert getattr(importlib.import_module(module), name) is envoy_als_fast.record_part
    module, _, name = tables.partition(":")
    assert getattr(importlib.import_module(module), name) is envoy_als_fast.records_tables


@needs_c
def test_converter_rows_equal_the_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    # The scenarios' entries are stamped after their records' receipt; this test compares the
    # decoders, so the live-ingest timestamp window (tested in test_hostile_input) is off.
    monkeypatch.setattr(limits, "_current", [limits.DecodeLimits(max_future_s=0)])
    records = [r for name in sorted(SCENARIOS) for r in SCENARIOS[name]()]
    records.insert(3, _record(DECLINED["http_logs twice"], REVIEWS.SerializeToString()))
    bad = Record(RecordKind.ENVOY_ALS, 0, b"\xff\xff not protobuf").encode()
    bodies = [r.encode() for r in records]
    bodies.insert(5, bad)
    tables, failed, _ = decode_all(bodies, {})
    assert failed == [bad]
    ref = conform("requests", _reference(records))
    assert tables["requests"].schema == REQUESTS
    assert tables["requests"].equals(ref), _difference(ref, tables["requests"])
