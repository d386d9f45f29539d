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
"""

from __future__ import annotations

import itertools
import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Final, Literal

import duckdb

from analytics import error_rule
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
    "workload": (
        "source_workload",
        "destination_workload",
        "coalesce(destination_workload, 'unknown') <> 'unknown'",
    ),
    "app": (
        "source_canonical_service",
        "destination_canonical_service",
        "coalesce(destination_canonical_service, 'unknown') <> 'unknown'",
    ),
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


def _sql_literal(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return "'" + str(v).replace("'", "''") + "'"


def _where(namespaces: Sequence[str], origin: str | None) -> str:
    conds = []
    if namespaces:
        ns = ", ".join("'" + n.replace("'", "''") + "'" for n in namespaces)
        conds.append(f"(source_namespace IN ({ns}) OR destination_namespace IN ({ns}))")
    if origin:
        # Sidecars that send both gRPC ALS and OTel access logs report every request twice.
        conds.append(f"origin = {_sql_literal(origin)}")
    return ("WHERE " + " AND ".join(conds)) if conds else ""


def _check(level: str) -> None:
    if level not in _LEVEL_KEYS:
        raise GraphError(f"unknown graph level {level!r}; choose from {', '.join(LEVELS)}")


def _key_exprs(level: str) -> str:
    """The edge key columns of `level` as expressions over request columns."""
    src_key, dst_key, dst_known = _LEVEL_KEYS[level]
    return f"""{_SRC_UNKNOWN} AS s_unknown,
        CASE WHEN {_SRC_UNKNOWN} THEN {_U} ELSE coalesce(source_namespace, {_U}) END AS s_ns,
        CASE WHEN {_SRC_UNKNOWN} THEN {_U} ELSE coalesce({src_key}, {_U}) END AS s_key,
        {dst_known} AS d_known,
        coalesce(destination_namespace, {_U}) AS d_ns,
        CASE WHEN {dst_known} THEN coalesce({dst_key}, {_U}) ELSE {_svc_name()} END AS d_key,
        protocol"""


_IS_SRC: Final = "coalesce(reporter = 'source', false)"  # a client report without a twin


def _projection(level: str, namespaces: Sequence[str], origin: str | None = None) -> str:
    """Per-row key columns of `level` over the `traffic` view (one row per request)."""
    _check(level)
    return f"""
WITH r AS NOT MATERIALIZED (
    SELECT
        {_key_exprs(level)},
        {_IS_SRC} AS is_src,
        *
    FROM traffic
    {_where(namespaces, origin)}
)"""


_EDGE_KEYS: Final = "s_unknown, s_ns, s_key, d_known, d_ns, d_key, protocol"
_KEY_COLS: Final = ("s_unknown", "s_ns", "s_key", "d_known", "d_ns", "d_key", "protocol")

# The request columns each level's edge key is computed from (plus `reporter`): the scans
# group by these raw (dictionary-encoded) columns and compute the keys on the few groups,
# instead of evaluating the CASE/coalesce key expressions on every row.
_RAW_COMMON: Final = (
    "source_workload",
    "source_namespace",
    "destination_namespace",
    "destination_service_name",
    "destination_service",
    "protocol",
)
_RAW_LEVEL: Final[dict[str, tuple[str, ...]]] = {
    "workload": ("destination_workload",),
    "app": ("source_canonical_service", "destination_canonical_service"),
    "versioned-app": (
        "source_canonical_service",
        "destination_canonical_service",
        "source_version",
        "destination_version",
    ),
    "service": ("source_canonical_service",),
}
# Identity attributes of the edge's nodes (any row of the edge tells them).
_IDENTITY: Final = (
    "source_workload AS s_workload",
    "source_canonical_service AS s_app",
    "source_version AS s_version",
    "destination_workload AS d_workload",
    "destination_canonical_service AS d_app",
    "destination_version AS d_version",
    "source_principal",
    "destination_principal",
)
# Larger IN lists of first-seen times are not worth it: the identity scan reads everything.
_MAX_TS_PROBES: Final = 2000


def raw_columns(level: str) -> tuple[str, ...]:
    """The raw request columns an edge key of `level` depends on, plus `reporter`."""
    return (*_RAW_COMMON, *_RAW_LEVEL[level], "reporter")


def raw_series_sql(level: str, namespaces: Sequence[str] = (), origin: str | None = None) -> str:
    """Counts and bytes per raw key columns x response series, with the
    edge key of `level` computed on the aggregated rows (one scan, narrow group keys)."""
    _check(level)
    raw = ", ".join(raw_columns(level))
    return f"""
