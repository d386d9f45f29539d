"""A bookinfo-like service for the local mesh, instrumented with the OpenTelemetry SDK.

One process per workload (`python -m meshlens.demo.bookinfo --service reviews --version v2 ...`).
It serves HTTP behind its Envoy sidecar, continues the trace Envoy started (W3C traceparent),
calls its upstreams through its sidecar's outbound listeners, and exports traces, metrics and
logs over OTLP/gRPC (opentelemetry-exporter-otlp) to meshlens. Behaviour knobs (`--error-rate`,
`--extra-latency-ms`) make a version healthy or not, which is what the canary demo judges.

    productpage -> details, reviews          reviews v2/v3 -> ratings
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import signal
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Final

from opentelemetry import context as otel_context
from opentelemetry import propagate
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.metrics import Meter
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode

# Who calls whom (by version); the path each upstream is called on.
UPSTREAMS: Final[dict[str, tuple[str, ...]]] = {
    "productpage": ("details", "reviews"),
    "reviews": ("ratings",),
}
PATHS: Final = {"details": "/details/0", "reviews": "/reviews/0", "ratings": "/ratings/0"}
BASE_LATENCY_MS: Final = {"productpage": 4.0, "details": 2.0, "reviews": 6.0, "ratings": 2.0}


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    service: str
    version: str
    port: int
    upstreams: Mapping[str, str] = field(default_factory=dict)  # service -> base URL (sidecar)
    error_rate: float = 0.0
    extra_latency_ms: float = 0.0
    otlp_endpoint: str = ""  # host:port of meshlens' gRPC port; '' = no export
    namespace: str = "default"

    def calls(self) -> tuple[str, ...]:
        if self.service == "reviews" and self.version == "v1":
            return ()  # bookinfo's reviews v1 shows no stars: it never calls ratings
        return tuple(u for u in UPSTREAMS.get(self.service, ()) if u in self.upstreams)


class Telemetry:
    """The SDK pipeline of one service: providers wired to OTLP exporters (or nothing)."""

    def __init__(self, spec: ServiceSpec) -> None:
        resource = Resource.create(
            {
                "service.name": spec.service,
                "service.version": spec.version,
                "service.namespace": spec.namespace,
                "k8s.namespace.name": spec.namespace,
                "k8s.deployment.name": f"{spec.service}-{spec.version}",
            }
        )
        self.tracer_provider = TracerProvider(resource=resource)
        readers = []
        self.logger_provider = LoggerProvider(resource=resource)
        if spec.otlp_endpoint:
            kw: dict[str, Any] = {"endpoint": spec.otlp_endpoint, "insecure": True}
            self.tracer_provider.add_span_processor(
                BatchSpanProcessor(OTLPSpanExporter(**kw), schedule_delay_millis=500)
            )
            readers.append(
                PeriodicExportingMetricReader(OTLPMetricExporter(**kw), export_interval_millis=5000)
            )
            self.logger_provider.add_log_record_processor(
                BatchLogRecordProcessor(OTLPLogExporter(**kw), schedule_delay_millis=1000)
            )
        self.meter_provider = MeterProvider(resource=resource, metric_readers=readers)
        self.tracer = self.tracer_provider.get_tracer("meshlens.demo.bookinfo")
        self.meter: Meter = self.meter_provider.get_meter("meshlens.demo.bookinfo")
        self.log = logging.getLogger(f"bookinfo.{spec.service}.{spec.version}")
        self.log.addHandler(LoggingHandler(logger_provider=self.logger_provider))
        self.log.setLevel(logging.INFO)

    def shutdown(self) -> None:
        for p in (self.tracer_provider, self.meter_provider, self.logger_provider):
            p.shutdown()


class Service:
    def __init__(self, spec: ServiceSpec, telemetry: Telemetry, seed: int | None = None) -> None:
        self.spec = spec
        self.t = telemetry
        self.rng = random.Random(seed)
        self.duration = self.t.meter.create_histogram(
            "http.server.request.duration", unit="s", description="server request duration"
        )
        self.active = self.t.meter.create_up_down_counter(
            "http.server.active_requests", unit="{request}", description="in-flight requests"
        )
        self.upstream_errors = self.t.meter.create_counter(
            "bookinfo.upstream.errors", unit="{error}", description="failed upstream calls"
        )

    def _call(self, name: str, headers: Mapping[str, str]) -> tuple[int, dict[str, Any]]:
        url = self.spec.upstreams[name] + PATHS[name]
        with self.t.tracer.start_as_current_span(
            f"GET {PATHS[name]}",
            kind=SpanKind.CLIENT,
            attributes={
                "http.request.method": "GET",
                "url.full": url,
                "server.address": f"{name}.{self.spec.namespace}.svc.cluster.local",
                "peer.service": name,
            },
        ) as span:
            out: dict[str, str] = {"user-agent": headers.get("user-agent", "bookinfo")}
            propagate.inject(out)
            # Envoy's request id ties the client and server access-log lines together.
            if "x-request-id" in headers:
                out["x-request-id"] = headers["x-request-id"]
            req = urllib.request.Request(url, headers={**out, "Host": f"{name}:9080"})
            try:
                with urllib.request.urlopen(req, timeout=5) as resp:
                    code, body = resp.status, json.loads(resp.read() or b"{}")
            except urllib.error.HTTPError as exc:
                code, body = exc.code, {}
            except (urllib.error.URLError, OSError, ValueError):
                code, body = 0, {}
            span.set_attribute("http.response.status_code", code)
            if code == 0 or code >= 500:
                span.set_status(Status(StatusCode.ERROR))
                self.upstream_errors.add(1, {"upstream": name})
            return code, body

    def handle(self, path: str, headers: Mapping[str, str]) -> tuple[int, dict[str, Any]]:
        """Serve one request (inside the server span)."""
        attrs = {"service": self.spec.service, "version": self.spec.version}
        self.active.add(1, attrs)
        started = time.perf_counter()
        try:
            body: dict[str, Any] = {"service": self.spec.service, "version": self.spec.version}
            failed = 0
            for name in self.spec.calls():
                code, sub = self._call(name, headers)
                body[name] = sub if code == 200 else {"error": code}
                failed += code != 200
            # Work of our own: a heavy-tailed service time, plus the scenario's extra latency.
            base = BASE_LATENCY_MS.get(self.spec.service, 2.0)
            delay_ms = self.rng.lognormvariate(0, 0.5) * base + self.spec.extra_latency_ms
            time.sleep(delay_ms / 1000.0)
            if self.spec.error_rate and self.rng.random() < self.spec.error_rate:
                self.t.log.error("injected failure serving %s", path)
                return 503, {"error": "injected failure"}
            if failed and failed == len(self.spec.calls()):
                self.t.log.warning("all upstreams failed for %s", path)
                return 502, body
            return 200, body
        finally:
            self.duration.record(time.perf_counter() - started, attrs)
            self.active.add(-1, attrs)


def _handler_class(service: Service) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            if self.path == "/health":
                self._reply(200, {"status": "ok"})
                return
            headers = {k.lower(): v for k, v in self.headers.items()}
            ctx = propagate.extract(headers)
            token = otel_context.attach(ctx)
            try:
                with service.t.tracer.start_as_current_span(
                    f"GET {self.path.split('?')[0]}",
                    kind=SpanKind.SERVER,
                    attributes={
                        "http.request.method": "GET",
                        "url.path": self.path,
                        "http.route": "/" + self.path.strip("/").split("/")[0],
                    },
                ) as span:
                    code, body = service.handle(self.path, headers)
                    span.set_attribute("http.response.status_code", code)
                    if code >= 500:
                        span.set_status(Status(StatusCode.ERROR))
            finally:
                otel_context.detach(token)
            self._reply(code, body)

        def _reply(self, code: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            return  # the sidecar logs every request already

    return Handler


class ServiceServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def serve(
    spec: ServiceSpec, ready: threading.Event | None = None, stop: threading.Event | None = None
) -> None:
    telemetry = Telemetry(spec)
    server = ServiceServer(("127.0.0.1", spec.port), _handler_class(Service(spec, telemetry)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    if ready:
        ready.set()
    try:
        (stop or threading.Event()).wait()
    finally:
        server.shutdown()
        server.server_close()
        telemetry.shutdown()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--service", required=True, choices=sorted(BASE_LATENCY_MS))
    p.add_argument("--version", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--upstream", action="append", default=[], metavar="NAME=URL")
    p.add_argument("--error-rate", type=float, default=0.0)
    p.add_argument("--extra-latency-ms", type=float, default=0.0)
    p.add_argument("--otlp-endpoint", default="")
    args = p.parse_args(argv)
    spec = ServiceSpec(
        args.service,
        args.version,
        args.port,
        dict(u.split("=", 1) for u in args.upstream),
        args.error_rate,
        args.extra_latency_ms,
        args.otlp_endpoint,
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    ready = threading.Event()
    t = threading.Thread(target=serve, args=(spec, ready, stop))
    t.start()
    ready.wait(10)
    print(f"bookinfo {spec.service} {spec.version} listening on 127.0.0.1:{spec.port}", flush=True)
    t.join()
    return 0


if __name__ == "__main__":
    sys.exit(main())
