"""Requests for receiver tests, built with the real message classes."""

from __future__ import annotations

import random
import time

from google.protobuf.struct_pb2 import Struct
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from meshlens.collector.proto.gen import meshlens_als_pb2, meshlens_envoy_core_pb2

# Recent timestamps: the store's retention (7 days by default) must not expire test rows.
T0_NS = (time.time_ns() // 10**9 - 60) * 10**9


def traces_request(
    n: int, *, service: str = "checkout", seed: int = 1, bad: int = 0, name: str = "GET /items"
) -> ExportTraceServiceRequest:
    """`n` valid spans plus `bad` spans with an invalid (short) trace id."""
    rnd = random.Random(seed)
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.add(key="service.name", value=AnyValue(string_value=service))
    ss = rs.scope_spans.add()
    ss.scope.name = "tests"
    for i in range(n + bad):
        s = ss.spans.add()
        s.trace_id = rnd.randbytes(16) if i < n else b"\x01\x02"
        s.span_id = rnd.randbytes(8)
        s.name = name
        s.kind = Span.SPAN_KIND_SERVER
        s.start_time_unix_nano = T0_NS + i * 1000
        s.end_time_unix_nano = s.start_time_unix_nano + 2_000_000
        s.attributes.add(key="http.request.method", value=AnyValue(string_value="GET"))
    return req


def metrics_request(points: int, *, unnamed_points: int = 0) -> ExportMetricsServiceRequest:
    req = ExportMetricsServiceRequest()
    rm = req.resource_metrics.add()
    rm.resource.attributes.add(key="service.name", value=AnyValue(string_value="checkout"))
    sm = rm.scope_metrics.add()
    m = sm.metrics.add(name="queue.depth", unit="1")
    for i in range(points):
        dp = m.gauge.data_points.add(time_unix_nano=T0_NS + i, as_double=float(i))
        dp.attributes.add(key="i", value=AnyValue(int_value=i))
    if unnamed_points:
        u = sm.metrics.add(name="")
        for i in range(unnamed_points):
            u.sum.data_points.add(time_unix_nano=T0_NS + i, as_int=i)
    return req


def logs_request(n: int, *, bad: int = 0) -> ExportLogsServiceRequest:
    req = ExportLogsServiceRequest()
    rl = req.resource_logs.add()
    rl.resource.attributes.add(key="service.name", value=AnyValue(string_value="checkout"))
    sl = rl.scope_logs.add()
    for i in range(n + bad):
        r = sl.log_records.add(time_unix_nano=T0_NS + i, severity_text="INFO", severity_number=9)
        r.body.string_value = f"message {i}"
        if i >= n:
            r.trace_id = b"\x00\x01\x02"
    return req


def istio_node(
    workload: str = "productpage-v1",
    namespace: str = "default",
    app: str = "productpage",
    version: str = "v1",
) -> meshlens_als_pb2.StreamAccessLogsMessage:
    """A first ALS message's identifier as an Istio sidecar sends it (no entries)."""
    msg = meshlens_als_pb2.StreamAccessLogsMessage()
    node = msg.identifier.node
    node.id = f"sidecar~10.0.0.1~{workload}-abc.{namespace}~{namespace}.svc.cluster.local"
    node.cluster = f"{app}.{namespace}"
    md = Struct()
    md.update(
        {
            "NAMESPACE": namespace,
            "WORKLOAD_NAME": workload,
            "SERVICE_ACCOUNT": f"bookinfo-{app}",
            "CLUSTER_ID": "Kubernetes",
            "LABELS": {
                "app": app,
                "version": version,
                "service.istio.io/canonical-name": app,
                "service.istio.io/canonical-revision": version,
            },
        }
    )
    node.metadata.CopyFrom(md)
    msg.identifier.log_name = "envoy_accesslog"
    return msg


def als_message(
    n: int,
    *,
    first: bool,
    start_s: float = T0_NS / 1e9,
    code: int = 200,
    cluster: str = "outbound|9080|v1|reviews.default.svc.cluster.local",
    path: str = "/reviews/0",
    **node: str,
) -> bytes:
    """A StreamAccessLogsMessage with `n` HTTP entries (+ the identifier when `first`)."""
    msg = istio_node(**node) if first else meshlens_als_pb2.StreamAccessLogsMessage()
    for i in range(n):
        e = msg.http_logs.log_entry.add()
        c = e.common_properties
        c.start_time.FromNanoseconds(int((start_s + i * 0.001) * 1e9))
        c.duration.FromMilliseconds(5)
        c.upstream_cluster = cluster
        e.request.request_method = meshlens_envoy_core_pb2.GET
        e.request.authority = "reviews:9080"
        e.request.path = path
        e.request.request_id = f"req-{i}"
        e.response.response_code.value = code
        e.response.response_body_bytes = 100
    return msg.SerializeToString()
