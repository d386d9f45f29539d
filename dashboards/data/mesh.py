"""Loaders of the Mesh page: namespaces, the service graph, and the details of a selected node
or edge (traffic by version, principals, recent errors, the health rule, the Istio config).

A node or edge of the graph is found in the `traffic` view with the graph's own key expressions
(analytics.graph.sql) turned into the graph's node ids (analytics.graph.model.node_id), so the
details count exactly the requests the graph counted."""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import pandas as pd
import streamlit as st
import yaml

from meshlens.analytics.catalog import connect
from meshlens.dashboards.data.common import (
    TTL_S,
    Window,
    _df,
    _p,
    traffic_connection,
)

# The graph's id prefix per level (analytics.graph.model.node_id).
_PREFIX: Final = {"workload": "wl", "app": "app", "versioned-app": "vapp", "service": "svc"}
MAX_ERRORS: Final = 20
MAX_GROUPS: Final = 200


# -- mesh ----------------------------------------------------------------------------------
@st.cache_data(ttl=TTL_S, show_spinner=False)
def namespaces(ddir: str, window: Window) -> list[str]:
    conn = connect(Path(ddir), window.tw)
    try:
        rows = conn.execute(
            """SELECT DISTINCT ns FROM (
                 SELECT destination_namespace AS ns FROM requests
                 WHERE ts >= $start AND ts < $end
                 UNION SELECT source_namespace FROM requests WHERE ts >= $start AND ts < $end)
               WHERE ns IS NOT NULL AND ns NOT IN ('', 'unknown') ORDER BY 1""",
            _p(window),
        ).fetchall()
    finally:
        conn.close()
    return [r[0] for r in rows]


@st.cache_data(ttl=TTL_S, show_spinner=False)
def service_graph(ddir: str, window: Window, level: str, namespace: str | None) -> dict[str, Any]:
    """analytics.graph's JSON: {"nodes": [...], "edges": [...]} (Kiali semantics), from proxy
    requests, or from spans when the window has no requests."""
    from meshlens.analytics.graph import service_graph as build

    conn = traffic_connection(ddir, window)
    try:
        graph = build(conn, window.tw, level=level, namespace=namespace or None, source="auto")
    finally:
        conn.close()
    data: dict[str, Any] = graph.to_json()
    return data


# -- selection details ---------------------------------------------------------------------
def _ids_cte(level: str, namespace: str | None) -> str:
    """`traffic` rows with the graph's source and destination node ids (src_id, dst_id)."""
    from meshlens.analytics.graph.sql import key_exprs, where_clause

    p = _PREFIX[level]
    where = where_clause((namespace,) if namespace else (), None)
    return f"""
WITH k AS NOT MATERIALIZED (
    -- the key list ends with `protocol`: renamed, so `*` does not bring it twice
    SELECT {key_exprs(level)} AS protocol_key, * FROM traffic {where}
),
r AS NOT MATERIALIZED (
    SELECT
        CASE WHEN s_unknown THEN 'unknown' ELSE '{p}:' || s_ns || '/' || s_key END AS src_id,
        CASE WHEN d_known THEN '{p}:' || d_ns || '/' || d_key
             ELSE 'svc:' || d_ns || '/' || d_key END AS dst_id,
        * EXCLUDE (s_unknown, s_ns, s_key, d_known, d_ns, d_key, protocol_key)
    FROM k
    WHERE ts >= $start AND ts < $end
)"""


def _selection(node: str | None, edge: tuple[str, str] | None) -> tuple[str, str, dict[str, str]]:
    """(direction expression, filter, parameters) for a node (in/out) or an edge."""
    if edge is not None:
        return "'edge'", "src_id = $a AND dst_id = $b", {"a": edge[0], "b": edge[1]}
    return (
        "CASE WHEN dst_id = $n THEN 'in' ELSE 'out' END",
        "(src_id = $n OR dst_id = $n)",
        {"n": str(node)},
    )


@dataclass(frozen=True, slots=True)
class Details:
    """What the details panel shows for a node or an edge (frames are empty when none)."""

    traffic: pd.DataFrame  # direction, source, destination, versions, protocol, counts, latency
    security: pd.DataFrame  # direction, principals, requests, mtls
    errors: pd.DataFrame  # newest error requests
    span_s: float  # first..last request of the selection (for rates)


