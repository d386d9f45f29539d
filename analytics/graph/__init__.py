"""The service graph from proxy requests, with Kiali's semantics.

Levels (Kiali graph types): `workload` (default), `app`, `versioned-app`, `service`.
  * One row per request: the catalog's `traffic` view pairs the client's and the server's
    report of the same hop and merges them (analytics/pairing.py): the server's measurements
    (its latency excludes the network hop), the client's source identity; a client report
    without a server twin counts on its own (external hosts, UF/UH/NR...).
  * A source without peer identity (no sidecar, plain-text, probes) is the `unknown` node.
  * A destination without a known workload is a service node (Kiali's `svc_<ns>_<service>`);
    hosts outside the cluster are service nodes in namespace `unknown` with is_service_entry.
  * `service` level: Kiali condenses a workload graph with injected service nodes into
    service -> service edges; we key the caller by its canonical service (what Istio labels the
    workload's service) and the callee by destination_service_name. Unknown stays unknown.
Edges are keyed by (source, target, protocol), as Kiali's are.

Statistics are exact (quantile_cont) and come from three DuckDB scans (requests_edge_stats):
counts and bytes per raw key columns x response series (the edge keys are computed on the few
aggregated rows, not per row), latency per edge grouped by the fewest raw columns that tell
the edges apart, and node identity from a handful of probed rows.

The package: `model` (the values), `sql` (the queries on `traffic`), `build` (edge statistics
to a Graph), `spans` (the graph from spans, Tempo's and the OTel connector's rules), `kiali`
(Kiali's JSON), `render` (table, DOT, Mermaid). `service_graph` below is the entry point.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import duckdb

from meshlens.analytics.errors import GraphError
from meshlens.analytics.graph.build import build_graph, requests_edge_stats, requests_graph
from meshlens.analytics.graph.model import (
    LEVELS,
    SOURCES,
    UNKNOWN,
    Edge,
    EdgeStats,
    Graph,
    Node,
    NodeRef,
    Response,
    Series,
)
from meshlens.analytics.graph.spans import spans_graph
from meshlens.analytics.health import annotate_graph, default_health_config
from meshlens.analytics.window import TimeWindow

__all__ = [
    "LEVELS",
    "SOURCES",
    "UNKNOWN",
    "Edge",
    "EdgeStats",
    "Graph",
    "Node",
    "NodeRef",
    "Response",
    "Series",
    "build_graph",
    "requests_edge_stats",
    "requests_graph",
    "service_graph",
]


def service_graph(
    conn: duckdb.DuckDBPyConnection,
    window: TimeWindow,
    *,
    level: str = "workload",
    namespace: str | Sequence[str] | None = None,
    source: str = "requests",
    health_config: Any = None,
    origin: str | None = None,
) -> Graph:
    """The graph for `window` from proxy requests, spans, or whichever has data (`auto`),
    with health per node and edge (analytics.health, Kiali's tolerances unless given)."""
    if source not in SOURCES:
        raise GraphError(f"unknown graph source {source!r}; choose from {', '.join(SOURCES)}")
    if level not in LEVELS:
        raise GraphError(f"unknown graph level {level!r}; choose from {', '.join(LEVELS)}")
    namespaces: tuple[str, ...] = (
        ()
        if namespace is None
        else (namespace,)
        if isinstance(namespace, str)
        else tuple(namespace)
    )
    if source == "auto":
        has_requests = conn.execute("SELECT count(*) > 0 FROM (SELECT 1 FROM requests LIMIT 1)")
        source = "requests" if has_requests.fetchone() == (True,) else "spans"
    if source == "requests":
        graph = requests_graph(conn, window, level=level, namespaces=namespaces, origin=origin)
    else:
        graph = spans_graph(conn, window, level=level, namespaces=namespaces)
    return annotate_graph(graph, health_config or default_health_config())
