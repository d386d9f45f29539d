"""Configured routing (VirtualService + DestinationRule) against the observed split. Pure.

For each VirtualService, observed requests to its hosts are assigned to the first HTTP route whose
match they satisfy (as the client sidecar does), and each route's configured weights are
compared with where those requests landed (destination service and version, the version being
the subset's `version` label). A share is off when it lies outside a binomial tolerance
(`z` standard errors, plus `slack`). Problems: a share off, a subset that routes give weight to
and that received nothing although that had become improbable (below `alpha`), and traffic the
routes do not explain (versions of a host no route names). A DestinationRule subset that no
route sends traffic to (Istio's stock `destination-rule-all.yaml` defines every version) is
information, not a problem. A route whose match reads what telemetry lacks (a header other than
user-agent) cannot be given its requests; it is reported as not verified, and the traffic is
still checked against the versions the routes name.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from meshlens.analytics.istio.report import Finding
from meshlens.analytics.istio.resources import IstioConfig, Resource

Z_999: Final = 3.29  # two-sided 99.9%: a routing check runs often; keep false alarms rare
ALPHA: Final = 0.001  # "got none" is a problem when P(none | configured weights) is below this


@dataclass(frozen=True, slots=True)
class Observation:
    """A group of identical requests (destination-reported where possible)."""

    host: str  # destination_service FQDN
    version: str
    user_agent: str
    path: str
    method: str
    port: int
    source_namespace: str
    source_app: str
    source_version: str
    count: int


@dataclass(frozen=True, slots=True)
class RoutingOptions:
    z: float = Z_999
    slack: float = 0.01  # share points tolerated on top of sampling noise
    min_requests: int = 20  # below this a route is not judged


def fqdn(host: str, namespace: str) -> str:
    """Istio's short-name rule: 'reviews' in namespace ns is reviews.ns.svc.cluster.local."""
    if host == "*" or "." in host:
        return host
    return f"{host}.{namespace}.svc.cluster.local"


def _string_match(spec: Mapping[str, Any], value: str) -> bool | None:
    if "exact" in spec:
        return value == str(spec["exact"])
    if "prefix" in spec:
        return value.startswith(str(spec["prefix"]))
    if "regex" in spec:
        return re.fullmatch(str(spec["regex"]), value) is not None
    return None


class UnverifiableMatch(Exception):
    """A match condition on something telemetry does not record."""


_MATCH_FIELDS: Final = {
    "headers",
    "uri",
    "method",
    "port",
    "sourceNamespace",
    "sourceLabels",
    "name",
    "ignoreUriCase",
}


def match_applies(m: Mapping[str, Any], obs: Observation) -> bool:
    unknown = set(m) - _MATCH_FIELDS
    if unknown:
        raise UnverifiableMatch(f"match on {sorted(unknown)[0]!r} is not in telemetry")
    for name, spec in (m.get("headers") or {}).items():
        if name.lower() != "user-agent":
            raise UnverifiableMatch(f"header {name!r} is not in telemetry (only user-agent)")
        if not _string_match(spec, obs.user_agent):
            return False
    path = obs.path.split("?", 1)[0]
    if "uri" in m:
        want = dict(m["uri"])
        value = path.lower() if m.get("ignoreUriCase") else path
        if m.get("ignoreUriCase"):
            want = {k: str(v).lower() for k, v in want.items()}
        if not _string_match(want, value):
            return False
    if "method" in m and not _string_match(m["method"], obs.method):
        return False
    if "port" in m and int(m["port"]) != obs.port:
        return False
    if "sourceNamespace" in m and m["sourceNamespace"] != obs.source_namespace:
        return False
    for label, value in (m.get("sourceLabels") or {}).items():
        have = {"app": obs.source_app, "version": obs.source_version}.get(label)
        if have is None:
            raise UnverifiableMatch(f"source label {label!r} is not in telemetry")
        if have != str(value):
            return False
    return True


def route_index(http: Sequence[Mapping[str, Any]], obs: Observation) -> int | None:
    """The first HTTP route (index) this request matches, as Envoy picks it."""
    for i, route in enumerate(http):
        matches = route.get("match") or []
        if not matches or any(match_applies(m, obs) for m in matches):
            return i
    return None


def subset_versions(config: IstioConfig) -> dict[tuple[str, str], str | None]:
    """(host FQDN, subset) -> version label (None when the subset has no version label)."""
    out: dict[tuple[str, str], str | None] = {}
    for dr in config.of_kind("DestinationRule"):
        host = fqdn(str(dr.spec.get("host", "")), dr.namespace)
        for s in dr.spec.get("subsets") or []:
            labels = s.get("labels") or {}
            out[(host, str(s.get("name")))] = labels.get("version")
    return out


