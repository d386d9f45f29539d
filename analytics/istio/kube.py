"""Kubernetes objects as label facts: which labels a workload's pods carry, which service
account they run as, which labels a Service selects and which workload port it targets. Pure.

Sources: manifests given with `--config` (Deployment, StatefulSet, DaemonSet, ReplicaSet, Job,
CronJob, Pod, Service, as `kubectl apply` would read them) and live objects read with
`--cluster` (Pods and Services). A selector is evaluated on pod labels, so a manifest's pod
template is completed with the labels Istio's sidecar injector adds (its injection template:
`security.istio.io/tlsMode`, `service.istio.io/canonical-name` and `-revision`, derived as
istio/istio pkg/kube/labels/labels.go does); live pods already carry them.

The workload name is Istio's: a Deployment's name (a pod owned by ReplicaSet `name-<hash>`
belongs to Deployment `name`), a StatefulSet's, DaemonSet's, Job's or CronJob's name, else the
pod's own name.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

CANONICAL_NAME: Final = "service.istio.io/canonical-name"
CANONICAL_REVISION: Final = "service.istio.io/canonical-revision"
TLS_MODE: Final = "security.istio.io/tlsMode"
# Labels the injector may add that we cannot derive from a manifest (depend on mesh config).
INJECTED_UNKNOWN: Final = frozenset({"networking.istio.io/tunnel"})
WORKLOAD_KINDS: Final = frozenset(
    {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob", "Pod"}
)
KUBE_KINDS: Final = WORKLOAD_KINDS | {"Service"}
_NAME_LABELS: Final = (CANONICAL_NAME, "app.kubernetes.io/name", "app")
_REVISION_LABELS: Final = (CANONICAL_REVISION, "app.kubernetes.io/version", "version")


@dataclass(frozen=True, slots=True)
class KubeWorkload:
    """The pods of one workload, as far as an object describes them."""

    namespace: str
    name: str  # Istio's workload name
    labels: Mapping[str, str]
    service_account: str
    source: str  # "bookinfo.yaml#3 (Deployment default/reviews-v1)" or a cluster URL
    live: bool = False  # a pod read from the cluster: every label it carries is here
    unknown_keys: frozenset[str] = field(default=INJECTED_UNKNOWN)

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True, slots=True)
class KubeService:
    namespace: str
    name: str
    selector: Mapping[str, str]
    target_ports: Mapping[int, int]  # service port -> workload port (numeric targetPort only)
    source: str


def canonical_labels(labels: Mapping[str, str], workload: str) -> dict[str, str]:
    """The canonical-name/-revision labels the injector sets (values as its template does:
    first of the label chains, else the workload name / 'latest'; trunc 63, trim '-_.')."""
    name = next((labels[k] for k in _NAME_LABELS if k in labels), workload)
    revision = next((labels[k] for k in _REVISION_LABELS if k in labels), "latest")
    return {CANONICAL_NAME: name[:63].strip("-_."), CANONICAL_REVISION: revision}


def _map(value: Any) -> Mapping[str, Any]:
    """A mapping field, {} when absent or malformed (these objects are not schema-checked)."""
    return value if isinstance(value, Mapping) else {}


def _str_map(value: Any) -> dict[str, str]:
    if not isinstance(value, Mapping):
        return {}
    return {str(k): str(v) for k, v in value.items() if v is not None}


def _owner_workload(meta: Mapping[str, Any], labels: Mapping[str, str]) -> str:
    """Istio's workload name of a pod from its owner references."""
    refs = meta.get("ownerReferences")
    owners = [o for o in (refs if isinstance(refs, list) else []) if isinstance(o, Mapping)]
    owner = next((o for o in owners if o.get("controller")), owners[0] if owners else None)
    if owner is None:
        return str(meta.get("name") or meta.get("generateName") or "")
    name = str(owner.get("name", ""))
    kind = str(owner.get("kind", ""))
    if kind == "ReplicaSet":
        pod_hash = labels.get("pod-template-hash", "")
        if pod_hash and name.endswith(f"-{pod_hash}"):
            return name[: -len(pod_hash) - 1]
    if kind == "Job":
        # A CronJob's Job is `<cronjob>-<scheduled minute>`; Istio names the CronJob.
        head, _, tail = name.rpartition("-")
        if head and tail.isdigit() and len(tail) >= 8:
            return head
    return name


def _pod_spec(doc: Mapping[str, Any]) -> tuple[Mapping[str, Any], Mapping[str, Any]]:
    """(pod metadata, pod spec) of a workload object or a pod."""
    spec = _map(doc.get("spec"))
    kind = doc.get("kind")
    if kind == "Pod":
        return _map(doc.get("metadata")), spec
    if kind == "CronJob":
        spec = _map(_map(spec.get("jobTemplate")).get("spec"))
    template = _map(spec.get("template"))
    return _map(template.get("metadata")), _map(template.get("spec"))


def _workload(doc: Mapping[str, Any], source: str, namespace: str) -> KubeWorkload:
    meta = _map(doc.get("metadata"))
    pod_meta, pod_spec = _pod_spec(doc)
    labels = _str_map(pod_meta.get("labels"))
    kind = str(doc.get("kind"))
    name = str(meta.get("name") or "")
    if kind == "Pod":
        name = _owner_workload(meta, labels)
    elif kind == "ReplicaSet":
        name = _owner_workload(meta, labels) if meta.get("ownerReferences") else name
    sa = str(pod_spec.get("serviceAccountName") or pod_spec.get("serviceAccount") or "default")
    live = kind == "Pod" and bool(meta.get("uid"))
    injected = TLS_MODE in labels or CANONICAL_NAME in labels
    if not live:
        labels = {TLS_MODE: "istio", **canonical_labels(labels, name), **labels}
    labels.pop("pod-template-hash", None)
    return KubeWorkload(
        namespace=namespace,
        name=name,
        labels=labels,
        service_account=sa,
        source=f"{source} ({kind} {namespace}/{meta.get('name', name)})",
        live=live,
        unknown_keys=frozenset() if live or injected else INJECTED_UNKNOWN,
    )


def _service(doc: Mapping[str, Any], source: str, namespace: str) -> KubeService:
    meta = _map(doc.get("metadata"))
    spec = _map(doc.get("spec"))
    ports: dict[int, int] = {}
    raw_ports = spec.get("ports")
    for p in raw_ports if isinstance(raw_ports, list) else []:
        if not isinstance(p, Mapping) or not isinstance(p.get("port"), int):
            continue
        target = p.get("targetPort", p["port"])
        if isinstance(target, int):  # a named targetPort needs the pod's container ports
            ports[p["port"]] = target
        elif isinstance(target, str) and target.isdigit():
            ports[p["port"]] = int(target)
    name = str(meta.get("name") or "")
    return KubeService(
        namespace=namespace,
        name=name,
        selector=_str_map(spec.get("selector")),
        target_ports=ports,
        source=f"{source} (Service {namespace}/{name})",
    )


def from_document(
    doc: Mapping[str, Any], source: str, default_namespace: str
) -> KubeWorkload | KubeService | None:
    """A workload or Service object -> its label facts; None for any other kind."""
    kind = doc.get("kind")
    if kind not in KUBE_KINDS or not str(doc.get("apiVersion", "")).startswith(
        ("v1", "apps/", "batch/")
    ):
        return None
    meta = doc.get("metadata") or {}
    if not isinstance(meta, Mapping) or not (meta.get("name") or meta.get("generateName")):
        return None
    namespace = str(meta.get("namespace") or default_namespace)
    if kind == "Service":
        return _service(doc, source, namespace)
    return _workload(doc, source, namespace)
