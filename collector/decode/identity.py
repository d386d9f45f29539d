"""Who talked to whom: Istio's identity rules as pure functions.

Inputs are what a sidecar tells us about one request: its own node (id + Istio node metadata),
the upstream cluster name (`outbound|9080|v1|reviews.default.svc.cluster.local` on the client
side, `inbound|9080||` on the server side), the certificates of the connection (SPIFFE URI SANs),
the TLS SNI (Istio's `outbound_.9080_.v1_.reviews.default.svc.cluster.local` when a sidecar
originates mTLS) and, when present, Istio's peer metadata: the `upstream_peer` /
`downstream_peer` filter state, or the metadata-exchange header `x-envoy-peer-metadata` when it
is logged. Output: the reporter and the source_*/destination_* columns of `requests`.

Peer metadata wire formats handled (istio/proxy extensions/common/metadata_object.{h,cc} and
Envoy's CelState::serializeAsProto): an Any holding a google.protobuf.Struct keyed either by
WorkloadMetadataObject tokens (namespace, workload, service, revision, app, version, name,
cluster, identity) or node-metadata style (NAMESPACE, WORKLOAD_NAME, NAME, LABELS{...}); a
StringValue/BytesValue holding `k=v,...` pairs (serializeAsString, baggage keys) or a serialized
Struct; the header's base64 Struct. Not decoded: the FlatBuffers `FlatNode` of the old Wasm
metadata exchange (`wasm.upstream_peer`, older Istio releases) - those rows keep 'unknown' peers.

Unknown identity text is 'unknown' (Istio's convention), never None. `mtls` is the exception:
it is None when the report cannot see the connection that matters (a client-side report only
sees the app->sidecar connection, not the sidecar->sidecar one; Istio reports
`connection_security_policy="unknown"` there too).
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Final

from google.protobuf import struct_pb2, wrappers_pb2
from google.protobuf.message import DecodeError as ProtoDecodeError

from meshlens.collector.store.schema import UNKNOWN

DEFAULT_TRUST_DOMAIN: Final = "cluster.local"
PASSTHROUGH: Final = "PassthroughCluster"
BLACKHOLE: Final = "BlackHoleCluster"
INBOUND_PASSTHROUGH: Final = (
    "InboundPassthroughCluster",
    "InboundPassthroughClusterIpv4",
    "InboundPassthroughClusterIpv6",
)

# Istio label keys (node metadata LABELS and peer metadata labels).
CANONICAL_NAME_LABEL: Final = "service.istio.io/canonical-name"
CANONICAL_REVISION_LABEL: Final = "service.istio.io/canonical-revision"
_APP_LABELS: Final = ("app", "app.kubernetes.io/name")
_VERSION_LABELS: Final = ("version", "app.kubernetes.io/version")

_SPIFFE_RE: Final = re.compile(r"^spiffe://(?P<td>[^/]+)/ns/(?P<ns>[^/]+)/sa/(?P<sa>[^/?#]+)$")
# Pod names of Deployments: <workload>-<replicaset hash>-<5 chars>.
_POD_OF_DEPLOYMENT_RE: Final = re.compile(r"^(?P<w>.+)-[a-z0-9]{5,10}-[a-z0-9]{5}$")


def known(value: object) -> str:
    """`value` as text, 'unknown' when empty/None/'-'."""
    if value is None:
        return UNKNOWN
    text = str(value).strip()
    return text if text and text != "-" else UNKNOWN


@dataclass(frozen=True, slots=True)
class Workload:
    """One end of a request, as far as we know it ('unknown' elsewhere)."""

    workload: str = UNKNOWN
    namespace: str = UNKNOWN
    canonical_service: str = UNKNOWN
    version: str = UNKNOWN
    principal: str = UNKNOWN
    app: str = UNKNOWN
    pod: str = UNKNOWN
    cluster_id: str = UNKNOWN
    mesh_id: str = UNKNOWN

    def merged(self, other: Workload) -> Workload:
        """Fill this workload's unknown fields from `other`."""
        changes = {
            name: getattr(other, name)
            for name in self.__slots__
            if getattr(self, name) == UNKNOWN and getattr(other, name) != UNKNOWN
        }
        return replace(self, **changes) if changes else self


UNKNOWN_WORKLOAD: Final = Workload()


