"""The service graph from proxy requests, with Kiali's semantics.

Levels (Kiali graph types): `workload` (default), `app`, `versioned-app`, `service`.
  * Reporters are de-duplicated like Kiali (the catalog's `traffic` view): the destination's
    report counts for traffic that reached a destination proxy (its latency excludes the
    network hop), the source's report for traffic that never did (external hosts, UF/UH/NR...).
  * A source without peer identity (no sidecar, plain-text, probes) is the `unknown` node.
  * A destination without a known workload is a service node (Kiali's `svc_<ns>_<service>`);
    hosts outside the cluster are service nodes in namespace `unknown` with is_service_entry.
  * `service` level: Kiali condenses a workload graph with injected service nodes into
    service -> service edges; we key the caller by its canonical service (what Istio labels the
    workload's service) and the callee by destination_service_name. Unknown stays unknown.
Edges are keyed by (source, target, protocol), as Kiali's are.

All statistics come from ONE DuckDB aggregate over the de-duplicated rows (exact quantiles,
quantile_cont); the response breakdown (code x flags x host) rides along as a histogram().
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Final, Literal

import duckdb

from analytics.catalog import (
    IS_4XX,
    IS_5XX,
    IS_ERROR,
    IS_GRPC_ERROR,
    IS_NO_RESPONSE,
    TRAFFIC_SQL,
)
from analytics.errors import GraphError
from analytics.window import TimeWindow

Level = Literal["workload", "app", "versioned-app", "service"]
Source = Literal["requests", "spans", "auto"]
LEVELS: Final = ("workload", "app", "versioned-app", "service")
SOURCES: Final = ("requests", "spans", "auto")
UNKNOWN: Final = "unknown"
UNKNOWN_ID: Final = "unknown"

# Per level: (source key columns, destination key columns, destination-known condition).
_U = "'unknown'"
_SRC_UNKNOWN = "coalesce(source_workload, 'unknown') = 'unknown'"
_LEVEL_KEYS: Final[dict[str, tuple[str, str, str]]] = {
    "workload": ("source_workload", "destination_workload",
                 "coalesce(destination_workload, 'unknown') <> 'unknown'"),
    "app": ("source_canonical_service", "destination_canonical_service",
            "coalesce(destination_canonical_service, 'unknown') <> 'unknown'"),
    "versioned-app": (
        "source_canonical_service || '/' || source_version",
        "destination_canonical_service || '/' || destination_version",
        "coalesce(destination_canonical_service, 'unknown') <> 'unknown'",
    ),
    "service": ("source_canonical_service", "destination_service_name", "false"),
}


def _svc_name() -> str:
    # The service node's name: the short name for cluster services, else the host itself.
    return (
        "CASE WHEN coalesce(destination_service_name, 'unknown') <> 'unknown' "
        "THEN destination_service_name ELSE coalesce(destination_service, 'unknown') END"
    )


def _code_label() -> str:
    # Kiali's HandleResponseCode: 0 -> '-', gRPC uses grpc status unless HTTP said 4xx/5xx.
    return (
        "CASE WHEN protocol = 'tcp' THEN '-' "
        "WHEN coalesce(response_code, 0) = 0 THEN '-' "
        "WHEN protocol = 'grpc' AND response_code < 400 AND coalesce(grpc_status, '') <> '' "
        "THEN grpc_status ELSE response_code::VARCHAR END"
    )


def graph_sql(level: str, namespaces: Sequence[str] = ()) -> str:
    """The single aggregate behind a requests graph at `level` (see the module doc)."""
    if level not in _LEVEL_KEYS:
        raise GraphError(f"unknown graph level {level!r}; choose from {', '.join(LEVELS)}")
    src_key, dst_key, dst_known = _LEVEL_KEYS[level]
    where = ""
    if namespaces:
        ns = ", ".join("'" + n.replace("'", "''") + "'" for n in namespaces)
        where = f"WHERE source_namespace IN ({ns}) OR destination_namespace IN ({ns})"
    return f"""
