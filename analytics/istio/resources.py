"""Load Istio resources from YAML files (or the Kubernetes API) and validate them.

Validation uses models generated from Istio's CRD schemas (cloudcoil-models-istio): a wrong type
is reported with its field path, and a field the schema does not know (a typo such as `wieght`) is
an error too, never silently dropped. Kinds other than the four we check are listed as skipped.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import yaml

from meshlens.analytics.errors import IstioConfigError
from meshlens.analytics.istio.kube import KubeService, KubeWorkload, from_document
from meshlens.analytics.yaml_input import FILE_LIMITS, YamlLimits, load_all

_NET: Final = "cloudcoil.models.istio.networking.v1"
_SEC: Final = "cloudcoil.models.istio.security.v1"
_TEL: Final = "cloudcoil.models.istio.telemetry.v1"
# (API group, kind) -> model generated from the CRD schema. v1, v1beta1 and v1alpha3 share the
# fields we read, so the v1 model validates every served version.
SCHEMAS: Final[dict[tuple[str, str], str]] = {
    ("networking.istio.io", "VirtualService"): f"{_NET}:VirtualService",
    ("networking.istio.io", "DestinationRule"): f"{_NET}:DestinationRule",
    ("networking.istio.io", "Gateway"): f"{_NET}:Gateway",
    ("networking.istio.io", "ServiceEntry"): f"{_NET}:ServiceEntry",
    ("security.istio.io", "AuthorizationPolicy"): f"{_SEC}:AuthorizationPolicy",
    ("security.istio.io", "PeerAuthentication"): f"{_SEC}:PeerAuthentication",
    ("telemetry.istio.io", "Telemetry"): f"{_TEL}:Telemetry",
}
# The kinds the checks read; other Istio kinds are validated and listed as skipped.
KINDS: Final = ("VirtualService", "DestinationRule", "AuthorizationPolicy", "PeerAuthentication")


@dataclass(frozen=True, slots=True)
class Resource:
    kind: str
    name: str
    namespace: str
    spec: Mapping[str, Any]
    source: str  # "file.yaml#2": where it came from, for messages
    created: str = ""  # metadata.creationTimestamp when known (Istio prefers the oldest)

    @property
    def ref(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}"


@dataclass(frozen=True, slots=True)
class IstioConfig:
    resources: tuple[Resource, ...] = ()
    skipped: tuple[str, ...] = field(default=())  # "Gateway default/gw (file.yaml#3)"
    workloads: tuple[KubeWorkload, ...] = ()  # label facts from Kubernetes objects
    services: tuple[KubeService, ...] = ()
    notes: tuple[str, ...] = ()  # what could not be read (e.g. pods without RBAC access)

    def of_kind(self, kind: str) -> list[Resource]:
        return [r for r in self.resources if r.kind == kind]


def _dropped_fields(given: Any, kept: Any, path: str = "") -> list[str]:
    """Fields of `given` the model did not keep, i.e. unknown to the schema."""
    if isinstance(given, Mapping) and isinstance(kept, Mapping):
        out: list[str] = []
        for k, v in given.items():
            sub = f"{path}.{k}" if path else str(k)
            out.extend([sub] if k not in kept else _dropped_fields(v, kept[k], sub))
        return out
    if isinstance(given, list) and isinstance(kept, list):
        return [
            x
            for i, (g, k) in enumerate(zip(given, kept, strict=False))
            for x in _dropped_fields(g, k, f"{path}[{i}]")
        ]
    return []


def json_keys(node: Any) -> Any:
    """YAML -> JSON as kubectl converts it (sigs.k8s.io/yaml): every mapping key a string
    (`80` -> "80", `true` -> "true"), so Istio's `portLevelMtls: {80: ...}` is what the API
    server stores."""
    if isinstance(node, Mapping):
        return {_key(k): json_keys(v) for k, v in node.items()}
    if isinstance(node, list):
        return [json_keys(v) for v in node]
    return node


def _key(k: Any) -> str:
    if isinstance(k, bool):
        return "true" if k else "false"
    if k is None:
        return "null"
    return str(k)


def validate_document(doc: Mapping[str, Any], path: str, index: int | None) -> None:
    """Raise IstioConfigError when `doc` does not satisfy its CRD schema (types, unknown fields)."""
    doc = json_keys(doc)
    group = str(doc.get("apiVersion", "")).split("/")[0]
    target = SCHEMAS.get((group, str(doc.get("kind"))))
    if target is None:
        raise IstioConfigError(path, index, "kind", f"unsupported kind {doc.get('kind')!r}")
    module, _, name = target.partition(":")
    model = getattr(importlib.import_module(module), name)
    from pydantic import ValidationError

    # The v1 model checks every served version (same fields); it pins apiVersion to v1.
    doc = {**doc, "apiVersion": f"{group}/v1"}
    try:
        obj = model.model_validate(doc)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise IstioConfigError(path, index, where, err["msg"]) from None
    kept = obj.model_dump(by_alias=True, exclude_unset=True, mode="json")
    unknown = [f for f in _dropped_fields(doc, kept) if not f.startswith(("metadata", "status"))]
    if unknown:
        raise IstioConfigError(path, index, unknown[0], "unknown field (not in the CRD schema)")


def _resource(
    doc: Mapping[str, Any], source: str, path: str, index: int | None, namespace: str
) -> Resource:
    meta = doc.get("metadata") or {}
    if not isinstance(meta, Mapping) or not meta.get("name"):
        raise IstioConfigError(path, index, "metadata.name", "every resource needs a name")
    spec = doc.get("spec")
    if not isinstance(spec, Mapping):
        raise IstioConfigError(path, index, "spec", "missing or not a mapping")
    validate_document(doc, path, index)
    return Resource(
        kind=str(doc["kind"]),
        name=str(meta["name"]),
        namespace=str(meta.get("namespace") or namespace),
        spec=spec,
        source=source,
        created=str(meta.get("creationTimestamp") or ""),
    )


def _expand(doc: Any) -> Iterator[Any]:
    """`kubectl get -o yaml` returns `kind: List` (or `VirtualServiceList`) with `items`."""
    if isinstance(doc, Mapping) and str(doc.get("kind", "")).endswith("List") and "items" in doc:
        yield from doc.get("items") or []
    else:
        yield doc


def parse_documents(
    text: str, path: str, *, namespace: str | None = None, limits: YamlLimits = FILE_LIMITS
) -> IstioConfig:
    """Parse one YAML stream (several documents, List objects) into resources. `namespace`:
    where resources without metadata.namespace go (`kubectl apply -n`; default 'default').
    `limits`: how far aliases may expand (API_LIMITS for request bodies)."""
    default_ns = namespace or "default"
    try:
        docs = load_all(text, limits)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise IstioConfigError(path, None, where, f"invalid YAML: {exc}") from None
    resources: list[Resource] = []
    skipped: list[str] = []
    workloads: list[KubeWorkload] = []
    services: list[KubeService] = []
    for index, raw in enumerate(docs, start=1):
        if raw is None:
            continue
        for doc in _expand(json_keys(raw)):
            if not isinstance(doc, Mapping) or "kind" not in doc or "apiVersion" not in doc:
                raise IstioConfigError(
                    path, index, "", "not a Kubernetes object (no apiVersion/kind)"
                )
            group = str(doc["apiVersion"]).split("/")[0]
            source = f"{path}#{index}"
            if (group, doc["kind"]) in SCHEMAS and doc["kind"] in KINDS:
                resources.append(_resource(doc, source, path, index, default_ns))
                continue
            if (group, doc["kind"]) in SCHEMAS:
                validate_document(doc, path, index)
            kube = from_document(doc, source, default_ns)
            if isinstance(kube, KubeWorkload):
                workloads.append(kube)
            elif isinstance(kube, KubeService):
                services.append(kube)
            else:
                name = (doc.get("metadata") or {}).get("name", "?")
                skipped.append(f"{doc['kind']} {name} ({source})")
    return IstioConfig(tuple(resources), tuple(skipped), tuple(workloads), tuple(services))


def _yaml_files(paths: Iterable[Path]) -> Iterator[Path]:
    for p in paths:
        if p.is_dir():
            yield from sorted(x for x in p.rglob("*") if x.suffix in (".yaml", ".yml"))
        elif p.exists():
            yield p
        else:
            raise IstioConfigError(str(p), None, "", "no such file or directory")


def merge(configs: Iterable[IstioConfig]) -> IstioConfig:
    configs = list(configs)
    return IstioConfig(
        tuple(r for c in configs for r in c.resources),
        tuple(s for c in configs for s in c.skipped),
        tuple(w for c in configs for w in c.workloads),
        tuple(s for c in configs for s in c.services),
        tuple(n for c in configs for n in c.notes),
    )


def load_config(paths: Iterable[Path], *, namespace: str | None = None) -> IstioConfig:
    """Every Istio resource in the given files and directories (*.yaml, *.yml)."""
    return merge(
        parse_documents(f.read_text(), str(f), namespace=namespace) for f in _yaml_files(paths)
    )