WITH raw AS (
    SELECT {raw}, response_code, grpc_status, response_flags,
        count(*) AS n,
        count(*) FILTER (WHERE mtls) AS n_mtls,
        sum(request_bytes) AS request_bytes,
        sum(response_bytes) AS response_bytes
    FROM traffic
    {_where(namespaces, origin)}
    GROUP BY ALL
)
SELECT {_key_exprs(level)},
    {_IS_SRC} AS is_src,
    coalesce(response_code, 0) AS code,
    coalesce(grpc_status, '') AS grpc,
    coalesce(response_flags, '-') AS flags,
    coalesce(destination_service, 'unknown') AS host,
    {raw},
    n,
    CASE WHEN reporter = 'source' THEN n ELSE 0 END AS n_src,
    n_mtls,
    coalesce(request_bytes, 0) AS request_bytes,
    coalesce(response_bytes, 0) AS response_bytes
FROM raw
"""


def _eq(col: str, v: Any) -> str:
    return f"{col} IS NULL" if v is None else f"{col} = {_sql_literal(v)}"


def _match(cols: Sequence[str], values: Sequence[Any]) -> str:
    return "(" + " AND ".join(_eq(c, v) for c, v in zip(cols, values, strict=True)) + ")"


def _narrow_group(
    tuples: Mapping[tuple[Any, ...], tuple[Any, ...]], cols: Sequence[str]
) -> tuple[int, ...] | None:
    """The fewest raw columns (their positions) that tell the edges apart exactly.

    `tuples` maps each raw key tuple to its edge key; a subset of columns works when its values
    identify the edge key one-to-one on those tuples. Grouping the 10M-row scan by two short
    columns instead of eight is most of its cost."""
    order = sorted(range(len(cols)), key=lambda i: _GROUP_PREFERENCE.get(cols[i], 9))
    # Small subsets, then all columns: the search stays cheap for any number of tuples.
    sizes = [*range(1, min(3, len(cols) - 1) + 1), len(cols)]
    for size in sizes:
        for subset in itertools.combinations(order, size):
            seen: dict[tuple[Any, ...], tuple[Any, ...]] = {}
            back: dict[tuple[Any, ...], tuple[Any, ...]] = {}
            ok = True
            for t, target in tuples.items():
                sv = tuple(t[i] for i in subset)
                if seen.setdefault(sv, target) != target or back.setdefault(target, sv) != sv:
                    ok = False
                    break
            if ok:
                return subset
    return None


# Cheapest columns to group by first (short, few distinct values).
_GROUP_PREFERENCE: Final = {
    "destination_workload": 0,
    "source_workload": 1,
    "protocol": 2,
    "reporter": 3,
    "destination_canonical_service": 4,
    "source_canonical_service": 5,
    "destination_version": 6,
    "source_version": 7,
    "destination_namespace": 8,
}


def narrow_latency_sql(table: str, where: str, group_cols: Sequence[str]) -> str:
    """Latency and first/last time per group of `group_cols` (`where`: _scan_filter)."""
    cols = ", ".join(group_cols)
    return f"""
SELECT {cols},
    count(*) AS n,
    quantile_cont(duration_ms, [0.5, 0.95, 0.99]) AS q,
    avg(duration_ms) AS avg_ms,
    min(ts) AS first_seen,
    max(ts) AS last_seen
FROM {table}
{where}
GROUP BY {cols}
"""


def identity_sql(
    table: str, where: str, group_cols: Sequence[str], first_seen: Sequence[Any]
) -> str:
    """One value of each identity attribute per group (`where`: _scan_filter). Probing only
    the rows at each group's first-seen time finds every group while the scan skips almost
    all row groups."""
    cols = ", ".join(group_cols)
    stamps = sorted(set(first_seen))
    if 0 < len(stamps) <= _MAX_TS_PROBES:
        listing = ", ".join(f"'{s.isoformat()}'::TIMESTAMPTZ" for s in stamps)
        probe = f"ts IN ({listing})"
        where = f"{where} AND {probe}" if where else f"WHERE {probe}"
    ident = ", ".join(
        f"any_value({e.split(' AS ')[0]}) AS {e.split(' AS ')[-1]}" for e in _IDENTITY
    )
    return f"""SELECT {cols}, {ident}, any_value({_svc_name()}) AS d_service
