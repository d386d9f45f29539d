"""Envoy bootstrap for an Istio-like sidecar on loopback (pure: spec -> config dict).

What it mimics of an Istio sidecar (so the telemetry it sends is what a mesh sends):
- node id `sidecar~<ip>~<pod>.<ns>~<ns>.svc.cluster.local`, node cluster `<app>.<ns>` and the
  node metadata istio-agent sets (NAMESPACE, NAME, WORKLOAD_NAME, SERVICE_ACCOUNT, LABELS with
  app/version/service.istio.io/canonical-*, MESH_ID, CLUSTER_ID, OWNER, ...);
- an inbound listener that requires a client certificate from the demo CA (mTLS), routing to
  cluster `inbound|<port>||` = the local app;
- one plaintext outbound listener per upstream service (the app calls 127.0.0.1:<listen port>
  instead of being redirected by iptables), routing to `outbound|<port>|<subset>|<host>`
  clusters that originate mTLS to the peer sidecars with Istio's SNI
  `outbound_.<port>_.<subset>_.<host>` and verify the peer's SPIFFE URI SAN; each request keeps
  its protocol end to end (HTTP/1.1, or HTTP/2 for gRPC apps), like Istio's inbound clusters;
- access logs through `envoy.access_loggers.http_grpc` (and `tcp_grpc` for TCP) to meshlens'
  gRPC ALS and `envoy.access_loggers.open_telemetry` with Istio's default text line as the body
  (what `envoyHttpAls`, `envoyTcpAls` and `envoyOtelAls` providers render);
- tracing with `envoy.tracers.opentelemetry` (OTLP/gRPC to meshlens), Istio's custom tags;
- Istio's HTTP metadata exchange, emulated with headers: the client sidecar adds
  `x-envoy-peer-metadata` (base64 Struct of its node metadata) and `-id` to requests, the server
  sidecar to responses, and both are logged (ALS additional headers, OTel attributes
  `downstream_peer`/`upstream_peer`), so both reports name both workloads as with Istio's
  `upstream_peer`/`downstream_peer` filter state.

Live traffic weights (the gate's Envoy actuator): each outbound route with several subsets is a
weighted cluster with `runtime_key_prefix` = `weights_runtime_prefix(host, port)`; the weight of
subset cluster C is the runtime key `<prefix>.<C>`, e.g.

    meshlens.weights.reviews.default.svc.cluster.local.9080.outbound|9080|v2|reviews.default.svc.cluster.local

Set it on a running sidecar with the admin endpoint `POST /runtime_modify?<key>=<weight>` (see
`EnvoySidecar.set_weights`). Weights are relative (Envoy normalises by their sum).
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from google.protobuf import struct_pb2

from meshlens.localmesh.certs import CertFiles

ISTIO_VERSION: Final = "1.26.0-meshlens"
PEER_METADATA_HEADER: Final = "x-envoy-peer-metadata"
PEER_METADATA_ID_HEADER: Final = "x-envoy-peer-metadata-id"
MESHLENS_CLUSTER: Final = "meshlens_collector"
ROUTER: Final = {
    "name": "envoy.filters.http.router",
    "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
}
# Istio's default text access-log format (istio pilot/pkg/model/telemetry_logging.go).
ISTIO_TEXT_FORMAT: Final = (
    '[%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" '
    "%RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %CONNECTION_TERMINATION_DETAILS% "
    '"%UPSTREAM_TRANSPORT_FAILURE_REASON%" %BYTES_RECEIVED% %BYTES_SENT% %DURATION% '
    '%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% "%REQ(X-FORWARDED-FOR)%" "%REQ(USER-AGENT)%" '
    '"%REQ(X-REQUEST-ID)%" "%REQ(:AUTHORITY)%" "%UPSTREAM_HOST%" %UPSTREAM_CLUSTER_RAW% '
    "%UPSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS% "
    "%REQUESTED_SERVER_NAME% %ROUTE_NAME%\n"
)
# Extra OTel log attributes (Istio's `logFormat.labels`): the reporter's identity as in Istio's
# Loki sample, and the certificate facts the default text line lacks (meshlens reads them).
OTEL_ATTRIBUTES: Final = {
    "pod": "{pod}",
    "namespace": "{namespace}",
    "cluster": "{cluster_id}",
    "mesh": "{mesh_id}",
    "downstream_peer_uri_san": "%DOWNSTREAM_PEER_URI_SAN%",
    "downstream_local_uri_san": "%DOWNSTREAM_LOCAL_URI_SAN%",
    "upstream_peer_uri_san": "%UPSTREAM_PEER_URI_SAN%",
    "upstream_local_uri_san": "%UPSTREAM_LOCAL_URI_SAN%",
    "traceparent": "%REQ(TRACEPARENT)%",
    "downstream_peer": "%REQ(X-ENVOY-PEER-METADATA)%",
    "upstream_peer": "%RESP(X-ENVOY-PEER-METADATA)%",
    "grpc_status": "%GRPC_STATUS_NUMBER%",
}


@dataclass(frozen=True, slots=True)
class Subset:
    """One version of an upstream service: a peer sidecar's inbound listener."""

    name: str  # 'v1'; '' for a cluster without subset
    port: int | None  # peer sidecar inbound port; None = a cluster with no endpoints (-> UH)
    principal: str = ""  # expected peer SPIFFE id ('' = any cert from the CA)
    weight: int = 100
    address: str = "127.0.0.1"


