"""Building a Graph: from per-edge statistics of any source (`build_graph`), and from the
requests in a window (`requests_edge_stats`, three DuckDB scans; `requests_graph`)."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import duckdb

from meshlens.analytics.errors import GraphError
from meshlens.analytics.graph.model import (
    UNKNOWN,
    UNKNOWN_ID,
    Edge,
    EdgeStats,
    Graph,
    Node,
    NodeRef,
    Response,
    Series,
    classify,
    code_label,
    node_id,
)
from meshlens.analytics.graph.sql import KEY_COLS, edge_stats_sql
from meshlens.analytics.window import TimeWindow


def _node_type(level: str) -> str:
    return {"workload": "workload", "app": "app", "versioned-app": "app", "service": "service"}[
        level
    ]


def _ratio(n: float, d: float) -> float:
    return n / d if d else 0.0


def _num(v: Any) -> float | None:
    if v is None:
        return None
    f = float(v)
    return None if math.isnan(f) else f


def _rows(conn: duckdb.DuckDBPyConnection, sql: str) -> list[dict[str, Any]]:
    cur = conn.execute(sql)
    cols = [d[0] for d in cur.description or ()]
    return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]


def _node_refs(level: str, r: Mapping[str, Any]) -> tuple[NodeRef, NodeRef]:
    kind = _node_type(level)
    with_version = level in ("workload", "versioned-app")
    if r["s_unknown"]:
        src = NodeRef("unknown", UNKNOWN, UNKNOWN)
    else:
        src = NodeRef(
            kind,
            r["s_ns"],
            r["s_key"],
            workload=(r["s_workload"] or UNKNOWN) if level == "workload" else UNKNOWN,
            app=r["s_app"] or UNKNOWN,
            version=(r["s_version"] or UNKNOWN) if with_version else UNKNOWN,
            service=(r["s_app"] or UNKNOWN) if level == "service" else UNKNOWN,
        )
    if not r["d_known"]:
        dst = NodeRef("service", r["d_ns"], r["d_key"], service=r["d_key"])
    else:
        dst = NodeRef(
            kind,
            r["d_ns"],
            r["d_key"],
            workload=(r["d_workload"] or UNKNOWN) if level == "workload" else UNKNOWN,
            app=r["d_app"] or UNKNOWN,
            version=(r["d_version"] or UNKNOWN) if with_version else UNKNOWN,
            service=r["d_service"] or UNKNOWN,
        )
    return src, dst


def requests_edge_stats(
    conn: duckdb.DuckDBPyConnection,
    *,
    level: str = "workload",
    namespaces: Sequence[str] = (),
    origin: str | None = None,
) -> list[EdgeStats]:
    """Edge statistics over the `traffic` view (one row per request, analytics/pairing.py) in
    one scan (graph.sql.edge_stats_sql): counts per raw key columns x response series with the
    edge keys computed on the aggregated rows, and per edge the latency over all its rows and
    the node identity of one of them."""
    series: dict[tuple[Any, ...], dict[tuple[Any, ...], list[int]]] = defaultdict(
        lambda: defaultdict(lambda: [0, 0, 0, 0, 0, 0])
    )
    lat: dict[tuple[Any, ...], dict[str, Any]] = {}
    ident: dict[tuple[Any, ...], dict[str, Any]] = {}
    for r in _rows(conn, edge_stats_sql(level, namespaces, origin)):
        key = tuple(r[k] for k in KEY_COLS)
        acc = series[key][(r["code"], r["grpc"], r["flags"], r["host"])]
        cols = ("n", "n_mtls", "n_src", "request_bytes", "response_bytes", "n_mtls_known")
        for i, col in enumerate(cols):
            acc[i] += int(r[col])
        main = lat.get(key)
        if main is None:
            lat[key] = dict(r)
            ident[key] = r
        else:
            main["first_seen"] = min(main["first_seen"], r["first_seen"])
            main["last_seen"] = max(main["last_seen"], r["last_seen"])
    out = []
    for key, main in sorted(lat.items(), key=lambda kv: repr(kv[0])):
        names = {**ident[key], **dict(zip(KEY_COLS, key, strict=True))}
        picked: list[Series] = []
        source_reported = 0
        for (code, grpc, flags, host), acc in sorted(series[key].items()):
            n, n_mtls, n_src, req_b, resp_b, known = acc
            source_reported += n_src
            picked.append(Series(int(code), grpc, flags, host, n, n_mtls, req_b, resp_b, known))
        q = main["q"] or [None, None, None]
        src, dst = _node_refs(level, names)
        out.append(
            EdgeStats(
                src,
                dst,
                key[-1],
                tuple(picked),
                p50_ms=_num(q[0]),
                p95_ms=_num(q[1]),
                p99_ms=_num(q[2]),
                avg_ms=_num(main["avg_ms"]),
                source_principal=names["source_principal"] or UNKNOWN,
                destination_principal=names["destination_principal"] or UNKNOWN,
                source_reported=source_reported,
                first_seen=main["first_seen"].isoformat(),
                last_seen=main["last_seen"].isoformat(),
            )
        )
    return out


def requests_graph(
    conn: duckdb.DuckDBPyConnection,
    window: TimeWindow,
    *,
    level: str = "workload",
    namespaces: Sequence[str] = (),
    origin: str | None = None,
) -> Graph:
    stats = requests_edge_stats(conn, level=level, namespaces=namespaces, origin=origin)
    return build_graph(stats, window, level=level, source="requests", namespaces=namespaces)


def build_graph(
    stats: Sequence[EdgeStats],
    window: TimeWindow,
    *,
    level: str,
    source: str,
    namespaces: Sequence[str] = (),
) -> Graph:
    """Nodes (with ids, totals, flags) and edges (rates, ratios, breakdown) from edge stats."""
    seconds = window.seconds
    nodes: dict[str, Node] = {}
    ns_set = set(namespaces)

    def add_node(ref: NodeRef) -> str:
        nid = node_id(ref.node_type, level, ref.namespace, ref.key)
        if nid not in nodes:
            nodes[nid] = Node(
                id=nid,
                node_type=ref.node_type,
                namespace=ref.namespace,
                workload=ref.workload,
                app=ref.app,
                version=ref.version,
                service=ref.service,
                is_unknown=ref.node_type == "unknown" or ref.key in ("user", UNKNOWN),
                is_virtual=ref.node_type == "virtual",
                is_service_entry=ref.node_type == "service" and ref.namespace == UNKNOWN,
                is_outside=bool(ns_set) and ref.namespace not in ns_set and nid != UNKNOWN_ID,
            )
        return nid

    ids = [(add_node(st.source), add_node(st.target), st) for st in stats]
    out_by_proto: dict[tuple[str, str], float] = defaultdict(float)
    for sid, _did, st in ids:
        out_by_proto[(sid, st.protocol)] += sum(x.requests for x in st.series)

    edges: list[Edge] = []
    seen: set[tuple[str, str, str]] = set()
    for sid, did, st in ids:
        if (sid, did, st.protocol) in seen:
            raise GraphError(f"duplicate edge {sid} -> {did} ({st.protocol})")
        seen.add((sid, did, st.protocol))
        counts = [0.0] * 5
        n = req_b = resp_b = mtls = known = 0.0
        responses = []
        for x in st.series:
            n += x.requests
            known += x.requests if x.mtls_known is None else x.mtls_known
            req_b += x.request_bytes
            resp_b += x.response_bytes
            mtls += x.mtls
            for i, hit in enumerate(classify(st.protocol, x.code, x.grpc)):
                if hit:
                    counts[i] += x.requests
            responses.append(
                Response(code_label(st.protocol, x.code, x.grpc), x.flags, x.host, x.requests)
            )
        e5, e4, eg, nr, r3 = counts
        errors = e5 + eg + nr if st.failed is None else st.failed
        edges.append(
            Edge(
                source=sid,
                target=did,
                protocol=st.protocol,
                requests=_int(n),
                rps=n / seconds,
                errors=_int(errors),
                error_rate=_ratio(errors, n),
                errors_5xx=_int(e5),
                errors_4xx=_int(e4),
                errors_grpc=_int(eg),
                no_response=_int(nr),
                responses_3xx=_int(r3),
                error_rate_5xx=_ratio(e5, n),
                error_rate_4xx=_ratio(e4, n),
                error_rate_grpc=_ratio(eg, n),
                no_response_rate=_ratio(nr, n),
                p50_ms=st.p50_ms,
                p95_ms=st.p95_ms,
                p99_ms=st.p99_ms,
                avg_ms=st.avg_ms,
                request_bytes=_int(req_b),
                response_bytes=_int(resp_b),
                throughput_bps=(req_b + resp_b) / seconds,
                share=_ratio(n, out_by_proto[(sid, st.protocol)]),
                mtls_ratio=_ratio(mtls, known),
                source_principal=st.source_principal,
                destination_principal=st.destination_principal,
                hosts=tuple(sorted({x.host for x in st.series})),
                responses=_merge_responses(responses),
                source_reported=_int(st.source_reported),
                first_seen=st.first_seen,
                last_seen=st.last_seen,
                connection_type=st.connection_type,
            )
        )
    edges.sort(key=lambda e: (e.source, e.target, e.protocol))
    return Graph(
        level, source, window, _with_traffic(nodes, edges, seconds), tuple(edges), tuple(namespaces)
    )


def _int(x: float) -> int:
    # Counts from requests are integers; from Prometheus rates they are estimates: round.
    return round(x)


def _merge_responses(responses: Sequence[Response]) -> tuple[Response, ...]:
    merged: dict[tuple[str, str, str], float] = defaultdict(float)
    for r in responses:
        merged[(r.code, r.flags, r.host)] += r.count
    return tuple(Response(c, f, h, _int(n)) for (c, f, h), n in sorted(merged.items()))


def _with_traffic(
    nodes: dict[str, Node], edges: Sequence[Edge], seconds: float
) -> tuple[Node, ...]:
    """Node in/out totals, Kiali-style per-protocol rates, is_root."""
    agg: dict[str, dict[str, Any]] = {
        nid: {
            "requests_in": 0,
            "requests_out": 0,
            "errors_in": 0,
            "tcp_bytes_in": 0,
            "tcp_bytes_out": 0,
            "traffic": defaultdict(lambda: defaultdict(float)),
        }
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
            for key, count in (
                ("httpIn3xx", e.responses_3xx),
                ("httpIn4xx", e.errors_4xx),
                ("httpIn5xx", e.errors_5xx),
                ("httpInNoResponse", e.no_response),
            ):
                if count:
                    dst["traffic"][p][key] += count / seconds
        else:
            for key, count in (
                ("grpcInErr", e.errors_grpc + e.errors_5xx + e.errors_4xx),
                ("grpcInNoResponse", e.no_response),
            ):
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
                error_rate_in=_ratio(a["errors_in"], a["requests_in"])
                if a["requests_in"]
                else None,
                tcp_bytes_in=a["tcp_bytes_in"],
                tcp_bytes_out=a["tcp_bytes_out"],
                is_root=nid not in has_inbound,
                traffic={p: dict(r) for p, r in sorted(a["traffic"].items())},
            )
        )
    return tuple(out)
