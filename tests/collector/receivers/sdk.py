"""The real OpenTelemetry SDK pointed at a collector: traces, metrics and logs, gRPC or HTTP."""

from __future__ import annotations

from typing import Any

from opentelemetry._logs import SeverityNumber
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.metrics.view import ExponentialBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.trace import SpanKind


def send_spans(exporter: SpanExporter, n: int, service: str = "checkout") -> None:
    """Create `n` spans (a root and children) through the SDK and flush them via `exporter`."""
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(
        BatchSpanProcessor(exporter, max_export_batch_size=200, schedule_delay_millis=50)
    )
    tracer = provider.get_tracer("tests")
    made = 0
    while made < n:
        with tracer.start_as_current_span("GET /checkout", kind=SpanKind.SERVER) as root:
            root.set_attribute("http.request.method", "GET")
            made += 1
            for _ in range(min(4, n - made)):
                with tracer.start_as_current_span("SELECT orders", kind=SpanKind.CLIENT):
                    made += 1
    assert provider.force_flush(30_000)
    provider.shutdown()


def send_metrics(exporter: Any, service: str = "checkout") -> dict[str, str]:
    """Record one instrument of each kind; returns {metric name: expected kind}."""
    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=3_600_000)
    provider = MeterProvider(
        resource=Resource.create({"service.name": service}),
        metric_readers=[reader],
        views=[
            View(
                instrument_name="payload.size", aggregation=ExponentialBucketHistogramAggregation()
            )
        ],
    )
    meter = provider.get_meter("tests")
    meter.create_counter("orders.placed").add(3, {"region": "eu"})
    meter.create_up_down_counter("queue.items").add(-2)
    meter.create_histogram("order.latency", unit="ms").record(12.5)
    meter.create_histogram("payload.size", unit="By").record(1500)
    meter.create_gauge("temperature").set(21.5)
    assert provider.force_flush(30_000)
    provider.shutdown()
    return {
        "orders.placed": "sum",
        "queue.items": "sum",
        "order.latency": "histogram",
        "payload.size": "exponential_histogram",
        "temperature": "gauge",
    }


def send_logs(exporter: Any, n: int, service: str = "checkout") -> None:
    provider = LoggerProvider(resource=Resource.create({"service.name": service}))
    provider.add_log_record_processor(BatchLogRecordProcessor(exporter, schedule_delay_millis=50))
    logger = provider.get_logger("tests")
    for i in range(n):
        logger.emit(
            body=f"payment {i} declined",
            severity_number=SeverityNumber.WARN,
            severity_text="WARN",
            attributes={"i": i},
        )
    assert provider.force_flush(30_000)
    provider.shutdown()
