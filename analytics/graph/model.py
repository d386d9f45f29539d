"""The service graph's values: nodes, edges, their response series, and the graph itself
(Kiali's model, with counts), plus the shapes every source (requests, spans, Prometheus)
produces before ids and totals are assigned (NodeRef, Series, EdgeStats)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Final, Literal

from meshlens.analytics import error_rule
from meshlens.analytics.window import TimeWindow

Level = Literal["workload", "app", "versioned-app", "service"]
Source = Literal["requests", "spans", "auto"]
LEVELS: Final = ("workload", "app", "versioned-app", "service")
SOURCES: Final = ("requests", "spans", "auto")
UNKNOWN: Final = "unknown"
UNKNOWN_ID: Final = "unknown"


def code_label(protocol: str, code: int, grpc: str) -> str:
    """Kiali's HandleResponseCode: 0 -> '-', gRPC shows its status unless HTTP said 4xx/5xx."""
    if protocol == "tcp" or code == 0:
        return "-"
    if protocol == "grpc" and code < 400 and grpc:
        return grpc
    return str(code)


def classify(protocol: str, code: int, grpc: str) -> tuple[bool, bool, bool, bool, bool]:
    """(5xx, 4xx, grpc error, no response, 3xx): analytics/error_rule.py."""
    return error_rule.classes(protocol, code, grpc)


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
    is_virtual: bool = False  # spans: a peer without spans of its own (user, db, peer.service)
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
    count: float  # an int, except transiently for Prometheus estimates (rounded on output)


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
    connection_type: str = ""  # spans: '' | messaging_system | database | virtual_node

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
    if node_type == "virtual":
        return f"virtual:{key}"
    if node_type == "service":
        return f"svc:{namespace}/{key}"
    prefix = {"workload": "wl", "app": "app", "versioned-app": "vapp", "service": "svc"}[level]
    return f"{prefix}:{namespace}/{key}"


@dataclass(frozen=True, slots=True)
class NodeRef:
    """A node as an aggregate row names it (before ids and traffic totals)."""

    node_type: str  # workload | app | service | unknown
    namespace: str
    key: str  # workload name, app, app/version, or service name
    workload: str = UNKNOWN
    app: str = UNKNOWN
    version: str = UNKNOWN
    service: str = UNKNOWN


@dataclass(frozen=True, slots=True)
class Series:
    """Requests of one edge with one response code x gRPC status x flags x host."""

    code: int
    grpc: str
    flags: str
    host: str
    requests: float
    mtls: float = 0.0
    request_bytes: float = 0.0
    response_bytes: float = 0.0
    # Requests whose mTLS is known: a client's report that no server report paired (yet) does
    # not know it, and must not count as plaintext (Kiali reads it from the destination's
    # telemetry). None: all of them (Prometheus' connection_security_policy).
    mtls_known: float | None = None


@dataclass(frozen=True, slots=True)
class EdgeStats:
    """Everything an edge needs, from any source (requests, spans, Prometheus)."""

    source: NodeRef
    target: NodeRef
    protocol: str
    series: tuple[Series, ...]
    p50_ms: float | None = None
    p95_ms: float | None = None
    p99_ms: float | None = None
    avg_ms: float | None = None
    source_principal: str = UNKNOWN
    destination_principal: str = UNKNOWN
    source_reported: float = 0.0
    first_seen: str | None = None
    last_seen: str | None = None
    failed: float | None = None  # spans: failed requests (status / configured codes)
    connection_type: str = ""
