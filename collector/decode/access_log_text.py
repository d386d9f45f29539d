"""Istio/Envoy access-log lines (text and JSON) -> `requests` rows.

Istio's default text format (istio pilot/pkg/model/telemetry_logging.go `EnvoyTextLogFormat`):

    [%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" %RESPONSE_CODE%
    %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %CONNECTION_TERMINATION_DETAILS%
    "%UPSTREAM_TRANSPORT_FAILURE_REASON%" %BYTES_RECEIVED% %BYTES_SENT% %DURATION%
    %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% "%REQ(X-FORWARDED-FOR)%" "%REQ(USER-AGENT)%"
    "%REQ(X-REQUEST-ID)%" "%REQ(:AUTHORITY)%" "%UPSTREAM_HOST%" %UPSTREAM_CLUSTER_RAW%
    %UPSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS%
    %REQUESTED_SERVER_NAME% %ROUTE_NAME%

(one line). Fields are positional; the parser is tolerant of older Istio versions (no details
fields, `"%DYNAMIC_METADATA(istio.mixer:status)%"`) and of Envoy's own default format (which
stops after `"%UPSTREAM_HOST%"`). Istio's JSON format (`EnvoyJSONLogFormatIstio`) uses the keys
start_time, method, path, protocol, response_code, ... upstream_cluster, requested_server_name.
Lines from `kubectl logs --timestamps` / `--prefix` are accepted (the prefixes are stripped).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Final

import pyarrow as pa

from collector.decode import identity
from collector.decode.identity import Observation, Workload
from collector.decode.request_rows import rows_to_table
from collector.store.records import Record
from collector.store.schema import UNKNOWN

_TEXT_RE: Final = re.compile(
    r'^\[(?P<start>[^\]]+)\] "(?P<method>\S+) (?P<path>.*?) (?P<protocol>\S+)" '
    r"(?P<code>\d+|-) (?P<flags>\S+) "
    r"(?:(?P<middle>.*?) )?"
    r"(?P<rx>\d+|-) (?P<tx>\d+|-) (?P<dur>\d+|-) (?P<ust>\S+) "
    r'"(?P<xff>[^"]*)" "(?P<ua>.*?)" "(?P<rid>[^"]*)" "(?P<authority>[^"]*)" '
    r'"(?P<uhost>[^"]*)"'
    r"(?: (?P<cluster>\S+) (?P<ulocal>\S+) (?P<dlocal>\S+) (?P<dremote>\S+)"
    r"(?: (?P<sni>\S+))?(?: (?P<route>\S+))?)?"
    r"\s*$"
)
_MIDDLE_TOKEN_RE: Final = re.compile(r'"[^"]*"|\S+')
# `kubectl logs --prefix` ("[pod/name/container] ") and `--timestamps` ("2024-...Z ").
_K8S_PREFIX_RE: Final = re.compile(
    r"^(?:\[pod/[^\]]*\]\s+)?(?:\d{4}-\d\d-\d\dT[\d:.]+(?:Z|[+-][\d:]+)\s+)?"
)
_JSON_KEYS: Final = frozenset(
    ("start_time", "response_code", "upstream_cluster", "response_flags", "authority", "method")
)


def strip_k8s_prefix(line: str) -> str:
    return _K8S_PREFIX_RE.sub("", line, count=1)


def _dash(value: Any) -> str:
    """'' for Envoy's '-' (no value) and None."""
    if value is None:
        return ""
    text = str(value)
    return "" if text == "-" else text


def _text_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None


_INT64_MAX = 2**63 - 1


class _OutOfRange(ValueError):
    """A numeric field no real proxy writes (e.g. '1E309' bytes, a 20-digit code): the line
    is rejected as malformed rather than stored with a made-up value."""


def _int(value: Any, limit: int = _INT64_MAX) -> int | None:
    """A number from a log field; None when absent or not a number; _OutOfRange outside
    [-limit, limit]."""
    text = _dash(value)
    if not text:
        return None
    try:
        number = int(text) if text.lstrip("-").isdigit() else int(float(text))
    except ValueError:
        return None
    except OverflowError:
        raise _OutOfRange(text) from None
    if not -limit <= number <= limit:
        raise _OutOfRange(text)
    return number


def _ts_us(value: Any) -> int | None:
    text = _dash(value).strip()
    if not text:
        return None
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if dt.tzinfo is None:
        return None
    return int(dt.timestamp()) * 1_000_000 + dt.microsecond