# --- upstream cluster names ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ClusterName:
    """An Envoy cluster name in Istio's `direction|port|subset|host` scheme (or a special one).

    direction: 'outbound' | 'inbound' | 'passthrough' | 'inbound_passthrough' | 'blackhole' |
    'other' ('' name -> 'other')."""

    raw: str
    direction: str
    port: int | None = None
    subset: str = ""
    host: str = ""

    @property
    def reporter(self) -> str:
        """'destination' for server-side clusters, 'source' otherwise (client or unknown)."""
        return "destination" if self.direction in ("inbound", "inbound_passthrough") else "source"


def _port_number(text: str) -> int | None:
    """A TCP port from a cluster name or SNI; None unless ASCII digits within 0..65535."""
    if text.isascii() and text.isdigit() and len(text) <= 5:
        port = int(text)
        return port if port <= 65535 else None
    return None


def parse_upstream_cluster(name: str | None) -> ClusterName:
    raw = (name or "").strip()
    if raw in ("", "-"):
        return ClusterName(raw, "other")
    if raw == PASSTHROUGH:
        return ClusterName(raw, "passthrough")
    if raw == BLACKHOLE:
        return ClusterName(raw, "blackhole")
    if raw in INBOUND_PASSTHROUGH:
        return ClusterName(raw, "inbound_passthrough")
    parts = raw.split("|")
    if len(parts) == 4 and parts[0] in ("outbound", "inbound", "inbound-vip"):
        direction = "inbound" if parts[0] != "outbound" else "outbound"
        port = _port_number(parts[1])
        return ClusterName(raw, direction, port, parts[2], parts[3])
    return ClusterName(raw, "other")


def parse_istio_sni(sni: str | None) -> ClusterName | None:
    """Istio's mTLS SNI `outbound_.9080_.v1_.reviews.default.svc.cluster.local` (what the client
    sidecar sends) as the cluster it names; None for any other SNI."""
    if not sni or not sni.startswith("outbound_."):
        return None
    parts = sni.split("_.", 3)
    if len(parts) != 4:
        return None
    port = _port_number(parts[1])
    subset = "" if parts[2] == "_" else parts[2]  # istio writes '_' for "no subset"
    return ClusterName(sni, "outbound", port, subset, parts[3])


@dataclass(frozen=True, slots=True)
class Service:
    host: str  # FQDN (or whatever host we got), 'unknown' when none
    name: str
    namespace: str


def service_from_host(
    host: str | None, default_namespace: str = UNKNOWN, *, in_mesh: bool = True
) -> Service:
    """`reviews.default.svc.cluster.local` -> (host, 'reviews', 'default'); a bare `reviews`
    (e.g. a Host header) becomes `reviews.<default_namespace>.svc.cluster.local` when the
    namespace is known. Ports are dropped. `in_mesh=False` (passthrough / blackhole traffic,
    which by definition left the mesh's registry): no Kubernetes short-name expansion, so
    `httpbin.org` stays `httpbin.org` instead of becoming service 'httpbin' in namespace 'org'."""
    h = (host or "").strip().lower()
    if h.startswith("[") and "]" in h:  # [ipv6]:port
        h = h[1 : h.index("]")]
    elif h.count(":") == 1:
        h = h.split(":", 1)[0]
    if not h or h == "-":
        return Service(UNKNOWN, UNKNOWN, UNKNOWN)
    labels = h.split(".")
    if len(labels) >= 3 and labels[2] == "svc":
        return Service(h, labels[0], labels[1])
    if len(labels) == 2 and in_mesh and not labels[1].isdigit():  # name.namespace
        return Service(f"{h}.svc.cluster.local", labels[0], labels[1])
    if len(labels) == 1 and in_mesh and not h.isdigit() and default_namespace != UNKNOWN:
        return Service(f"{h}.{default_namespace}.svc.cluster.local", h, default_namespace)
    return Service(h, labels[0] if not _looks_like_ip(h) else h, UNKNOWN)


def _looks_like_ip(h: str) -> bool:
    return ":" in h or h.replace(".", "").isdigit()


# --- SPIFFE -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Spiffe:
    trust_domain: str
    namespace: str
    service_account: str

    @property
    def uri(self) -> str:
        return f"spiffe://{self.trust_domain}/ns/{self.namespace}/sa/{self.service_account}"


def parse_spiffe(uri: str | None) -> Spiffe | None:
    m = _SPIFFE_RE.match((uri or "").strip())
    return Spiffe(m["td"], m["ns"], m["sa"]) if m else None


