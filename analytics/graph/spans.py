"""The service graph from spans: the OTel service-graph connector's and Tempo's semantics.

  * A CLIENT (or PRODUCER) span pairs with the SERVER (or CONSUMER) span whose parent is it
    (same trace); a CONSUMER without a parent pairs through its first span link. Pairs are
    edges client service -> server service (`connection_type` '' or 'messaging_system').
  * An unpaired CLIENT span is an edge to a virtual server named from its peer attributes
    (`database` when it carries db.system/db.name, else `virtual_node`; 'unknown' without any).
  * An unpaired root SERVER/CONSUMER span is an edge from a virtual client: 'user' (connector
    mode) or its first peer attribute, else 'user' (Tempo mode, the default). An unpaired
    server span that has a parent is dropped (its client was not exported), as both do.
  * Root CLIENT spans (an Istio ingress gateway's spans; grafana/tempo#1418) also get an edge
    user -> gateway, so traffic entering the mesh is visible (`root_client_edges`).
  * failed = either span has status ERROR; optionally also an HTTP status matching
    `fail_http_codes` (regex) or a gRPC status in `fail_grpc_codes`.
  * Latency: the server span's duration when paired (like Kiali's destination latency), else
    the one span's duration. Spans without service.name are ignored; only the four kinds count.
Virtual node names, by mode:
  connector: server <- peer.service, db.name, db.system;         client <- always 'user'
  tempo:     server <- peer.service, server.address, network.peer.address, db.name, db.system;
             client <- peer.service, db.name, db.system, else 'user'
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import duckdb

from meshlens.analytics.errors import GraphError
from meshlens.analytics.graph.build import build_graph
from meshlens.analytics.graph.model import UNKNOWN, EdgeStats, Graph, NodeRef, Series
from meshlens.analytics.window import TimeWindow

MODES: Final = ("tempo", "connector")


@dataclass(frozen=True, slots=True)
class SpanGraphOptions:
    mode: str = "tempo"
    fail_http_codes: str = ""  # regex on the HTTP status, e.g. '^5' ('' = status only)
    fail_grpc_codes: tuple[int, ...] = ()  # e.g. (2, 4, 13, 14)
    root_client_edges: bool = True


def _attr(col: str, key: str) -> str:
    return f"nullif(json_extract_string({col}, '$.\"{key}\"'), '')"


def _first(*exprs: str) -> str:
    return "coalesce(" + ", ".join(exprs) + ")"


def spans_pairs_sql(options: SpanGraphOptions, namespaces: Sequence[str] = ()) -> str:
    """One row per edge observation (pair, virtual edge), with keys and measures: the one
    client/server span pairing, used by the graph and by the exporter's service-graph series
    (duration_ms is the server's when paired; server_ms and client_ms are each side's own)."""
    if options.mode not in MODES:
        raise GraphError(f"unknown spans mode {options.mode!r}; choose from {', '.join(MODES)}")
    tempo = options.mode == "tempo"
    srv_peer = (
        ["c.peer_service", "c.server_address", "c.net_peer", "c.db_name", "c.db_system"]
        if tempo
        else ["c.peer_service", "c.db_name", "c.db_system"]
    )
    cli_peer = _first("s.peer_service", "s.db_name", "s.db_system", "'user'") if tempo else "'user'"
    db_server = (
        _first("c.peer_service", "c.server_address", "c.net_peer", "c.db_name", "c.db_system")
        if tempo
        else _first("c.db_name", "c.db_system")
    )
    failed_parts = ["c.status_code = 'error'", "s.status_code = 'error'"]
    if options.fail_http_codes:
        rx = options.fail_http_codes.replace("'", "''")
        failed_parts.append(
            f"regexp_matches(coalesce(s.http_status_code, c.http_status_code)::VARCHAR, '{rx}')"
        )
    if options.fail_grpc_codes:
        codes = ", ".join(str(int(c)) for c in options.fail_grpc_codes)
        failed_parts.append(
            f"coalesce(s.rpc_grpc_status_code, c.rpc_grpc_status_code) IN ({codes})"
        )
    failed = " OR ".join(f"coalesce({p}, false)" for p in failed_parts)
    ns_filter = ""
    if namespaces:
        ns = ", ".join("'" + n.replace("'", "''") + "'" for n in namespaces)
        ns_filter = f"WHERE client_ns IN ({ns}) OR server_ns IN ({ns})"
    namespace = _first(
        _attr("resource_attributes", "k8s.namespace.name"),
        "nullif(service_namespace, '')",
        f"'{UNKNOWN}'",
    )
    root_clients = ""
    if options.root_client_edges:
        root_clients = f"""
    UNION ALL
    SELECT 'virtual' AS client_type, '{UNKNOWN}' AS client_ns, 'user' AS client, '' AS client_v,
        'node' AS server_type, c.ns AS server_ns, c.service_name AS server,
        c.service_version AS server_v, 'virtual_node' AS connection_type,
        c.protocol, c.http_status_code AS http_code, c.rpc_grpc_status_code AS grpc_code,
        coalesce(c.status_code = 'error', false) AS failed, c.duration_ms,
        NULL AS server_ms, c.duration_ms AS client_ms, c.start_ts
    FROM c WHERE c.parent_span_id = '' AND c.kind = 'client'"""
    return f"""
