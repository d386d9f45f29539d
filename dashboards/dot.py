"""Service graph JSON (analytics.graph) -> Graphviz DOT, rendered by `st.graphviz_chart`.

Pure. Nodes are filled by health (Kiali colours), edges carry "rps · error % · p95", a lock when
all of the edge's traffic is mutual TLS, and a dashed line when some of it is plaintext.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Final

HEALTH_COLOURS: Final = {
    "healthy": "#3e8635",
    "degraded": "#f0ab00",
    "failure": "#c9190b",
    "unhealthy": "#c9190b",
    "idle": "#b8bbbe",
    "unknown": "#b8bbbe",
    "na": "#b8bbbe",
}
LOCK: Final = "🔒"
MAX_NODES: Final = 300


def health_of(node: Mapping[str, Any]) -> str:
    """'healthy' | 'degraded' | 'failure' | 'unknown' from the node's health (str or dict)."""
    h = node.get("health")
    if isinstance(h, Mapping):
        h = h.get("status") or h.get("health")
    text = str(h or "unknown").lower()
    return text if text in HEALTH_COLOURS else "unknown"


def _q(text: str) -> str:
    # Labels use DOT's own "\\n" line breaks, so only quotes are escaped.
    return '"' + str(text).replace('"', '\\"') + '"'


def node_label(node: Mapping[str, Any], level: str) -> str:
    ns = node.get("namespace") or ""
    if level == "service":
        name = node.get("service") or node.get("id")
    elif level in ("app", "versioned-app"):
        name = node.get("app") or node.get("workload") or node.get("id")
        if level == "versioned-app" and node.get("version") not in (None, "", "unknown"):
            name = f"{name} {node.get('version')}"
    else:
        name = node.get("workload") or node.get("service") or node.get("id")
    return f"{name}\\n{ns}" if ns and ns != "unknown" else str(name)


def _num(value: Any) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return float("nan")
    return v


def edge_label(edge: Mapping[str, Any]) -> str:
    rps = _num(edge.get("rps"))
    err = _num(edge.get("error_rate"))
    p95 = _num(edge.get("p95_ms"))
    parts = []
    if edge.get("protocol") == "tcp":
        sent = _num(edge.get("throughput_bps") or edge.get("bytes_per_s"))
        parts.append(f"{sent:.0f} B/s" if math.isfinite(sent) else "tcp")
    else:
        parts.append(f"{rps:.2f} rps" if math.isfinite(rps) else "- rps")
        parts.append(f"{100 * err:.1f}% err" if math.isfinite(err) else "- err")
        parts.append(f"p95 {p95:.0f} ms" if math.isfinite(p95) else "p95 -")
    mtls = _num(edge.get("mtls_ratio"))
    if math.isfinite(mtls) and mtls >= 0.999:
        parts.insert(0, LOCK)
    elif math.isfinite(mtls) and mtls > 0:
        parts.insert(0, f"{LOCK} {100 * mtls:.0f}%")
    return "\\n".join(parts)


def edge_colour(edge: Mapping[str, Any]) -> str:
    err = _num(edge.get("error_rate"))
    if not math.isfinite(err) or err < 0.01:
        return "#4f5255"
    return "#f0ab00" if err < 0.1 else "#c9190b"


def _traffic(node: Mapping[str, Any]) -> float:
    total = _num(node.get("requests_in")) + _num(node.get("requests_out"))
    return total if math.isfinite(total) else 0.0


def to_dot(graph: Mapping[str, Any], *, level: str = "workload", title: str = "") -> str:
    """The DOT text of a service graph. Nodes beyond MAX_NODES (least traffic) are dropped."""
    nodes = list(graph.get("nodes", []))
    if len(nodes) > MAX_NODES:
        nodes = sorted(nodes, key=_traffic, reverse=True)[:MAX_NODES]
    keep = {str(n.get("id")) for n in nodes}
    lines = [
        "digraph mesh {",
        '  graph [rankdir=LR, bgcolor="transparent", fontname="Helvetica", nodesep=0.5, '
        f"ranksep=1.1{', label=' + _q(title) + ', labelloc=t' if title else ''}];",
        '  node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=11, '
        'fontcolor="white", penwidth=0];',
        '  edge [fontname="Helvetica", fontsize=9, arrowsize=0.7];',
    ]
    for n in nodes:
        health = health_of(n)
        colour = HEALTH_COLOURS[health]
        fc = "black" if health in ("degraded", "unknown", "idle", "na") else "white"
        tip = f"{n.get('id')} ({health})"
        lines.append(
            f"  {_q(str(n.get('id')))} [label={_q(node_label(n, level))}, "
            f'fillcolor="{colour}", fontcolor="{fc}", tooltip={_q(tip)}, class="meshnode"];'
        )
    for e in graph.get("edges", []):
        src, dst = str(e.get("source")), str(e.get("target"))
        if src not in keep or dst not in keep:
            continue
        mtls = _num(e.get("mtls_ratio"))
        style = "solid" if math.isfinite(mtls) and mtls >= 0.999 else "dashed"
        colour = edge_colour(e)
        lines.append(
            f"  {_q(src)} -> {_q(dst)} [label={_q(edge_label(e))}, style={style}, "
            f'color="{colour}", fontcolor="{colour}"];'
        )
    lines.append("}")
    return "\n".join(lines)