def principal_from_sans(uris: Iterable[str]) -> str:
    """The first SPIFFE URI SAN (else the first URI SAN), 'unknown' when none."""
    first = UNKNOWN
    for uri in uris:
        if parse_spiffe(uri):
            return uri
        if first == UNKNOWN and uri:
            first = uri
    return first


def workload_from_principal(principal: str) -> Workload:
    spiffe = parse_spiffe(principal)
    if spiffe is None:
        return Workload(principal=known(principal))
    return Workload(namespace=spiffe.namespace, principal=spiffe.uri)


# --- Istio node metadata ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NodeId:
    """`sidecar~10.1.2.3~reviews-v1-7f9c-abcde.default~default.svc.cluster.local`."""

    type: str
    ip: str
    pod: str
    namespace: str


def parse_node_id(node_id: str | None) -> NodeId | None:
    parts = (node_id or "").split("~")
    if len(parts) != 4:
        return None
    pod, _, ns = parts[2].rpartition(".")
    if not pod:  # no namespace suffix
        pod, ns = parts[2], ""
    if not ns and parts[3].endswith(".svc.cluster.local"):
        ns = parts[3].split(".", 1)[0]
    return NodeId(parts[0], parts[1], known(pod), known(ns))


def workload_from_pod(pod: str) -> str:
    """Istio's guess of a Deployment's name from a pod name (without k8s lookups)."""
    m = _POD_OF_DEPLOYMENT_RE.match(pod)
    return m["w"] if m else pod


def _first(labels: Mapping[str, Any], keys: Iterable[str]) -> str:
    for key in keys:
        value = known(labels.get(key))
        if value != UNKNOWN:
            return value
    return UNKNOWN


def workload_from_node(node_id: str, metadata: Mapping[str, Any]) -> Workload:
    """The proxy's own workload from its node id and Istio node metadata (NAMESPACE,
    WORKLOAD_NAME, NAME, SERVICE_ACCOUNT, LABELS, MESH_ID, CLUSTER_ID)."""
    nid = parse_node_id(node_id)
    labels = metadata.get("LABELS")
    labels = labels if isinstance(labels, Mapping) else {}
    namespace = known(metadata.get("NAMESPACE"))
    if namespace == UNKNOWN and nid is not None:
        namespace = nid.namespace
    pod = known(metadata.get("NAME"))
    if pod == UNKNOWN and nid is not None:
        pod = nid.pod
    workload = known(metadata.get("WORKLOAD_NAME"))
    if workload == UNKNOWN and pod != UNKNOWN:
        workload = workload_from_pod(pod)
    app = _first(labels, _APP_LABELS)
    canonical = _first(labels, (CANONICAL_NAME_LABEL, *_APP_LABELS))
    if canonical == UNKNOWN:
        canonical = workload
    version = _first(labels, (*_VERSION_LABELS, CANONICAL_REVISION_LABEL))
    principal = UNKNOWN
    sa = known(metadata.get("SERVICE_ACCOUNT"))
    if sa != UNKNOWN and namespace != UNKNOWN:
        td = known(metadata.get("TRUST_DOMAIN"))
        principal = Spiffe(td if td != UNKNOWN else DEFAULT_TRUST_DOMAIN, namespace, sa).uri
    return Workload(
        workload=workload,
        namespace=namespace,
        canonical_service=canonical,
        version=version,
        principal=principal,
        app=app,
        pod=pod,
        cluster_id=known(metadata.get("CLUSTER_ID")),
        mesh_id=known(metadata.get("MESH_ID")),
    )


# --- Istio peer metadata (filter state upstream_peer / downstream_peer) ---------------------

STRUCT_URL: Final = "type.googleapis.com/google.protobuf.Struct"
STRING_URL: Final = "type.googleapis.com/google.protobuf.StringValue"
BYTES_URL: Final = "type.googleapis.com/google.protobuf.BytesValue"
PEER_KEYS: Final = {
    "upstream": ("upstream_peer", "wasm.upstream_peer"),
    "downstream": ("downstream_peer", "wasm.downstream_peer"),
}