FROM {table} {where} GROUP BY {cols}"""


def latency_sql(level: str, namespaces: Sequence[str] = (), origin: str | None = None) -> str:
    """Per edge: latency quantiles, node attributes, first/last seen."""
    return f"""{_projection(level, namespaces, origin)}
SELECT {_EDGE_KEYS},
    count(*) AS n,
    quantile_cont(duration_ms, [0.5, 0.95, 0.99]) AS q,
    avg(duration_ms) AS avg_ms,
    min(ts) AS first_seen,
    max(ts) AS last_seen,
    any_value(source_workload) AS s_workload,
    any_value(source_canonical_service) AS s_app,
    any_value(source_version) AS s_version,
    any_value(destination_workload) AS d_workload,
    any_value(destination_canonical_service) AS d_app,
    any_value(destination_version) AS d_version,
    any_value({_svc_name()}) AS d_service,
    any_value(source_principal) AS source_principal,
    any_value(destination_principal) AS destination_principal
FROM r
GROUP BY ALL
"""


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
    three scans: counts per raw key columns x response series (the edge keys computed on the
    aggregated rows), latency per edge, and the node identity of each edge from a few probed
    rows."""
    raw_cols = raw_columns(level)
    where = _where(namespaces, origin)
    series: dict[tuple[Any, ...], dict[tuple[Any, ...], list[int]]] = defaultdict(
        lambda: defaultdict(lambda: [0, 0, 0, 0, 0])
    )
    targets: dict[tuple[Any, ...], tuple[Any, ...]] = {}  # raw key tuple -> edge key
    for r in _rows(conn, raw_series_sql(level, namespaces, origin)):
        key = tuple(r[k] for k in _KEY_COLS)
        targets[tuple(r[c] for c in raw_cols)] = key
        acc = series[key][(r["code"], r["grpc"], r["flags"], r["host"])]
        for i, col in enumerate(("n", "n_mtls", "n_src", "request_bytes", "response_bytes")):
            acc[i] += int(r[col])
    subset = _narrow_group(targets, raw_cols)
    lat: dict[tuple[Any, ...], dict[str, Any]] = {}
    ident: dict[tuple[Any, ...], dict[str, Any]] = {}
    if subset is not None and targets:
        by_group = {tuple(t[i] for i in subset): k for t, k in targets.items()}
        group_cols = [raw_cols[i] for i in subset]
        for r in _rows(conn, narrow_latency_sql("traffic", where, group_cols)):
            lat[by_group[tuple(r[c] for c in group_cols)]] = r
        probes = [r["first_seen"] for r in lat.values()]
        for r in _rows(conn, identity_sql("traffic", where, group_cols, probes)):
            ident[by_group[tuple(r[c] for c in group_cols)]] = r
        if not lat.keys() <= ident.keys():  # cannot happen; read every row then
            for r in _rows(conn, identity_sql("traffic", where, group_cols, [])):
                ident[by_group[tuple(r[c] for c in group_cols)]] = r
    elif targets:
        # Several raw tuples share an edge key (e.g. NULL and 'unknown'): group by the key
        # expressions themselves.
        for r in _rows(conn, latency_sql(level, namespaces, origin)):
            key = tuple(r[k] for k in _KEY_COLS)
            lat[key] = ident[key] = r
    out = []
    for key, main in sorted(lat.items(), key=lambda kv: repr(kv[0])):
        names = {**ident[key], **dict(zip(_KEY_COLS, key, strict=True))}
        picked: list[Series] = []
        source_reported = 0
        for (code, grpc, flags, host), acc in sorted(series[key].items()):
            n, n_mtls, n_src, req_b, resp_b = acc
            source_reported += n_src
            picked.append(Series(int(code), grpc, flags, host, n, n_mtls, req_b, resp_b))
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
        n = req_b = resp_b = mtls = 0.0
        responses = []
        for x in st.series:
            n += x.requests
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
                mtls_ratio=_ratio(mtls, n),
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
    from analytics.health import annotate_graph, default_health_config

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
        from analytics.graph_spans import spans_graph

        graph = spans_graph(conn, window, level=level, namespaces=namespaces)
    return annotate_graph(graph, health_config or default_health_config())
