"""Weights inside an Istio VirtualService spec, without I/O: which routes the gate owns, what
their weights are, the JSON Patch that changes only those weights, and the patched spec.

Ownership is declared in the rollout config: the baseline and canary destinations (host +
subset for DestinationRule subsets, or two hosts for host-based splits) and, optionally, route
names. A route is ours when it is named in `routes` (and then it MUST route to exactly the
baseline and the canary, else we refuse), or, when no names are given, when its destinations are
exactly the baseline and the canary. Everything else in the object is left alone.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from meshlens.analytics.errors import RouteNotOwned, WeightError

ROUTE_KINDS: Final = ("http", "tls", "tcp")


@dataclass(frozen=True, slots=True)
class Dest:
    host: str
    subset: str = ""  # "" for host-based routing

    def matches(self, destination: Mapping[str, Any]) -> bool:
        return (
            str(destination.get("host", "")) == self.host
            and str(destination.get("subset", "") or "") == self.subset
        )

    def __str__(self) -> str:
        return f"{self.host}/{self.subset}" if self.subset else self.host


@dataclass(frozen=True, slots=True)
class Ownership:
    baseline: Dest
    canary: Dest
    route_names: tuple[str, ...] = ()

    def describe(self) -> str:
        names = f" routes {list(self.route_names)}" if self.route_names else ""
        return f"baseline {self.baseline}, canary {self.canary}{names}"


@dataclass(frozen=True, slots=True)
class OwnedRoute:
    kind: str  # http | tls | tcp
    index: int
    name: str
    baseline_index: int
    canary_index: int


def check_weights(baseline: int, canary: int) -> None:
    """The only weights the gate ever writes: two integers in 0..100 that sum to 100."""
    for w in (baseline, canary):
        if isinstance(w, bool) or not isinstance(w, int) or not 0 <= w <= 100:
            raise WeightError((baseline, canary), "each weight must be an integer in 0..100")
    if baseline + canary != 100:
        raise WeightError((baseline, canary), f"weights sum to {baseline + canary}, not 100")


def owned_routes(
    spec: Mapping[str, Any], own: Ownership, target: str = "VirtualService"
) -> list[OwnedRoute]:
    """The routes of `spec` the gate may change; raises RouteNotOwned when there are none or a
    named route does not route to exactly the declared baseline and canary."""
    found: list[OwnedRoute] = []
    seen_names: set[str] = set()
    for kind in ROUTE_KINDS:
        routes = spec.get(kind) or []
        if not isinstance(routes, list):
            continue
        for i, route in enumerate(routes):
            if not isinstance(route, Mapping):
                continue
            name = str(route.get("name", "") or "")
            named = bool(own.route_names) and name in own.route_names
            if own.route_names and not named:
                continue
            dests = route.get("route") or []
            b = [j for j, d in enumerate(dests) if own.baseline.matches(d.get("destination", {}))]
            c = [j for j, d in enumerate(dests) if own.canary.matches(d.get("destination", {}))]
            exact = len(dests) == 2 and len(b) == 1 and len(c) == 1
            if named and not exact:
                raise RouteNotOwned(
                    f"{target} {kind}[{i}] {name!r}",
                    f"its destinations are not exactly {own.baseline} and {own.canary}",
                )
            if exact:
                found.append(OwnedRoute(kind, i, name, b[0], c[0]))
                seen_names.add(name)
    missing = [n for n in own.route_names if n not in seen_names]
    if missing:
        raise RouteNotOwned(target, f"no route named {missing}")
    if not found:
        raise RouteNotOwned(target, f"no route has exactly the destinations {own.describe()}")
    return found


def _weight(dest: Mapping[str, Any]) -> int:
    # Istio: an omitted weight is 0, except that a lone destination gets all traffic.
    return int(dest.get("weight", 0) or 0)


def read_weights(
    spec: Mapping[str, Any], own: Ownership, target: str = "VirtualService"
) -> list[tuple[int, int]]:
    """(baseline, canary) weight of every owned route."""
    out = []
    for r in owned_routes(spec, own, target):
        dests = spec[r.kind][r.index]["route"]
        out.append((_weight(dests[r.baseline_index]), _weight(dests[r.canary_index])))
    return out


def current_canary_weight(
    spec: Mapping[str, Any], own: Ownership, target: str = "VirtualService"
) -> int:
    """The canary weight, when every owned route agrees and sums to 100; else WeightError."""
    weights = set(read_weights(spec, own, target))
    if len(weights) != 1:
        raise WeightError(sorted(weights), f"owned routes of {target} disagree")
    b, c = weights.pop()
    check_weights(b, c)
    return c


def set_weights(
    spec: Mapping[str, Any], own: Ownership, canary_weight: int, target: str = "VirtualService"
) -> dict[str, Any]:
    """A copy of `spec` with the owned routes at (100 - canary_weight, canary_weight)."""
    check_weights(100 - canary_weight, canary_weight)
    new = copy.deepcopy(dict(spec))
    for r in owned_routes(spec, own, target):
        dests = new[r.kind][r.index]["route"]
        dests[r.baseline_index]["weight"] = 100 - canary_weight
        dests[r.canary_index]["weight"] = canary_weight
    return new


def json_patch(obj: Mapping[str, Any], own: Ownership, canary_weight: int) -> list[dict[str, Any]]:
    """RFC 6902 JSON Patch for a VirtualService object (the whole resource, with metadata).

    Why JSON Patch: a CRD takes no strategic-merge patch (the API server answers 415), and a merge
    patch replaces `spec.http` as a whole, rewriting routes we do not own. The `test` operations
    make the API server reject the patch when the object changed since we read it
    (resourceVersion) or the route at that index is no longer the one we own.
    """
    check_weights(100 - canary_weight, canary_weight)
    spec = obj.get("spec") or {}
    name = str((obj.get("metadata") or {}).get("name", "VirtualService"))
    ops: list[dict[str, Any]] = []
    version = (obj.get("metadata") or {}).get("resourceVersion")
    if version:
        ops.append({"op": "test", "path": "/metadata/resourceVersion", "value": version})
    for r in owned_routes(spec, own, f"VirtualService {name}"):
        dests: Sequence[Mapping[str, Any]] = spec[r.kind][r.index]["route"]
        for j, d, w in (
            (r.baseline_index, own.baseline, 100 - canary_weight),
            (r.canary_index, own.canary, canary_weight),
        ):
            base = f"/spec/{r.kind}/{r.index}/route/{j}"
            ops.append({"op": "test", "path": f"{base}/destination/host", "value": d.host})
            if d.subset:
                ops.append({"op": "test", "path": f"{base}/destination/subset", "value": d.subset})
            op = "replace" if "weight" in dests[j] else "add"
            ops.append({"op": op, "path": f"{base}/weight", "value": w})
    return ops


def ownership_from_options(
    options: Mapping[str, Any], service: str, baseline: str, canary: str
) -> Ownership:
    """Ownership from actuator options; defaults to subset routing on the rollout's service:
    host = service, subsets = baseline/canary names."""

    def dest(key: str, default_subset: str) -> Dest:
        raw = options.get(key)
        if raw is None:
            return Dest(str(options.get("host") or service), default_subset)
        if isinstance(raw, str):
            return Dest(raw, "")
        if isinstance(raw, Mapping) and raw.get("host"):
            return Dest(str(raw["host"]), str(raw.get("subset", "") or ""))
        raise RouteNotOwned(key, "give {host: ..., subset: ...} or a host name")

    b, c = dest("baseline", baseline), dest("canary", canary)
    if b == c:
        raise RouteNotOwned(str(b), "baseline and canary destinations are the same")
    names = options.get("routes") or ()
    if isinstance(names, str):
        names = (names,)
    return Ownership(b, c, tuple(str(n) for n in names))