def peer_from_mapping(fields: Mapping[str, Any]) -> Workload | None:
    """A peer from Istio's peer metadata in either of its key schemes:
    - WorkloadMetadataObject tokens (istio/proxy metadata_object.h): namespace, workload,
      service (canonical name), revision, app, version, name (pod), cluster, identity, labels;
    - node-metadata style (convertWorkloadMetadataToStruct / x-envoy-peer-metadata): NAMESPACE,
      WORKLOAD_NAME, NAME, CLUSTER_ID, LABELS{service.istio.io/canonical-name, ...}, OWNER.
    Baggage keys (k8s.namespace.name, service.name, ...) are accepted too."""
    if any(k in fields for k in ("NAMESPACE", "WORKLOAD_NAME", "LABELS", "NAME")):
        w = workload_from_node("", fields)
        return w if w != UNKNOWN_WORKLOAD else None

    def get(*keys: str) -> str:
        return _first(fields, keys)

    labels = fields.get("labels")
    labels = labels if isinstance(labels, Mapping) else {}
    identity = get("identity")
    w = Workload(
        workload=get(
            "workload",
            "k8s.deployment.name",
            "k8s.workload.name",
            "k8s.job.name",
            "k8s.cronjob.name",
        ),
        namespace=get("namespace", "k8s.namespace.name"),
        canonical_service=get("service", "service.name"),
        version=get("version", "app.version", "revision", "service.version"),
        principal=identity if identity.startswith("spiffe://") else UNKNOWN,
        app=get("app", "app.name") if labels == {} else _first({**labels, **fields}, ("app",)),
        pod=get("name", "k8s.pod.name", "k8s.instance.name"),
        cluster_id=get("cluster", "k8s.cluster.name"),
    )
    if w.canonical_service == UNKNOWN:
        w = replace(w, canonical_service=_first(labels, (CANONICAL_NAME_LABEL, *_APP_LABELS)))
    if w.canonical_service == UNKNOWN and w.workload != UNKNOWN:
        # Istio's canonical service: its label, else app labels, else the workload's name.
        w = replace(w, canonical_service=w.workload)
    return w if w != UNKNOWN_WORKLOAD else None


def _parse_pairs(text: str) -> dict[str, str]:
    """`k=v,k=v` (Istio's serializeAsString and baggage encodings)."""
    out: dict[str, str] = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        if sep and key.strip():
            out[key.strip()] = value.strip()
    return out


def struct_to_dict(s: struct_pb2.Struct) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in s.fields.items():
        kind = value.WhichOneof("kind")
        if kind == "string_value":
            out[key] = value.string_value
        elif kind == "struct_value":
            out[key] = struct_to_dict(value.struct_value)
        elif kind == "number_value":
            out[key] = value.number_value
        elif kind == "bool_value":
            out[key] = value.bool_value
        elif kind == "list_value":
            out[key] = [v.string_value for v in value.list_value.values]
    return out


def peer_from_filter_state(type_url: str, value: bytes) -> Workload | None:
    """Decode one filter-state object of Istio's peer metadata as Envoy logs it (an Any).

    Wire formats handled (each verified against istio/proxy sources, see module docs):
    - google.protobuf.Struct (WorkloadMetadataObject::serializeAsProto, Istio >= 1.24; and
      CelState with a Struct schema, newer istio/proxy) — either key scheme;
    - StringValue / BytesValue holding `k=v,...` pairs or a serialized Struct.
    Not decoded: the FlatBuffers `FlatNode` of the old Wasm metadata exchange
    (`wasm.upstream_peer`, Istio <= 1.1x) — returns None."""
    if type_url.endswith("google.protobuf.Struct"):
        s = struct_pb2.Struct()
        try:
            s.ParseFromString(value)
        except ProtoDecodeError:
            return None
        return peer_from_mapping(struct_to_dict(s))
    if type_url.endswith(("google.protobuf.StringValue", "google.protobuf.BytesValue")):
        wrapper = (
            wrappers_pb2.StringValue()
            if type_url.endswith("StringValue")
            else wrappers_pb2.BytesValue()
        )
        try:
            wrapper.ParseFromString(value)
        except ProtoDecodeError:
            return None
        raw = wrapper.value
        data = raw if isinstance(raw, bytes) else raw.encode("utf-8", "replace")
        return _peer_from_raw(data)
    return None


_PAIRS_RE: Final = re.compile(r"^[\w.\[\]/-]+=[^,]*(,[\w.\[\]/-]+=[^,]*)*$")
PEER_METADATA_HEADER: Final = "x-envoy-peer-metadata"
PEER_METADATA_ID_HEADER: Final = "x-envoy-peer-metadata-id"


def _peer_from_raw(data: bytes) -> Workload | None:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = ""
    if text and _PAIRS_RE.match(text):
        return peer_from_mapping(_parse_pairs(text))
    s = struct_pb2.Struct()
    try:
        s.ParseFromString(data)
    except ProtoDecodeError:
        return None
    return peer_from_mapping(struct_to_dict(s)) if s.fields else None