@st.cache_data(ttl=TTL_S, show_spinner=False, max_entries=64)
def selection_details(
    ddir: str,
    window: Window,
    level: str,
    namespace: str | None,
    node: str | None = None,
    edge: tuple[str, str] | None = None,
) -> Details:
    """Traffic of a node (inbound and outbound) or of an edge (source -> target) by peer and
    version, the principals and mTLS seen, and the newest errors (LIMIT MAX_ERRORS)."""
    from meshlens.analytics.error_rule import IS_ERROR

    direction, cond, extra = _selection(node, edge)
    params = {**_p(window), **extra}
    conn = traffic_connection(ddir, window)
    try:
        # One pass over `traffic` (the pairing join is most of the cost): the selection's rows,
        # narrow columns, then three small queries over them.
        conn.execute(
            f"""CREATE TEMP TABLE sel AS {_ids_cte(level, namespace)}
            SELECT ts, {direction} AS direction, src_id AS source, dst_id AS destination,
                   coalesce(source_version, 'unknown') AS source_version,
                   coalesce(destination_version, 'unknown') AS destination_version,
                   protocol, duration_ms, response_code,
                   coalesce(grpc_status, '') AS grpc_status,
                   coalesce(response_flags, '-') AS response_flags, method, path,
                   coalesce(trace_id, '') AS trace_id, coalesce(request_id, '') AS request_id,
                   coalesce(source_principal, 'unknown') AS source_principal,
                   coalesce(destination_principal, 'unknown') AS destination_principal,
                   coalesce(mtls, false) AS mtls,
                   coalesce(request_bytes, 0) + coalesce(response_bytes, 0) AS bytes,
                   {IS_ERROR} AS is_error
            FROM r WHERE {cond}""",
            params,
        )
        traffic = _df(
            conn,
            f"""SELECT direction, source, destination, source_version, destination_version,
                   protocol, count(*) AS requests, count(*) FILTER (WHERE is_error) AS errors,
                   quantile_cont(duration_ms, [0.5, 0.95, 0.99]) AS q, sum(bytes) AS bytes,
                   min(ts) AS first_ts, max(ts) AS last_ts
            FROM sel GROUP BY ALL ORDER BY direction, requests DESC LIMIT {MAX_GROUPS}""",
        )
        security = _df(
            conn,
            f"""SELECT direction, source_principal, destination_principal,
                   count(*) AS requests, count(*) FILTER (WHERE mtls) AS mtls_requests
            FROM sel GROUP BY ALL ORDER BY direction, requests DESC LIMIT {MAX_GROUPS}""",
        )
        errors = _df(
            conn,
            f"""SELECT ts, direction, source, destination, response_code, grpc_status,
                   response_flags, method, path, round(duration_ms, 2) AS duration_ms,
                   trace_id, request_id
            FROM sel WHERE is_error ORDER BY ts DESC LIMIT {MAX_ERRORS}""",
        )
    finally:
        conn.close()
    span = 0.0
    if len(traffic):
        q = traffic.pop("q")
        for i, name in enumerate(("p50_ms", "p95_ms", "p99_ms")):
            traffic[name] = [None if v is None else v[i] for v in q]
        span = (traffic["last_ts"].max() - traffic["first_ts"].min()).total_seconds()
    return Details(traffic, security, errors, max(span, 1.0))


@st.cache_data(ttl=TTL_S, show_spinner=False)
def node_latencies(
    ddir: str, window: Window, level: str, namespace: str | None
) -> dict[str, tuple[float | None, float | None, float | None]]:
    """Inbound p50/p95/p99 (ms) per node id over the window (HTTP/gRPC): node hover text."""
    conn = traffic_connection(ddir, window)
    try:
        rows = conn.execute(
            f"""{_ids_cte(level, namespace)}
            SELECT dst_id, quantile_cont(duration_ms, [0.5, 0.95, 0.99])
            FROM r WHERE protocol <> 'tcp' GROUP BY dst_id LIMIT 5000""",
            _p(window),
        ).fetchall()
    finally:
        conn.close()
    return {str(r[0]): (r[1][0], r[1][1], r[1][2]) for r in rows if r[1] is not None}


# -- health: the rule that decided ---------------------------------------------------------
def health_rules(
    graph: Mapping[str, Any], node: str | None = None, edge: tuple[str, str] | None = None
) -> list[dict[str, Any]]:
    """One row per tolerance applied to the node's traffic (per direction and protocol) or to
    the edge (its source's outbound tolerances), with the error % measured, the thresholds and
    the status it gives: how analytics.health decided (Kiali's default tolerances)."""
    from meshlens.analytics.health import default_health_config, evaluate

    config = default_health_config()
    nodes = {str(n.get("id")): n for n in graph.get("nodes", [])}
    per: dict[tuple[str, str], dict[str, int]] = {}
    owner: dict[tuple[str, str], Mapping[str, Any]] = {}
    for e in graph.get("edges", []):
        s, t = str(e.get("source")), str(e.get("target"))
        if edge is not None:
            sides = [(s, "outbound")] if (s, t) == edge else []
        else:
            sides = [(nid, d) for nid, d in ((s, "outbound"), (t, "inbound")) if nid == node]
        for nid, direction in sides:
            key = (direction, str(e.get("protocol")))
            acc = per.setdefault(key, {})
            owner[key] = nodes.get(nid, {})
            for code, entry in (e.get("responses") or {}).items():
                acc[str(code)] = acc.get(str(code), 0) + int(entry.get("count") or 0)
    rows: list[dict[str, Any]] = []
    for (direction, protocol), codes in sorted(per.items()):
        n = owner[(direction, protocol)]
        kind = str(n.get("node_type") or "")
        name = str(n.get(kind if kind in ("workload", "app", "service") else "service") or "")
        tols = config.tolerances(str(n.get("namespace") or ""), kind, name)
        th = evaluate(codes, protocol, direction, tols)
        if protocol == "tcp" or not th.requests:
            rows.append(
                {
                    "direction": direction,
                    "protocol": protocol,
                    "requests": th.requests,
                    "rule": "no request traffic (TCP has no health)",
                    "error_pct": None,
                    "degraded_at": "",
                    "failure_at": "",
                    "status": th.status,
                }
            )
            continue
        for tol in tols:
            if not tol.matches(protocol, direction):
                continue
            ratio = th.error_pct.get(tol.code, 0.0)
            rows.append(
                {
                    "direction": direction,
                    "protocol": protocol,
                    "requests": th.requests,
                    "rule": f"code {tol.code} ({tol.protocol})",
                    "error_pct": round(ratio, 3),
                    # Strings: "> 0" (any error) sits beside numbers in one column.
                    "degraded_at": f">= {tol.degraded:g} %" if tol.degraded > 0 else "> 0 %",
                    "failure_at": f">= {tol.failure:g} %",
                    "status": tol.status(ratio),
                }
            )
    return rows