def _expected(
    route: Mapping[str, Any], vs: Resource, versions: Mapping[tuple[str, str], str | None]
) -> dict[tuple[str, str], float]:
    """(host, version or '*') -> configured share of the route's traffic."""
    dests = route.get("route") or []
    total = sum(int(d.get("weight", 0) or 0) for d in dests)
    out: dict[tuple[str, str], float] = defaultdict(float)
    for d in dests:
        dest = d.get("destination") or {}
        host = fqdn(str(dest.get("host", "")), vs.namespace)
        subset = dest.get("subset")
        version = "*" if not subset else (versions.get((host, str(subset))) or f"?{subset}")
        share = (
            1.0
            if len(dests) == 1 and total == 0
            else (int(d.get("weight", 0) or 0) / total if total else 0.0)
        )
        out[(host, version)] += share
    return dict(out)


def _tolerance(p: float, n: int, opts: RoutingOptions) -> float:
    return opts.z * math.sqrt(max(p * (1 - p), 0.0) / n) + opts.slack


def _assign(
    vs: Resource, http: Sequence[Mapping[str, Any]], mine: Sequence[Observation]
) -> tuple[dict[int, dict[tuple[str, str], int]] | None, str]:
    """Requests per route and (host, version); None (and why) when a match is unverifiable."""
    per_route: dict[int, dict[tuple[str, str], int]] = defaultdict(lambda: defaultdict(int))
    try:
        for o in mine:
            idx = route_index(http, o)
            if idx is not None:
                per_route[idx][(o.host, o.version)] += o.count
    except UnverifiableMatch as exc:
        return None, str(exc)
    return per_route, ""


def _judge(
    name: str, key: tuple[str, str], p: float, k: int, n: int, vs: Resource, opts: RoutingOptions
) -> tuple[str, Finding | None]:
    share = k / n if n else 0.0
    if n < opts.min_requests:
        return "ok", None
    if p > 0 and k == 0 and n * p >= 5:
        return "no traffic", Finding(
            "routing",
            "problem",
            vs.ref,
            f"route {name}: {key[0]} {key[1]} is configured for {p:.0%} but got none of {n} "
            "requests",
            {"route": name, "host": key[0], "version": key[1]},
        )
    if abs(share - p) > _tolerance(p, n, opts):
        return "split off", Finding(
            "routing",
            "problem",
            vs.ref,
            f"route {name}: {key[0]} {key[1]} got {share:.1%} of {n} requests, configured {p:.0%}",
            {"route": name, "host": key[0], "version": key[1], "observed": share, "configured": p},
        )
    return "ok", None


def check_virtual_service(
    vs: Resource,
    obs: Sequence[Observation],
    versions: Mapping[tuple[str, str], str | None],
    opts: RoutingOptions,
) -> tuple[list[Finding], list[dict[str, Any]]]:
    findings: list[Finding] = []
    rows: list[dict[str, Any]] = []
    http = list(vs.spec.get("http") or [])
    hosts = {fqdn(str(h), vs.namespace) for h in vs.spec.get("hosts") or []}
    mine = [o for o in obs if o.host in hosts]
    per_route, why = _assign(vs, http, mine)
    if per_route is None:
        findings.append(
            Finding(
                "routing",
                "info",
                vs.ref,
                f"not verified: {why}; the split per route is not compared, only that "
                "traffic reached versions the routes name",
            )
        )
    for idx, route in enumerate(http if per_route is not None else []):
        name = route.get("name") or f"http[{idx}]"
        expected = _expected(route, vs, versions)
        got = (per_route or {}).get(idx, {})
        n = sum(got.values())
        keys = set(expected) | {k for k in got if (k[0], "*") not in expected}
        for key in sorted(keys):
            p = expected.get(key, 0.0)
            k = (
                got.get(key, 0)
                if key[1] != "*"
                else sum(c for (h, _v), c in got.items() if h == key[0])
            )
            status, finding = _judge(name, key, p, k, n, vs, opts)
            if finding is not None:
                findings.append(finding)
            rows.append(
                {
                    "virtual_service": vs.ref,
                    "route": name,
                    "host": key[0],
                    "version": key[1],
                    "configured": round(p, 4),
                    "observed": round(k / n, 4) if n else 0.0,
                    "requests": k,
                    "route_requests": n,
                    "status": status,
                }
            )
    # Traffic to versions of these hosts that no route sends anything to.
    named = {(h, v) for (h, v), p in _all_expected(http, vs, versions).items() if p > 0}
    wildcard = {h for (h, v) in named if v == "*"}
    stray: dict[tuple[str, str], int] = defaultdict(int)
    for o in mine:
        if (o.host, o.version) not in named and o.host not in wildcard:
            stray[(o.host, o.version)] += o.count
    for (host, version), count in sorted(stray.items()):
        findings.append(
            Finding(
                "routing",
                "problem",
                vs.ref,
                f"{count} requests reached {host} version {version}, which no "
                "route of this VirtualService names",
                {"host": host, "version": version, "requests": count},
            )
        )
    return findings, rows


