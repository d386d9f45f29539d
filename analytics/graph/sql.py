"""The SQL the requests graph runs on the catalog's `traffic` view: the node keys per level and
the one scan that computes every edge statistic (edge_stats_sql)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from meshlens.analytics.errors import GraphError
from meshlens.analytics.graph.model import LEVELS

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


def where_clause(namespaces: Sequence[str], origin: str | None) -> str:
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


def key_exprs(level: str) -> str:
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


KEY_COLS: Final = ("s_unknown", "s_ns", "s_key", "d_known", "d_ns", "d_key", "protocol")

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


def raw_columns(level: str) -> tuple[str, ...]:
    """The raw request columns an edge key of `level` depends on, plus `reporter`."""
    return (*_RAW_COMMON, *_RAW_LEVEL[level], "reporter")


def edge_stats_sql(level: str, namespaces: Sequence[str] = (), origin: str | None = None) -> str:
    """Everything the graph needs in ONE scan of `traffic` (each scan pairs the two reports of
    every request again, which costs far more than the aggregation): per raw key columns x
    response series the counts and bytes, first/last time, the node identity (any row's) and
    the durations as a list; the edge keys computed on those few rows; and per edge the exact
    latency quantiles and mean over the concatenated durations (`q`, `avg_ms`, the same on
    every row of the edge), so raw tuples that share an edge key (NULL and 'unknown') merge."""
    _check(level)
    raw = ", ".join(raw_columns(level))
    ident = ", ".join(
        f"any_value({e.split(' AS ')[0]}) AS {e.split(' AS ')[-1]}" for e in _IDENTITY
    )
    keys = ", ".join(KEY_COLS)
    # protocol may be NULL: edges join on IS NOT DISTINCT FROM.
    on = " AND ".join(f"k.{c} IS NOT DISTINCT FROM l.{c}" for c in KEY_COLS)
    return f"""
WITH raw AS (
    SELECT {raw}, response_code, grpc_status, response_flags,
        count(*) AS n,
        count(*) FILTER (WHERE mtls) AS n_mtls,
        count(mtls) AS n_mtls_known,
        sum(request_bytes) AS request_bytes,
        sum(response_bytes) AS response_bytes,
        min(ts) AS first_seen,
        max(ts) AS last_seen,
        {ident},
        list(duration_ms) AS durations
    FROM traffic
    {where_clause(namespaces, origin)}
    GROUP BY ALL
),
k AS MATERIALIZED (
    SELECT {key_exprs(level)},
        {_IS_SRC} AS is_src,
        coalesce(response_code, 0) AS code,
        coalesce(grpc_status, '') AS grpc,
        coalesce(response_flags, '-') AS flags,
        coalesce(destination_service, 'unknown') AS host,
        n,
        CASE WHEN reporter = 'source' THEN n ELSE 0 END AS n_src,
        n_mtls,
        n_mtls_known,
        coalesce(request_bytes, 0) AS request_bytes,
        coalesce(response_bytes, 0) AS response_bytes,
        first_seen, last_seen,
        {", ".join(e.split(" AS ")[-1] for e in _IDENTITY)},
        {_svc_name()} AS d_service,
        durations
    FROM raw
),
l AS (
    SELECT {keys},
        quantile_cont(d, [0.5, 0.95, 0.99]) AS q,
        avg(d) AS avg_ms
    FROM (SELECT {keys}, unnest(durations) AS d FROM k)
    GROUP BY ALL
)
SELECT k.* EXCLUDE (durations), l.q, l.avg_ms
FROM k JOIN l ON {on}
"""
