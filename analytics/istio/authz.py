"""AuthorizationPolicy evaluation, as Istio's sidecar does it, over observed requests.

Pure: a `RequestFacts` (what telemetry says about one group of identical requests) and the
policies in scope -> a `Decision`. Order (Istio's): CUSTOM, then DENY, then ALLOW; AUDIT only
marks. A workload with no ALLOW policy allows what no DENY policy denies; with ALLOW policies, a
request must match one of them. Policies apply to workloads with a sidecar only.

Three-valued: a fact telemetry does not have (a principal no certificate was logged for, a
destination label, a method) is *unknown*, and a condition on it neither matches nor fails
(Kleene logic). Unknown destination labels are enumerated (`labels.label_worlds`): the decision
is given only when it is the same whatever their values, else it is undetermined (`allowed` is
None) and says which facts are missing. Conditions telemetry can never answer (JWT request
principals, arbitrary headers, gateway `targetRefs`, CUSTOM providers) are refused up front with
a precise `IstioConfigError`. Nothing is guessed: a what-if that ignores a condition would name
the wrong callers.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from meshlens.analytics.errors import IstioConfigError
from meshlens.analytics.istio.labels import (
    TELEMETRY_LABELS,
    KnownLabels,
    from_telemetry,
    label_worlds,
    selector_matches,
    selector_of,
    unknown_keys,
)
from meshlens.analytics.istio.resources import Resource

ROOT_NAMESPACE: Final = "istio-system"

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
# What each request fact is called in an explanation.
FACT_NAMES: Final = {
    "principal": "source principal (no peer certificate identity in telemetry)",
    "source_namespace": "source namespace (no peer certificate identity in telemetry)",
    "source_ip": "source IP",
    "method": "method",
    "path": "path",
    "port": "destination workload port",
    "host": "host/authority",
    "user_agent": "user-agent",
}

Tri = bool | None


def t_and(values: Iterable[Tri]) -> Tri:
    out: Tri = True
    for v in values:
        if v is False:
            return False
        if v is None:
            out = None
    return out


def t_or(values: Iterable[Tri]) -> Tri:
    out: Tri = False
    for v in values:
        if v is True:
            return True
        if v is None:
            out = None
    return out


def t_not(value: Tri) -> Tri:
    return None if value is None else not value


@dataclass(frozen=True, slots=True)
class RequestFacts:
    """What the destination proxy knew about a request. For the source and request fields,
    None is *unknown*; '' is *none* (a plaintext request has no principal). `dest_app` and
    `dest_version` ('' = unknown) are the canonical service and revision; `labels`, when given,
    is everything known about the destination's labels and replaces them. `has_proxy`: the
    destination has a sidecar (True), has none (False), or nobody knows (None)."""

    dest_namespace: str
    dest_app: str
    dest_version: str
    principal: str | None  # without the spiffe:// prefix
    source_namespace: str | None
    source_ip: str | None
    method: str | None
    path: str | None
    port: int | None
    host: str | None
    user_agent: str | None
    labels: KnownLabels | None = None
    has_proxy: bool | None = True

    def known_labels(self) -> KnownLabels:
        if self.labels is not None:
            return self.labels
        return from_telemetry(self.dest_app, self.dest_version)


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool | None  # None: undetermined (see `policy` for what is missing)
    policy: str  # the policy that decided, or the reason
    audited: bool = False
    missing: tuple[str, ...] = field(default=())  # facts an undetermined decision lacks


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


class _Eval:
    """One request under evaluation; records which unknown facts a condition consulted."""

    def __init__(self, req: RequestFacts, policy: Resource) -> None:
        self.req = req
        self.policy = policy
        self.missing: set[str] = set()

    def value(self, fact: str) -> str | None:
        v = getattr(self.req, fact)
        if v is None:
            self.missing.add(fact)
            return None
        if fact == "path":
            return str(v).split("?", 1)[0]
        return str(v)

    def any_of(self, patterns: Sequence[str], fact: str, lower: bool = False) -> Tri:
        value = self.value(fact)
        if value is None:
            return None
        if lower:
            return any(string_match(p.lower(), value.lower()) for p in patterns)
        return any(string_match(p, value) for p in patterns)

    def ip_in(self, blocks: Sequence[str], fact: str = "source_ip") -> Tri:
        value = self.value(fact)
        if value is None:
            return None
        try:
            addr = ipaddress.ip_address(value)
        except ValueError:
            self.missing.add(fact)
            return None
        return any(addr in ipaddress.ip_network(b, strict=False) for b in blocks)


def _field(values: Any, where: str, policy: Resource) -> list[str]:
    if not isinstance(values, list) or not all(isinstance(v, str | int) for v in values):
        raise IstioConfigError(policy.source, None, where, "must be a list of strings")
    return [str(v) for v in values]


_SourceCheck = Callable[[_Eval, list[str]], Tri]
_SOURCE_CHECKS: Final[dict[str, _SourceCheck]] = {
    "principals": lambda e, v: e.any_of(v, "principal"),
    "notPrincipals": lambda e, v: t_not(e.any_of(v, "principal")),
    "namespaces": lambda e, v: e.any_of(v, "source_namespace"),
    "notNamespaces": lambda e, v: t_not(e.any_of(v, "source_namespace")),
    "ipBlocks": lambda e, v: e.ip_in(v),
    "notIpBlocks": lambda e, v: t_not(e.ip_in(v)),
    "remoteIpBlocks": lambda e, v: e.ip_in(v),
    "notRemoteIpBlocks": lambda e, v: t_not(e.ip_in(v)),
}
_OPERATION_CHECKS: Final[dict[str, _SourceCheck]] = {
    "hosts": lambda e, v: e.any_of(v, "host", lower=True),
    "notHosts": lambda e, v: t_not(e.any_of(v, "host", lower=True)),
    "ports": lambda e, v: None if e.value("port") is None else e.value("port") in v,
    "notPorts": lambda e, v: None if e.value("port") is None else e.value("port") not in v,
    "methods": lambda e, v: e.any_of(v, "method"),
    "notMethods": lambda e, v: t_not(e.any_of(v, "method")),
    "paths": lambda e, v: e.any_of(v, "path"),
    "notPaths": lambda e, v: t_not(e.any_of(v, "path")),
}


def _source_matches(src: Mapping[str, Any], ev: _Eval, where: str) -> Tri:
    unknown = set(src) - SOURCE_FIELDS
    if unknown:
        name = sorted(unknown)[0]
        raise IstioConfigError(
            ev.policy.source,
            None,
            f"{where}.{name}",
            f"{ev.policy.ref}: '{name}' cannot be evaluated from mesh telemetry "
            "(request principals need the JWT, which proxies do not log)",
        )
    return t_and(
        _SOURCE_CHECKS[k](ev, _field(v, f"{where}.{k}", ev.policy)) for k, v in src.items()
    )


def _operation_matches(op: Mapping[str, Any], ev: _Eval, where: str) -> Tri:
    unknown = set(op) - OPERATION_FIELDS
    if unknown:
        name = sorted(unknown)[0]
        raise IstioConfigError(
            ev.policy.source,
            None,
            f"{where}.{name}",
            f"{ev.policy.ref}: unsupported operation field '{name}'",
        )
    return t_and(
        _OPERATION_CHECKS[k](ev, _field(v, f"{where}.{k}", ev.policy)) for k, v in op.items()
    )


_WHEN_FACTS: Final = {
    "source.principal": "principal",
    "source.namespace": "source_namespace",
    "source.ip": "source_ip",
    "remote.ip": "source_ip",
    "destination.port": "port",
    "request.headers[user-agent]": "user_agent",
    "request.headers[:authority]": "host",
    "request.headers[host]": "host",
}


def _when_matches(cond: Mapping[str, Any], ev: _Eval, where: str) -> Tri:
    key = str(cond.get("key", ""))
    if key not in WHEN_KEYS:
        raise IstioConfigError(
            ev.policy.source,
            None,
            f"{where}.key",
            f"{ev.policy.ref}: condition key {key!r} cannot be evaluated from mesh telemetry "
            f"(supported: {', '.join(sorted(WHEN_KEYS))})",
        )
    fact = _WHEN_FACTS[key]
    ip = fact == "source_ip"
    parts: list[Tri] = []
    if "values" in cond:
        vals = _field(cond["values"], f"{where}.values", ev.policy)
        parts.append(ev.ip_in(vals, fact) if ip else ev.any_of(vals, fact))
    if "notValues" in cond:
        vals = _field(cond["notValues"], f"{where}.notValues", ev.policy)
        parts.append(t_not(ev.ip_in(vals, fact) if ip else ev.any_of(vals, fact)))
    return t_and(parts)


def _rule_matches(rule: Mapping[str, Any], ev: _Eval, where: str) -> Tri:
    """All of from/to/when that are present must match; within from and to, any entry."""
    parts: list[Tri] = []
    froms = rule.get("from") or []
    if froms:
        parts.append(
            t_or(
                _source_matches(f.get("source") or {}, ev, f"{where}.from[{i}].source")
                for i, f in enumerate(froms)
            )
        )
    tos = rule.get("to") or []
    if tos:
        parts.append(
            t_or(
                _operation_matches(t.get("operation") or {}, ev, f"{where}.to[{i}].operation")
                for i, t in enumerate(tos)
            )
        )
    parts.extend(
        _when_matches(c, ev, f"{where}.when[{i}]") for i, c in enumerate(rule.get("when") or [])
    )
    return t_and(parts)


def rule_matches(rule: Mapping[str, Any], req: RequestFacts, where: str, policy: Resource) -> Tri:
    return _rule_matches(rule, _Eval(req, policy), where)


def _policy_eval(policy: Resource, req: RequestFacts) -> tuple[Tri, set[str]]:
    ev = _Eval(req, policy)
    rules = policy.spec.get("rules") or []
    # Evaluate every rule (no short cut) so that each one's missing facts are recorded.
    results = [_rule_matches(r, ev, f"spec.rules[{i}]") for i, r in enumerate(rules)]
    return t_or(results), ev.missing


def policy_matches(policy: Resource, req: RequestFacts) -> Tri:
    return _policy_eval(policy, req)[0]


def check_policy(policy: Resource, label_keys: Collection[str] = TELEMETRY_LABELS) -> None:
    """Refuse what we cannot evaluate, before any request is replayed. `label_keys`: the
    selector labels some source can answer (telemetry's, plus those of Kubernetes objects)."""
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
    for label in selector_of(policy.spec):
        if label not in label_keys:
            raise IstioConfigError(
                policy.source,
                None,
                f"spec.selector.matchLabels.{label}",
                f"{policy.ref}: label {label!r} is not in telemetry "
                f"(supported: {', '.join(sorted(TELEMETRY_LABELS))}; give the workloads' "
                "manifests with --config, or use --cluster, for other labels)",
            )
    # Evaluate once against a request of unknowns: raises on unsupported fields anywhere.
    blank = RequestFacts("", "", "", None, None, None, None, None, None, None, None)
    _policy_eval(policy, blank)


def applies_to(policy: Resource, req: RequestFacts) -> Tri:
    """Does the policy select the destination workload? None when its labels are unknown."""
    if policy.namespace not in (req.dest_namespace, ROOT_NAMESPACE):
        return False
    return selector_matches(selector_of(policy.spec), req.known_labels())


def _action(p: Resource) -> str:
    return str(p.spec.get("action") or "ALLOW")


def _decide_scoped(scoped: Sequence[Resource], req: RequestFacts) -> Decision:
    """Istio's decision given exactly the policies that apply; unknown request facts may leave
    it undetermined."""
    missing: set[str] = set()

    def ev(p: Resource) -> Tri:
        result, miss = _policy_eval(p, req)
        if result is None:
            missing.update(f"{f}|{p.ref}" for f in miss)
        return result

    audited = t_or(ev(p) for p in scoped if _action(p) == "AUDIT") is True
    maybe_deny: list[str] = []
    for p in scoped:
        if _action(p) != "DENY":
            continue
        m = ev(p)
        if m is True:
            return Decision(False, f"denied by {p.ref}", audited)
        if m is None:
            maybe_deny.append(p.ref)
    allows = [p for p in scoped if _action(p) == "ALLOW"]
    allowed_by: str | None = None
    maybe_allow: list[str] = []
    for p in allows:
        m = ev(p)
        if m is True and allowed_by is None:
            allowed_by = p.ref
        elif m is None:
            maybe_allow.append(p.ref)
    missing_t = tuple(sorted(missing))
    if allows and allowed_by is None and not maybe_allow:
        # Denied whether or not an undecided DENY policy matches.
        names = ", ".join(p.ref for p in allows)
        return Decision(False, f"matches no ALLOW policy ({names})", audited)
    if maybe_deny:
        return Decision(None, f"may be denied by {', '.join(maybe_deny)}", audited, missing_t)
    if not allows:
        return Decision(True, "no ALLOW policy applies", audited)
    if allowed_by is not None:
        return Decision(True, f"allowed by {allowed_by}", audited)
    return Decision(None, f"may be allowed by {', '.join(maybe_allow)}", audited, missing_t)


NO_PROXY: Final = "no sidecar at the destination: AuthorizationPolicy is not enforced"


def decide(policies: Sequence[Resource], req: RequestFacts) -> Decision:
    """Istio's decision for one request given every AuthorizationPolicy in the config."""
    if req.has_proxy is False:
        return Decision(True, NO_PROXY)
    labels = req.known_labels()
    candidates = [p for p in policies if p.namespace in (req.dest_namespace, ROOT_NAMESPACE)]
    selectors = [selector_of(p.spec) for p in candidates]
    worlds = label_worlds(labels, selectors)
    if worlds is None:
        keys = unknown_keys(selectors, labels)
        return Decision(
            None, "too many unknown destination labels", missing=tuple(f"label:{k}" for k in keys)
        )
    outcomes = [
        _decide_scoped(
            [p for p, s in zip(candidates, selectors, strict=True) if selector_matches(s, w)],
            req,
        )
        for w in worlds
    ]
    reasons = {o.policy for o in outcomes}
    if req.has_proxy is None:
        outcomes.append(Decision(True, NO_PROXY))
    verdicts = {o.allowed for o in outcomes}
    if len(verdicts) == 1 and None not in verdicts:
        reason = (
            outcomes[0].policy
            if len(reasons) == 1
            else ("allowed" if outcomes[0].allowed else "denied")
            + " whatever the unknown destination labels"
        )
        return Decision(outcomes[0].allowed, reason, all(o.audited for o in outcomes))
    missing = {m for o in outcomes for m in o.missing}
    missing.update(
        f"label:{k}|{p.ref}"
        for p, s in zip(candidates, selectors, strict=True)
        if selector_matches(s, labels) is None
        for k in unknown_keys([s], labels)
    )
    if req.has_proxy is None:
        missing.add("proxy|")
    return Decision(None, explain(missing, labels), missing=tuple(sorted(missing)))


def explain(missing: Collection[str], labels: KnownLabels) -> str:
    """'cannot be evaluated: ...' naming each missing fact and the policies that need it."""
    by_fact: dict[str, set[str]] = {}
    for item in missing:
        fact, _, ref = item.partition("|")
        by_fact.setdefault(fact, set()).update([ref] if ref else [])
    parts: list[str] = []
    for fact in sorted(by_fact):
        refs = ", ".join(sorted(by_fact[fact]))
        if fact == "proxy":
            parts.append(
                "no destination-side report (the destination may have no sidecar, which "
                "would not enforce any policy)"
            )
            continue
        if fact.startswith("label:"):
            key = fact.removeprefix("label:")
            why = labels.conflicts.get(key) or "not in telemetry or any Kubernetes object given"
            parts.append(f"destination label {key!r} unknown ({why}), selected on by {refs}")
            continue
        parts.append(f"{FACT_NAMES.get(fact, fact)} unknown, needed by {refs}")
    return "cannot be evaluated: " + "; ".join(parts)


RBAC_DENIED_RE: Final = re.compile(r"rbac_access_denied")
