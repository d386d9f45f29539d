"""What is known about a destination workload's labels, and the selectors evaluated on it. Pure.

A policy's `selector.matchLabels` is matched against the labels of the workload's pods. Telemetry
carries only two of them, indirectly: the canonical service (Istio's
`service.istio.io/canonical-name`, which the injector derives from `app.kubernetes.io/name`,
then `app`) and the canonical revision (`version`). Kubernetes objects (manifests given with
--config, or pods read with --cluster) carry all of them. Where no source knows a label, or two
sources disagree, the label is *unknown*: a selector on it neither matches nor fails, and
`label_worlds` enumerates the values it could take so a decision can be made only when it is the
same in every case. Nothing is guessed.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Final

from meshlens.analytics.istio.kube import (
    CANONICAL_NAME,
    CANONICAL_REVISION,
    KubeService,
    KubeWorkload,
)

# Label keys telemetry answers, and the telemetry field each one comes from.
TELEMETRY_LABELS: Final = {
    "app": "canonical service",
    CANONICAL_NAME: "canonical service",
    "version": "canonical revision",
    CANONICAL_REVISION: "canonical revision",
}
WORLD_LIMIT: Final = 4096


class _Unknown:
    def __repr__(self) -> str:
        return "UNKNOWN"


UNKNOWN: Final = _Unknown()
Lookup = str | None | _Unknown  # a value; None = the label is not set; UNKNOWN


@dataclass(frozen=True, slots=True)
class KnownLabels:
    """Labels of one destination workload: set values, labels known to be absent, and where the
    knowledge came from. Keys in neither are unknown (unless `complete`)."""

    values: Mapping[str, str] = field(default_factory=dict)
    absent: frozenset[str] = frozenset()
    complete: bool = False  # every key outside `values` is absent, except `unknown_keys`
    unknown_keys: frozenset[str] = frozenset()
    conflicts: Mapping[str, str] = field(default_factory=dict)  # key -> why it is unknown
    evidence: tuple[str, ...] = ()

    def lookup(self, key: str) -> Lookup:
        if key in self.conflicts or key in self.unknown_keys:
            return UNKNOWN
        if key in self.values:
            return self.values[key]
        if key in self.absent or self.complete:
            return None
        return UNKNOWN

    def resolved(self, assignment: Mapping[str, str | None]) -> KnownLabels:
        """These labels with unknown keys fixed to the given values (None = absent)."""
        values = {**self.values, **{k: v for k, v in assignment.items() if v is not None}}
        absent = self.absent | {k for k, v in assignment.items() if v is None}
        conflicts = {k: v for k, v in self.conflicts.items() if k not in assignment}
        unknown = self.unknown_keys - assignment.keys()
        return replace(
            self, values=values, absent=absent, conflicts=conflicts, unknown_keys=unknown
        )


def selector_of(spec: Mapping[str, object]) -> dict[str, str]:
    sel = spec.get("selector")
    labels = sel.get("matchLabels") if isinstance(sel, Mapping) else None
    return {str(k): str(v) for k, v in labels.items()} if isinstance(labels, Mapping) else {}


def selector_matches(selector: Mapping[str, str], labels: KnownLabels) -> bool | None:
    """Kleene AND over the selector's labels: False if one is known to differ, None if one is
    unknown (and none differs), True when all are known to match."""
    result: bool | None = True
    for key, want in selector.items():
        have = labels.lookup(key)
        if isinstance(have, _Unknown):
            result = None
        elif have != want:
            return False
    return result


def unknown_keys(selectors: Sequence[Mapping[str, str]], labels: KnownLabels) -> list[str]:
    keys = {k for s in selectors for k in s}
    return sorted(k for k in keys if isinstance(labels.lookup(k), _Unknown))


def label_worlds(
    labels: KnownLabels, selectors: Sequence[Mapping[str, str]]
) -> list[KnownLabels] | None:
    """Every distinct way the unknown labels could make these selectors match or not: for each
    unknown key, each value some selector wants, or 'something else / absent'. [labels] when
    nothing is unknown; None when there are more than WORLD_LIMIT combinations."""
    keys = unknown_keys(selectors, labels)
    if not keys:
        return [labels]
    choices: list[list[str | None]] = [
        [*sorted({s[k] for s in selectors if k in s}), None] for k in keys
    ]
    total = 1
    for c in choices:
        total *= len(c)
    if total > WORLD_LIMIT:
        return None
    return [labels.resolved(dict(zip(keys, combo, strict=True))) for combo in _product(choices)]


def _product(choices: list[list[str | None]]) -> Iterator[tuple[str | None, ...]]:
    yield from itertools.product(*choices)


def from_telemetry(canonical: str, version: str, where: str = "telemetry") -> KnownLabels:
    """Labels implied by the canonical service and revision of a workload ('' = unknown)."""
    values: dict[str, str] = {}
    if canonical and canonical != "unknown":
        values["app"] = values[CANONICAL_NAME] = canonical
    if version and version != "unknown":
        values["version"] = values[CANONICAL_REVISION] = version
    return KnownLabels(values=values, evidence=(where,) if values else ())


def _complete_unknown(a: KnownLabels, b: KnownLabels) -> frozenset[str]:
    if a.complete and b.complete:
        return a.unknown_keys & b.unknown_keys
    if a.complete:
        return a.unknown_keys
    return b.unknown_keys if b.complete else frozenset()


def _says_absent(k: KnownLabels, key: str) -> bool:
    return key in k.absent or (k.complete and key not in k.values and key not in k.unknown_keys)


def merge(a: KnownLabels, b: KnownLabels) -> KnownLabels:
    """Both bodies of evidence; a key they disagree on becomes unknown (a conflict)."""
    conflicts = {**a.conflicts, **b.conflicts}
    values = dict(a.values)
    for key, value in b.values.items():
        if key in values and values[key] != value:
            conflicts[key] = (
                f"{key}={values[key]} per {', '.join(a.evidence)} but {key}={value} "
                f"per {', '.join(b.evidence)}"
            )
        values[key] = value
    for key in values:
        if key not in conflicts and (
            (key not in a.values and _says_absent(a, key))
            or (key not in b.values and _says_absent(b, key))
        ):
            conflicts[key] = f"{key} is set per one source and absent per another"
    return KnownLabels(
        values={k: v for k, v in values.items() if k not in conflicts},
        absent=(a.absent | b.absent) - values.keys(),
        complete=a.complete or b.complete,
        unknown_keys=_complete_unknown(a, b),
        conflicts=conflicts,
        evidence=tuple(dict.fromkeys(a.evidence + b.evidence)),
    )


def from_workload(w: KubeWorkload) -> KnownLabels:
    return KnownLabels(
        values=dict(w.labels), complete=True, unknown_keys=w.unknown_keys, evidence=(w.source,)
    )


def from_service(s: KubeService) -> KnownLabels:
    """A Service's selector: every pod behind it carries these labels (nothing else is known)."""
    return KnownLabels(values=dict(s.selector), evidence=(f"selector of {s.source}",))