WITH traffic AS ({TRAFFIC_SQL}),
t AS (
    SELECT *,
        CASE WHEN {_SRC_UNKNOWN} THEN 'unknown' ELSE 'node' END AS s_type,
        CASE WHEN {_SRC_UNKNOWN} THEN {_U} ELSE coalesce(source_namespace, {_U}) END AS s_ns,
        CASE WHEN {_SRC_UNKNOWN} THEN {_U} ELSE coalesce({src_key}, {_U}) END AS s_key,
        CASE WHEN {dst_known} THEN 'node' ELSE 'service' END AS d_type,
        coalesce(destination_namespace, {_U}) AS d_ns,
        CASE WHEN {dst_known} THEN coalesce({dst_key}, {_U}) ELSE {_svc_name()} END AS d_key
    FROM traffic
    {where}
)
SELECT
    s_type, s_ns, s_key, d_type, d_ns, d_key, protocol,
    any_value(source_workload) AS s_workload,
    any_value(source_canonical_service) AS s_app,
    any_value(source_version) AS s_version,
    any_value(destination_workload) AS d_workload,
    any_value(destination_canonical_service) AS d_app,
    any_value(destination_version) AS d_version,
    any_value({_svc_name()}) AS d_service,
    count(*) AS requests,
    count(*) FILTER (WHERE {IS_ERROR}) AS errors,
    count(*) FILTER (WHERE {IS_5XX}) AS errors_5xx,
    count(*) FILTER (WHERE {IS_4XX}) AS errors_4xx,
    count(*) FILTER (WHERE {IS_GRPC_ERROR}) AS errors_grpc,
    count(*) FILTER (WHERE {IS_NO_RESPONSE}) AS no_response,
    count(*) FILTER (WHERE protocol <> 'tcp' AND response_code >= 300 AND response_code < 400)
        AS responses_3xx,
    quantile_cont(duration_ms, [0.5, 0.95, 0.99]) AS q,
    avg(duration_ms) AS avg_ms,
    coalesce(sum(request_bytes), 0) AS request_bytes,
    coalesce(sum(response_bytes), 0) AS response_bytes,
    avg(CASE WHEN mtls THEN 1.0 ELSE 0.0 END) AS mtls_ratio,
    mode(source_principal) AS source_principal,
    mode(destination_principal) AS destination_principal,
    histogram({_code_label()} || ' ' || coalesce(response_flags, '-') || ' '
              || coalesce(destination_service, 'unknown')) AS responses,
    count(*) FILTER (WHERE reporter = 'source') AS source_reported,
    min(ts) AS first_seen,
    max(ts) AS last_seen
FROM t
GROUP BY ALL
ORDER BY ALL
"""


@dataclass(frozen=True, slots=True)
class Node:
    id: str
    node_type: str  # workload | app | service | unknown
    namespace: str
    workload: str = UNKNOWN
    app: str = UNKNOWN
    version: str = UNKNOWN
    service: str = UNKNOWN
    health: str | None = None  # Healthy | Degraded | Failure | NA (analytics.health)
    is_root: bool = False  # no inbound traffic: a traffic generator
    is_unknown: bool = False
    is_outside: bool = False  # outside the requested namespaces
    is_service_entry: bool = False  # an external host (no cluster namespace)
    requests_in: int = 0
    requests_out: int = 0
    errors_in: int = 0
    rps_in: float = 0.0
    rps_out: float = 0.0
    error_rate_in: float | None = None
    tcp_bytes_in: int = 0
    tcp_bytes_out: int = 0
    traffic: dict[str, dict[str, float]] = field(default_factory=dict)  # protocol -> rates


@dataclass(frozen=True, slots=True)
class Response:
    code: str  # HTTP code, gRPC status, or '-' (no response / TCP)
    flags: str
    host: str
    count: int


@dataclass(frozen=True, slots=True)
class Edge:
    source: str
    target: str
    protocol: str
    requests: int  # TCP: connections
    rps: float
    errors: int
    error_rate: float  # 5xx + no response + gRPC errors, fraction 0..1
    errors_5xx: int
    errors_4xx: int
    errors_grpc: int
    no_response: int
    responses_3xx: int
    error_rate_5xx: float
    error_rate_4xx: float
    error_rate_grpc: float
    no_response_rate: float
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    avg_ms: float | None
    request_bytes: int
    response_bytes: int
    throughput_bps: float  # (request + response bytes) / window seconds
    share: float  # fraction of the source node's traffic of this protocol (Kiali percentReq)
    mtls_ratio: float
    source_principal: str
    destination_principal: str
    hosts: tuple[str, ...]
    responses: tuple[Response, ...]
    source_reported: int  # requests counted from the source proxy (never reached a destination)
    first_seen: str | None
    last_seen: str | None
    health: str | None = None

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["hosts"] = list(self.hosts)
        d["responses"] = responses_json(self.responses)
        if self.protocol == "tcp":
            d["connections"] = self.requests
            d["bytes_sent"] = self.request_bytes
            d["bytes_received"] = self.response_bytes
        return d


def responses_json(responses: Sequence[Response]) -> dict[str, Any]:
    """Kiali's shape with counts: {code: {"count", "flags": {flag: n}, "hosts": {host: n}}}."""
    out: dict[str, Any] = {}
    for r in responses:
        entry = out.setdefault(r.code, {"count": 0, "flags": {}, "hosts": {}})
        entry["count"] += r.count
        entry["flags"][r.flags] = entry["flags"].get(r.flags, 0) + r.count
        entry["hosts"][r.host] = entry["hosts"].get(r.host, 0) + r.count
    return out


