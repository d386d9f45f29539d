"""OTLP ExportTraceServiceRequest -> rows of the `spans` table.

Both generations of OpenTelemetry semantic conventions land in the same columns
(`http.method` and `http.request.method` alike), and so do the tags of Envoy's tracers (string
values such as `http.status_code: "503"`, `error: "true"`, `upstream_cluster`). Columns are built
as one Python list each and turned into Arrow once per request; see `otlp_wire` for why
attributes arrive as raw bytes.
"""

from __future__ import annotations

from typing import Any, Final
from urllib.parse import urlsplit

import numpy as np
import pyarrow as pa
from google.protobuf.message import DecodeError as ProtobufDecodeError

from meshlens.collector.decode import limits
from meshlens.collector.decode.attributes import (
    KeyValueCache,
    ResourceInfo,
    entries_json,
    resource_for,
    to_json,
)
from meshlens.collector.decode.otlp_wire import Status, TracesRequest
from meshlens.collector.errors import DecodeError
from meshlens.collector.store.records import Record
from meshlens.collector.store.schema import SPANS

KIND: Final = "otlp traces"
_KINDS: Final = ("internal", "internal", "server", "client", "producer", "consumer")
_STATUS: Final = ("unset", "ok", "error")
_INT32_MAX: Final = 2**31 - 1
# Attributes of the less common span columns (rpc, peer, db, messaging).
_RARE_KEYS: Final = frozenset(
    {
        "rpc.service",
        "rpc.method",
        "rpc.grpc.status_code",
        "grpc.status_code",
        "peer.service",
        "db.system",
        "db.system.name",
        "db.name",
        "db.namespace",
        "messaging.system",
    }
)

_cache = KeyValueCache()
_statuses: dict[bytes, tuple[str, str]] = {}


def _status(raw: bytes) -> tuple[str, str]:
    """(status_code, status_message) of an encoded Status, memoised (bounded)."""
    found = _statuses.get(raw)
    if found is None:
        st = Status.FromString(raw)
        code = st.code
        found = (_STATUS[code] if 0 <= code < 3 else "unset", st.message)
        if len(_statuses) >= 10_000:
            _statuses.clear()
        _statuses[raw] = found
    return found


def text(value: object) -> str | None:
    """An attribute value as column text (None stays None)."""
    if value is None or type(value) is str:
        return value
    if type(value) is bool:
        return "true" if value else "false"
    return str(value) if isinstance(value, int | float) else to_json(value)


def int32(value: object) -> int | None:
    """An attribute value as an INTEGER column value, if it is one (Envoy sends "503")."""
    if type(value) is int:
        n = value
    elif type(value) is str:
        v = value.strip()
        if not v.isdigit() or len(v) > 10:
            return None
        n = int(v)
    elif type(value) is float and value.is_integer():
        n = int(value)
    else:
        return None
    return n if -_INT32_MAX - 1 <= n <= _INT32_MAX else None


def _server_address(d: dict[str, object], kind: str) -> str | None:
    """server.address, else the old conventions' host/peer name, else Envoy's upstream cluster
    host (egress spans: outbound|9080|v1|reviews.default.svc.cluster.local), else the URL host."""
    addr = d.get("server.address")
    if addr is None:
        addr = d.get("net.host.name" if kind == "server" else "net.peer.name")
    if addr is None:
        cluster = d.get("upstream_cluster")
        if type(cluster) is str and cluster.startswith("outbound|"):
            addr = cluster.rpartition("|")[2] or None
    if addr is None:
        url = d.get("url.full") or d.get("http.url")
        if type(url) is str:
            try:
                addr = urlsplit(url).hostname
            except ValueError:
                addr = None
    return text(addr)


_Columns = dict[str, list[Any]]  # one list per column (plus start_ns, end_ns)


def _new_columns() -> _Columns:
    return {name: [] for name in (*(f.name for f in SPANS), "start_ns", "end_ns")}


def _table(c: _Columns, received_ns: int) -> pa.Table:
    """The column lists as one Arrow table (timestamps and durations vectorised)."""
    n = len(c["trace_id"])
    start = np.array(c["start_ns"], dtype=np.uint64)
    end = np.array(c["end_ns"], dtype=np.uint64)
    # A span without a start time still needs a partition: use the time we received it.
    start[start == 0] = max(received_ns, 0)
    end = np.where(end == 0, start, end)
    duration_ms = np.where(end >= start, (end - start).astype(np.float64) / 1e6, 0.0)
    arrays: list[pa.Array] = []
    for field in SPANS:
        name = field.name
        if name == "start_ts":
            arrays.append(_ts_array(start))
        elif name == "end_ts":
            arrays.append(_ts_array(end))
        elif name == "duration_ms":
            arrays.append(pa.array(duration_ms, type=pa.float64()))
        else:
            arrays.append(pa.array(c[name], type=field.type, size=n))
    return pa.Table.from_arrays(arrays, schema=SPANS)


