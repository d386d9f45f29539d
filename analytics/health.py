"""Health of nodes and edges with Kiali's tolerance model.

A config is a list of rate rules `{namespace, kind, name, tolerance: [...]}` (regexes; the first
rule whose namespace/kind/name match a node applies) and each tolerance is
`{code, protocol, direction, degraded, failure}`: `code`, `protocol` and `direction`
(inbound|outbound) are regexes, `degraded`/`failure` are error percentages. For every direction
and protocol with traffic, each matching tolerance gives ratio = requests whose response code
matches / all requests * 100; ratio 0 (to Kiali's display precision of 0.1 %) is Healthy,
>= failure is Failure, >= degraded is Degraded; the worst status wins; no traffic is NA.
Codes are the graph's response codes: HTTP codes, gRPC status numbers, '-' for no response.
`5XX` in a code means `^5\\d\\d$` (Kiali accepts both spellings).

Defaults (Kiali's AddHealthDefault): http 5xx failure 10 % (any 5xx degraded), http 4xx degraded
10 % / failure 20 %, grpc 1-16 failure 10 %, no response ('-') on http|grpc failure 10 %.
Edge health uses the source node's `outbound` tolerances (an edge is its caller's outbound
traffic).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final

import yaml

from meshlens.analytics.errors import HealthConfigError

HEALTHY: Final = "Healthy"
DEGRADED: Final = "Degraded"
FAILURE: Final = "Failure"
NA: Final = "NA"
_RANK: Final = {NA: 0, HEALTHY: 1, DEGRADED: 2, FAILURE: 3}


def worst(statuses: Iterable[str]) -> str:
    return max(statuses, key=lambda s: _RANK[s], default=NA)


def code_regex(code: str) -> str:
    """Kiali's shorthand: '5XX' -> '^5\\d\\d$'; anything else is used as a regex."""
    if re.fullmatch(r"[0-9xX]{3}", code):
        return "^" + re.sub(r"[xX]", r"\\d", code) + "$"
    return code


@dataclass(frozen=True, slots=True)
class Tolerance:
    code: str
    protocol: str = ".*"
    direction: str = ".*"
    degraded: float = 0.0
    failure: float = 0.0

    def matches(self, protocol: str, direction: str) -> bool:
        return bool(re.search(self.protocol, protocol) and re.search(self.direction, direction))

    def matches_code(self, code: str) -> bool:
        return bool(re.search(code_regex(self.code), code))

    def status(self, ratio_pct: float) -> str:
        if round(ratio_pct, 1) <= 0:
            return HEALTHY
        if ratio_pct >= self.failure:
            return FAILURE
        if ratio_pct >= self.degraded:
            return DEGRADED
        return HEALTHY


@dataclass(frozen=True, slots=True)
class RateRule:
    tolerance: tuple[Tolerance, ...]
    namespace: str = ".*"
    kind: str = ".*"
    name: str = ".*"

    def matches(self, namespace: str, kind: str, name: str) -> bool:
        return bool(
            re.search(self.namespace, namespace)
            and re.search(self.kind, kind)
            and re.search(self.name, name)
        )


@dataclass(frozen=True, slots=True)
class HealthConfig:
    rate: tuple[RateRule, ...]

    def tolerances(self, namespace: str, kind: str, name: str) -> tuple[Tolerance, ...]:
        for rule in self.rate:
            if rule.matches(namespace, kind, name):
                return rule.tolerance
        return DEFAULT_TOLERANCES


DEFAULT_TOLERANCES: Final = (
    Tolerance(code="5XX", protocol="http", degraded=0, failure=10),
    Tolerance(code="4XX", protocol="http", degraded=10, failure=20),
    Tolerance(code="^[1-9]$|^1[0-6]$", protocol="grpc", degraded=0, failure=10),
    Tolerance(code="^-$", protocol="http|grpc", degraded=0, failure=10),
)


def default_health_config() -> HealthConfig:
    return HealthConfig((RateRule(DEFAULT_TOLERANCES),))


def parse_health_config(doc: Any, path: str = "<config>") -> HealthConfig:
    """Kiali's `health_config` (or just its `rate` list) as loaded from YAML/JSON."""
    if isinstance(doc, Mapping) and "health_config" in doc:
        doc = doc["health_config"]
    if isinstance(doc, Mapping):
        doc = doc.get("rate")
    if not isinstance(doc, list) or not doc:
        raise HealthConfigError(path, "expected health_config.rate: a non-empty list of rules")
    rules = []
    for i, raw in enumerate(doc):
        if not isinstance(raw, Mapping):
            raise HealthConfigError(path, f"rate[{i}] is not a mapping")
        tols = raw.get("tolerance")
        if not isinstance(tols, list) or not tols:
            raise HealthConfigError(path, f"rate[{i}].tolerance must be a non-empty list")
        parsed = []
        for j, t in enumerate(tols):
            where = f"rate[{i}].tolerance[{j}]"
            if not isinstance(t, Mapping) or "code" not in t:
                raise HealthConfigError(path, f"{where} needs a code")
            try:
                tol = Tolerance(
                    code=str(t["code"]),
                    protocol=str(t.get("protocol", ".*")),
                    direction=str(t.get("direction", ".*")),
                    degraded=float(t.get("degraded", 0)),
                    failure=float(t.get("failure", 0)),
                )
            except (TypeError, ValueError) as exc:
                raise HealthConfigError(path, f"{where}: {exc}") from None
            if tol.failure and tol.degraded > tol.failure:
                raise HealthConfigError(
                    path, f"{where}: degraded {tol.degraded} > failure {tol.failure}"
                )
            for attr in ("protocol", "direction"):
                _check_regex(path, f"{where}.{attr}", getattr(tol, attr))
            _check_regex(path, f"{where}.code", code_regex(tol.code))
            parsed.append(tol)
        rule = RateRule(
            tuple(parsed),
            namespace=str(raw.get("namespace", ".*")),
            kind=str(raw.get("kind", ".*")),
            name=str(raw.get("name", ".*")),
        )
        for attr in ("namespace", "kind", "name"):
            _check_regex(path, f"rate[{i}].{attr}", getattr(rule, attr))
        rules.append(rule)
    return HealthConfig(tuple(rules))