@dataclass(frozen=True, slots=True)
class Graph:
    level: str
    source: str
    window: TimeWindow
    nodes: tuple[Node, ...]
    edges: tuple[Edge, ...]
    namespaces: tuple[str, ...] = ()

    def node(self, node_id: str) -> Node:
        for n in self.nodes:
            if n.id == node_id:
                return n
        raise KeyError(node_id)

    def edge(self, source: str, target: str, protocol: str | None = None) -> Edge:
        for e in self.edges:
            if e.source == source and e.target == target and protocol in (None, e.protocol):
                return e
        raise KeyError((source, target, protocol))

    def to_json(self) -> dict[str, Any]:
        return {
            "level": self.level,
            "source": self.source,
            "window": self.window.to_json(),
            "namespaces": list(self.namespaces),
            "nodes": [asdict(n) for n in self.nodes],
            "edges": [e.to_json() for e in self.edges],
        }


def node_id(node_type: str, level: str, namespace: str, key: str) -> str:
    """Readable, stable ids after Kiali's graph.Id (without the cluster and the sha256)."""
    if node_type == "unknown":
        return UNKNOWN_ID
    if node_type == "service":
        return f"svc:{namespace}/{key}"
    prefix = {"workload": "wl", "app": "app", "versioned-app": "vapp", "service": "svc"}[level]
    return f"{prefix}:{namespace}/{key}"


def _node_type(level: str) -> str:
    return {"workload": "workload", "app": "app", "versioned-app": "app", "service": "service"}[
        level
    ]


def _ratio(n: int, d: int) -> float:
    return n / d if d else 0.0


def _num(v: Any) -> float | None:
    if v is None:
        return None
    f = float(v)
    return None if math.isnan(f) else f


def _responses(hist: dict[str, int] | None) -> tuple[Response, ...]:
    out = []
    for label, count in (hist or {}).items():
        code, flags, host = (label.split(" ", 2) + ["-", UNKNOWN])[:3]
        out.append(Response(code, flags, host, int(count)))
    return tuple(sorted(out, key=lambda r: (r.code, r.flags, r.host)))


def requests_graph(
    conn: duckdb.DuckDBPyConnection,
    window: TimeWindow,
    *,
    level: str = "workload",
    namespaces: Sequence[str] = (),
) -> Graph:
    rows = conn.execute(graph_sql(level, namespaces)).fetchall()
    cols = [d[0] for d in conn.description or ()]
    return build_graph([dict(zip(cols, r, strict=True)) for r in rows], window, level=level,
                       source="requests", namespaces=namespaces)


