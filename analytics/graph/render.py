"""Text renderings of a Graph: an edge table, Graphviz dot, Mermaid flowchart."""

from __future__ import annotations

import re
from typing import Any

from meshlens.analytics.graph.model import Edge, Graph

EDGE_COLUMNS = (
    "source",
    "target",
    "protocol",
    "requests",
    "rps",
    "error_rate",
    "p50_ms",
    "p95_ms",
    "p99_ms",
    "mtls_ratio",
    "share",
    "health",
)


def edge_rows(graph: Graph) -> list[tuple[Any, ...]]:
    return [
        (
            e.source,
            e.target,
            e.protocol,
            e.requests,
            round(e.rps, 3),
            f"{e.error_rate * 100:.2f}%",
            _ms(e.p50_ms),
            _ms(e.p95_ms),
            _ms(e.p99_ms),
            f"{e.mtls_ratio * 100:.0f}%",
            f"{e.share * 100:.1f}%",
            e.health or "",
        )
        for e in graph.edges
    ]


def _ms(v: float | None) -> float | None:
    return None if v is None else round(v, 2)


_COLORS = {"Healthy": "#3e8635", "Degraded": "#f0ab00", "Failure": "#c9190b", "NA": "#6a6e73"}


def _label(e: Edge) -> str:
    if e.protocol == "tcp":
        return f"tcp {e.throughput_bps:.0f} B/s"
    parts = [f"{e.protocol} {e.rps:.2f} rps"]
    if e.errors:
        parts.append(f"{e.error_rate * 100:.1f}% err")
    if e.p95_ms is not None:
        parts.append(f"p95 {e.p95_ms:.0f} ms")
    if e.mtls_ratio > 0:
        parts.append(f"mTLS {e.mtls_ratio * 100:.0f}%")
    return ", ".join(parts)


def _dot_quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def to_dot(graph: Graph) -> str:
    lines = [
        f"digraph meshlens {{  // {graph.level} graph from {graph.source}",
        "  rankdir=LR;",
        "  node [shape=box, style=rounded];",
    ]
    for n in graph.nodes:
        label = n.id.split(":", 1)[-1]
        shape = ", shape=ellipse" if n.node_type in ("service", "virtual", "unknown") else ""
        lines.append(
            f"  {_dot_quote(n.id)} [label={_dot_quote(label)}, "
            f"color={_dot_quote(_COLORS.get(n.health or 'NA', '#6a6e73'))}{shape}];"
        )
    for e in graph.edges:
        lines.append(
            f"  {_dot_quote(e.source)} -> {_dot_quote(e.target)} "
            f"[label={_dot_quote(_label(e))}, "
            f"color={_dot_quote(_COLORS.get(e.health or 'NA', '#6a6e73'))}];"
        )
    lines.append("}")
    return "\n".join(lines) + "\n"


def _mermaid_id(node_id: str, ids: dict[str, str]) -> str:
    if node_id not in ids:
        ids[node_id] = "n" + str(len(ids)) + "_" + re.sub(r"[^A-Za-z0-9_]", "_", node_id)[:40]
    return ids[node_id]


def to_mermaid(graph: Graph) -> str:
    ids: dict[str, str] = {}
    lines = ["flowchart LR"]
    for n in graph.nodes:
        label = n.id.split(":", 1)[-1].replace('"', "'")
        open_, close = (
            ("([", "])") if n.node_type in ("service", "virtual", "unknown") else ("[", "]")
        )
        lines.append(f'  {_mermaid_id(n.id, ids)}{open_}"{label}"{close}')
    for e in graph.edges:
        lines.append(
            f'  {_mermaid_id(e.source, ids)} -->|"{_label(e)}"| {_mermaid_id(e.target, ids)}'
        )
    for n in graph.nodes:
        if n.health in ("Degraded", "Failure"):
            lines.append(f"  style {_mermaid_id(n.id, ids)} stroke:{_COLORS[n.health]}")
    return "\n".join(lines) + "\n"