@dataclass(frozen=True, slots=True)
class Upstream:
    """A service this sidecar calls, listened for locally on `listen_port`."""

    host: str  # FQDN, e.g. reviews.default.svc.cluster.local
    port: int  # service port (appears in cluster names and SNI)
    listen_port: int
    subsets: tuple[Subset, ...]
    timeout_s: float = 5.0
    retries: int = 0
    tcp: bool = False  # a TCP proxy listener (tcp_grpc ALS; first subset only) instead of HTTP

    def cluster_name(self, subset: Subset) -> str:
        return f"outbound|{self.port}|{subset.name}|{self.host}"

    def sni(self, subset: Subset) -> str:
        return f"outbound_.{self.port}_.{subset.name or '_'}_.{self.host}"


@dataclass(frozen=True, slots=True)
class Collector:
    """Where the sidecar sends telemetry (a meshlens gRPC port)."""

    host: str
    port: int
    auth_token: str = ""
    als: bool = True
    otel_logs: bool = True
    tracing: bool = True
    sampling_percent: float = 100.0
    flush_interval_s: float = 0.2


@dataclass(frozen=True, slots=True)
class SidecarSpec:
    """One workload instance (pod) and its sidecar."""

    app: str  # e.g. reviews
    version: str  # e.g. v1
    namespace: str
    service_port: int  # the service's port, e.g. 9080 (cluster names, SNI)
    inbound_port: int  # this sidecar's mTLS inbound listener (loopback)
    app_port: int  # the local app behind the sidecar
    certs: CertFiles
    collector: Collector
    upstreams: tuple[Upstream, ...] = ()
    service_account: str = ""  # default: <app>
    workload: str = ""  # default: <app>-<version>
    pod: str = ""  # default: <workload>-<hash-like suffix>
    ip: str = "127.0.0.1"
    mesh_id: str = "cluster.local"
    cluster_id: str = "Kubernetes"
    admin_port: int = 0  # 0 = ephemeral (read back with --admin-address-path)
    extra_labels: Mapping[str, str] = field(default_factory=dict)
    tcp: bool = False  # the inbound listener is a TCP proxy (tcp_grpc ALS) instead of HTTP

    @property
    def sa(self) -> str:
        """The service account: given, else the one in the certificate's SPIFFE id."""
        if self.service_account:
            return self.service_account
        _, sep, sa = self.certs.spiffe_id.rpartition("/sa/")
        return sa if sep else self.app

    @property
    def workload_name(self) -> str:
        return self.workload or f"{self.app}-{self.version}"

    @property
    def pod_name(self) -> str:
        return self.pod or f"{self.workload_name}-6d4f8b7c9d-x{self.inbound_port % 10000:04d}"

    @property
    def node_id(self) -> str:
        return (
            f"sidecar~{self.ip}~{self.pod_name}.{self.namespace}~{self.namespace}.svc.cluster.local"
        )

    @property
    def fqdn(self) -> str:
        return f"{self.app}.{self.namespace}.svc.cluster.local"