def _check_regex(path: str, where: str, pattern: str) -> None:
    try:
        re.compile(pattern)
    except re.error as exc:
        raise HealthConfigError(path, f"{where}: bad regex {pattern!r}: {exc}") from None


def load_health_config(path: Path | str) -> HealthConfig:
    try:
        doc = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise HealthConfigError(str(path), exc.strerror or str(exc)) from None
    except yaml.YAMLError as exc:
        raise HealthConfigError(str(path), f"not valid YAML: {exc}") from None
    return parse_health_config(doc, str(path))


@dataclass(frozen=True, slots=True)
class TrafficHealth:
    """Health of one direction x protocol of a node (or one edge)."""

    direction: str
    protocol: str
    requests: int
    status: str
    error_pct: dict[str, float] = field(default_factory=dict)  # tolerance code -> % of requests

    def to_json(self) -> dict[str, Any]:
        return {
            "direction": self.direction,
            "protocol": self.protocol,
            "requests": self.requests,
            "status": self.status,
            "error_pct": self.error_pct,
        }


def evaluate(
    codes: Mapping[str, int], protocol: str, direction: str, tolerances: Sequence[Tolerance]
) -> TrafficHealth:
    """Health of traffic with `codes` (response code -> count)."""
    total = sum(codes.values())
    if total == 0 or protocol == "tcp":
        return TrafficHealth(direction, protocol, total, NA)
    statuses = [HEALTHY]
    pct: dict[str, float] = {}
    for tol in tolerances:
        if not tol.matches(protocol, direction):
            continue
        bad = sum(n for code, n in codes.items() if tol.matches_code(code))
        ratio = bad / total * 100
        pct[tol.code] = ratio
        statuses.append(tol.status(ratio))
    return TrafficHealth(direction, protocol, total, worst(statuses), pct)


def _kind(node_type: str) -> str:
    return {"workload": "workload", "app": "app", "service": "service"}.get(node_type, node_type)


def _node_name(node: Any) -> str:
    if node.node_type == "workload":
        return str(node.workload)
    if node.node_type == "app":
        return str(node.app)
    return str(node.service)


@dataclass(frozen=True, slots=True)
class NodeHealth:
    id: str
    status: str
    traffic: tuple[TrafficHealth, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "status": self.status,
            "traffic": [t.to_json() for t in self.traffic],
        }


@dataclass(frozen=True, slots=True)
class EdgeHealth:
    source: str
    target: str
    protocol: str
    status: str
    traffic: TrafficHealth

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "target": self.target,
            "protocol": self.protocol,
            "status": self.status,
            "requests": self.traffic.requests,
            "error_pct": self.traffic.error_pct,
        }


@dataclass(frozen=True, slots=True)
class HealthReport:
    nodes: tuple[NodeHealth, ...]
    edges: tuple[EdgeHealth, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "nodes": [n.to_json() for n in self.nodes],
            "edges": [e.to_json() for e in self.edges],
        }


def graph_health(graph: Any, config: HealthConfig) -> HealthReport:
    """Health of every node (inbound and outbound, per protocol) and edge of a graph."""
    nodes = {n.id: n for n in graph.nodes}
    per_node: dict[tuple[str, str, str], dict[str, int]] = {}
    edge_out: list[EdgeHealth] = []
    for e in graph.edges:
        codes: dict[str, int] = {}
        for r in e.responses:
            codes[r.code] = codes.get(r.code, 0) + r.count
        for nid, direction in ((e.source, "outbound"), (e.target, "inbound")):
            acc = per_node.setdefault((nid, direction, e.protocol), {})
            for c, n in codes.items():
                acc[c] = acc.get(c, 0) + n
        src = nodes[e.source]
        tols = config.tolerances(src.namespace, _kind(src.node_type), _node_name(src))
        th = evaluate(codes, e.protocol, "outbound", tols)
        edge_out.append(EdgeHealth(e.source, e.target, e.protocol, th.status, th))
    node_out = []
    for nid, node in nodes.items():
        tols = config.tolerances(node.namespace, _kind(node.node_type), _node_name(node))
        traffic = tuple(
            evaluate(codes, proto, direction, tols)
            for (n, direction, proto), codes in sorted(per_node.items())
            if n == nid
        )
        node_out.append(NodeHealth(nid, worst(t.status for t in traffic), traffic))
    return HealthReport(tuple(node_out), tuple(edge_out))


def annotate_graph(graph: Any, config: HealthConfig) -> Any:
    """The graph with `health` set on every node and edge."""
    report = graph_health(graph, config)
    node_status = {n.id: n.status for n in report.nodes}
    edge_status = {(e.source, e.target, e.protocol): e.status for e in report.edges}
    return replace(
        graph,
        nodes=tuple(replace(n, health=node_status[n.id]) for n in graph.nodes),
        edges=tuple(
            replace(e, health=edge_status[(e.source, e.target, e.protocol)]) for e in graph.edges
        ),
    )
