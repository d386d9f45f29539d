"""A tiny exporter of Istio standard metrics (what sidecars expose to Prometheus), for checking
the Istio dashboards' PromQL against real series. Counters grow on every scrape."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Final

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.metrics_core import Metric

# (source workload, source version, destination workload, destination service name, version)
EDGES: Final = (
    ("istio-ingressgateway", "latest", "productpage-v1", "productpage", "v1"),
    ("productpage-v1", "v1", "details-v1", "details", "v1"),
    ("productpage-v1", "v1", "reviews-v1", "reviews", "v1"),
    ("productpage-v1", "v1", "reviews-v2", "reviews", "v2"),
    ("reviews-v2", "v2", "ratings-v1", "ratings", "v1"),
)
NS: Final = "bookinfo"
LABELS: Final = (
    "reporter",
    "source_workload",
    "source_workload_namespace",
    "source_app",
    "source_version",
    "source_canonical_service",
    "source_canonical_revision",
    "source_principal",
    "destination_workload",
    "destination_workload_namespace",
    "destination_app",
    "destination_version",
    "destination_service",
    "destination_service_name",
    "destination_service_namespace",
    "destination_canonical_service",
    "destination_canonical_revision",
    "destination_principal",
    "request_protocol",
    "response_code",
    "grpc_response_status",
    "response_flags",
    "connection_security_policy",
)
_BUCKETS: Final = (1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 5000.0)


def _series() -> Iterator[tuple[tuple[str, ...], int]]:
    """Label values per series, with a per-series weight."""
    for src, src_ver, dst, svc, ver in EDGES:
        src_app = src.rsplit("-", 1)[0] if src != "istio-ingressgateway" else src
        src_ns = "istio-system" if src == "istio-ingressgateway" else NS
        for reporter in ("source", "destination"):
            for policy in ("mutual_tls", "none"):
                for code, weight in (("200", 20), ("503", 1)):
                    yield (
                        (
                            reporter,
                            src,
                            src_ns,
                            src_app,
                            src_ver,
                            src_app,
                            src_ver,
                            f"spiffe://cluster.local/ns/{src_ns}/sa/{src_app}",
                            dst,
                            NS,
                            svc,
                            ver,
                            f"{svc}.{NS}.svc.cluster.local",
                            svc,
                            NS,
                            svc,
                            ver,
                            f"spiffe://cluster.local/ns/{NS}/sa/{svc}",
                            "http",
                            code,
                            "",
                            "-",
                            policy if reporter == "destination" else "unknown",
                        ),
                        weight,
                    )


SERIES: Final = tuple(_series())


class IstioCollector:
    def __init__(self) -> None:
        self._scrapes = 0
        self._lock = threading.Lock()

    def describe(self) -> Iterator[Metric]:
        return iter(())

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            self._scrapes += 1
            k = self._scrapes
        req = CounterMetricFamily("istio_requests_total", "requests", labels=LABELS)
        hists = {
            name: HistogramMetricFamily(name, name, labels=LABELS)
            for name in (
                "istio_request_duration_milliseconds",
                "istio_request_bytes",
                "istio_response_bytes",
            )
        }
        tcp_labels = tuple(x for x in LABELS if x not in ("response_code", "grpc_response_status"))
        tcp = {
            name: CounterMetricFamily(name, name, labels=tcp_labels)
            for name in ("istio_tcp_sent_bytes_total", "istio_tcp_received_bytes_total")
        }
        for i, (labels, weight) in enumerate(SERIES):
            n = weight * k
            req.add_metric(labels, float(n))
            for h, scale in zip(hists.values(), (1.0, 30.0, 200.0), strict=True):
                buckets = []
                for j, b in enumerate(_BUCKETS):
                    frac = min(1.0, (j + 1 + i % 3) / len(_BUCKETS))
                    buckets.append((f"{b * scale:g}", float(int(n * frac))))
                buckets.append(("+Inf", float(n)))
                h.add_metric(labels, buckets, sum_value=n * 12.0 * scale)
            if labels[LABELS.index("response_code")] != "200":
                continue  # TCP series have no response code: one per connection identity
            tcp_values = tuple(
                v
                for name, v in zip(LABELS, labels, strict=True)
                if name not in ("response_code", "grpc_response_status")
            )
            for c in tcp.values():
                c.add_metric(tcp_values, float(1000 * n))
        yield req
        yield from hists.values()
        yield from tcp.values()
        build = GaugeMetricFamily("istio_build", "istio build", labels=["component", "tag"])
        build.add_metric(["proxy", "1.24.0"], 1.0)
        yield build


def start_istio_exporter() -> tuple[int, object]:
    """(port, server) of an HTTP /metrics with Istio series on 127.0.0.1:0."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(IstioCollector())  # type: ignore[arg-type]
    server, _thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    return int(server.server_port), server
