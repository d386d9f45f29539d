"""What the store says about the traffic the checks judge: grouped rows of the `traffic` view,
enriched from the rest of the window. I/O only (DuckDB queries); the judging is elsewhere.

The `traffic` view already pairs the client's and the server's report of each hop (one row,
each field from the side that knows it: analytics/pairing.py). Added here, each from a source
that knows, never a guess:
- per workload, the canonical service and revision any report in the window gives it (as a
  source from its own node metadata, or as a destination), when they are unambiguous;
- per workload, the SPIFFE principal it was seen with; whether a destination ever reported
  receiving traffic (it has a sidecar).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import duckdb

from meshlens.analytics.istio.resources import IstioConfig
from meshlens.analytics.istio.routing import Observation

EXAMPLES_PER_GROUP: Final = 3
DEFAULT_TRUST_DOMAIN: Final = "cluster.local"


def rows(conn: duckdb.DuckDBPyConnection, sql: str) -> list[dict[str, Any]]:
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


@dataclass(frozen=True, slots=True)
class Context:
    """Facts about workloads gathered over the whole window."""

    learned: Mapping[tuple[str, str], tuple[str, str]] = field(default_factory=dict)
    principals: Mapping[tuple[str, str], str] = field(default_factory=dict)
    trust_domain: str = DEFAULT_TRUST_DOMAIN
    proxied_services: frozenset[str] = frozenset()
    proxied_workloads: frozenset[tuple[str, str]] = frozenset()

    def has_proxy(self, reporter: str, service: str, namespace: str, workload: str) -> bool | None:
        """True when a destination proxy reported this request or others to the same
        destination; None when none ever did (no sidecar, or one that does not report)."""
        if reporter == "destination":
            return True
        if (namespace, workload) in self.proxied_workloads or service in self.proxied_services:
            return True
        return None


# A canonical service equal to the workload's name may be the decoders' fallback (Istio's rule
# when no label names it) rather than a label that was reported: such a value says nothing about
# the `app` label. The gRPC ALS always carries the proxy's labels, so its values are kept.
TRUSTED_CANONICAL: Final = "(origin = 'envoy_als' OR cs <> wl)"
_IDENTITIES: Final = """
    SELECT source_namespace AS ns, source_workload AS wl, source_canonical_service AS cs,
           source_version AS v, source_principal AS p, origin FROM requests
    UNION ALL
    SELECT destination_namespace, destination_workload, destination_canonical_service,
           destination_version, 'unknown', origin FROM requests
"""


def load_context(conn: duckdb.DuckDBPyConnection) -> Context:
    ids = rows(
        conn,
        f"""
        SELECT ns, wl,
               min(nullif(cs, 'unknown')) FILTER (WHERE {TRUSTED_CANONICAL}) AS cs,
               count(DISTINCT nullif(cs, 'unknown')) FILTER (WHERE {TRUSTED_CANONICAL}) AS ncs,
               min(nullif(v, 'unknown')) AS v, count(DISTINCT nullif(v, 'unknown')) AS nv,
               min(p) FILTER (WHERE p LIKE 'spiffe://%') AS p,
               count(DISTINCT p) FILTER (WHERE p LIKE 'spiffe://%') AS np
        FROM ({_IDENTITIES})
        WHERE ns <> 'unknown' AND wl <> 'unknown'
        GROUP BY ns, wl""",
    )
    learned = {
        (r["ns"], r["wl"]): (r["cs"] if r["ncs"] == 1 else "", r["v"] if r["nv"] == 1 else "")
        for r in ids
        if r["ncs"] == 1 or r["nv"] == 1
    }
    principals = {(r["ns"], r["wl"]): r["p"] for r in ids if r["np"] == 1}
    domains = Counter(
        str(p).removeprefix("spiffe://").split("/", 1)[0] for p in principals.values()
    )
    proxied = rows(
        conn,
        """
        SELECT DISTINCT destination_service AS svc, destination_namespace AS ns,
               destination_workload AS wl
        FROM requests WHERE reporter = 'destination'""",
    )
    return Context(
        learned=learned,
        principals=principals,
        trust_domain=domains.most_common(1)[0][0] if domains else DEFAULT_TRUST_DOMAIN,
        proxied_services=frozenset(r["svc"] for r in proxied if r["svc"] != "unknown"),
        proxied_workloads=frozenset((r["ns"], r["wl"]) for r in proxied if r["wl"] != "unknown"),
    )


def authz_groups(conn: duckdb.DuckDBPyConnection, config: IstioConfig) -> list[dict[str, Any]]:
    """Identical requests grouped by what the policies read (unused fields are NULL)."""
    keys = used_keys(config, "AuthorizationPolicy")

    def col(expr: str, *names: str) -> str:
        return expr if keys & set(names) else "NULL"

    path = col("path", "paths", "notPaths")
    host = col(
        "authority",
        "hosts",
        "notHosts",
        "when:request.headers[:authority]",
        "when:request.headers[host]",
    )
    ua = col("coalesce(user_agent, '')", "when:request.headers[user-agent]")
    ip = col(
        "source_address",
        "ipBlocks",
        "notIpBlocks",
        "remoteIpBlocks",
        "notRemoteIpBlocks",
        "when:source.ip",
        "when:remote.ip",
    )
    return rows(
        conn,
        f"""
        SELECT reporter, destination_namespace AS dns, destination_workload AS dwl,
               destination_canonical_service AS app, destination_version AS version,
               destination_service AS dsvc, destination_service_name AS dsvc_name, origin,
               source_workload AS swl, source_namespace AS sns,
               coalesce(source_principal, 'unknown') AS principal, mtls,
               {ip} AS ip, method, {path} AS path, destination_port AS port,
               {host} AS host, {ua} AS ua, count(*) AS n,
               list(DISTINCT coalesce(path, '')) [1:{EXAMPLES_PER_GROUP}] AS examples
        FROM traffic WHERE protocol <> 'tcp' GROUP BY ALL""",
    )


def edge_groups(conn: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    return rows(
        conn,
        """
        SELECT reporter, source_namespace AS sns, source_workload AS swl,
               coalesce(source_principal, 'unknown') AS principal,
               destination_namespace AS dns, destination_workload AS dwl,
               destination_canonical_service AS app, destination_version AS version,
               destination_service AS dsvc, destination_service_name AS dsvc_name, origin,
               destination_port AS port, mtls, count(*) AS n
        FROM traffic GROUP BY ALL""",
    )


def routing_observations(conn: duckdb.DuckDBPyConnection, config: IstioConfig) -> list[Observation]:
    # Only group by what some match condition reads, to keep the groups few.
    keys = used_keys(config, "VirtualService")
    ua = "coalesce(user_agent, '')" if "headers" in keys else "''"
    path = "coalesce(path, '')" if "uri" in keys else "''"
    method = "coalesce(method, '')" if "method" in keys else "''"
    found = rows(
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
        for r in found
    ]