WITH sp AS (
    SELECT trace_id, span_id, parent_span_id, kind, service_name,
        coalesce(service_version, '') AS service_version,
        {namespace} AS ns,
        status_code, http_status_code, rpc_grpc_status_code,
        CASE WHEN rpc_grpc_status_code IS NOT NULL OR coalesce(rpc_service, '') <> '' THEN 'grpc'
             WHEN http_status_code IS NOT NULL OR coalesce(http_method, '') <> '' THEN 'http'
             WHEN kind IN ('producer', 'consumer') THEN 'messaging'
             ELSE 'other' END AS protocol,
        nullif(peer_service, '') AS peer_service,
        nullif(server_address, '') AS server_address,
        {_attr("attributes", "network.peer.address")} AS net_peer,
        {_first("nullif(db_name, '')", _attr("attributes", "db.namespace"))} AS db_name,
        {_first("nullif(db_system, '')", _attr("attributes", "db.system.name"))} AS db_system,
        json_extract_string(links, '$[0].trace_id') AS link_trace,
        json_extract_string(links, '$[0].span_id') AS link_span,
        duration_ms, start_ts
    FROM spans
    WHERE kind IN ('client', 'producer', 'server', 'consumer')
      AND coalesce(service_name, '') NOT IN ('', '{UNKNOWN}')
),
c AS (SELECT * FROM sp WHERE kind IN ('client', 'producer')),
s AS (
    SELECT *,
        CASE WHEN kind = 'consumer' AND parent_span_id = '' AND link_span IS NOT NULL
             THEN link_trace ELSE trace_id END AS p_trace,
        CASE WHEN kind = 'consumer' AND parent_span_id = '' AND link_span IS NOT NULL
             THEN link_span ELSE parent_span_id END AS p_span
    FROM sp WHERE kind IN ('server', 'consumer')
),
pairs AS (
    SELECT
        CASE WHEN c.span_id IS NULL THEN 'virtual' ELSE 'node' END AS client_type,
        CASE WHEN c.span_id IS NULL THEN '{UNKNOWN}' ELSE c.ns END AS client_ns,
        CASE WHEN c.span_id IS NULL THEN {cli_peer} ELSE c.service_name END AS client,
        CASE WHEN c.span_id IS NULL THEN '' ELSE c.service_version END AS client_v,
        CASE WHEN s.span_id IS NULL THEN 'virtual' ELSE 'node' END AS server_type,
        CASE WHEN s.span_id IS NULL THEN '{UNKNOWN}' ELSE s.ns END AS server_ns,
        CASE WHEN s.span_id IS NOT NULL THEN s.service_name
             WHEN c.db_name IS NOT NULL OR c.db_system IS NOT NULL THEN {db_server}
             ELSE {_first(*srv_peer, f"'{UNKNOWN}'")} END AS server,
        CASE WHEN s.span_id IS NULL THEN '' ELSE s.service_version END AS server_v,
        CASE WHEN c.span_id IS NOT NULL AND s.span_id IS NOT NULL THEN
                CASE WHEN c.kind = 'producer' OR s.kind = 'consumer' THEN 'messaging_system'
                     ELSE '' END
             WHEN c.span_id IS NOT NULL
                  AND (c.db_name IS NOT NULL OR c.db_system IS NOT NULL) THEN 'database'
             ELSE 'virtual_node' END AS connection_type,
        CASE WHEN s.protocol IN ('http', 'grpc') THEN s.protocol ELSE coalesce(c.protocol,
             s.protocol) END AS protocol,
        coalesce(s.http_status_code, c.http_status_code) AS http_code,
        coalesce(s.rpc_grpc_status_code, c.rpc_grpc_status_code) AS grpc_code,
        {failed} AS failed,
        coalesce(s.duration_ms, c.duration_ms) AS duration_ms,
        s.duration_ms AS server_ms,
        c.duration_ms AS client_ms,
        coalesce(c.start_ts, s.start_ts) AS start_ts
    FROM c FULL OUTER JOIN s ON s.p_trace = c.trace_id AND s.p_span = c.span_id
    -- an unpaired server span with a parent lost its client: no edge (connector, Tempo)
    WHERE c.span_id IS NOT NULL OR s.parent_span_id = ''
       OR (s.kind = 'consumer' AND s.link_span IS NULL AND s.parent_span_id = '')
    {root_clients}
)
SELECT * FROM pairs {ns_filter}
"""


def spans_edge_sql(level: str, options: SpanGraphOptions, namespaces: Sequence[str] = ()) -> str:
    with_version = level == "versioned-app"
    cv = "client_v" if with_version else "''"
    sv = "server_v" if with_version else "''"
    return f"""