def _addr_port(addr: str) -> int | None:
    host, sep, port = addr.rpartition(":")
    return int(port) if sep and host and port.isdigit() else None


def parse_text_fields(line: str) -> dict[str, Any] | None:
    """A text line -> the Istio JSON-format field dict (None when it is not an access log)."""
    m = _TEXT_RE.match(line)
    if m is None:
        return None
    g = m.groupdict()
    middle = [t for t in _MIDDLE_TOKEN_RE.findall(g["middle"] or "")]
    bare = [t for t in middle if not t.startswith('"')]
    quoted = [t[1:-1] for t in middle if t.startswith('"')]
    return {
        "start_time": g["start"],
        "method": g["method"],
        "path": g["path"],
        "protocol": g["protocol"],
        "response_code": g["code"],
        "response_flags": g["flags"],
        "response_code_details": bare[0] if bare else None,
        "connection_termination_details": bare[1] if len(bare) > 1 else None,
        "upstream_transport_failure_reason": quoted[-1] if quoted else None,
        "bytes_received": g["rx"],
        "bytes_sent": g["tx"],
        "duration": g["dur"],
        "upstream_service_time": g["ust"],
        "x_forwarded_for": g["xff"],
        "user_agent": g["ua"],
        "request_id": g["rid"],
        "authority": g["authority"],
        "upstream_host": g["uhost"],
        "upstream_cluster": g["cluster"],
        "upstream_local_address": g["ulocal"],
        "downstream_local_address": g["dlocal"],
        "downstream_remote_address": g["dremote"],
        "requested_server_name": g["sni"],
        "route_name": g["route"],
    }


def parse_json_fields(line: str) -> dict[str, Any] | None:
    try:
        obj = json.loads(line)
    except ValueError:
        return None
    if not isinstance(obj, dict) or not (_JSON_KEYS & obj.keys()):
        return None
    return obj


_ABSENT: Final = object()
_IDENTITY_CACHE: dict[tuple[Any, ...], tuple[dict[str, Any], identity.ClusterName]] = {}
_IDENTITY_CACHE_MAX: Final = 8192


def _resolve(key: tuple[Any, ...]) -> tuple[dict[str, Any], identity.ClusterName]:
    """Identity of a log line from its identity facts (the cache key of `fields_to_row`)."""
    (
        cluster_raw,
        local,
        authority,
        host,
        reached,
        sni,
        down_peer_in,
        down_local_in,
        up_peer_in,
        up_local,
        up_mx,
        down_mx,
    ) = key
    cluster = identity.parse_upstream_cluster(cluster_raw)
    has_tls_fields = down_peer_in is not _ABSENT or down_local_in is not _ABSENT
    down_peer = "" if down_peer_in is _ABSENT else _dash(down_peer_in)
    down_local = "" if down_local_in is _ABSENT else _dash(down_local_in)
    up_peer = "" if up_peer_in is _ABSENT else _dash(up_peer_in)
    # A client-side request that never reached an upstream host has no connection to judge.
    has_up_fields = up_peer_in is not _ABSENT and reached
    obs = Observation(
        cluster=cluster,
        local=local,
        authority=authority,
        local_principal=identity.known(down_local),
        peer_principal=identity.known(down_peer),
        tls_local_cert=bool(down_local) if has_tls_fields else None,
        tls_peer_cert=bool(down_peer) if has_tls_fields else None,
        sni=sni,
        upstream_host=host.rsplit(":", 1)[0],
        upstream_peer=identity.peer_from_header(up_mx),
        downstream_peer=identity.peer_from_header(down_mx),
        upstream_peer_principal=identity.known(up_peer),
        upstream_tls=bool(up_peer and up_local) if has_up_fields else None,
    )
    return identity.resolve(obs), cluster


