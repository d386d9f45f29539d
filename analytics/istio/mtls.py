"""mTLS coverage: who talks to whom over mutual TLS, against PeerAuthentication. Pure.

The effective mode of a destination workload port is Istio's (istio/istio pilot/pkg/security/
authn/policy_applier.go `ComposePeerAuthentication`): the mesh-wide policy (root namespace, no
selector), overridden by the namespace-wide one, overridden by a workload policy (a selector, not
in the root namespace; Istio ignores selector policies there); UNSET inherits; the oldest policy
of a scope wins; nothing at all means PERMISSIVE. A workload policy's `portLevelMtls` sets the
mode of one workload (container) port, UNSET there inheriting the workload's mode.

PeerAuthentication governs sidecars only: traffic that no destination proxy reported (the
destination has no sidecar, like the `legacy` namespace of Istio's authentication task) is not
judged. Plaintext traffic into a STRICT port is a problem (the sidecar refuses it: curl sees
exit 56); into a PERMISSIVE one it is a warning (it blocks moving to STRICT). A destination
whose labels or port are unknown where a policy needs them has an undetermined mode, said as
such; a request whose TLS state was not logged is counted as unknown, never as plaintext.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from meshlens.analytics.istio.authz import ROOT_NAMESPACE
from meshlens.analytics.istio.labels import (
    KnownLabels,
    from_telemetry,
    label_worlds,
    selector_matches,
    selector_of,
    unknown_keys,
)
from meshlens.analytics.istio.report import Finding
from meshlens.analytics.istio.resources import IstioConfig, Resource

DEFAULT_MODE: Final = "PERMISSIVE"
UNDETERMINED: Final = "undetermined"


@dataclass(frozen=True, slots=True)
class EdgeObservation:
    source_namespace: str
    source_workload: str
    source_principal: str
    dest_namespace: str
    dest_workload: str
    dest_app: str
    dest_version: str
    mtls: bool | None  # None: the report could not see the connection's TLS
    count: int
    port: int | None = None  # the destination workload port (None: unknown)
    has_proxy: bool | None = True  # a destination proxy reported it (None: nobody did)
    labels: KnownLabels | None = None  # replaces dest_app/dest_version when given
    dest_service: str = ""

    def known_labels(self) -> KnownLabels:
        return (
            self.labels
            if self.labels is not None
            else from_telemetry(self.dest_app, self.dest_version)
        )


@dataclass(frozen=True, slots=True)
class Mode:
    mode: str  # STRICT | PERMISSIVE | DISABLE | undetermined
    why: str
    notes: tuple[str, ...] = field(default=())


def _mode(pa: Resource) -> str:
    return str(((pa.spec.get("mtls") or {}).get("mode")) or "UNSET")


def _oldest(policies: Sequence[Resource]) -> Resource | None:
    """Istio keeps the oldest policy of a scope; without timestamps, the first given."""
    if not policies:
        return None
    if all(p.created for p in policies):
        return min(policies, key=lambda p: p.created)
    return policies[0]


def _compose(
    mesh: Resource | None, ns: Resource | None, wl: Resource | None, port: int | None
) -> tuple[str, str]:
    mode, why = DEFAULT_MODE, "Istio default (no PeerAuthentication)"
    for p in (mesh, ns, wl):
        if p is not None and _mode(p) != "UNSET":
            mode, why = _mode(p), p.ref
    if wl is not None:
        per_port = {
            str(k): str((v or {}).get("mode") or "UNSET")
            for k, v in (wl.spec.get("portLevelMtls") or {}).items()
        }
        per_port = {k: (mode if m == "UNSET" else m) for k, m in per_port.items()}
        if port is None and set(per_port.values()) - {mode}:
            return UNDETERMINED, (
                f"{wl.ref} sets portLevelMtls but the workload port of these requests is unknown"
            )
        if port is not None and str(port) in per_port and per_port[str(port)] != mode:
            return per_port[str(port)], f"{wl.ref} (port {port})"
    return mode, why


def _mode_in_world(
    pas: Sequence[Resource], namespace: str, labels: KnownLabels, port: int | None
) -> tuple[str, str, list[str]]:
    unselected = [p for p in pas if not selector_of(p.spec)]
    mesh = [p for p in unselected if p.namespace == ROOT_NAMESPACE]
    nsw = [p for p in unselected if p.namespace == namespace and namespace != ROOT_NAMESPACE]
    wls = [
        p
        for p in pas
        if selector_of(p.spec)
        and p.namespace == namespace
        and namespace != ROOT_NAMESPACE
        and selector_matches(selector_of(p.spec), labels) is True
    ]
    notes = [
        f"{len(group)} {scope} PeerAuthentications apply ({', '.join(p.ref for p in group)}); "
        f"Istio uses the oldest, taken to be {_oldest(group).ref}"  # type: ignore[union-attr]
        for scope, group in (("mesh-wide", mesh), ("namespace-wide", nsw), ("workload", wls))
        if len(group) > 1
    ]
    mode, why = _compose(_oldest(mesh), _oldest(nsw), _oldest(wls), port)
    return mode, why, notes


def workload_mode(
    config: IstioConfig, namespace: str, labels: KnownLabels, port: int | None = None
) -> Mode:
    """The effective mode of one destination workload port; undetermined (with the reason)
    when it depends on labels or a port telemetry does not have."""
    pas = config.of_kind("PeerAuthentication")
    candidates = [p for p in pas if p.namespace == namespace and namespace != ROOT_NAMESPACE]
    selectors = [selector_of(p.spec) for p in candidates if selector_of(p.spec)]
    worlds = label_worlds(labels, selectors)
    if worlds is None:
        return Mode(UNDETERMINED, "too many unknown destination labels")
    results = [_mode_in_world(pas, namespace, w, port) for w in worlds]
    modes = {(m, why) for m, why, _ in results}
    notes = tuple(sorted({n for _, _, ns in results for n in ns}))
    possible = sorted({m for m, _ in modes})
    if len(possible) == 1:
        whys = sorted({why for _, why in modes})
        return Mode(possible[0], whys[0] if len(whys) == 1 else " or ".join(whys), notes)
    needing = sorted(
        p.ref for p in candidates if selector_matches(selector_of(p.spec), labels) is None
    )
    why = "; ".join(
        f"destination label {k!r} unknown "
        f"({labels.conflicts.get(k) or 'not in telemetry or any Kubernetes object given'})"
        for k in unknown_keys(selectors, labels)
    )
    return Mode(
        UNDETERMINED,
        f"{why}; selected on by {', '.join(needing)} (modes possible: {', '.join(possible)})",
        notes,
    )


def effective_mode(
    config: IstioConfig,
    namespace: str,
    app: str,
    version: str,
    *,
    port: int | None = None,
    labels: KnownLabels | None = None,
) -> tuple[str, str]:
    """(mode, the policy that set it) for a destination workload (and port)."""
    m = workload_mode(config, namespace, labels or from_telemetry(app, version), port)
    return m.mode, m.why


def _share(mtls: int, known: int) -> float:
    return round(mtls / known, 4) if known else 0.0


@dataclass(slots=True)
class _Acc:
    total: int = 0
    secure: int = 0
    plain: int = 0

    def add(self, e: EdgeObservation) -> None:
        self.total += e.count
        self.secure += e.count if e.mtls is True else 0
        self.plain += e.count if e.mtls is False else 0

    @property
    def ratio(self) -> float:
        return _share(self.secure, self.secure + self.plain)


def _edge_finding(
    e: EdgeObservation, acc: _Acc, mode: Mode, edge: str
) -> tuple[str, Finding | None]:
    port = f" on port {e.port}" if e.port is not None else ""
    unknown = acc.total - acc.secure - acc.plain
    if mode.mode == UNDETERMINED:
        if not acc.plain and not unknown:
            return "ok", None  # mTLS is accepted in every mode that requires anything
        return "mode undetermined", Finding(
            "mtls",
            "warning",
            edge,
            f"{acc.plain + unknown} of {acc.total} requests were not seen to use mTLS, and the "
            f"mode of the destination{port} cannot be evaluated: {mode.why}",
            {"requests": acc.total, "plaintext": acc.plain, "tls_unknown": unknown},
        )
    if acc.plain and mode.mode == "STRICT":
        return "plaintext into STRICT", Finding(
            "mtls",
            "problem",
            edge,
            f"{acc.plain} of {acc.total} requests were plaintext, but {mode.why} requires "
            f"mTLS (STRICT){port}: the sidecar would refuse them",
            {"plaintext": acc.plain, "requests": acc.total, "mode": mode.mode, "port": e.port},
        )
    if acc.plain and mode.mode == "PERMISSIVE":
        return "plaintext into PERMISSIVE", Finding(
            "mtls",
            "warning",
            edge,
            f"{acc.plain} of {acc.total} requests were plaintext ({mode.why} is "
            "PERMISSIVE; STRICT would refuse them)",
            {"plaintext": acc.plain, "requests": acc.total, "mode": mode.mode, "port": e.port},
        )
    if unknown and mode.mode == "STRICT":
        return "TLS unknown", Finding(
            "mtls",
            "warning",
            edge,
            f"{unknown} of {acc.total} requests have no TLS state in telemetry; {mode.why} "
            f"requires mTLS{port}, which cannot be verified for them",
            {"tls_unknown": unknown, "requests": acc.total, "mode": mode.mode},
        )
    return "ok", None


def check_mtls(
    config: IstioConfig, edges: Sequence[EdgeObservation]
) -> tuple[list[Finding], list[dict[str, Any]], dict[str, list[dict[str, Any]]]]:
    """Findings, the per-edge table, and the namespace/workload/identity tables."""
    findings: list[Finding] = []
    edge_tot: dict[tuple[str, str, str, str, int | None, bool | None], _Acc] = defaultdict(_Acc)
    sample: dict[tuple[str, str, str, str, int | None, bool | None], EdgeObservation] = {}
    ns_tot: dict[str, _Acc] = defaultdict(_Acc)
    wl_tot: dict[tuple[str, str], _Acc] = defaultdict(_Acc)
    idents: dict[tuple[str, str, str], _Acc] = defaultdict(_Acc)
    for e in edges:
        key = (
            e.source_namespace,
            e.source_workload,
            e.dest_namespace,
            e.dest_workload,
            e.port,
            e.has_proxy,
        )
        sample.setdefault(key, e)
        for acc in (
            edge_tot[key],
            ns_tot[e.dest_namespace],
            wl_tot[(e.dest_namespace, e.dest_workload)],
            idents[(e.dest_namespace, e.dest_workload, e.source_principal or "unknown")],
        ):
            acc.add(e)
    rows: list[dict[str, Any]] = []
    unjudged: dict[str, int] = defaultdict(int)
    wl_modes: dict[tuple[str, str], set[str]] = defaultdict(set)
    notes: set[str] = set()
    for key, acc in sorted(edge_tot.items(), key=lambda kv: str(kv[0])):
        sns, swl, dns, dwl, port, has_proxy = key
        e = sample[key]
        edge = f"{sns}/{swl} -> {dns}/{dwl}"
        if has_proxy is not True:
            status, mode = "no sidecar seen", Mode("not governed", "no destination proxy")
            svc = f" (service {e.dest_service})" if dwl == "unknown" and e.dest_service else ""
            unjudged[f"{dns}/{dwl}{svc}"] += acc.total
        else:
            mode = workload_mode(config, dns, e.known_labels(), port)
            notes.update(mode.notes)
            wl_modes[(dns, dwl)].add(mode.mode)
            status, finding = _edge_finding(e, acc, mode, edge)
            if finding is not None:
                findings.append(finding)
        rows.append(
            {
                "source": f"{sns}/{swl}",
                "destination": f"{dns}/{dwl}",
                "port": port if port is not None else "",
                "requests": acc.total,
                "mtls_ratio": acc.ratio,
                "tls_unknown": acc.total - acc.secure - acc.plain,
                "mode": mode.mode,
                "status": status,
            }
        )
    findings.extend(
        Finding(
            "mtls",
            "info",
            dest,
            f"{n} requests reached {dest} but no proxy there reported them: PeerAuthentication "
            "applies only to workloads with a sidecar, so they are not judged",
            {"requests": n},
        )
        for dest, n in sorted(unjudged.items())
    )
    findings.extend(Finding("mtls", "info", "PeerAuthentication", n) for n in sorted(notes))
    tables = {
        "namespaces": [
            {"namespace": ns, "requests": a.total, "mtls_ratio": a.ratio}
            for ns, a in sorted(ns_tot.items())
        ],
        "workloads": [
            {
                "namespace": ns,
                "workload": wl,
                "requests": a.total,
                "mtls_ratio": a.ratio,
                "mode": "/".join(sorted(wl_modes[(ns, wl)])) or "not governed",
            }
            for (ns, wl), a in sorted(wl_tot.items())
        ],
        "identities": [
            {
                "namespace": ns,
                "workload": wl,
                "principal": p,
                "requests": a.total,
                "mtls_ratio": a.ratio,
            }
            for (ns, wl, p), a in sorted(idents.items())
        ],
    }
    return findings, rows, tables