def _all_expected(
    http: Sequence[Mapping[str, Any]], vs: Resource, versions: Mapping[tuple[str, str], str | None]
) -> dict[tuple[str, str], float]:
    out: dict[tuple[str, str], float] = {}
    for route in http:
        for key, p in _expected(route, vs, versions).items():
            out[key] = max(out.get(key, 0.0), p)
    return out


def check_routing(
    config: IstioConfig, obs: Sequence[Observation], opts: RoutingOptions | None = None
) -> tuple[list[Finding], list[dict[str, Any]]]:
    """Every VirtualService and DestinationRule of `config` against the observations."""
    opts = opts or RoutingOptions()
    versions = subset_versions(config)
    findings: list[Finding] = []
    rows: list[dict[str, Any]] = []
    for vs in config.of_kind("VirtualService"):
        f, r = check_virtual_service(vs, obs, versions, opts)
        findings.extend(f)
        rows.extend(r)
        if vs.spec.get("tcp") or vs.spec.get("tls"):
            findings.append(
                Finding(
                    "routing",
                    "info",
                    vs.ref,
                    "tcp/tls routes are not compared (no per-route telemetry)",
                )
            )
    findings.extend(check_subsets(config, obs, rows, versions))
    return findings, rows


def check_subsets(
    config: IstioConfig,
    obs: Sequence[Observation],
    rows: Sequence[Mapping[str, Any]],
    versions: Mapping[tuple[str, str], str | None],
) -> list[Finding]:
    """Each DestinationRule subset against the routes and the traffic: one that routes give
    weight to and that received none is a problem once that became improbable; one that no
    route names is information (a subset may be defined ahead of any route)."""
    seen = {(o.host, o.version) for o in obs if o.count > 0}
    weighted: set[tuple[str, str]] = set()
    for vs in config.of_kind("VirtualService"):
        http = list(vs.spec.get("http") or [])
        weighted.update(k for k, p in _all_expected(http, vs, versions).items() if p > 0)
    flagged = {(r["host"], r["version"]) for r in rows if r["status"] == "no traffic"}
    findings: list[Finding] = []
    for dr in config.of_kind("DestinationRule"):
        host = fqdn(str(dr.spec.get("host", "")), dr.namespace)
        for s in dr.spec.get("subsets") or []:
            name = s.get("name")
            version = (s.get("labels") or {}).get("version")
            key = (host, str(version))
            if version is None:
                findings.append(
                    Finding(
                        "routing", "info", dr.ref, f"subset {name}: no version label to compare"
                    )
                )
            elif key in seen or key in flagged:
                continue
            elif key not in weighted:
                findings.append(
                    Finding(
                        "routing",
                        "info",
                        dr.ref,
                        f"subset {name} (version={version}): no route sends traffic to it, and "
                        f"none reached {host} {version} in the window",
                        {"subset": name, "host": host, "version": version},
                    )
                )
            else:
                findings.append(_weighted_but_empty(dr, name, host, str(version), rows))
    return findings


def _weighted_but_empty(
    dr: Resource, name: Any, host: str, version: str, rows: Sequence[Mapping[str, Any]]
) -> Finding:
    judged = [
        r for r in rows if r["host"] == host and r["version"] == version and r["configured"] > 0
    ]
    n = sum(int(r["route_requests"]) for r in judged)
    p_none = math.prod((1 - float(r["configured"])) ** int(r["route_requests"]) for r in judged)
    routes = ", ".join(f"{r['virtual_service']} route {r['route']}" for r in judged)
    details = {"subset": name, "host": host, "version": version, "route_requests": n}
    if judged and n and p_none < ALPHA:
        return Finding(
            "routing",
            "problem",
            dr.ref,
            f"subset {name} (version={version}) matches no workload that received traffic for "
            f"{host} in the window, although {routes} give it weight ({n} requests routed)",
            details,
        )
    why = (
        "the routes that give it weight were not verified"
        if not judged
        else ("no requests took the routes that give it weight" if not n else "too few requests")
    )
    return Finding(
        "routing",
        "info",
        dr.ref,
        f"subset {name} (version={version}) received no traffic for {host}; not judged: {why}",
        details,
    )