def weights_runtime_prefix(host: str, port: int) -> str:
    """The runtime key prefix of an upstream's weighted clusters (see module docs)."""
    return f"meshlens.weights.{host}.{port}"


def weight_runtime_key(upstream: Upstream, subset: Subset) -> str:
    return f"{weights_runtime_prefix(upstream.host, upstream.port)}.{upstream.cluster_name(subset)}"


# --- pieces -----------------------------------------------------------------------------------


def node_metadata(spec: SidecarSpec) -> dict[str, Any]:
    labels = {
        "app": spec.app,
        "version": spec.version,
        "service.istio.io/canonical-name": spec.app,
        "service.istio.io/canonical-revision": spec.version,
        "security.istio.io/tlsMode": "istio",
        **dict(spec.extra_labels),
    }
    return {
        "NAMESPACE": spec.namespace,
        "NAME": spec.pod_name,
        "WORKLOAD_NAME": spec.workload_name,
        "SERVICE_ACCOUNT": spec.sa,
        "LABELS": labels,
        "MESH_ID": spec.mesh_id,
        "CLUSTER_ID": spec.cluster_id,
        "OWNER": f"kubernetes://apis/apps/v1/namespaces/{spec.namespace}/deployments/"
        f"{spec.workload_name}",
        "ISTIO_VERSION": ISTIO_VERSION,
        "INTERCEPTION_MODE": "NONE",
        "APP_CONTAINERS": spec.app,
        "INSTANCE_IPS": spec.ip,
        "PROXY_CONFIG": {"serviceCluster": f"{spec.app}.{spec.namespace}"},
    }


_EXCHANGED_KEYS: Final = (
    "NAME",
    "NAMESPACE",
    "WORKLOAD_NAME",
    "SERVICE_ACCOUNT",
    "LABELS",
    "CLUSTER_ID",
    "MESH_ID",
    "OWNER",
)


def peer_metadata_header(spec: SidecarSpec) -> str:
    """Istio's HTTP metadata-exchange value: base64 of the serialized Struct of (part of) the
    node metadata. Our sidecars exchange it as `x-envoy-peer-metadata` request headers (client
    -> server) and response headers (server -> client), like Istio's MX filter does."""
    meta = node_metadata(spec)
    s = struct_pb2.Struct()
    s.update({k: meta[k] for k in _EXCHANGED_KEYS})
    return base64.b64encode(s.SerializeToString(deterministic=True)).decode("ascii")


def _peer_headers(spec: SidecarSpec) -> list[dict[str, Any]]:
    return [
        {
            "header": {"key": PEER_METADATA_HEADER, "value": peer_metadata_header(spec)},
            "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
        },
        {
            "header": {"key": PEER_METADATA_ID_HEADER, "value": spec.node_id},
            "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
        },
    ]


def _addr(host: str, port: int) -> dict[str, Any]:
    return {"socket_address": {"address": host, "port_value": port}}


def _static_cluster(name: str, endpoints: list[tuple[str, int]], **extra: Any) -> dict[str, Any]:
    lb = [{"endpoint": {"address": _addr(h, p)}} for h, p in endpoints]
    return {
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": lb}] if lb else [],
        },
        **extra,
    }


def _tls_common(spec: SidecarSpec, peer_principal: str) -> dict[str, Any]:
    matcher = (
        {"exact": peer_principal} if peer_principal else {"prefix": f"spiffe://{spec.mesh_id}/"}
    )
    return {
        "tls_certificates": [
            {
                "certificate_chain": {"filename": str(spec.certs.cert)},
                "private_key": {"filename": str(spec.certs.key)},
            }
        ],
        "validation_context": {
            "trusted_ca": {"filename": str(spec.certs.ca)},
            "match_typed_subject_alt_names": [{"san_type": "URI", "matcher": matcher}],
        },
    }