def peer_from_header(value: str | None) -> Workload | None:
    """Istio's HTTP metadata exchange header `x-envoy-peer-metadata` (base64 of a serialized
    Struct of the peer's node metadata), or `k=v,...` pairs; None when absent/undecodable."""
    text = (value or "").strip()
    if not text or text == "-":
        return None
    if _PAIRS_RE.match(text) and not text.endswith("="):
        return peer_from_mapping(_parse_pairs(text))
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
    return _peer_from_raw(raw)


# --- putting it together ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Observation:
    """What one proxy log entry tells about identity."""

    cluster: ClusterName
    local: Workload  # the reporting proxy's workload (node metadata)
    authority: str = ""
    local_principal: str = UNKNOWN  # URI SAN of the local certificate (downstream connection)
    peer_principal: str = UNKNOWN  # URI SAN of the peer certificate (downstream connection)
    # None when the source of the entry cannot see certificates (text access logs).
    tls_local_cert: bool | None = None
    tls_peer_cert: bool | None = None
    sni: str = ""
    upstream_peer: Workload | None = None
    downstream_peer: Workload | None = None
    upstream_host: str = ""
    # The sidecar-to-sidecar connection of a client-side report, when the log has it (Envoy's
    # %UPSTREAM_PEER_URI_SAN% / %UPSTREAM_LOCAL_URI_SAN% in formatter-based logs; ALS lacks it).
    upstream_peer_principal: str = UNKNOWN
    upstream_tls: bool | None = None


def resolve(obs: Observation) -> dict[str, Any]:
    """reporter, mtls and the source_*/destination_* columns of one request."""
    cluster = obs.cluster
    reporter = cluster.reporter
    out: dict[str, Any] = {"reporter": reporter}
    if reporter == "destination":
        dest = obs.local
        if obs.local_principal != UNKNOWN:
            dest = replace(dest, principal=obs.local_principal)
        src = obs.downstream_peer or UNKNOWN_WORKLOAD
        src = src.merged(workload_from_principal(obs.peer_principal))
        if obs.peer_principal != UNKNOWN:
            src = replace(src, principal=obs.peer_principal)
        sni_cluster = parse_istio_sni(obs.sni)
        if sni_cluster is not None:
            svc = service_from_host(sni_cluster.host, dest.namespace)
            if sni_cluster.subset and dest.version == UNKNOWN:
                dest = replace(dest, version=sni_cluster.subset)
        else:
            svc = service_from_host(obs.authority, dest.namespace)
        # The inbound side logs the sidecar-to-sidecar connection itself. Without certificate
        # data (text logs), Istio's mTLS SNI is the evidence: istiod sets it only for
        # ISTIO_MUTUAL.
        if obs.tls_local_cert is not None:
            out["mtls"] = bool(obs.tls_local_cert and obs.tls_peer_cert)
        else:
            out["mtls"] = True if sni_cluster is not None else None
    else:
        src = obs.local
        dest = obs.upstream_peer or UNKNOWN_WORKLOAD
        if cluster.direction == "outbound":
            svc = service_from_host(cluster.host, src.namespace)
            if cluster.subset and dest.version == UNKNOWN:
                dest = replace(dest, version=cluster.subset)
            if dest.namespace == UNKNOWN and svc.namespace != UNKNOWN:
                dest = replace(dest, namespace=svc.namespace)
        elif cluster.direction in ("passthrough", "blackhole"):
            svc = service_from_host(obs.authority or obs.upstream_host, in_mesh=False)
        else:
            svc = service_from_host(obs.authority, src.namespace)
        if obs.upstream_peer_principal != UNKNOWN:
            dest = dest.merged(workload_from_principal(obs.upstream_peer_principal))
        out["mtls"] = obs.upstream_tls
    out.update(
        source_workload=src.workload,
        source_namespace=src.namespace,
        source_canonical_service=src.canonical_service,
        source_version=src.version,
        source_principal=src.principal,
        destination_service=svc.host,
        destination_service_name=svc.name,
        destination_namespace=dest.namespace if dest.namespace != UNKNOWN else svc.namespace,
        destination_workload=dest.workload,
        destination_canonical_service=dest.canonical_service,
        destination_version=dest.version,
        destination_principal=dest.principal,
    )
    return out
