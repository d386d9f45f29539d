"""Identity binding: does the sender's client certificate match the node it claims to be?

Without it, anyone who can reach the gRPC port (or holds the one shared token) can write access
logs as any sidecar. With TLS client certificates (--tls-client-ca) and --identity-binding, the
certificate's SPIFFE ID (URI SAN `spiffe://<trust-domain>/ns/<ns>/sa/<sa>`, what Istio issues
to every workload) must agree with the identity the sender claims:

    Envoy ALS   the stream's first Identifier: node metadata NAMESPACE (else the namespace of
                the node id `sidecar~<ip>~<pod>.<ns>~<ns>.svc.cluster.local`), SERVICE_ACCOUNT
                and TRUST_DOMAIN when present
    OTLP        every resource's `k8s.namespace.name` and Envoy's `node_name` (a node id)

The namespace must be claimed and equal; a service account or trust domain, when claimed, must
equal the certificate's. Pure functions here; the receivers apply the verdict (warn: log;
enforce: PERMISSION_DENIED).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from google.protobuf.message import DecodeError as ProtobufDecodeError

from meshlens.collector.decode.identity import Spiffe, parse_spiffe
from meshlens.collector.proto.gen import meshlens_als_pb2

log = logging.getLogger(__name__)

MODES: Final = ("off", "warn", "enforce")
# grpc's auth_context keys (grpc/grpc_security_constants.h).
SAN_KEY: Final = "x509_subject_alternative_name"
PEM_KEY: Final = "x509_pem_cert"


@dataclass(frozen=True, slots=True)
class Claim:
    """What a sender says it is ('' = not said)."""

    namespace: str = ""
    service_account: str = ""
    trust_domain: str = ""

    def __str__(self) -> str:
        parts = [f"namespace {self.namespace or '(none)'}"]
        if self.service_account:
            parts.append(f"service account {self.service_account}")
        if self.trust_domain:
            parts.append(f"trust domain {self.trust_domain}")
        return ", ".join(parts)


def _pem_uris(pem: bytes) -> list[str]:
    """URI SANs of a PEM certificate (when grpc does not list them itself)."""
    try:
        from cryptography import x509
    except ImportError:  # pragma: no cover - cryptography is a dependency
        return []
    try:
        cert = x509.load_pem_x509_certificate(pem)
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except (ValueError, x509.ExtensionNotFound):
        return []
    return [str(u) for u in san.value.get_values_for_type(x509.UniformResourceIdentifier)]


def peer_spiffe_ids(auth_context: Mapping[str, Sequence[bytes]]) -> list[Spiffe]:
    """SPIFFE IDs of the verified client certificate in a grpc auth_context."""
    uris = [v.decode(errors="replace") for v in auth_context.get(SAN_KEY, ())]
    found = [s for s in map(parse_spiffe, uris) if s]
    if not found:
        for pem in auth_context.get(PEM_KEY, ()):
            found.extend(s for s in map(parse_spiffe, _pem_uris(pem)) if s)
    return found


def _node_id_namespace(node_id: str) -> str:
    """`sidecar~10.1.2.3~reviews-v1-abc.default~default.svc.cluster.local` -> 'default'."""
    parts = node_id.split("~")
    if len(parts) != 4:
        return ""
    _pod, _, ns = parts[2].rpartition(".")
    if not ns and parts[3].endswith(".svc.cluster.local"):
        ns = parts[3].split(".", 1)[0]
    return ns


def als_claim(identifier: bytes) -> Claim:
    """The identity a serialized ALS Identifier claims (an empty Claim when it has none)."""
    ident = meshlens_als_pb2.StreamAccessLogsMessage.Identifier()
    try:
        ident.ParseFromString(identifier)
    except ProtobufDecodeError:
        return Claim()
    fields = ident.node.metadata.fields

    def text(key: str) -> str:
        return fields[key].string_value.strip() if key in fields else ""

    return Claim(
        namespace=text("NAMESPACE") or _node_id_namespace(ident.node.id),
        service_account=text("SERVICE_ACCOUNT"),
        trust_domain=text("TRUST_DOMAIN"),
    )


def otlp_claims(resource_attributes: Iterable[Mapping[str, Any]]) -> list[Claim]:
    """One Claim per resource that names a namespace (k8s.namespace.name, or Envoy's
    `node_name` attribute holding a node id)."""
    out = []
    for attrs in resource_attributes:
        ns = str(attrs.get("k8s.namespace.name") or "").strip()
        ns = ns or _node_id_namespace(str(attrs.get("node_name") or ""))
        out.append(Claim(namespace=ns))
    return out


def mismatch(peers: Sequence[Spiffe], claim: Claim) -> str:
    """Why `claim` is not bound to the certificate ('' when one of its SPIFFE IDs matches)."""
    if not peers:
        return "the client certificate has no SPIFFE ID (URI SAN spiffe://<td>/ns/<ns>/sa/<sa>)"
    if not claim.namespace:
        return (
            "the sender claims no namespace (node metadata NAMESPACE or a sidecar node id), "
            f"so it cannot be bound to its certificate {peers[0].uri}"
        )
    for p in peers:
        if (
            p.namespace == claim.namespace
            and claim.service_account in ("", p.service_account)
            and claim.trust_domain in ("", p.trust_domain)
        ):
            return ""
    ids = ", ".join(p.uri for p in peers)
    return f"the client certificate {ids} does not match the claimed identity ({claim})"


def auth_context_of(context: Any) -> dict[str, list[bytes]]:
    """grpc's auth_context as a plain dict (empty when the call has none)."""
    try:
        raw = context.auth_context() or {}
    except (AttributeError, RuntimeError):
        return {}
    return {str(k): list(v) for k, v in raw.items()}


_WARNED: dict[str, float] = {}
WARN_EVERY_S: Final = 60.0  # a sender retries: one line per distinct mismatch a minute


def _warn_once(message: str, now: float | None = None) -> None:
    t = time.monotonic() if now is None else now
    if t - _WARNED.get(message, -WARN_EVERY_S) < WARN_EVERY_S:
        return
    if len(_WARNED) >= 1024:  # bounded: forget the oldest half
        for key in sorted(_WARNED, key=_WARNED.__getitem__)[:512]:
            _WARNED.pop(key, None)
    _WARNED[message] = t
    log.warning("%s (accepted: --identity-binding warn)", message)


@dataclass(frozen=True, slots=True)
class Binding:
    """The receivers' view of --identity-binding."""

    mode: str = "off"

    @property
    def on(self) -> bool:
        return self.mode != "off"

    def check(self, context: Any, claims: Iterable[Claim], what: str) -> str:
        """'' when the call may go on; else the refusal message (enforce). In warn mode a
        mismatch is logged and the call goes on."""
        peers = peer_spiffe_ids(auth_context_of(context))
        for claim in claims:
            problem = mismatch(peers, claim)
            if not problem:
                continue
            message = f"identity binding: {what}: {problem}"
            if self.mode == "enforce":
                return message
            _warn_once(message)
            return ""
        return ""


def otlp_resource_attributes(request_type: Any, raw: bytes) -> list[dict[str, str]]:
    """The string attributes of every resource in a serialized OTLP Export*ServiceRequest
    ([] when it does not parse: the receive path rejects it anyway)."""
    msg = request_type()
    try:
        msg.ParseFromString(raw)
    except ProtobufDecodeError:
        return []
    field = msg.DESCRIPTOR.fields[0].name  # resource_spans | resource_metrics | resource_logs
    return [
        {kv.key: kv.value.string_value for kv in r.resource.attributes} for r in getattr(msg, field)
    ]