def _grpc_service(c: Collector) -> dict[str, Any]:
    svc: dict[str, Any] = {"envoy_grpc": {"cluster_name": MESHLENS_CLUSTER}, "timeout": "2s"}
    if c.auth_token:
        svc["initial_metadata"] = [{"key": "authorization", "value": f"Bearer {c.auth_token}"}]
    return svc


def _kv_list(values: Mapping[str, str]) -> dict[str, Any]:
    return {"values": [{"key": k, "value": {"string_value": v}} for k, v in values.items()]}


def access_loggers(spec: SidecarSpec, *, tcp: bool = False) -> list[dict[str, Any]]:
    c = spec.collector
    out: list[dict[str, Any]] = []
    common = {
        "log_name": "tcp_envoy_accesslog" if tcp else "http_envoy_accesslog",
        "transport_api_version": "V3",
        "grpc_service": _grpc_service(c),
        "filter_state_objects_to_log": ["upstream_peer", "downstream_peer"],
        "buffer_flush_interval": f"{c.flush_interval_s}s",
    }
    if c.als and tcp:
        out.append(
            {
                "name": "envoy.access_loggers.tcp_grpc",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.access_loggers.grpc.v3."
                    "TcpGrpcAccessLogConfig",
                    "common_config": common,
                },
            }
        )
    elif c.als:
        out.append(
            {
                "name": "envoy.access_loggers.http_grpc",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.access_loggers.grpc.v3."
                    "HttpGrpcAccessLogConfig",
                    "common_config": common,
                    "additional_request_headers_to_log": [
                        "content-type",
                        "traceparent",
                        "x-b3-traceid",
                        PEER_METADATA_HEADER,
                    ],
                    "additional_response_headers_to_log": [
                        "grpc-status",
                        "content-type",
                        PEER_METADATA_HEADER,
                    ],
                    "additional_response_trailers_to_log": ["grpc-status"],
                },
            }
        )
    if c.otel_logs:
        attrs = {
            k: v.format(
                pod=spec.pod_name,
                namespace=spec.namespace,
                cluster_id=spec.cluster_id,
                mesh_id=spec.mesh_id,
            )
            for k, v in OTEL_ATTRIBUTES.items()
        }
        out.append(
            {
                "name": "envoy.access_loggers.open_telemetry",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.access_loggers.open_telemetry."
                    "v3.OpenTelemetryAccessLogConfig",
                    "grpc_service": _grpc_service(c),
                    "log_name": "otel_envoy_accesslog",
                    "buffer_flush_interval": f"{c.flush_interval_s}s",
                    "disable_builtin_labels": True,
                    "body": {"string_value": ISTIO_TEXT_FORMAT},
                    "attributes": _kv_list(attrs),
                },
            }
        )
    return out


def _tracing(spec: SidecarSpec) -> dict[str, Any] | None:
    c = spec.collector
    if not c.tracing:
        return None
    tags = {
        "istio.canonical_service": spec.app,
        "istio.canonical_revision": spec.version,
        "istio.namespace": spec.namespace,
        "istio.mesh_id": spec.mesh_id,
        "istio.cluster_id": spec.cluster_id,
    }
    return {
        "random_sampling": {"value": c.sampling_percent},
        "custom_tags": [{"tag": k, "literal": {"value": v}} for k, v in tags.items()],
        "provider": {
            "name": "envoy.tracers.opentelemetry",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig",
                "grpc_service": _grpc_service(c),
                "service_name": f"{spec.app}.{spec.namespace}",
            },
        },
    }