def _ts_array(ns: np.ndarray[Any, Any]) -> pa.Array:
    us = (ns // np.uint64(1000)).astype(np.int64)  # uint64 ns // 1000 always fits int64 us
    return pa.array(us, type=pa.int64()).cast(SPANS.field("start_ts").type)


def _links(links: Any) -> str:
    return to_json([{"trace_id": lk.trace_id.hex(), "span_id": lk.span_id.hex()} for lk in links])


def _decode_scope(c: _Columns, spans: Any, res: ResourceInfo, scope_name: str) -> int:
    """Append the spans' rows to `c`; returns how many attributes the limits dropped."""
    lim = limits.current()
    count_limit, length_limit = lim.span_attribute_count, lim.attribute_value_length
    limited = _cache.limited
    dropped = 0
    trace_id = c["trace_id"].append
    span_id = c["span_id"].append
    parent = c["parent_span_id"].append
    name = c["name"].append
    kind_col = c["kind"].append
    start = c["start_ns"].append
    end = c["end_ns"].append
    status_code = c["status_code"].append
    status_message = c["status_message"].append
    attrs_col = c["attributes"].append
    links_col = c["links"].append
    http_method = c["http_method"].append
    http_status = c["http_status_code"].append
    http_route = c["http_route"].append
    rpc_service = c["rpc_service"].append
    rpc_method = c["rpc_method"].append
    rpc_status = c["rpc_grpc_status_code"].append
    peer_service = c["peer_service"].append
    server_address = c["server_address"].append
    db_system = c["db_system"].append
    db_name = c["db_name"].append
    messaging = c["messaging_system"].append
    kinds = _KINDS
    rare = (rpc_service, rpc_method, rpc_status, peer_service, db_system, db_name, messaging)
    no_attributes = (http_method, http_status, http_route, server_address, *rare)
    status_of = _status
    for sp in spans:
        trace_id(sp.trace_id.hex())
        span_id(sp.span_id.hex())
        parent(sp.parent_span_id.hex())
        name(sp.name)
        k = sp.kind
        kind = kinds[k] if 0 <= k < 6 else "internal"
        kind_col(kind)
        start(sp.start_time_unix_nano)
        end(sp.end_time_unix_nano)
        raw_status = sp.status
        if raw_status:
            status, message = status_of(raw_status)
        else:  # most spans: no status, or an empty one
            status, message = "unset", ""
        status_message(message)
        links = sp.links
        links_col(_links(links) if links else "[]")
        raws = sp.attributes
        if not raws:
            attrs_col("{}")
            status_code(status)
            for col in no_attributes:
                col(None)
            continue
        entries, over = limited(raws, count_limit, length_limit)
        dropped += over
        d, js = entries_json(entries)
        attrs_col(js)
        get = d.get
        if status == "unset" and get("error") in ("true", True):
            status = "error"  # Envoy (before status support) and OpenTracing mark errors so
        status_code(status)
        v = get("http.request.method") or get("http.method")
        http_method(v if v is None or type(v) is str else text(v))
        v = get("http.response.status_code")
        http_status(int32(v if v is not None else get("http.status_code")))
        v = get("http.route")
        http_route(v if v is None or type(v) is str else text(v))
        server_address(_server_address(d, kind))
        if _RARE_KEYS.isdisjoint(d):  # most spans: skip ten lookups
            for col in rare:
                col(None)
            continue
        rpc_service(text(get("rpc.service")))
        rpc_method(text(get("rpc.method")))
        v = get("rpc.grpc.status_code")
        rpc_status(int32(v if v is not None else get("grpc.status_code")))
        peer_service(text(get("peer.service")))
        v = get("db.system")
        db_system(text(v if v is not None else get("db.system.name")))
        v = get("db.name")
        db_name(text(v if v is not None else get("db.namespace")))
        messaging(text(get("messaging.system")))
    n = len(spans)
    c["service_name"].extend([res.service_name] * n)
    c["service_namespace"].extend([res.service_namespace] * n)
    c["service_version"].extend([res.service_version] * n)
    c["resource_attributes"].extend([res.attributes_json] * n)
    c["scope_name"].extend([scope_name] * n)
    return dropped


def decode_traces(payload: bytes, received_ns: int = 0) -> pa.Table:
    """An encoded ExportTraceServiceRequest as a `spans` table; raises DecodeError."""
    try:
        request = TracesRequest.FromString(payload)
    except (ProtobufDecodeError, ValueError) as exc:
        raise DecodeError(KIND, f"invalid ExportTraceServiceRequest protobuf: {exc}") from exc
    c = _new_columns()
    dropped = 0
    for i, rs in enumerate(request.resource_spans):
        try:
            res = resource_for(rs.resource)
        except (ProtobufDecodeError, ValueError) as exc:
            raise DecodeError(KIND, f"resource_spans[{i}].resource is invalid: {exc}") from exc
        dropped += res.dropped
        for j, ss in enumerate(rs.scope_spans):
            try:
                dropped += _decode_scope(c, ss.spans, res, ss.scope.name)
            except (ProtobufDecodeError, ValueError) as exc:
                where = f"resource_spans[{i}].scope_spans[{j}]"
                raise DecodeError(KIND, f"invalid span in {where}: {exc}") from exc
    limits.dropped_attributes(KIND, dropped)
    return _table(c, received_ns)


def decode_traces_record(record: Record) -> dict[str, pa.Table]:
    return {"spans": decode_traces(record.payload, record.received_ns)}