WITH p AS ({spans_pairs_sql(options, namespaces)})
SELECT client_type, client_ns, client, {cv} AS client_v,
       server_type, server_ns, server, {sv} AS server_v, protocol,
       count(*) AS n,
       count(*) FILTER (WHERE failed) AS failed,
       mode(connection_type) AS connection_type,
       quantile_cont(duration_ms, [0.5, 0.95, 0.99]) AS q,
       avg(duration_ms) AS avg_ms,
       min(start_ts) AS first_seen,
       max(start_ts) AS last_seen,
       histogram(coalesce(http_code, 0)::VARCHAR || ' ' || coalesce(grpc_code::VARCHAR, '') || ' '
                 || CASE WHEN failed THEN 'failed' ELSE '-' END) AS series
FROM p
GROUP BY ALL
"""


def _ref(kind: str, ns: str, name: str, version: str, level: str) -> NodeRef:
    if kind == "virtual":
        return NodeRef("virtual", UNKNOWN, name, service=name)
    key = f"{name}/{version or UNKNOWN}" if level == "versioned-app" else name
    node_type = "app"
    return NodeRef(node_type, ns, key, app=name, version=version or UNKNOWN, service=name)


def spans_edge_stats(
    conn: duckdb.DuckDBPyConnection,
    *,
    level: str = "app",
    namespaces: Sequence[str] = (),
    options: SpanGraphOptions | None = None,
) -> list[EdgeStats]:
    opts = options or SpanGraphOptions()
    cur = conn.execute(spans_edge_sql(level, opts, namespaces))
    cols = [d[0] for d in cur.description or ()]
    out = []
    merged: dict[tuple[Any, ...], list[dict[str, Any]]] = defaultdict(list)
    for raw in cur.fetchall():
        r = dict(zip(cols, raw, strict=True))
        merged[
            (
                r["client_type"],
                r["client_ns"],
                r["client"],
                r["client_v"],
                r["server_type"],
                r["server_ns"],
                r["server"],
                r["server_v"],
                r["protocol"],
            )
        ].append(r)
    for rows in merged.values():
        r = rows[0]
        series = []
        for label, count in (r["series"] or {}).items():
            code, grpc, flag = label.split(" ")
            series.append(Series(int(code), grpc, flag, r["server"], int(count)))
        q = r["q"] or [None, None, None]
        out.append(
            EdgeStats(
                _ref(r["client_type"], r["client_ns"], r["client"], r["client_v"], level),
                _ref(r["server_type"], r["server_ns"], r["server"], r["server_v"], level),
                r["protocol"],
                tuple(sorted(series, key=lambda x: (x.code, x.grpc, x.flags))),
                p50_ms=q[0],
                p95_ms=q[1],
                p99_ms=q[2],
                avg_ms=r["avg_ms"],
                first_seen=r["first_seen"].isoformat() if r["first_seen"] else None,
                last_seen=r["last_seen"].isoformat() if r["last_seen"] else None,
                failed=float(r["failed"]),
                connection_type=r["connection_type"] or "",
            )
        )
    return out


def spans_graph(
    conn: duckdb.DuckDBPyConnection,
    window: TimeWindow,
    *,
    level: str = "app",
    namespaces: Sequence[str] = (),
    options: SpanGraphOptions | None = None,
) -> Graph:
    """Nodes are services (service.name; with version at `versioned-app`), namespaced by the
    resource's k8s.namespace.name or service.namespace; every level but versioned-app keys
    nodes by service name (spans carry no workload identity)."""
    node_level = "versioned-app" if level == "versioned-app" else "app"
    stats = spans_edge_stats(conn, level=node_level, namespaces=namespaces, options=options)
    return build_graph(stats, window, level=node_level, source="spans", namespaces=namespaces)