def _hcm(
    spec: SidecarSpec, stat_prefix: str, route_config: dict[str, Any], *, inbound: bool
) -> dict[str, Any]:
    hcm: dict[str, Any] = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager."
        "v3.HttpConnectionManager",
        "stat_prefix": stat_prefix,
        "codec_type": "AUTO",
        "route_config": route_config,
        "http_filters": [ROUTER],
        "access_log": access_loggers(spec),
        "generate_request_id": True,
        "use_remote_address": False,
    }
    if inbound:
        hcm["forward_client_cert_details"] = "APPEND_FORWARD"
        hcm["set_current_client_cert_details"] = {"uri": True}
    tracing = _tracing(spec)
    if tracing is not None:
        hcm["tracing"] = tracing
    return {"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}


def _tcp_proxy(spec: SidecarSpec, stat_prefix: str, cluster: str) -> dict[str, Any]:
    return {
        "name": "envoy.filters.network.tcp_proxy",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
            "stat_prefix": stat_prefix,
            "cluster": cluster,
            "access_log": access_loggers(spec, tcp=True),
        },
    }


def inbound_listener(spec: SidecarSpec) -> dict[str, Any]:
    cluster = f"inbound|{spec.service_port}||"
    tls = {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3."
            "DownstreamTlsContext",
            "require_client_certificate": True,
            "common_tls_context": {**_tls_common(spec, ""), "alpn_protocols": ["h2", "http/1.1"]},
        },
    }
    if spec.tcp:
        net_filter = _tcp_proxy(spec, f"inbound_{spec.ip}_{spec.service_port}", cluster)
    else:
        route_config = {
            "name": f"inbound|{spec.service_port}|http|{spec.fqdn}",
            "virtual_hosts": [
                {
                    "name": f"inbound|http|{spec.service_port}",
                    "domains": ["*"],
                    "routes": [
                        {
                            "name": "default",
                            "match": {"prefix": "/"},
                            "route": {"cluster": cluster, "timeout": "0s"},
                            "decorator": {"operation": f"{spec.fqdn}:{spec.service_port}/*"},
                            # metadata exchange: tell the client sidecar who answered
                            "response_headers_to_add": _peer_headers(spec),
                        }
                    ],
                }
            ],
        }
        net_filter = _hcm(
            spec, f"inbound_{spec.ip}_{spec.service_port}", route_config, inbound=True
        )
    return {
        "name": "virtualInbound",
        "address": _addr(spec.ip, spec.inbound_port),
        "traffic_direction": "INBOUND",
        # Like Istio's virtualInbound: the TLS inspector records the SNI the client sidecar
        # sent (%REQUESTED_SERVER_NAME%, ALS tls_sni_hostname).
        "listener_filters": [
            {
                "name": "envoy.filters.listener.tls_inspector",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.listener."
                    "tls_inspector.v3.TlsInspector"
                },
            }
        ],
        "filter_chains": [{"transport_socket": tls, "filters": [net_filter]}],
    }


def _outbound_route_action(up: Upstream) -> dict[str, Any]:
    action: dict[str, Any] = {"timeout": f"{up.timeout_s}s"}
    if up.retries:
        action["retry_policy"] = {
            "retry_on": "connect-failure,refused-stream,unavailable,cancelled,5xx",
            "num_retries": up.retries,
        }
    if len(up.subsets) == 1:
        action["cluster"] = up.cluster_name(up.subsets[0])
    else:
        action["weighted_clusters"] = {
            "runtime_key_prefix": weights_runtime_prefix(up.host, up.port),
            "clusters": [{"name": up.cluster_name(s), "weight": s.weight} for s in up.subsets],
        }
    return action


