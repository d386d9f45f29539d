"""mTLS coverage: who talks to whom over mutual TLS, against PeerAuthentication. Pure.

The effective mode of a destination workload is Istio's: a workload-selector policy in its
namespace beats the namespace-wide policy, which beats the mesh-wide one in the root namespace;
UNSET inherits; nothing at all means PERMISSIVE. Plaintext traffic into a STRICT workload is a
problem (the sidecar would refuse it: a client is not in the mesh or the policy is about to break
it); into a PERMISSIVE one it is a warning (it blocks moving to STRICT).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from analytics.istio.authz import LABEL_FIELDS, ROOT_NAMESPACE
from analytics.istio.report import Finding
from analytics.istio.resources import IstioConfig, Resource

DEFAULT_MODE: Final = "PERMISSIVE"


@dataclass(frozen=True, slots=True)
class EdgeObservation:
    source_namespace: str
    source_workload: str
    source_principal: str
    dest_namespace: str
    dest_workload: str
    dest_app: str
    dest_version: str
    mtls: bool
    count: int


def _mode(pa: Resource) -> str:
    return str(((pa.spec.get("mtls") or {}).get("mode")) or "UNSET")


def _selects(pa: Resource, app: str, version: str) -> bool:
    labels = ((pa.spec.get("selector") or {}).get("matchLabels")) or {}
    have = {"app": app, "version": version}
    return all(have.get(LABEL_FIELDS.get(k, "")) == str(v) for k, v in labels.items())


def effective_mode(config: IstioConfig, namespace: str, app: str, version: str) -> tuple[str, str]:
    """(mode, the policy that set it) for a destination workload."""
    pas = config.of_kind("PeerAuthentication")
    layers = [
        [
            p
            for p in pas
            if p.namespace == namespace and p.spec.get("selector") and _selects(p, app, version)
        ],
        [p for p in pas if p.namespace == namespace and not p.spec.get("selector")],
        [p for p in pas if p.namespace == ROOT_NAMESPACE and not p.spec.get("selector")],
    ]
    for layer in layers:
        for p in layer:
            mode = _mode(p)
            if mode != "UNSET":
                return mode, p.ref
    return DEFAULT_MODE, "Istio default (no PeerAuthentication)"


def _share(mtls: int, total: int) -> float:
    return round(mtls / total, 4) if total else 0.0


def check_mtls(
    config: IstioConfig, edges: Sequence[EdgeObservation]
) -> tuple[list[Finding], list[dict[str, Any]], dict[str, list[dict[str, Any]]]]:
    """Findings, the per-edge table, and the namespace/workload/identity tables."""
    findings: list[Finding] = []
    edge_tot: dict[tuple[str, str, str, str], list[int]] = defaultdict(lambda: [0, 0])
    ns_tot: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    wl_tot: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    idents: dict[tuple[str, str, str], list[int]] = defaultdict(lambda: [0, 0])
    dest_meta: dict[tuple[str, str], tuple[str, str]] = {}
    for e in edges:
        for acc in (
            edge_tot[(e.source_namespace, e.source_workload, e.dest_namespace, e.dest_workload)],
            ns_tot[e.dest_namespace],
            wl_tot[(e.dest_namespace, e.dest_workload)],
            idents[(e.dest_namespace, e.dest_workload, e.source_principal or "unknown")],
        ):
            acc[0] += e.count
            acc[1] += e.count if e.mtls else 0
        dest_meta[(e.dest_namespace, e.dest_workload)] = (e.dest_app, e.dest_version)
    rows: list[dict[str, Any]] = []
    for (sns, swl, dns, dwl), (total, secure) in sorted(edge_tot.items()):
        app, version = dest_meta[(dns, dwl)]
        mode, why = effective_mode(config, dns, app, version)
        plain = total - secure
        status = "ok"
        if plain and mode == "STRICT":
            status = "plaintext into STRICT"
            findings.append(
                Finding(
                    "mtls",
                    "problem",
                    f"{sns}/{swl} -> {dns}/{dwl}",
                    f"{plain} of {total} requests were plaintext, but {why} requires mTLS (STRICT)",
                    {"plaintext": plain, "requests": total, "mode": mode},
                )
            )
        elif plain and mode == "PERMISSIVE":
            status = "plaintext into PERMISSIVE"
            findings.append(
                Finding(
                    "mtls",
                    "warning",
                    f"{sns}/{swl} -> {dns}/{dwl}",
                    f"{plain} of {total} requests were plaintext ({why} is "
                    "PERMISSIVE; STRICT would refuse them)",
                    {"plaintext": plain, "requests": total, "mode": mode},
                )
            )
        rows.append(
            {
                "source": f"{sns}/{swl}",
                "destination": f"{dns}/{dwl}",
                "requests": total,
                "mtls_ratio": _share(secure, total),
                "mode": mode,
                "status": status,
            }
        )
    tables = {
        "namespaces": [
            {"namespace": ns, "requests": t, "mtls_ratio": _share(s, t)}
            for ns, (t, s) in sorted(ns_tot.items())
        ],
        "workloads": [
            {
                "namespace": ns,
                "workload": wl,
                "requests": t,
                "mtls_ratio": _share(s, t),
                "mode": effective_mode(config, ns, *dest_meta[(ns, wl)])[0],
            }
            for (ns, wl), (t, s) in sorted(wl_tot.items())
        ],
        "identities": [
            {
                "namespace": ns,
                "workload": wl,
                "principal": p,
                "requests": t,
                "mtls_ratio": _share(s, t),
            }
            for (ns, wl, p), (t, s) in sorted(idents.items())
        ],
    }
    return findings, rows, tables
