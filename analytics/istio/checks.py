"""Run the Istio checks over the store: read observed traffic with DuckDB, judge it with the pure
routing/authz/mtls modules, return a `CheckReport`.

Rows come from the `traffic` view (the client's and the server's report of a hop paired into
one row; the server's side where it knows: the destination proxy is where AuthorizationPolicy
and PeerAuthentication are enforced). They are grouped in SQL first, so a window of millions of
requests becomes a few thousand groups. What telemetry lacks about a group (destination labels,
the peer's principal, the workload port) is taken from the other sources that know it
(`analytics.istio.labels`, `analytics.istio.telemetry.Context`), or left unknown.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any, Final

import duckdb

from meshlens.analytics.catalog import connect
from meshlens.analytics.istio.authz import RequestFacts, check_policy, decide, strip_spiffe
from meshlens.analytics.istio.labels import KnownLabels, LabelIndex, build_index
from meshlens.analytics.istio.mtls import EdgeObservation, check_mtls
from meshlens.analytics.istio.report import CheckReport, Finding
from meshlens.analytics.istio.resources import IstioConfig
from meshlens.analytics.istio.routing import RoutingOptions, check_routing
from meshlens.analytics.istio.telemetry import (
    EXAMPLES_PER_GROUP,
    Context,
    authz_groups,
    edge_groups,
    load_context,
    routing_observations,
    rows,
)
from meshlens.analytics.window import TimeWindow

CHECKS: Final = ("routing", "authz", "mtls")
DECISIONS: Final = {True: "allow", False: "deny", None: "undetermined"}


def _ip(address: str | None) -> str | None:
    if not address:
        return None
    host = address.rsplit(":", 1)[0] if address.count(":") == 1 else address
    return host.strip("[]")


def _text(value: Any) -> str:
    return "" if value is None or value == "unknown" else str(value)


def _source_identity(
    g: dict[str, Any], ctx: Context, index: LabelIndex
) -> tuple[str | None, str | None]:
    """(principal, namespace) as the destination proxy saw them, from the peer certificate:
    none ('') for plaintext; unknown (None) unless the request was mTLS and the client's
    identity is known (the certificate, or the client's own report of the hop, as the traffic
    view pairs them; the principal the client was seen with; its service account in a
    manifest). A principal
    with unknown TLS is not used: a plaintext request presents none."""
    mtls = g["mtls"]
    if mtls is False:
        return "", ""
    if mtls is not True:
        return None, None
    row = str(g["principal"])
    principal = strip_spiffe(row) if row.startswith("spiffe://") else ""
    sns, swl = _text(g["sns"]), _text(g["swl"])
    if not principal:
        sa = index.service_account(sns, swl) if sns and swl else ""
        known = ctx.principals.get((sns, swl), "")
        if known:
            principal = strip_spiffe(known)
        elif sa:
            principal = f"{ctx.trust_domain}/ns/{sns}/sa/{sa}"
    if principal:
        parts = principal.split("/")
        return principal, parts[2] if len(parts) > 2 and parts[1] == "ns" else None
    return None, sns or None  # the certificate's namespace is the workload's


def _principal_label(g: dict[str, Any], facts: RequestFacts) -> str:
    if str(g["principal"]).startswith("spiffe://") and facts.principal:
        return str(g["principal"])
    if facts.principal:
        return f"spiffe://{facts.principal} (derived)"
    return "(none)" if facts.principal == "" else "(unknown)"


def _port(g: dict[str, Any], index: LabelIndex) -> int | None:
    """The destination workload port: what a destination report logged (its inbound cluster),
    or a client's service port mapped through the Service's targetPort."""
    port = g["port"]
    if not port:
        return None
    if g["reporter"] == "destination":
        return int(port)
    return index.target_port(_text(g["dns"]), _text(g["dsvc_name"]), int(port))


def _index(config: IstioConfig, ctx: Context) -> LabelIndex:
    return build_index(config.workloads, config.services, ctx.learned)


def _canonical(g: dict[str, Any]) -> str:
    """The destination's canonical service as label evidence: '' when it equals the workload's
    name in a report other than the gRPC ALS (then it may be the decoders' fallback to that
    name, not a label: it says nothing about `app`)."""
    canonical = _text(g["app"])
    if canonical and canonical == _text(g["dwl"]) and g.get("origin") != "envoy_als":
        return ""
    return canonical


def _labels(g: dict[str, Any], index: LabelIndex) -> KnownLabels:
    return index.destination(
        _text(g["dns"]), _text(g["dwl"]), _text(g["dsvc_name"]), _canonical(g), _text(g["version"])
    )


def _facts(g: dict[str, Any], ctx: Context, index: LabelIndex) -> RequestFacts:
    principal, sns = _source_identity(g, ctx, index)
    labels = _labels(g, index)
    return RequestFacts(
        _text(g["dns"]),
        _canonical(g),
        _text(g["version"]),
        principal,
        sns,
        _ip(g["ip"]),
        g["method"] or None,
        g["path"],
        _port(g, index),
        g["host"],
        g["ua"],
        labels=labels,
        has_proxy=ctx.has_proxy(g["reporter"], g["dsvc"], g["dns"], g["dwl"]),
    )


def _destination(g: dict[str, Any]) -> str:
    if g["dwl"] != "unknown" or g["dsvc"] in (None, "unknown"):
        return f"{g['dns']}/{g['dwl']}"
    return f"{g['dns']}/{g['dwl']} (service {g['dsvc']})"


def _label_keys(config: IstioConfig) -> Collection[str]:
    return build_index(config.workloads, config.services).label_keys


def _authz(
    conn: duckdb.DuckDBPyConnection, config: IstioConfig, context: Context | None = None
) -> tuple[list[Finding], list[dict[str, Any]]]:
    policies = config.of_kind("AuthorizationPolicy")
    keys = _label_keys(config)
    for p in policies:
        check_policy(p, keys)  # refuse unsupported features before replaying anything
    ctx = context if context is not None else load_context(conn)
    index = _index(config, ctx)
    callers: dict[tuple[str, ...], dict[str, Any]] = {}
    for g in authz_groups(conn, config):
        facts = _facts(g, ctx, index)
        d = decide(policies, facts)
        key = (
            f"{g['sns']}/{g['swl']}",
            _principal_label(g, facts),
            _destination(g),
            DECISIONS[d.allowed],
            d.policy,
        )
        row = callers.setdefault(
            key,
            {
                "caller": key[0],
                "principal": key[1],
                "destination": key[2],
                "service": g["dsvc"] or "unknown",
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
    found = sorted(callers.values(), key=lambda r: (r["destination"], r["decision"], r["caller"]))
    findings = [_authz_finding(r) for r in found if r["decision"] != "allow"]
    denied = rows(
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
    return findings, found


def _authz_finding(r: dict[str, Any]) -> Finding:
    details = {
        "caller": r["caller"],
        "principal": r["principal"],
        "requests": r["requests"],
        "examples": r["examples"],
    }
    if r["decision"] == "deny":
        return Finding(
            "authz",
            "problem",
            r["destination"],
            f"would DENY {r['requests']} requests from {r['caller']} "
            f"(principal {r['principal']}): {r['reason']}",
            details,
        )
    return Finding(
        "authz",
        "warning",
        r["destination"],
        f"{r['requests']} requests from {r['caller']} (principal {r['principal']}) {r['reason']}",
        details,
    )


def edge_observations(
    conn: duckdb.DuckDBPyConnection,
    config: IstioConfig | None = None,
    context: Context | None = None,
) -> list[EdgeObservation]:
    ctx = context if context is not None else load_context(conn)
    index = _index(config or IstioConfig(), ctx)
    out: list[EdgeObservation] = []
    for g in edge_groups(conn):
        out.append(
            EdgeObservation(
                g["sns"] or "unknown",
                g["swl"] or "unknown",
                g["principal"] if g["principal"] != "unknown" else "",
                g["dns"] or "unknown",
                g["dwl"] or "unknown",
                g["app"] or "unknown",
                g["version"] or "unknown",
                g["mtls"],
                int(g["n"]),
                port=_port(g, index),
                has_proxy=ctx.has_proxy(g["reporter"], g["dsvc"], g["dns"], g["dwl"]),
                labels=_labels(g, index),
                dest_service=_text(g["dsvc"]),
            )
        )
    return out


def run_check(
    check: str,
    data_dir: Path,
    window: TimeWindow,
    config: IstioConfig,
    *,
    routing_options: RoutingOptions | None = None,
    conn_factory: Callable[[Path, TimeWindow], duckdb.DuckDBPyConnection] = connect,
    context: Context | None = None,
) -> CheckReport:
    """One of CHECKS over the store's traffic in `window`. `context`: the window's identities
    (`telemetry.load_context`) when the caller has them already (the app runs two checks
    over one window, and this is one scan of its reports each)."""
    if check not in CHECKS:
        raise ValueError(f"unknown check {check!r}; choose from {', '.join(CHECKS)}")
    conn = conn_factory(data_dir, window)
    tables: dict[str, list[dict[str, Any]]] = {}
    try:
        if check == "routing":
            findings, table = check_routing(
                config, routing_observations(conn, config), routing_options
            )
        elif check == "authz":
            findings, table = _authz(conn, config, context)
        else:
            findings, table, tables = check_mtls(config, edge_observations(conn, config, context))
    finally:
        conn.close()
    findings = [*findings, *(Finding(check, "info", "config", n) for n in config.notes)]
    return CheckReport(
        check, window.to_json(), tuple(findings), tuple(table), config.skipped, tables
    )
