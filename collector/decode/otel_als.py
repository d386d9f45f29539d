"""Envoy OpenTelemetry access logs (Istio's `envoyOtelAls` provider) -> `requests` rows.

By default Istio sends the default text access-log line as the log record body, no
attributes, and disables Envoy's built-in resource labels. With `logFormat.labels` the fields
arrive as attributes instead (we accept Istio's JSON-format key names there). Identity of the
reporting proxy comes from whatever the record carries: attributes such as Istio's Loki sample
(`pod`, `namespace`, `cluster`, `mesh`), resource attributes (`k8s.pod.name`,
`k8s.namespace.name`, `service.name`, `service.version`, Envoy's `node_name` = the node id).
The OTLP logs decoder calls `otel_access_log_to_request` for every log record; None means
"not an access log" (the record then goes to the `logs` table).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from meshlens.collector.decode import identity
from meshlens.collector.decode.access_log_text import fields_to_row, parse_fields
from meshlens.collector.decode.identity import Workload

ORIGIN: Final = "otel_als"
# Attribute-format records: Envoy's formatter always has a response code, and an access log
# names something only a proxy knows (its upstream, response flags, peer addresses). `method`
# and `path` alone are what application logs carry too (issue 18: they must stay logs).
_RESPONSE_KEY: Final = "response_code"
_PROXY_KEYS: Final = frozenset(
    (
        "upstream_cluster",
        "upstream_host",
        "response_flags",
        "response_code_details",
        "upstream_service_time",
        "upstream_local_address",
        "downstream_local_address",
        "downstream_remote_address",
        "upstream_transport_failure_reason",
        "connection_termination_details",
    )
)


def is_attribute_access_log(attributes: Mapping[str, Any]) -> bool:
    """Whether log attributes are an Envoy access log in attribute format (Istio's JSON-format
    keys as `logFormat.labels`): a response code and at least one proxy-only field."""
    return _RESPONSE_KEY in attributes and not _PROXY_KEYS.isdisjoint(attributes)


def _text(v: Any) -> str:
    return "" if v is None else str(v)


def _local_workload(
    attributes: Mapping[str, Any], resource: Mapping[str, Any]
) -> tuple[str, Workload]:
    merged = {**resource, **attributes}
    node_id = _text(merged.get("node_name") or merged.get("node_id"))
    nid = identity.parse_node_id(node_id)
    pod = _text(merged.get("pod") or merged.get("k8s.pod.name") or (nid.pod if nid else ""))
    namespace = _text(
        merged.get("namespace")
        or merged.get("k8s.namespace.name")
        or (nid.namespace if nid else "")
    )
    workload = _text(
        merged.get("workload")
        or merged.get("k8s.deployment.name")
        or (identity.workload_from_pod(pod) if pod and pod != "unknown" else "")
    )
    # Envoy's built-in `cluster_name` label is the node cluster, `<app>.<namespace>` in Istio.
    service = _text(
        merged.get("service.name")
        or merged.get("app")
        or _text(merged.get("cluster_name")).split(".", 1)[0]
    )
    if not service or service == "unknown":
        # Istio's canonical service when no label names it: the workload's name.
        service = workload
    version = _text(merged.get("service.version") or merged.get("version"))
    sa = _text(merged.get("service_account") or merged.get("k8s.serviceaccount.name"))
    principal = ""
    if sa and namespace:
        principal = identity.Spiffe(identity.DEFAULT_TRUST_DOMAIN, namespace, sa).uri
    return node_id, Workload(
        workload=identity.known(workload),
        namespace=identity.known(namespace),
        canonical_service=identity.known(service),
        version=identity.known(version),
        principal=identity.known(principal),
        pod=identity.known(pod),
        cluster_id=identity.known(merged.get("cluster") or merged.get("k8s.cluster.name")),
        mesh_id=identity.known(merged.get("mesh")),
    )


def otel_access_log_to_request(
    body: str, attributes: Mapping[str, Any], resource: Mapping[str, Any], ts_ns: int
) -> dict[str, Any] | None:
    """One OTLP log record -> a requests row (dict with the keys of the requests schema, ts in
    microseconds), or None when it is not an Envoy access log."""
    fields: dict[str, Any] | None = parse_fields(body) if isinstance(body, str) and body else None
    if fields is not None and body.lstrip().startswith("{") and not is_attribute_access_log(fields):
        fields = None  # an application's JSON log line, not Istio's JSON access-log format
    attr_fields = {k: v for k, v in attributes.items() if isinstance(k, str)}
    if is_attribute_access_log(attr_fields):
        fields = {**(fields or {}), **attr_fields}
    elif fields is not None:
        # Extra attributes (e.g. our local mesh's TLS fields) enrich a body line.
        fields = {**fields, **attr_fields}
    if fields is None:
        return None
    node_id, local = _local_workload(attributes, resource)
    try:
        return fields_to_row(
            fields,
            local=local,
            node_id=node_id,
            origin=ORIGIN,
            default_ts_us=ts_ns // 1000 if ts_ns else None,
        )
    except ValueError:  # a field out of range: not a real access log; kept as a log record
        return None