def build_graph(
    rows: Sequence[dict[str, Any]],
    window: TimeWindow,
    *,
    level: str,
    source: str,
    namespaces: Sequence[str] = (),
) -> Graph:
    """Nodes and edges from aggregate rows (one per source key, target key, protocol)."""
    seconds = window.seconds
    nodes: dict[str, Node] = {}
    ns_set = set(namespaces)

    def add_node(nid: str, **attrs: Any) -> None:
        if nid not in nodes:
            ns = attrs.get("namespace", UNKNOWN)
            nodes[nid] = Node(
                id=nid,
                is_outside=bool(ns_set) and ns not in ns_set and nid != UNKNOWN_ID,
                **attrs,
            )

    pending: list[tuple[dict[str, Any], str, str]] = []
    for r in rows:
        s_type = "unknown" if r["s_type"] == "unknown" else _node_type(level)
        sid = node_id(s_type, level, r["s_ns"], r["s_key"])
        d_type = "service" if r["d_type"] == "service" else _node_type(level)
        did = node_id(d_type, level, r["d_ns"], r["d_key"])
        if s_type == "unknown":
            add_node(sid, node_type="unknown", namespace=UNKNOWN, is_unknown=True)
        else:
            add_node(
                sid,
                node_type=s_type,
                namespace=r["s_ns"],
                workload=r["s_workload"] if level == "workload" else UNKNOWN,
                app=r["s_app"] or UNKNOWN,
                version=r["s_version"] if level in ("workload", "versioned-app") else UNKNOWN,
                service=r["s_app"] if level == "service" else UNKNOWN,
            )
        if d_type == "service":
            add_node(
                did,
                node_type="service",
                namespace=r["d_ns"],
                service=r["d_key"],
                is_service_entry=r["d_ns"] == UNKNOWN,
            )
        else:
            add_node(
                did,
                node_type=d_type,
                namespace=r["d_ns"],
                workload=r["d_workload"] if level == "workload" else UNKNOWN,
                app=r["d_app"] or UNKNOWN,
                version=r["d_version"] if level in ("workload", "versioned-app") else UNKNOWN,
                service=r["d_service"] or UNKNOWN,
            )
        pending.append((r, sid, did))

    out_by_proto: dict[tuple[str, str], int] = defaultdict(int)
    for r, sid, _did in pending:
        out_by_proto[(sid, r["protocol"])] += int(r["requests"])

    edges: list[Edge] = []
    for r, sid, did in pending:
        n = int(r["requests"])
        q = r["q"] or [None, None, None]
        resp = _responses(r["responses"])
        edges.append(
            Edge(
                source=sid,
                target=did,
                protocol=r["protocol"],
                requests=n,
                rps=n / seconds,
                errors=int(r["errors"]),
                error_rate=_ratio(r["errors"], n),
                errors_5xx=int(r["errors_5xx"]),
                errors_4xx=int(r["errors_4xx"]),
                errors_grpc=int(r["errors_grpc"]),
                no_response=int(r["no_response"]),
                responses_3xx=int(r["responses_3xx"]),
                error_rate_5xx=_ratio(r["errors_5xx"], n),
                error_rate_4xx=_ratio(r["errors_4xx"], n),
                error_rate_grpc=_ratio(r["errors_grpc"], n),
                no_response_rate=_ratio(r["no_response"], n),
                p50_ms=_num(q[0]),
                p95_ms=_num(q[1]),
                p99_ms=_num(q[2]),
                avg_ms=_num(r["avg_ms"]),
                request_bytes=int(r["request_bytes"]),
                response_bytes=int(r["response_bytes"]),
                throughput_bps=(int(r["request_bytes"]) + int(r["response_bytes"])) / seconds,
                share=_ratio(n, out_by_proto[(sid, r["protocol"])]),
                mtls_ratio=float(r["mtls_ratio"] or 0.0),
                source_principal=r["source_principal"] or UNKNOWN,
                destination_principal=r["destination_principal"] or UNKNOWN,
                hosts=tuple(sorted({x.host for x in resp})),
                responses=resp,
                source_reported=int(r["source_reported"]),
                first_seen=r["first_seen"].isoformat() if r["first_seen"] else None,
                last_seen=r["last_seen"].isoformat() if r["last_seen"] else None,
            )
        )
    edges = _merge_duplicate_edges(edges)
    return Graph(level, source, window, _with_traffic(nodes, edges, seconds),
                 tuple(sorted(edges, key=lambda e: (e.source, e.target, e.protocol))),
                 tuple(namespaces))


