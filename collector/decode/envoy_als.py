"""Envoy gRPC access-log service (ALS v3) messages -> `requests` rows.

A WAL record holds one `StreamAccessLogsMessage` as received plus, as its context, the
serialized `Identifier` of its stream (Envoy sends the node only on a stream's first message;
the receiver keeps it and attaches it to every later message). HTTP entries become one row per
request; TCP entries one row per connection (protocol 'tcp', response_code 0).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import pyarrow as pa
from google.protobuf.message import DecodeError as ProtoDecodeError

from collector.decode import identity
from collector.decode.identity import Observation, Workload
from collector.decode.request_rows import rows_to_table
from collector.errors import DecodeError
from collector.proto.gen import meshlens_als_pb2, meshlens_envoy_core_pb2
from collector.store.records import Record

ORIGIN: Final = "envoy_als"

# ResponseFlags fields in Envoy's order, with the short codes %RESPONSE_FLAGS% prints
# (envoy source/common/stream_info/utility.cc); field numbers 1..27 in this order.
RESPONSE_FLAG_CODES: Final[tuple[tuple[str, str], ...]] = (
    ("failed_local_healthcheck", "LH"),
    ("no_healthy_upstream", "UH"),
    ("upstream_request_timeout", "UT"),
    ("local_reset", "LR"),
    ("upstream_remote_reset", "UR"),
    ("upstream_connection_failure", "UF"),
    ("upstream_connection_termination", "UC"),
    ("upstream_overflow", "UO"),
    ("no_route_found", "NR"),
    ("delay_injected", "DI"),
    ("fault_injected", "FI"),
    ("rate_limited", "RL"),
    ("unauthorized_details", "UAEX"),
    ("rate_limit_service_error", "RLSE"),
    ("downstream_connection_termination", "DC"),
    ("upstream_retry_limit_exceeded", "URX"),
    ("stream_idle_timeout", "SI"),
    ("invalid_envoy_request_headers", "IH"),
    ("downstream_protocol_error", "DPE"),
    ("upstream_max_stream_duration_reached", "UMSDR"),
    ("response_from_cache_filter", "RFCF"),
    ("no_filter_config_found", "NFCF"),
    ("duration_timeout", "DT"),
    ("upstream_protocol_error", "UPE"),
    ("no_cluster_found", "NC"),
    ("overload_manager", "OM"),
    ("dns_resolution_failure", "DF"),
)

_METHODS: Final = {
    v.number: v.name
    for v in meshlens_envoy_core_pb2.DESCRIPTOR.enum_types_by_name["RequestMethod"].values
    if v.number != 0
}

Message = meshlens_als_pb2.StreamAccessLogsMessage
Identifier = meshlens_als_pb2.StreamAccessLogsMessage.Identifier


def response_flags_text(flags: Any) -> str:
    """A ResponseFlags message -> 'UH', 'UF,URX', or '-' for none."""
    if flags is None or flags.ByteSize() == 0:
        return "-"
    codes = []
    for field, code in RESPONSE_FLAG_CODES:
        if field == "unauthorized_details":
            if flags.HasField("unauthorized_details"):
                codes.append(code)
        elif getattr(flags, field):
            codes.append(code)
    return ",".join(codes) if codes else "-"


def als_message_info(raw: bytes) -> tuple[bytes | None, int]:
    """Cheap look at one message for the receiver: (serialized Identifier or None, entries).
    Raises DecodeError when the bytes are not a StreamAccessLogsMessage."""
    msg = Message()
    try:
        msg.ParseFromString(raw)
    except ProtoDecodeError as exc:
        raise DecodeError("envoy ALS message", str(exc)) from None
    ident = msg.identifier.SerializeToString() if msg.HasField("identifier") else None
    kind = msg.WhichOneof("log_entries")
    n = (
        len(msg.http_logs.log_entry)
        if kind == "http_logs"
        else (len(msg.tcp_logs.log_entry) if kind == "tcp_logs" else 0)
    )
    return ident, n


# --- per-entry helpers ----------------------------------------------------------------------


def _struct_dict(s: Any) -> dict[str, Any]:
    return identity.struct_to_dict(s)


def _addr(a: Any) -> tuple[str, int | None]:
    if a.HasField("socket_address"):
        sa = a.socket_address
        return sa.address, (
            sa.port_value if sa.WhichOneof("port_specifier") == "port_value" else None
        )
    if a.HasField("pipe"):
        return a.pipe.path, None
    return "", None


def _ms(d: Any) -> float:
    return d.seconds * 1000.0 + d.nanos / 1e6


def _sans(props: Any) -> list[str]:
    return [san.uri for san in props.subject_alt_name if san.uri]


def _peers(common: Any) -> tuple[Workload | None, Workload | None]:
    up = down = None
    for key, any_msg in common.filter_state_objects.items():
        if key in identity.PEER_KEYS["upstream"] and up is None:
            up = identity.peer_from_filter_state(any_msg.type_url, any_msg.value)
        elif key in identity.PEER_KEYS["downstream"] and down is None:
            down = identity.peer_from_filter_state(any_msg.type_url, any_msg.value)
    return up, down


def _observation(common: Any, local: Workload, authority: str) -> Observation:
    tls = common.tls_properties if common.HasField("tls_properties") else None
    local_sans = _sans(tls.local_certificate_properties) if tls is not None else []
    peer_sans = _sans(tls.peer_certificate_properties) if tls is not None else []
    has_local = (
        tls is not None
        and tls.HasField("local_certificate_properties")
        and bool(local_sans or tls.local_certificate_properties.subject)
    )
    has_peer = (
        tls is not None
        and tls.HasField("peer_certificate_properties")
        and bool(peer_sans or tls.peer_certificate_properties.subject)
    )
    up, down = _peers(common) if common.filter_state_objects else (None, None)
    upstream_host, _ = _addr(common.upstream_remote_address)
    cluster = identity.parse_upstream_cluster(common.upstream_cluster)
    if not cluster.raw and has_peer:
        # Envoy's ALS names the cluster from the upstream host, so a request that never got one
        # (UH, UF before connect, NR...) has none; a peer certificate means it came in through
        # the inbound (mTLS) listener, so the proxy was the server.
        cluster = identity.ClusterName("", "inbound")
    return Observation(
        cluster=cluster,
        local=local,
        authority=authority,
        local_principal=identity.principal_from_sans(local_sans),
        peer_principal=identity.principal_from_sans(peer_sans),
        tls_local_cert=has_local,
        tls_peer_cert=has_peer,
        sni=tls.tls_sni_hostname if tls is not None else "",
        upstream_peer=up,
        downstream_peer=down,
        upstream_host=upstream_host,
    )


def _trace_id(headers: Mapping[str, str]) -> str:
    tp = headers.get("traceparent", "")
    parts = tp.split("-")
    if len(parts) >= 4 and len(parts[1]) == 32:
        return parts[1].lower()
    b3 = headers.get("x-b3-traceid", "")
    if b3:
        return b3.lower().rjust(32, "0")
    single = headers.get("b3", "")
    if single and "-" in single:
        return single.split("-", 1)[0].lower().rjust(32, "0")
    return ""


def _common_row(common: Any, node_id: str) -> dict[str, Any]:
    start = common.start_time
    if common.HasField("duration"):
        duration = _ms(common.duration)
    elif common.HasField("time_to_last_downstream_tx_byte"):
        duration = _ms(common.time_to_last_downstream_tx_byte)
    else:
        duration = None
    src_addr, _ = _addr(common.downstream_remote_address)
    return {
        "ts": start.seconds * 1_000_000 + start.nanos // 1000,
        "duration_ms": duration,
        "response_flags": response_flags_text(common.response_flags)
        if common.HasField("response_flags")
        else "-",
        "upstream_cluster": common.upstream_cluster,
        "node_id": node_id,
        "origin": ORIGIN,
        "source_address": src_addr or None,
        "connection_termination_details": common.connection_termination_details or None,
    }


class _Resolver:
    """identity.resolve with a per-record cache (entries of a batch share few identities)."""

    def __init__(self) -> None:
        self._cache: dict[Observation, dict[str, Any]] = {}

    def __call__(self, obs: Observation) -> dict[str, Any]:
        hit = self._cache.get(obs)
        if hit is None:
            hit = identity.resolve(obs)
            self._cache[obs] = hit
        return hit


def _destination_port(obs: Observation, common: Any) -> int | None:
    if obs.cluster.port is not None:
        return obs.cluster.port
    _, port = _addr(common.downstream_local_address)
    return port


def http_row(entry: Any, local: Workload, node_id: str, resolve: _Resolver) -> dict[str, Any]:
    common = entry.common_properties
    req = entry.request
    resp = entry.response
    obs = _observation(common, local, req.authority)
    row = _common_row(common, node_id)
    row.update(resolve(obs))
    headers = dict(req.request_headers)
    trailers = resp.response_trailers
    grpc_status = trailers.get("grpc-status") or resp.response_headers.get("grpc-status") or ""
    ctype = headers.get("content-type") or resp.response_headers.get("content-type", "")
    is_grpc = bool(grpc_status) or ctype.startswith("application/grpc")
    row.update(
        protocol="grpc" if is_grpc else "http",
        method=_METHODS.get(req.request_method),
        path=req.original_path or req.path,
        authority=req.authority,
        response_code=resp.response_code.value if resp.HasField("response_code") else 0,
        grpc_status=grpc_status,
        request_bytes=req.request_body_bytes,
        response_bytes=resp.response_body_bytes,
        request_id=req.request_id or headers.get("x-request-id", ""),
        trace_id=_trace_id(headers),
        user_agent=req.user_agent or None,
        destination_port=_destination_port(obs, common),
        response_code_details=resp.response_code_details or None,
    )
    return row


def tcp_row(entry: Any, local: Workload, node_id: str, resolve: _Resolver) -> dict[str, Any]:
    common = entry.common_properties
    obs = _observation(common, local, "")
    row = _common_row(common, node_id)
    row.update(resolve(obs))
    conn = entry.connection_properties
    row.update(
        protocol="tcp",
        response_code=0,
        grpc_status="",
        request_bytes=conn.received_bytes,
        response_bytes=conn.sent_bytes,
        destination_port=_destination_port(obs, common),
    )
    return row


def local_workload(ident: Any) -> tuple[str, Workload]:
    node = ident.node
    meta = _struct_dict(node.metadata) if node.HasField("metadata") else {}
    return node.id, identity.workload_from_node(node.id, meta)


def decode_message(msg: Any, ident: Any | None, default_ts_us: int = 0) -> list[dict[str, Any]]:
    """One parsed StreamAccessLogsMessage -> row dicts, identity from `ident` (or the
    message's own identifier); entries without a start time get `default_ts_us`."""
    if ident is None and msg.HasField("identifier"):
        ident = msg.identifier
    node_id, local = local_workload(ident) if ident is not None else ("", identity.UNKNOWN_WORKLOAD)
    resolve = _Resolver()
    kind = msg.WhichOneof("log_entries")
    if kind == "http_logs":
        rows = [http_row(e, local, node_id, resolve) for e in msg.http_logs.log_entry]
    elif kind == "tcp_logs":
        rows = [tcp_row(e, local, node_id, resolve) for e in msg.tcp_logs.log_entry]
    else:
        return []
    for row in rows:
        if row["ts"] == 0:
            row["ts"] = default_ts_us
    return rows


def decode_als_record(record: Record) -> dict[str, pa.Table]:
    msg = Message()
    try:
        msg.ParseFromString(record.payload)
    except ProtoDecodeError as exc:
        raise DecodeError("envoy ALS message", str(exc)) from None
    ident = None
    if record.context:
        ident = Identifier()
        try:
            ident.ParseFromString(record.context)
        except ProtoDecodeError as exc:
            raise DecodeError("envoy ALS stream identifier", str(exc)) from None
    return {"requests": rows_to_table(decode_message(msg, ident, record.received_ns // 1000))}
