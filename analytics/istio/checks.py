"""Run the Istio checks over the store: read observed traffic with DuckDB, judge it with the pure
routing/authz/mtls modules, return a `CheckReport`.

Rows come from the `traffic` view (the two reporters de-duplicated, destination reports first:
the destination proxy is where AuthorizationPolicy and PeerAuthentication are enforced). They are
grouped in SQL first, so a window of millions of requests becomes a few thousand groups.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import duckdb

from analytics.catalog import connect
from analytics.istio.authz import RequestFacts, check_policy, decide, strip_spiffe
from analytics.istio.mtls import EdgeObservation, check_mtls
from analytics.istio.report import CheckReport, Finding
from analytics.istio.resources import IstioConfig
from analytics.istio.routing import Observation, RoutingOptions, check_routing
from analytics.window import TimeWindow

CHECKS: Final = ("routing", "authz", "mtls")
EXAMPLES_PER_GROUP: Final = 3


def _rows(conn: duckdb.DuckDBPyConnection, sql: str) -> list[dict[str, Any]]:
    cur = conn.execute(sql)
    cols = [d[0] for d in cur.description or []]
    return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]


def _walk_keys(node: Any, out: set[str]) -> None:
    if isinstance(node, dict):
        for k, v in node.items():
            out.add(str(k))
            if k == "key":
                out.add(f"when:{v}")
            _walk_keys(v, out)
    elif isinstance(node, list):
        for v in node:
            _walk_keys(v, out)


def used_keys(config: IstioConfig, kind: str) -> set[str]:
    """Every field name (and `when:` key) that resources of `kind` use: what to group by."""
    out: set[str] = set()
    for r in config.of_kind(kind):
        _walk_keys(dict(r.spec), out)
    return out


def routing_observations(conn: duckdb.DuckDBPyConnection, config: IstioConfig) -> list[Observation]:
    # Only group by what some match condition reads, to keep the groups few.
    keys = used_keys(config, "VirtualService")
    ua = "coalesce(user_agent, '')" if "headers" in keys else "''"
    path = "coalesce(path, '')" if "uri" in keys else "''"
    method = "coalesce(method, '')" if "method" in keys else "''"
    rows = _rows(
        conn,
        f"""
        SELECT destination_service AS host, destination_version AS version, {ua} AS ua,
               {path} AS path, {method} AS method, coalesce(destination_port, 0) AS port,
               source_namespace, source_canonical_service AS source_app, source_version,
               count(*) AS n
        FROM traffic WHERE protocol <> 'tcp' GROUP BY ALL""",
    )
    return [
        Observation(
            r["host"] or "unknown",
            r["version"] or "unknown",
            r["ua"],
            r["path"],
            r["method"],
            int(r["port"]),
            r["source_namespace"] or "unknown",
            r["source_app"] or "unknown",
            r["source_version"] or "unknown",
            int(r["n"]),
        )
        for r in rows
    ]


def _ip(address: str | None) -> str:
    if not address:
        return ""
    host = address.rsplit(":", 1)[0] if address.count(":") == 1 else address
    return host.strip("[]")


def authz_groups(conn: duckdb.DuckDBPyConnection, config: IstioConfig) -> list[dict[str, Any]]:
    keys = used_keys(config, "AuthorizationPolicy")

    def col(expr: str, *names: str) -> str:
        return expr if keys & set(names) else "''"

    path = col("coalesce(path, '')", "paths", "notPaths")
    host = col(
        "coalesce(authority, '')",
        "hosts",
        "notHosts",
        "when:request.headers[:authority]",
        "when:request.headers[host]",
    )
    ua = col("coalesce(user_agent, '')", "when:request.headers[user-agent]")
    ip = col(
        "coalesce(source_address, '')",
        "ipBlocks",
        "notIpBlocks",
        "remoteIpBlocks",
        "notRemoteIpBlocks",
        "when:source.ip",
        "when:remote.ip",
    )
    return _rows(
        conn,
        f"""
        SELECT destination_namespace AS dns, destination_workload AS dwl,
               destination_canonical_service AS app, destination_version AS version,
               coalesce(source_principal, '') AS principal, source_namespace AS sns,
               source_workload AS swl, {ip} AS ip, coalesce(method, '') AS method,
               {path} AS path, coalesce(destination_port, 0) AS port, {host} AS host,
               {ua} AS ua, count(*) AS n,
               list(DISTINCT coalesce(path, '')) [1:{EXAMPLES_PER_GROUP}] AS examples
        FROM traffic WHERE protocol <> 'tcp' GROUP BY ALL""",
    )


def _authz(
    conn: duckdb.DuckDBPyConnection, config: IstioConfig
) -> tuple[list[Finding], list[dict[str, Any]]]:
    policies = config.of_kind("AuthorizationPolicy")
    for p in policies:
        check_policy(p)  # refuse unsupported features before replaying anything
    callers: dict[tuple[str, ...], dict[str, Any]] = {}
    for g in authz_groups(conn, config):
        facts = RequestFacts(
            g["dns"] or "",
            g["app"] or "",
            g["version"] or "",
            strip_spiffe(g["principal"]),
            g["sns"] or "",
            _ip(g["ip"]),
            g["method"],
            g["path"],
            int(g["port"]),
            g["host"],
            g["ua"],
        )
        d = decide(policies, facts)
        key = (
            f"{g['sns']}/{g['swl']}",
            g["principal"] or "(none)",
            f"{g['dns']}/{g['dwl']}",
            "allow" if d.allowed else "deny",
            d.policy,
        )
        row = callers.setdefault(
            key,
            {
                "caller": key[0],
                "principal": key[1],
                "destination": key[2],
                "decision": key[3],
                "reason": key[4],
                "requests": 0,
                "audited": 0,
                "examples": [],
            },
        )
        row["requests"] += int(g["n"])
        row["audited"] += int(g["n"]) if d.audited else 0
        for ex in g["examples"] or []:
            if len(row["examples"]) < EXAMPLES_PER_GROUP and ex not in row["examples"]:
                row["examples"].append(ex)
    rows = sorted(callers.values(), key=lambda r: (r["destination"], r["decision"], r["caller"]))
    findings = [
        Finding(
            "authz",
            "problem",
            r["destination"],
            f"would DENY {r['requests']} requests from {r['caller']} "
            f"(principal {r['principal']}): {r['reason']}",
            {
                "caller": r["caller"],
                "principal": r["principal"],
                "requests": r["requests"],
                "examples": r["examples"],
            },
        )
        for r in rows
        if r["decision"] == "deny"
    ]
    denied = _rows(
        conn,
        """
        SELECT source_namespace || '/' || source_workload AS caller,
               destination_namespace || '/' || destination_workload AS destination,
               count(*) AS n,
               any_value(coalesce(nullif(response_code_details, ''),
                                  connection_termination_details)) AS detail
        FROM traffic
        WHERE coalesce(response_code_details, '') LIKE '%rbac_access_denied%'
           OR coalesce(connection_termination_details, '') LIKE '%rbac_access_denied%'
        GROUP BY ALL ORDER BY n DESC""",
    )
    findings.extend(
        Finding(
            "authz",
            "info",
            d["destination"],
            f"{d['n']} requests from {d['caller']} were actually denied by Envoy RBAC "
            f"({d['detail']})",
            {"caller": d["caller"], "requests": int(d["n"])},
        )
        for d in denied
    )
    return findings, rows


def edge_observations(conn: duckdb.DuckDBPyConnection) -> list[EdgeObservation]:
    rows = _rows(
        conn,
        """
        SELECT source_namespace AS sns, source_workload AS swl,
               coalesce(source_principal, '') AS principal,
               destination_namespace AS dns, destination_workload AS dwl,
               destination_canonical_service AS app, destination_version AS version,
               coalesce(mtls, false) AS mtls, count(*) AS n
        FROM traffic GROUP BY ALL""",
    )
    return [
        EdgeObservation(
            r["sns"] or "unknown",
            r["swl"] or "unknown",
            r["principal"],
            r["dns"] or "unknown",
            r["dwl"] or "unknown",
            r["app"] or "unknown",
            r["version"] or "unknown",
            bool(r["mtls"]),
            int(r["n"]),
        )
        for r in rows
    ]


def run_check(
    check: str,
    data_dir: Path,
    window: TimeWindow,
    config: IstioConfig,
    *,
    routing_options: RoutingOptions | None = None,
    conn_factory: Callable[[Path, TimeWindow], duckdb.DuckDBPyConnection] = connect,
) -> CheckReport:
    """One of CHECKS over the store's traffic in `window`."""
    if check not in CHECKS:
        raise ValueError(f"unknown check {check!r}; choose from {', '.join(CHECKS)}")
    conn = conn_factory(data_dir, window)
    tables: dict[str, list[dict[str, Any]]] = {}
    try:
        if check == "routing":
            findings, rows = check_routing(
                config, routing_observations(conn, config), routing_options
            )
        elif check == "authz":
            findings, rows = _authz(conn, config)
        else:
            findings, rows, tables = check_mtls(config, edge_observations(conn))
    finally:
        conn.close()
    return CheckReport(
        check, window.to_json(), tuple(findings), tuple(rows), config.skipped, tables
    )