# -- Istio config that applies -------------------------------------------------------------
_SELECTED_KINDS: Final = (
    "AuthorizationPolicy",
    "PeerAuthentication",
    "RequestAuthentication",
    "Sidecar",
    "Telemetry",
    "WasmPlugin",
    "EnvoyFilter",
)
_HOST_KINDS: Final = ("VirtualService", "DestinationRule", "ServiceEntry")
ROOT_NAMESPACE: Final = "istio-system"


def _selector(kind: str, spec: Mapping[str, Any]) -> dict[str, str]:
    from meshlens.analytics.istio.labels import selector_of

    if kind in ("Sidecar", "EnvoyFilter"):
        ws = spec.get("workloadSelector")
        labels = ws.get("labels") if isinstance(ws, Mapping) else None
        return {str(k): str(v) for k, v in (labels or {}).items()}
    return selector_of(spec)


def _hosts(kind: str, spec: Mapping[str, Any]) -> list[str]:
    if kind == "DestinationRule":
        return [str(spec.get("host") or "")]
    return [str(h) for h in spec.get("hosts") or []]


def _documents(config_yaml: str) -> list[dict[str, Any]]:
    """The Kubernetes objects of a YAML stream (`kind: List` expanded). A light read: the
    Security and Routing pages validate against the CRD schemas; here only kind, name,
    namespace, selector and hosts are needed, and the first schema validation costs seconds."""
    out: list[dict[str, Any]] = []
    for doc in yaml.safe_load_all(config_yaml):
        items = doc.get("items") if isinstance(doc, dict) and "items" in doc else [doc]
        for item in items or []:
            if isinstance(item, dict) and isinstance(item.get("spec"), dict):
                out.append(item)
    return out


@st.cache_data(show_spinner=False, max_entries=64)
def istio_resources_for(
    config_yaml: str, namespace: str, app: str, version: str, service: str
) -> tuple[list[dict[str, str]], str]:
    """Resources of the config that apply to a workload (app/version labels as telemetry knows
    them) or its service: (rows with kind, name, namespace, why, yaml; an error message)."""
    from meshlens.analytics.istio.labels import from_telemetry, selector_matches
    from meshlens.analytics.istio.routing import fqdn

    if not config_yaml.strip():
        return [], ""
    try:
        docs = _documents(config_yaml)
    except yaml.YAMLError as exc:
        return [], f"not valid YAML: {exc}"
    labels = from_telemetry(app, version)
    svc = service if service not in ("", "unknown") else ""
    target = fqdn(svc, namespace) if svc and namespace not in ("", "unknown") else svc
    rows: list[dict[str, str]] = []
    for doc in docs:
        kind = str(doc.get("kind") or "")
        raw_meta = doc.get("metadata")
        meta: dict[str, Any] = raw_meta if isinstance(raw_meta, dict) else {}
        name = str(meta.get("name") or "?")
        res_ns = str(meta.get("namespace") or "default")
        spec: dict[str, Any] = doc["spec"]
        why = ""
        if kind in _SELECTED_KINDS:
            if res_ns not in (namespace, ROOT_NAMESPACE):
                continue
            sel = _selector(kind, spec)
            scope = "mesh-wide" if res_ns == ROOT_NAMESPACE else "namespace-wide"
            if not sel:
                why = f"{scope} (no selector)"
            else:
                hit = selector_matches(sel, labels)
                if hit is False or (res_ns == ROOT_NAMESPACE and not hit):
                    continue
                shown = ", ".join(f"{k}={v}" for k, v in sorted(sel.items()))
                why = f"selector {shown}" + ("" if hit else " (a label is not known: may apply)")
        elif kind in _HOST_KINDS and target:
            for h in _hosts(kind, spec):
                full = fqdn(h, res_ns)
                if full == target or fnmatch.fnmatchcase(target, full) or h == svc:
                    why = f"host {h}"
                    break
            if not why:
                continue
        else:
            continue
        rows.append(
            {
                "kind": kind,
                "name": name,
                "namespace": res_ns,
                "why": why,
                "yaml": yaml.safe_dump(doc, sort_keys=False),
            }
        )
    return rows, ""
