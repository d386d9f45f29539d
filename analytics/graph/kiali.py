"""Our graph in Kiali's graph API JSON (Cytoscape elements), for Kiali-compatible consumers and
for conformance tests against Kiali's own expected outputs.

Kiali's conventions: node ids are sha256 of its readable ids (`wl_<cluster>_<ns>_<workload>`,
`app_...`, `vapp_...`, `svc_...`, `<cluster>_unknown_source`), rates are strings with two
decimals (rps; TCP bytes/s), percentages one decimal, and an edge's `responses` map
code -> {"flags": {flag: %}, "hosts": {host: %}}. Not modelled: `isInaccessible` (RBAC),
`healthData` (always null here, as in Kiali's graph tests), edge ids (Kiali's hash input is
internal).
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from typing import Any

from meshlens.analytics.graph.model import Edge, Graph, Node


def kiali_node_key(node: Node, level: str, cluster: str) -> str:
    if node.node_type == "unknown":
        return f"{cluster}_unknown_source"
    if node.node_type in ("service", "virtual"):
        return f"svc_{cluster}_{node.namespace}_{node.service}"
    if level == "workload":
        return f"wl_{cluster}_{node.namespace}_{node.workload}"
    if level == "versioned-app":
        return f"vapp_{cluster}_{node.namespace}_{node.app}_{node.version}"
    return f"app_{cluster}_{node.namespace}_{node.app}"


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _rate(x: float) -> str:
    return f"{x:.2f}"


def _pct(x: float) -> str:
    return f"{x:.1f}"


def _edge_rates(e: Edge, seconds: float) -> dict[str, str]:
    if e.protocol == "tcp":
        return {"tcp": _rate((e.request_bytes + e.response_bytes) / seconds)}
    p = e.protocol
    rates = {p: _rate(e.rps)}
    if p == "http":
        extra = {
            "http3xx": e.responses_3xx,
            "http4xx": e.errors_4xx,
            "http5xx": e.errors_5xx,
            "httpNoResponse": e.no_response,
        }
        errors = e.errors_4xx + e.errors_5xx + e.no_response
    else:
        extra = {
            "grpcErr": e.errors_grpc + e.errors_4xx + e.errors_5xx,
            "grpcNoResponse": e.no_response,
        }
        errors = extra["grpcErr"] + e.no_response
    rates.update({k: _rate(v / seconds) for k, v in extra.items() if v})
    if errors and e.requests:
        rates[f"{p}PercentErr"] = _pct(errors / e.requests * 100)
    rates[f"{p}PercentReq"] = _pct(e.share * 100)
    return rates


def _responses(e: Edge) -> dict[str, Any]:
    by_code: dict[str, dict[str, dict[str, float]]] = defaultdict(
        lambda: {"flags": defaultdict(float), "hosts": defaultdict(float)}
    )
    for r in e.responses:
        host = r.host
        by_code[r.code]["flags"][r.flags] += r.count
        by_code[r.code]["hosts"][host] += r.count
    total = sum(r.count for r in e.responses) or 1
    return {
        code: {
            part: {k: _pct(v / total * 100) for k, v in sorted(vals.items())}
            for part, vals in parts.items()
        }
        for code, parts in sorted(by_code.items())
    }


def to_kiali_json(
    graph: Graph, *, cluster: str = "unknown", timestamp: int | None = None
) -> dict[str, Any]:
    seconds = graph.window.seconds
    ids = {n.id: _hash(kiali_node_key(n, graph.level, cluster)) for n in graph.nodes}
    dest_services: dict[str, set[tuple[str, str]]] = defaultdict(set)
    for e in graph.edges:
        target = graph.node(e.target)
        if target.node_type not in ("service", "virtual", "unknown"):
            for host in e.hosts:
                name = host.split(":")[0].split(".")[0]
                dest_services[e.target].add((target.namespace, name))
    nodes = []
    for n in graph.nodes:
        traffic = [
            {"protocol": proto, "rates": {k: _rate(v) for k, v in rates.items()}}
            for proto, rates in sorted(n.traffic.items(), key=lambda kv: _PROTO_ORDER[kv[0]])
        ]
        data: dict[str, Any] = {
            "id": ids[n.id],
            "nodeType": "unknown" if n.node_type == "unknown" else n.node_type,
            "cluster": cluster,
            "namespace": n.namespace,
        }
        if n.node_type == "workload":
            data["workload"] = n.workload
        if n.node_type in ("workload", "app"):
            data["app"] = n.app
            if graph.level in ("workload", "versioned-app"):
                data["version"] = n.version
        if n.node_type in ("service", "virtual"):
            data["service"] = n.service
        if dest_services.get(n.id):
            data["destServices"] = [
                {"cluster": cluster, "namespace": ns, "name": name}
                for ns, name in sorted(dest_services[n.id])
            ]
        data["traffic"] = traffic
        data["healthData"] = None
        if n.is_outside:
            data["isOutside"] = True
        if n.is_root:
            data["isRoot"] = True
        if n.is_service_entry:
            data["isServiceEntry"] = {"location": "MESH_EXTERNAL", "hosts": [n.service]}
        nodes.append({"data": data})
    edges = []
    for e in graph.edges:
        edges.append(
            {
                "data": {
                    "id": _hash(f"{ids[e.source]}{ids[e.target]}{e.protocol}"),
                    "source": ids[e.source],
                    "target": ids[e.target],
                    "traffic": {
                        "protocol": e.protocol,
                        "rates": _edge_rates(e, seconds),
                        "responses": _responses(e),
                    },
                }
            }
        )
    return {
        "timestamp": timestamp if timestamp is not None else int(graph.window.end.timestamp()),
        "duration": int(seconds),
        "graphType": graph.level.replace("versioned-app", "versionedApp"),
        "elements": {"nodes": nodes, "edges": edges},
    }


_PROTO_ORDER = defaultdict(lambda: 9, {"http": 0, "grpc": 1, "tcp": 2})
