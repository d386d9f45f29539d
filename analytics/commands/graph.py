"""`meshlens graph`: the service graph for a time window (table, json, dot, mermaid, and
Kiali's graph API JSON)."""

from __future__ import annotations

import argparse
import sys

from meshlens.analytics.commands.common import (
    HEALTH_CONFIG,
    LEVEL,
    NAMESPACE,
    ORIGIN,
    PROMETHEUS_URL,
    SOURCE,
    add_common,
    run_safely,
)
from meshlens.analytics.commands.output import format_table, json_text
from meshlens.analytics.graph import Graph
from meshlens.analytics.graph.render import EDGE_COLUMNS, edge_rows, to_dot, to_mermaid
from meshlens.analytics.window import window_from_args
from meshlens.settings import add_settings

FORMATS = ("table", "json", "dot", "mermaid", "kiali")


def configure(parser: argparse.ArgumentParser) -> None:
    add_common(parser, FORMATS)
    add_settings(parser, (LEVEL, NAMESPACE, SOURCE, HEALTH_CONFIG, PROMETHEUS_URL, ORIGIN))


def load_graph(args: argparse.Namespace) -> Graph:
    from meshlens.analytics.api import graph_for

    return graph_for(
        args.data_dir,
        window_from_args(args),
        level=args.level,
        namespaces=args.namespace,
        source=args.source,
        health_config=args.health_config or None,
        prometheus_url=args.prometheus_url or None,
        origin=args.origin or None,
    )


def render(graph: Graph, fmt: str) -> str:
    if fmt == "json":
        return json_text(graph.to_json())
    if fmt == "kiali":
        from meshlens.analytics.graph.kiali import to_kiali_json

        return json_text(to_kiali_json(graph))
    if fmt == "dot":
        return to_dot(graph)
    if fmt == "mermaid":
        return to_mermaid(graph)
    head = (
        f"# {graph.level} graph from {graph.source}, "
        f"{graph.window.start.isoformat()} .. {graph.window.end.isoformat()}: "
        f"{len(graph.nodes)} nodes, {len(graph.edges)} edges\n"
    )
    return head + format_table(EDGE_COLUMNS, edge_rows(graph))


def run(args: argparse.Namespace) -> int:
    def body() -> int:
        sys.stdout.write(render(load_graph(args), args.format))
        return 0

    return run_safely("graph", body)