def _merge_duplicate_edges(edges: list[Edge]) -> list[Edge]:
    # Keys are unique per aggregate row, so duplicates cannot happen at the SQL level; guard
    # anyway (e.g. two service hosts folding into one node) by refusing silently wrong merges.
    seen: dict[tuple[str, str, str], Edge] = {}
    for e in edges:
        k = (e.source, e.target, e.protocol)
        if k in seen:
            raise GraphError(f"duplicate edge {k}: aggregate keys are not unique")
        seen[k] = e
    return edges


def _with_traffic(nodes: dict[str, Node], edges: Sequence[Edge], seconds: float) -> tuple[Node, ...]:
    """Node in/out totals, Kiali-style per-protocol rates, is_root."""
    agg: dict[str, dict[str, Any]] = {
        nid: {"requests_in": 0, "requests_out": 0, "errors_in": 0, "tcp_bytes_in": 0,
              "tcp_bytes_out": 0, "traffic": defaultdict(lambda: defaultdict(float))}
        for nid in nodes
    }
    for e in edges:
        src, dst = agg[e.source], agg[e.target]
        p = e.protocol
        if p == "tcp":
            b = e.request_bytes + e.response_bytes
            src["tcp_bytes_out"] += b
            dst["tcp_bytes_in"] += b
            src["traffic"]["tcp"]["tcpOut"] += b / seconds
            dst["traffic"]["tcp"]["tcpIn"] += b / seconds
            continue
        src["requests_out"] += e.requests
        dst["requests_in"] += e.requests
        dst["errors_in"] += e.errors
        src["traffic"][p][f"{p}Out"] += e.rps
        dst["traffic"][p][f"{p}In"] += e.rps
        if p == "http":
            for key, count in (("httpIn3xx", e.responses_3xx), ("httpIn4xx", e.errors_4xx),
                               ("httpIn5xx", e.errors_5xx), ("httpInNoResponse", e.no_response)):
                if count:
                    dst["traffic"][p][key] += count / seconds
        else:
            for key, count in (("grpcInErr", e.errors_grpc + e.errors_5xx + e.errors_4xx),
                               ("grpcInNoResponse", e.no_response)):
                if count:
                    dst["traffic"][p][key] += count / seconds
    has_inbound = {e.target for e in edges}
    out = []
    for nid, n in sorted(nodes.items()):
        a = agg[nid]
        out.append(
            replace(
                n,
                requests_in=a["requests_in"],
                requests_out=a["requests_out"],
                errors_in=a["errors_in"],
                rps_in=a["requests_in"] / seconds,
                rps_out=a["requests_out"] / seconds,
                error_rate_in=_ratio(a["errors_in"], a["requests_in"]) if a["requests_in"] else None,
                tcp_bytes_in=a["tcp_bytes_in"],
                tcp_bytes_out=a["tcp_bytes_out"],
                is_root=nid not in has_inbound,
                traffic={p: dict(r) for p, r in sorted(a["traffic"].items())},
            )
        )
    return tuple(out)


def service_graph(
    conn: duckdb.DuckDBPyConnection,
    window: TimeWindow,
    *,
    level: str = "workload",
    namespace: str | Sequence[str] | None = None,
    source: str = "requests",
    health_config: Any = None,
) -> Graph:
    """The graph for `window` from proxy requests, spans, or whichever has data (`auto`),
    with health per node and edge (analytics.health, Kiali's tolerances unless given)."""
    from analytics.health import annotate_graph, default_health_config

    if source not in SOURCES:
        raise GraphError(f"unknown graph source {source!r}; choose from {', '.join(SOURCES)}")
    if level not in LEVELS:
        raise GraphError(f"unknown graph level {level!r}; choose from {', '.join(LEVELS)}")
    namespaces: tuple[str, ...] = (
        () if namespace is None else (namespace,) if isinstance(namespace, str) else tuple(namespace)
    )
    if source == "auto":
        has_requests = conn.execute("SELECT count(*) > 0 FROM (SELECT 1 FROM requests LIMIT 1)")
        source = "requests" if has_requests.fetchone() == (True,) else "spans"
    if source == "requests":
        graph = requests_graph(conn, window, level=level, namespaces=namespaces)
    else:
        from analytics.graph_spans import spans_graph

        graph = spans_graph(conn, window, level=level, namespaces=namespaces)
    return annotate_graph(graph, health_config or default_health_config())