def outbound_listener(spec: SidecarSpec, up: Upstream) -> dict[str, Any]:
    name = f"{spec.ip}_{up.listen_port}"
    if up.tcp:
        net_filter = _tcp_proxy(
            spec, f"outbound_{up.host}_{up.port}", up.cluster_name(up.subsets[0])
        )
    else:
        short = up.host.split(".")[0]
        route_config = {
            "name": str(up.port),
            "virtual_hosts": [
                {
                    "name": f"{up.host}:{up.port}",
                    "domains": ["*"],
                    "routes": [
                        {
                            "name": "default",
                            "match": {"prefix": "/"},
                            "route": _outbound_route_action(up),
                            # metadata exchange: tell the server sidecar who is calling
                            "request_headers_to_add": _peer_headers(spec),
                            "decorator": {
                                "operation": f"{short}.{up.host.split('.')[1]}"
                                f".svc.cluster.local:{up.port}/*"
                            },
                        }
                    ],
                }
            ],
        }
        net_filter = _hcm(spec, f"outbound_0.0.0.0_{up.port}", route_config, inbound=False)
    return {
        "name": name,
        "address": _addr("127.0.0.1", up.listen_port),
        "traffic_direction": "OUTBOUND",
        "filter_chains": [{"filters": [net_filter]}],
    }


def outbound_clusters(spec: SidecarSpec, up: Upstream) -> list[dict[str, Any]]:
    out = []
    for s in up.subsets:
        tls = {
            "name": "envoy.transport_sockets.tls",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3."
                "UpstreamTlsContext",
                "sni": up.sni(s),
                # No ALPN: the server sidecar's codec detects HTTP/1.1 or HTTP/2 from the
                # first bytes, so each request keeps its downstream protocol end to end.
                "common_tls_context": _tls_common(spec, s.principal),
            },
        }
        endpoints = [(s.address, s.port)] if s.port is not None else []
        out.append(
            _static_cluster(
                up.cluster_name(s),
                endpoints,
                transport_socket=tls,
                typed_extension_protocol_options=_DOWNSTREAM_PROTOCOL,
                metadata={
                    "filter_metadata": {
                        "istio": {
                            "services": [
                                {
                                    "host": up.host,
                                    "name": up.host.split(".")[0],
                                    "namespace": up.host.split(".")[1] if "." in up.host else "",
                                }
                            ]
                        }
                    }
                },
            )
        )
    return out


# Like Istio's inbound clusters: the upstream protocol follows the downstream one, so gRPC
# (HTTP/2) and HTTP/1.1 apps both work through the same sidecars.
_DOWNSTREAM_PROTOCOL: Final = {
    "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
        "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
        "use_downstream_protocol_config": {
            "http_protocol_options": {},
            "http2_protocol_options": {},
        },
    }
}


def collector_cluster(c: Collector) -> dict[str, Any]:
    return _static_cluster(
        MESHLENS_CLUSTER,
        [(c.host, c.port)],
        typed_extension_protocol_options={
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3."
                "HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}},
            }
        },
    )


def build_bootstrap(spec: SidecarSpec) -> dict[str, Any]:
    """The whole Envoy bootstrap (JSON-serialisable dict) of one sidecar."""
    listeners = [inbound_listener(spec)]
    clusters = [
        _static_cluster(
            f"inbound|{spec.service_port}||",
            [("127.0.0.1", spec.app_port)],
            typed_extension_protocol_options=_DOWNSTREAM_PROTOCOL,
        ),
        collector_cluster(spec.collector),
    ]
    # Export spans every flush interval (Envoy's default is 5 s).
    runtime: dict[str, int] = {
        "tracing.opentelemetry.flush_interval_ms": max(
            1, int(spec.collector.flush_interval_s * 1000)
        ),
        "tracing.opentelemetry.min_flush_spans": 5,
    }
    for up in spec.upstreams:
        listeners.append(outbound_listener(spec, up))
        clusters.extend(outbound_clusters(spec, up))
        if len(up.subsets) > 1:
            for s in up.subsets:
                runtime[weight_runtime_key(up, s)] = s.weight
    return {
        "node": {
            "id": spec.node_id,
            "cluster": f"{spec.app}.{spec.namespace}",
            "metadata": node_metadata(spec),
        },
        "admin": {"address": _addr("127.0.0.1", spec.admin_port)},
        "layered_runtime": {
            "layers": [
                {"name": "static", "static_layer": runtime},
                {"name": "admin", "admin_layer": {}},
            ]
        },
        "static_resources": {"listeners": listeners, "clusters": clusters},
    }
