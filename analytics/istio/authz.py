"""AuthorizationPolicy evaluation, as Istio's sidecar does it, over observed requests.

Pure: a `RequestFacts` (what telemetry says about one group of identical requests) and the
policies in scope -> a `Decision`. Order (Istio's): CUSTOM, then DENY, then ALLOW; AUDIT only
marks. A workload with no ALLOW policy allows what no DENY policy denies; with ALLOW policies, a
request must match one of them.

Anything a policy says that telemetry cannot answer (JWT request principals, arbitrary headers,
gateway `targetRefs`, CUSTOM providers) is refused with a precise `IstioConfigError`, never
guessed: a what-if that silently ignores a condition would name the wrong callers.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from analytics.errors import IstioConfigError
from analytics.istio.resources import Resource

ROOT_NAMESPACE: Final = "istio-system"

# Workload labels telemetry knows, and where they come from.
LABEL_FIELDS: Final = {
    "app": "app",
    "service.istio.io/canonical-name": "app",
    "version": "version",
    "service.istio.io/canonical-revision": "version",
}
SOURCE_FIELDS: Final = {
    "principals",
    "notPrincipals",
    "namespaces",
    "notNamespaces",
    "ipBlocks",
    "notIpBlocks",
    "remoteIpBlocks",
    "notRemoteIpBlocks",
}
OPERATION_FIELDS: Final = {
    "hosts",
    "notHosts",
    "ports",
    "notPorts",
    "methods",
    "notMethods",
    "paths",
    "notPaths",
}
WHEN_KEYS: Final = {
    "source.principal",
    "source.namespace",
    "source.ip",
    "remote.ip",
    "destination.port",
    "request.headers[user-agent]",
    "request.headers[:authority]",
    "request.headers[host]",
}


@dataclass(frozen=True, slots=True)
class RequestFacts:
    """What the destination proxy knew about a request ('' when unknown)."""

    dest_namespace: str
    dest_app: str
    dest_version: str
    principal: str  # without the spiffe:// prefix
    source_namespace: str
    source_ip: str
    method: str
    path: str
    port: int
    host: str
    user_agent: str

    def labels(self) -> dict[str, str]:
        return {"app": self.dest_app, "version": self.dest_version}


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    policy: str  # the policy that decided, or a reason
    audited: bool = False


def strip_spiffe(principal: str) -> str:
    return principal.removeprefix("spiffe://") if principal and principal != "unknown" else ""


def string_match(pattern: str, value: str) -> bool:
    """Istio's string match: exact, 'prefix*', '*suffix', or '*' for any non-empty value."""
    if pattern == "*":
        return value != ""
    if pattern.endswith("*"):
        return value.startswith(pattern[:-1])
    if pattern.startswith("*"):
        return value.endswith(pattern[1:])
    return value == pattern


def _any(patterns: Sequence[str], value: str) -> bool:
    return any(string_match(p, value) for p in patterns)


def _ip_in(blocks: Sequence[str], ip: str) -> bool:
    if not ip:
        return False
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return False
    return any(addr in ipaddress.ip_network(b, strict=False) for b in blocks)


def _field(values: Any, where: str, policy: Resource) -> list[str]:
    if not isinstance(values, list) or not all(isinstance(v, str | int) for v in values):
        raise IstioConfigError(policy.source, None, where, "must be a list of strings")
    return [str(v) for v in values]


def _source_matches(
    src: Mapping[str, Any], req: RequestFacts, where: str, policy: Resource
) -> bool:
    unknown = set(src) - SOURCE_FIELDS
    if unknown:
        name = sorted(unknown)[0]
        raise IstioConfigError(
            policy.source,
            None,
            f"{where}.{name}",
            f"{policy.ref}: '{name}' cannot be evaluated from mesh telemetry "
            "(request principals need the JWT, which proxies do not log)",
        )
    checks = {
        "principals": lambda v: _any(v, req.principal),
        "notPrincipals": lambda v: not _any(v, req.principal),
        "namespaces": lambda v: _any(v, req.source_namespace),
        "notNamespaces": lambda v: not _any(v, req.source_namespace),
        "ipBlocks": lambda v: _ip_in(v, req.source_ip),
        "notIpBlocks": lambda v: not _ip_in(v, req.source_ip),
        "remoteIpBlocks": lambda v: _ip_in(v, req.source_ip),
        "notRemoteIpBlocks": lambda v: not _ip_in(v, req.source_ip),
    }
    return all(checks[k](_field(v, f"{where}.{k}", policy)) for k, v in src.items())


def _operation_matches(
    op: Mapping[str, Any], req: RequestFacts, where: str, policy: Resource
) -> bool:
    unknown = set(op) - OPERATION_FIELDS
    if unknown:
        name = sorted(unknown)[0]
        raise IstioConfigError(
            policy.source,
            None,
            f"{where}.{name}",
            f"{policy.ref}: unsupported operation field '{name}'",
        )
    path = req.path.split("?", 1)[0]
    checks = {
        "hosts": lambda v: _any([h.lower() for h in v], req.host.lower()),
        "notHosts": lambda v: not _any([h.lower() for h in v], req.host.lower()),
        "ports": lambda v: str(req.port) in v,
        "notPorts": lambda v: str(req.port) not in v,
        "methods": lambda v: _any(v, req.method),
        "notMethods": lambda v: not _any(v, req.method),
        "paths": lambda v: _any(v, path),
        "notPaths": lambda v: not _any(v, path),
    }
    return all(checks[k](_field(v, f"{where}.{k}", policy)) for k, v in op.items())


