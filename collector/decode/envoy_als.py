"""Envoy gRPC access-log service (ALS v3) messages -> `requests` rows.

A WAL record holds one `StreamAccessLogsMessage` as received plus, as its context, the
serialized `Identifier` of its stream (Envoy sends the node only on a stream's first message;
the receiver keeps it and attaches it to every later message). HTTP entries become one row per
request; TCP entries one row per connection (protocol 'tcp', response_code 0).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

import pyarrow as pa
from google.protobuf.message import DecodeError as ProtoDecodeError

from meshlens.collector.decode import identity
from meshlens.collector.decode.identity import Observation, Workload
from meshlens.collector.decode.request_rows import columns_to_table
from meshlens.collector.errors import DecodeError
from meshlens.collector.proto.gen import meshlens_als_pb2, meshlens_envoy_core_pb2
from meshlens.collector.store.records import Record

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


def _ms(d: Any) -> float:
    return d.seconds * 1000.0 + d.nanos / 1e6


def _peers(common: Any) -> tuple[Workload | None, Workload | None]:
    up = down = None
    for key, any_msg in common.filter_state_objects.items():
        if key in identity.PEER_KEYS["upstream"] and up is None:
            up = identity.peer_from_filter_state(any_msg.type_url, any_msg.value)
        elif key in identity.PEER_KEYS["downstream"] and down is None:
            down = identity.peer_from_filter_state(any_msg.type_url, any_msg.value)
    return up, down


def _observation(
    common: Any,
    local: Workload,
    authority: str,
    tls_facts: tuple[tuple[str, ...], str, tuple[str, ...], str, str] | None,
    request_mx: str,
    response_mx: str,
    upstream_host: str,
) -> Observation:
    local_sans, local_subject, peer_sans, peer_subject, sni = tls_facts or ((), "", (), "", "")
    has_local = bool(local_sans or local_subject) if tls_facts is not None else False
    has_peer = bool(peer_sans or peer_subject) if tls_facts is not None else False
    up, down = _peers(common) if common.filter_state_objects else (None, None)
    # Istio's HTTP metadata exchange headers, when configured to be logged.
    if down is None and request_mx:
        down = identity.peer_from_header(request_mx)
    if up is None and response_mx:
        up = identity.peer_from_header(response_mx)
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
        sni=sni,
        upstream_peer=up,
        downstream_peer=down,
        upstream_host=upstream_host,
    )


def _trace_id(headers: Mapping[str, str]) -> str:
    tp = headers.get("traceparent")
    if tp:
        parts = tp.split("-")
        if len(parts) >= 4 and len(parts[1]) == 32:
            return parts[1].lower()
    b3 = headers.get("x-b3-traceid")
    if b3:
        return b3.lower().rjust(32, "0")
    single = headers.get("b3")
    if single and "-" in single:
        return single.split("-", 1)[0].lower().rjust(32, "0")
    return ""


# Columns decided by identity (cached per distinct facts), in this order.
IDENTITY_COLUMNS: Final = (
    "reporter",
    "mtls",
    "source_workload",
    "source_namespace",
    "source_canonical_service",
    "source_version",
    "source_principal",
    "destination_service",
    "destination_service_name",
    "destination_namespace",
    "destination_workload",
    "destination_canonical_service",
    "destination_version",
    "destination_principal",
)
# Columns read from each entry, in the order of the tuples `_http_values`/`_tcp_values` build.
ENTRY_COLUMNS: Final = (
    "ts",
    "duration_ms",
    "response_flags",
    "upstream_cluster",
    "source_address",
    "connection_termination_details",
    "destination_port",
    "protocol",
    "method",
    "path",
    "authority",
    "response_code",
    "grpc_status",
    "request_bytes",
    "response_bytes",
    "request_id",
    "trace_id",
    "user_agent",
    "response_code_details",
)


def _tls_facts(tls: Any) -> tuple[tuple[str, ...], str, tuple[str, ...], str, str]:
    """(local URI SANs, local subject, peer URI SANs, peer subject, SNI)."""
    lp = tls.local_certificate_properties
    pp = tls.peer_certificate_properties
    return (
        tuple(x.uri for x in lp.subject_alt_name if x.uri),
        lp.subject,
        tuple(x.uri for x in pp.subject_alt_name if x.uri),
        pp.subject,
        tls.tls_sni_hostname,
    )


_MX: Final = identity.PEER_METADATA_HEADER
# Most entries log no headers: a plain empty dict answers lookups far faster than protobuf's
# empty map containers.
_NO_HEADERS: Final[Mapping[str, str]] = {}
# The upstream host decides identity only for these clusters (identity.resolve); elsewhere
# keying on it would make every entry a cache miss (one key per upstream pod address).
_HOST_CLUSTERS: Final = frozenset({identity.PASSTHROUGH, identity.BLACKHOLE})
_CACHE_MAX: Final = 4096
_Resolved = tuple[tuple[Any, ...], int | None]
# Shared by the records a process decodes, per local workload; bounded (cleared when full).
_RESOLVED: dict[Workload, dict[tuple[Any, ...], _Resolved]] = {}


class _Identities:
    """identity.resolve per distinct identity facts of an entry (local workload, cluster,
    certificates, SNI, peer metadata, authority, upstream host where it matters), cached across
    records: a sidecar's entries share few of them, and resolving is far slower than building
    the key."""

    def __init__(self, local: Workload) -> None:
        self.local = local
        cache = _RESOLVED.get(local)
        if cache is None or len(cache) >= _CACHE_MAX:
            if len(_RESOLVED) >= 256:
                _RESOLVED.clear()
            cache = _RESOLVED[local] = {}
        self._cache = cache

    def of_http(self, entry: Any) -> tuple[tuple[Any, ...], int | None]:
        """(identity columns, cluster port) of an HTTPAccessLogEntry."""
        req, resp = entry.request, entry.response
        return self.get(
            entry.common_properties,
            req.authority,
            (req.request_headers or _NO_HEADERS).get(_MX, ""),
            (resp.response_headers or _NO_HEADERS).get(_MX, ""),
        )

    def of_tcp(self, entry: Any) -> tuple[tuple[Any, ...], int | None]:
        """(identity columns, cluster port) of a TCPAccessLogEntry."""
        return self.get(entry.common_properties, "", "", "")

    def get(
        self, common: Any, authority: str, request_mx: str, response_mx: str
    ) -> tuple[tuple[Any, ...], int | None]:
        has_tls = common.HasField("tls_properties")
        # Serialized TLS properties are a cheaper cache key than the facts we read from them.
        tls_key = common.tls_properties.SerializeToString() if has_tls else None
        fso = common.filter_state_objects
        fs_key = tuple(sorted((k, v.type_url, v.value) for k, v in fso.items())) if fso else ()
        cluster = common.upstream_cluster
        up_addr = common.upstream_remote_address
        upstream_host = up_addr.socket_address.address if up_addr.HasField("socket_address") else ""
        key = (
            cluster,
            tls_key,
            fs_key,
            request_mx,
            response_mx,
            authority,
            upstream_host if cluster.strip() in _HOST_CLUSTERS else "",
        )
        hit = self._cache.get(key)
        if hit is None:
            tls_facts = _tls_facts(common.tls_properties) if has_tls else None
            obs = _observation(
                common, self.local, authority, tls_facts, request_mx, response_mx, upstream_host
            )
            resolved = identity.resolve(obs)
            hit = (tuple(resolved[c] for c in IDENTITY_COLUMNS), obs.cluster.port)
            self._cache[key] = hit
        return hit


def _port(addr: Any) -> int | None:
    if addr.HasField("socket_address"):
        sa = addr.socket_address
        return int(sa.port_value) if sa.WhichOneof("port_specifier") == "port_value" else None
    return None


def _common_values(common: Any, default_ts_us: int) -> tuple[Any, ...]:
    """ts, duration_ms, response_flags, upstream_cluster, source_address,
    connection_termination_details."""
    start = common.start_time
    ts = start.seconds * 1_000_000 + start.nanos // 1000 or default_ts_us
    if common.HasField("duration"):
        d = common.duration
        duration: float | None = d.seconds * 1000.0 + d.nanos / 1e6
    elif common.HasField("time_to_last_downstream_tx_byte"):
        duration = _ms(common.time_to_last_downstream_tx_byte)
    else:
        duration = None
    flags = response_flags_text(common.response_flags) if common.HasField("response_flags") else "-"
    remote = common.downstream_remote_address
    src_addr = remote.socket_address.address if remote.HasField("socket_address") else None
    return (
        ts,
        duration,
        flags,
        common.upstream_cluster,
        src_addr or None,
        common.connection_termination_details or None,
    )


def _http_values(
    entry: Any, idents: _Identities, default_ts_us: int
) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    common = entry.common_properties
    req = entry.request
    resp = entry.response
    # Most entries log no headers: a plain empty dict answers the lookups below far faster
    # than protobuf's empty map containers.
    headers: Mapping[str, str] = req.request_headers or _NO_HEADERS
    resp_headers: Mapping[str, str] = resp.response_headers or _NO_HEADERS
    trailers: Mapping[str, str] = resp.response_trailers or _NO_HEADERS
    authority = req.authority
    ident, port = idents.of_http(entry)
    grpc_status = trailers.get("grpc-status") or resp_headers.get("grpc-status", "")
    ctype = headers.get("content-type") or resp_headers.get("content-type", "")
    is_grpc = bool(grpc_status) or ctype.startswith("application/grpc")
    values = (
        *_common_values(common, default_ts_us),
        port if port is not None else _port(common.downstream_local_address),
        "grpc" if is_grpc else "http",
        _METHODS.get(req.request_method),
        req.original_path or req.path,
        authority,
        resp.response_code.value,  # an unset wrapper reads 0 = no response
        grpc_status,
        req.request_body_bytes,
        resp.response_body_bytes,
        req.request_id or headers.get("x-request-id", ""),
        _trace_id(headers) if headers else "",
        req.user_agent or None,
        resp.response_code_details or None,
    )
    return ident, values


def _tcp_values(
    entry: Any, idents: _Identities, default_ts_us: int
) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    common = entry.common_properties
    ident, port = idents.of_tcp(entry)
    conn = entry.connection_properties
    values = (
        *_common_values(common, default_ts_us),
        port if port is not None else _port(common.downstream_local_address),
        "tcp",
        None,
        None,
        None,
        0,
        "",
        conn.received_bytes,
        conn.sent_bytes,
        "",
        "",
        None,
        None,
    )
    return ident, values


def local_workload(ident: Any) -> tuple[str, Workload]:
    node = ident.node
    meta = _struct_dict(node.metadata) if node.HasField("metadata") else {}
    return node.id, identity.workload_from_node(node.id, meta)


def decode_columns(msg: Any, ident: Any | None, default_ts_us: int = 0) -> dict[str, list[Any]]:
    """One parsed StreamAccessLogsMessage -> column lists of the requests table, identity from
    `ident` (or the message's own identifier); entries without a start time get
    `default_ts_us`. Column-wise on purpose: per-row dicts cost more than the decoding."""
    if ident is None and msg.HasField("identifier"):
        ident = msg.identifier
    node_id, local = local_workload(ident) if ident is not None else ("", identity.UNKNOWN_WORKLOAD)
    idents = _Identities(local)
    kind = msg.WhichOneof("log_entries")
    # Intermediate entries (periodic flushes of long-lived streams/connections) are skipped:
    # the final entry covers the whole stream, and a row is one request or connection.
    if kind == "http_logs":
        pairs = [
            _http_values(e, idents, default_ts_us)
            for e in msg.http_logs.log_entry
            if not e.common_properties.intermediate_log_entry
        ]
    elif kind == "tcp_logs":
        pairs = [
            _tcp_values(e, idents, default_ts_us)
            for e in msg.tcp_logs.log_entry
            if not e.common_properties.intermediate_log_entry
        ]
    else:
        pairs = []
    n = len(pairs)
    cols: dict[str, list[Any]] = {}
    if n:
        ident_rows, value_rows = zip(*pairs, strict=True)
        cols.update(zip(IDENTITY_COLUMNS, map(list, zip(*ident_rows, strict=True)), strict=True))
        cols.update(zip(ENTRY_COLUMNS, map(list, zip(*value_rows, strict=True)), strict=True))
    else:
        cols.update({c: [] for c in (*IDENTITY_COLUMNS, *ENTRY_COLUMNS)})
    cols["node_id"] = [node_id] * n
    cols["origin"] = [ORIGIN] * n
    return cols


def decode_message(msg: Any, ident: Any | None, default_ts_us: int = 0) -> list[dict[str, Any]]:
    """Like `decode_columns`, as row dicts."""
    cols = decode_columns(msg, ident, default_ts_us)
    names = list(cols)
    return [dict(zip(names, row, strict=True)) for row in zip(*cols.values(), strict=True)]


def als_record_columns(record: Record) -> dict[str, list[Any]]:
    """One record's rows as column lists (the first step of `decode_als_records`)."""
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
    return decode_columns(msg, ident, record.received_ns // 1000)


def als_columns_tables(parts: Sequence[dict[str, list[Any]]]) -> dict[str, pa.Table]:
    """Many records' column lists (from `als_record_columns`) as one `requests` table: the
    Arrow conversion costs about as much per column as per row, so batch it."""
    if len(parts) == 1:
        return {"requests": columns_to_table(parts[0])}
    merged: dict[str, list[Any]] = {}
    for cols in parts:
        for name, values in cols.items():
            have = merged.get(name)
            if have is None:
                merged[name] = list(values)
            else:
                have.extend(values)
    return {"requests": columns_to_table(merged)}


def decode_als_record(record: Record) -> dict[str, pa.Table]:
    return {"requests": columns_to_table(als_record_columns(record))}
