"""The SQL the requests graph runs on the catalog's `traffic` view: the node keys per level,
the raw series scan, the narrowed latency scan and the identity probes."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
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
    {where_clause(namespaces, origin)}
)"""


_EDGE_KEYS: Final = "s_unknown, s_ns, s_key, d_known, d_ns, d_key, protocol"
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
    {where_clause(namespaces, origin)}
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


def narrow_group(
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