def _when_value(key: str, req: RequestFacts) -> str:
    return {
        "source.principal": req.principal,
        "source.namespace": req.source_namespace,
        "source.ip": req.source_ip,
        "remote.ip": req.source_ip,
        "destination.port": str(req.port),
        "request.headers[user-agent]": req.user_agent,
        "request.headers[:authority]": req.host,
        "request.headers[host]": req.host,
    }[key]


def _when_matches(cond: Mapping[str, Any], req: RequestFacts, where: str, policy: Resource) -> bool:
    key = str(cond.get("key", ""))
    if key not in WHEN_KEYS:
        raise IstioConfigError(
            policy.source,
            None,
            f"{where}.key",
            f"{policy.ref}: condition key {key!r} cannot be evaluated from mesh telemetry "
            f"(supported: {', '.join(sorted(WHEN_KEYS))})",
        )
    value = _when_value(key, req)
    ok = True
    if key in ("source.ip", "remote.ip"):
        if "values" in cond:
            ok = _ip_in(_field(cond["values"], f"{where}.values", policy), value)
        if "notValues" in cond:
            ok = ok and not _ip_in(_field(cond["notValues"], f"{where}.notValues", policy), value)
        return ok
    if "values" in cond:
        ok = _any(_field(cond["values"], f"{where}.values", policy), value)
    if "notValues" in cond:
        ok = ok and not _any(_field(cond["notValues"], f"{where}.notValues", policy), value)
    return ok


def rule_matches(rule: Mapping[str, Any], req: RequestFacts, where: str, policy: Resource) -> bool:
    """All of from/to/when that are present must match; within each list, any entry."""
    froms = rule.get("from") or []
    if froms and not any(
        _source_matches(f.get("source") or {}, req, f"{where}.from[{i}].source", policy)
        for i, f in enumerate(froms)
    ):
        return False
    tos = rule.get("to") or []
    if tos and not any(
        _operation_matches(t.get("operation") or {}, req, f"{where}.to[{i}].operation", policy)
        for i, t in enumerate(tos)
    ):
        return False
    return all(
        _when_matches(c, req, f"{where}.when[{i}]", policy)
        for i, c in enumerate(rule.get("when") or [])
    )


def policy_matches(policy: Resource, req: RequestFacts) -> bool:
    rules = policy.spec.get("rules") or []
    return any(rule_matches(r, req, f"spec.rules[{i}]", policy) for i, r in enumerate(rules))


def check_policy(policy: Resource) -> None:
    """Refuse what we cannot evaluate, before any request is replayed."""
    action = str(policy.spec.get("action") or "ALLOW")
    if action == "CUSTOM":
        raise IstioConfigError(
            policy.source,
            None,
            "spec.action",
            f"{policy.ref}: CUSTOM (external authorizer) is out of scope",
        )
    if action not in ("ALLOW", "DENY", "AUDIT"):
        raise IstioConfigError(policy.source, None, "spec.action", f"unknown action {action!r}")
    for key in ("targetRef", "targetRefs"):
        if policy.spec.get(key):
            raise IstioConfigError(
                policy.source,
                None,
                f"spec.{key}",
                f"{policy.ref}: gateway/waypoint targets are not supported; use spec.selector",
            )
    labels = ((policy.spec.get("selector") or {}).get("matchLabels")) or {}
    for label in labels:
        if label not in LABEL_FIELDS:
            raise IstioConfigError(
                policy.source,
                None,
                f"spec.selector.matchLabels.{label}",
                f"{policy.ref}: label {label!r} is not in telemetry "
                f"(supported: {', '.join(sorted(LABEL_FIELDS))})",
            )
    # Evaluate once against an empty request: raises on unsupported fields anywhere in rules.
    blank = RequestFacts("", "", "", "", "", "", "", "", 0, "", "")
    for i, rule in enumerate(policy.spec.get("rules") or []):
        _validate_rule(rule, blank, f"spec.rules[{i}]", policy)


def _validate_rule(
    rule: Mapping[str, Any], blank: RequestFacts, where: str, policy: Resource
) -> None:
    for i, f in enumerate(rule.get("from") or []):
        _source_matches(f.get("source") or {}, blank, f"{where}.from[{i}].source", policy)
    for i, t in enumerate(rule.get("to") or []):
        _operation_matches(t.get("operation") or {}, blank, f"{where}.to[{i}].operation", policy)
    for i, c in enumerate(rule.get("when") or []):
        _when_matches(c, blank, f"{where}.when[{i}]", policy)


def applies_to(policy: Resource, req: RequestFacts) -> bool:
    if policy.namespace not in (req.dest_namespace, ROOT_NAMESPACE):
        return False
    labels = ((policy.spec.get("selector") or {}).get("matchLabels")) or {}
    have = req.labels()
    return all(have.get(LABEL_FIELDS[k]) == str(v) for k, v in labels.items())


def decide(policies: Sequence[Resource], req: RequestFacts) -> Decision:
    """Istio's decision for one request given every AuthorizationPolicy in the config."""
    scoped = [p for p in policies if applies_to(p, req)]
    audited = any(policy_matches(p, req) for p in scoped if p.spec.get("action") == "AUDIT")
    for p in scoped:
        if p.spec.get("action") == "DENY" and policy_matches(p, req):
            return Decision(False, f"denied by {p.ref}", audited)
    allows = [p for p in scoped if (p.spec.get("action") or "ALLOW") == "ALLOW"]
    if not allows:
        return Decision(True, "no ALLOW policy applies", audited)
    for p in allows:
        if policy_matches(p, req):
            return Decision(True, f"allowed by {p.ref}", audited)
    names = ", ".join(p.ref for p in allows)
    return Decision(False, f"matches no ALLOW policy ({names})", audited)


RBAC_DENIED_RE: Final = re.compile(r"rbac_access_denied")
