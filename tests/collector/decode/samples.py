"""OTLP requests made by the real OpenTelemetry SDK (and a few by hand) for the decoder tests."""

from __future__ import annotations

from collections.abc import Sequence

from opentelemetry._logs import LogRecord, SeverityNumber
from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.metrics import Observation
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span as PbSpan
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.metrics.view import ExponentialBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

RESOURCE = Resource.create(
    {"service.name": "checkout", "service.namespace": "shop", "service.version": "1.2.3"}
)


def sdk_spans() -> Sequence[ReadableSpan]:
    """A small trace: server (new semconv) -> client (old semconv) + db + error + link."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=RESOURCE)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("shop.http", "0.1")
    with tracer.start_as_current_span("GET /cart/{id}", kind=SpanKind.SERVER) as server:
        server.set_attributes(
            {
                "http.request.method": "GET",
                "http.route": "/cart/{id}",
                "http.response.status_code": 200,
                "server.address": "checkout.shop.svc",
                "url.path": "/cart/42",
                "tags": ["a", "b"],
                "ratio": 0.5,
                "cached": False,
            }
        )
        with tracer.start_as_current_span("HTTP GET", kind=SpanKind.CLIENT) as client:
            client.set_attributes(
                {
                    "http.method": "GET",
                    "http.status_code": 503,
                    "net.peer.name": "reviews",
                    "peer.service": "reviews",
                }
            )
            client.set_status(Status(StatusCode.ERROR, "upstream failed"))
        with tracer.start_as_current_span("SELECT cart", kind=SpanKind.CLIENT) as db:
            db.set_attributes({"db.system": "postgresql", "db.namespace": "carts"})
        link = Link(server.get_span_context())
        with tracer.start_as_current_span("rpc", kind=SpanKind.CLIENT, links=[link]) as rpc:
            rpc.set_attributes(
                {"rpc.service": "cart.Cart", "rpc.method": "Get", "rpc.grpc.status_code": 0}
            )
            rpc.set_status(Status(StatusCode.OK))
    with tracer.start_as_current_span("publish", kind=SpanKind.PRODUCER) as prod:
        prod.set_attribute("messaging.system", "kafka")
    with tracer.start_as_current_span("work"):
        pass
    provider.shutdown()
    return exporter.get_finished_spans()


def sdk_traces_request() -> bytes:
    return encode_spans(sdk_spans()).SerializeToString()


def kv(key: str, value: object) -> KeyValue:
    if isinstance(value, bool):
        return KeyValue(key=key, value=AnyValue(bool_value=value))
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    if isinstance(value, float):
        return KeyValue(key=key, value=AnyValue(double_value=value))
    if isinstance(value, bytes):
        return KeyValue(key=key, value=AnyValue(bytes_value=value))
    return KeyValue(key=key, value=AnyValue(string_value=str(value)))


def envoy_traces_request() -> ExportTraceServiceRequest:
    """What Envoy's OpenTelemetry tracer sends for an egress request that failed (tags are
    strings, `error: "true"`, no span status), as an Istio sidecar configures it."""
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.extend([kv("service.name", "productpage.default")])
    ss = rs.scope_spans.add()
    sp = ss.spans.add()
    sp.trace_id = bytes.fromhex("0af7651916cd43dd8448eb211c80319c")
    sp.span_id = bytes.fromhex("b7ad6b7169203331")
    sp.parent_span_id = bytes.fromhex("00f067aa0ba902b7")
    sp.name = "reviews.default.svc.cluster.local:9080/*"
    sp.kind = PbSpan.SPAN_KIND_CLIENT
    sp.start_time_unix_nano = 1_764_000_000_123_456_789
    sp.end_time_unix_nano = 1_764_000_000_125_456_789
    sp.attributes.extend(
        [
            kv("component", "proxy"),
            kv(
                "node_id",
                "sidecar~10.0.0.5~productpage-v1-abc12-xyz34.default~default.svc.cluster.local",
            ),
            kv("guid:x-request-id", "4c2e8a63-1d1f-4f0a-9f0e-6c8d1b2a3c4d"),
            kv("http.url", "http://reviews:9080/reviews/0"),
            kv("http.method", "GET"),
            kv("http.protocol", "HTTP/1.1"),
            kv("upstream_cluster", "outbound|9080|v1|reviews.default.svc.cluster.local"),
            kv("http.status_code", "503"),
            kv("response_flags", "UH"),
            kv("error", "true"),
        ]
    )
    return req


def sdk_metrics_request() -> bytes:
    reader = InMemoryMetricReader()
    view = View(instrument_name="latency.exp", aggregation=ExponentialBucketHistogramAggregation())
    provider = MeterProvider(resource=RESOURCE, metric_readers=[reader], views=[view])
    meter = provider.get_meter("shop.metrics", "0.1")
    meter.create_counter("requests", unit="1").add(5, {"route": "/cart"})
    meter.create_up_down_counter("inflight").add(-2)
    hist = meter.create_histogram(
        "latency", unit="ms", explicit_bucket_boundaries_advisory=[10, 100]
    )
    for v in (5.0, 50.0, 500.0, 70.0):
        hist.record(v, {"route": "/cart"})
    exp = meter.create_histogram("latency.exp", unit="s")
    for v in (0.0, 1.0, 2.0, 3.0):
        exp.record(v)
    meter.create_observable_gauge(
        "temperature", callbacks=[lambda _o: [Observation(21.5, {"room": "a"})]]
    )
    data = reader.get_metrics_data()
    assert data is not None
    provider.shutdown()
    return encode_metrics(data).SerializeToString()


def sdk_logs_request(extra: Sequence[LogRecord] = ()) -> bytes:
    exporter = InMemoryLogRecordExporter()
    provider = LoggerProvider(resource=RESOURCE)
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    logger = provider.get_logger("shop.logs")
    logger.emit(
        LogRecord(
            timestamp=1_764_000_000_000_001_000,
            severity_text="WARN",
            severity_number=SeverityNumber.WARN,
            body="cart is empty",
            attributes={"user.id": 7},
            trace_id=0x0AF7651916CD43DD8448EB211C80319C,
            span_id=0xB7AD6B7169203331,
        )
    )
    logger.emit(LogRecord(observed_timestamp=1_764_000_000_000_002_000, body={"k": [1, 2]}))
    for record in extra:
        logger.emit(record)
    provider.shutdown()
    return encode_logs(exporter.get_finished_logs()).SerializeToString()