def fields_to_row(
    f: Mapping[str, Any],
    *,
    local: Workload = identity.UNKNOWN_WORKLOAD,
    node_id: str = "",
    origin: str = "file",
    default_ts_us: int | None = None,
) -> dict[str, Any] | None:
    """Istio JSON-format fields (also what the text parser yields) -> a requests row.
    Optional extra keys (our local mesh's OTel attributes, custom formats): downstream_peer_uri_san,
    downstream_local_uri_san, upstream_peer_uri_san, upstream_local_uri_san, traceparent,
    trace_id, grpc_status, content_type, and upstream_peer / downstream_peer (Istio's
    x-envoy-peer-metadata value, e.g. from %RESP(X-ENVOY-PEER-METADATA)%)."""
    ts = _ts_us(f.get("start_time"))
    if ts is None:
        ts = default_ts_us
    if ts is None:
        return None
    get = f.get
    cluster_raw = _dash(get("upstream_cluster"))
    protocol_text = _dash(get("protocol"))
    method = _dash(get("method"))
    is_tcp = not method and (not protocol_text or protocol_text.lower() == "tcp")
    authority = _dash(get("authority"))
    upstream_host = _dash(get("upstream_host"))
    key = (
        cluster_raw,
        local,
        authority,
        upstream_host or _dash(get("downstream_local_address")),
        bool(upstream_host),
        _dash(get("requested_server_name")),
        get("downstream_peer_uri_san", _ABSENT),
        get("downstream_local_uri_san", _ABSENT),
        get("upstream_peer_uri_san", _ABSENT),
        _dash(get("upstream_local_uri_san")),
        _text_or_none(get("upstream_peer")),
        _text_or_none(get("downstream_peer")),
    )
    cached = _IDENTITY_CACHE.get(key)
    if cached is None:
        cached = _resolve(key)
        if len(_IDENTITY_CACHE) >= _IDENTITY_CACHE_MAX:
            _IDENTITY_CACHE.clear()
        _IDENTITY_CACHE[key] = cached
    ident, cluster = cached
    row = dict(ident)
    grpc_status = _dash(f.get("grpc_status"))
    content_type = _dash(f.get("content_type"))
    if is_tcp:
        protocol = "tcp"
    elif grpc_status or content_type.startswith("application/grpc"):
        protocol = "grpc"
    else:
        protocol = "http"
    trace_id = _dash(f.get("trace_id"))
    tp = _dash(f.get("traceparent")).split("-")
    if not trace_id and len(tp) >= 4 and len(tp[1]) == 32:
        trace_id = tp[1]
    dlocal = _dash(f.get("downstream_local_address"))
    duration = _int(f.get("duration"))
    row.update(
        ts=ts,
        duration_ms=float(duration) if duration is not None else None,
        protocol=protocol,
        method=method or None,
        path=_dash(f.get("path")) or None,
        authority=authority or None,
        response_code=_int(f.get("response_code"), 999) or 0,  # HTTP codes have 3 digits
        grpc_status=grpc_status,
        response_flags=_dash(f.get("response_flags")) or "-",
        request_bytes=_int(f.get("bytes_received")),
        response_bytes=_int(f.get("bytes_sent")),
        upstream_cluster=cluster.raw or UNKNOWN,
        request_id=_dash(f.get("request_id")),
        trace_id=trace_id.lower(),
        node_id=node_id,
        origin=origin,
        user_agent=_dash(f.get("user_agent")) or None,
        destination_port=cluster.port if cluster.port is not None else _addr_port(dlocal),
        source_address=_dash(f.get("downstream_remote_address")).rsplit(":", 1)[0] or None,
        connection_termination_details=_dash(f.get("connection_termination_details")) or None,
        response_code_details=_dash(f.get("response_code_details")) or None,
    )
    return row


def parse_fields(line: str) -> dict[str, Any] | None:
    """Text or JSON line (k8s prefixes stripped) -> field dict, None when not an access log."""
    text = strip_k8s_prefix(line.strip())
    if text.startswith("{"):
        return parse_json_fields(text)
    if text.startswith("["):
        return parse_text_fields(text)
    return None


def parse_access_log_line(
    line: str,
    *,
    local: Workload = identity.UNKNOWN_WORKLOAD,
    node_id: str = "",
    origin: str = "file",
) -> dict[str, Any] | None:
    """One access-log line (Istio text or JSON format) -> a requests row, None if it is not
    one (other log lines, malformed lines)."""
    fields = parse_fields(line)
    if fields is None:
        return None
    try:
        return fields_to_row(fields, local=local, node_id=node_id, origin=origin)
    except _OutOfRange:
        return None


def decode_lines_record(record: Record) -> dict[str, pa.Table]:
    """A record of access-log lines (UTF-8, one per line; context = source name). Lines that
    are not access logs are skipped (the importer counts and reports them)."""
    text = record.payload.decode("utf-8", errors="replace")
    rows = [r for r in (parse_access_log_line(ln) for ln in text.splitlines() if ln.strip()) if r]
    return {"requests": rows_to_table(rows)}