@dataclass(frozen=True, slots=True)
class LabelIndex:
    """Every source of workload labels: Kubernetes objects and what telemetry learned per
    workload (canonical service and revision seen in any report that names the workload)."""

    workloads: Mapping[tuple[str, str], KubeWorkload] = field(default_factory=dict)
    services: Mapping[tuple[str, str], KubeService] = field(default_factory=dict)
    learned: Mapping[tuple[str, str], tuple[str, str]] = field(default_factory=dict)

    def destination(
        self,
        namespace: str,
        workload: str,
        service_name: str = "",
        canonical: str = "",
        version: str = "",
    ) -> KnownLabels:
        """What is known about the labels of the workload that received a request.

        A Kubernetes object of the workload is authoritative (all its pods' labels), unless the
        canonical service or revision telemetry reports contradicts it (then the object does not
        describe the pods that ran, and is not used). Without one, telemetry's canonical
        service and revision, and the selector of the Service the request was sent to, are
        merged; a label they disagree on is unknown."""
        tele = from_telemetry(canonical, version, f"telemetry of {namespace}/{workload}")
        seen = self.learned.get((namespace, workload))
        if seen is not None:
            tele = merge(tele, from_telemetry(*seen, f"telemetry of {namespace}/{workload}"))
        wl = self.workloads.get((namespace, workload))
        if wl is not None:
            obj = from_workload(wl)
            stale = [
                k
                for k in (CANONICAL_NAME, CANONICAL_REVISION)
                if k in tele.values and obj.lookup(k) not in (tele.values[k], UNKNOWN)
            ]
            if not stale:
                return obj
            tele = replace(
                tele,
                evidence=(
                    *tele.evidence,
                    f"{wl.source} ignored: its {stale[0]} differs from telemetry",
                ),
            )
        svc = self.services.get((namespace, service_name)) if service_name else None
        if svc is not None and svc.selector:
            return merge(tele, from_service(svc))
        return tele

    def service_account(self, namespace: str, workload: str) -> str:
        wl = self.workloads.get((namespace, workload))
        return wl.service_account if wl is not None else ""

    def target_port(self, namespace: str, service_name: str, port: int) -> int | None:
        svc = self.services.get((namespace, service_name))
        return None if svc is None else svc.target_ports.get(port)

    @property
    def label_keys(self) -> frozenset[str]:
        """Every label key some source can answer."""
        keys = set(TELEMETRY_LABELS)
        for w in self.workloads.values():
            keys.update(w.labels)
        return frozenset(keys)


def build_index(
    workloads: Sequence[KubeWorkload],
    services: Sequence[KubeService],
    learned: Mapping[tuple[str, str], tuple[str, str]] | None = None,
) -> LabelIndex:
    """Objects by (namespace, name); a later object of the same name replaces an earlier one,
    as `kubectl apply` would, except that live pods win over manifests."""
    wl: dict[tuple[str, str], KubeWorkload] = {}
    for w in workloads:
        prev = wl.get((w.namespace, w.name))
        if prev is None or w.live or not prev.live:
            wl[(w.namespace, w.name)] = w
    svc = {(s.namespace, s.name): s for s in services}
    return LabelIndex(wl, svc, dict(learned or {}))
