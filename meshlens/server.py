"""The collector process, composed: store + gRPC port + OTLP/HTTP port + API port.

    API  :8080  /healthz (alive), /readyz (200 only while accepting), /metrics, analytics routes
    gRPC :4317  OTLP traces/metrics/logs, Envoy ALS, grpc.health.v1
    HTTP :4318  OTLP/HTTP

Start order: the API port first (so /healthz answers and /readyz says "not yet" during WAL
recovery), then the store (recovery), then the receivers; ready last. Stop order is the reverse
of accepting: not ready, receivers stop accepting and drain, in-flight appends finish, the store
flushes and converts everything, the API port closes last.

This is the composition root of the collector and the one place it reaches into `analytics`,
with static imports: `analytics.api.api_routes` (typed `ApiSettings` from the serve settings)
for the API port and `analytics.exporter.metric_collectors` for /metrics. With
--query-workers > 0 the analytics routes (but `analytics.api.IN_PROCESS_ROUTES`) are forwarded
to a pool of query worker processes (collector/query_pool.py) that build the same routes: no
query runs on the ingest path. The pool starts before the API port and stops after it.
"""

from __future__ import annotations

import functools
import logging
import ssl
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from meshlens.analytics import api as analytics_api
from meshlens.analytics.exporter import metric_collectors
from meshlens.analytics.paired_store import store_settled_hours
from meshlens.collector.errors import ConfigError
from meshlens.collector.query_pool import PoolOptions, QueryPool, forwarding_routes
from meshlens.collector.receivers.grpc_server import GrpcOptions, GrpcReceiver, server_credentials
from meshlens.collector.receivers.ingest import Ingest
from meshlens.collector.receivers.otlp_http import otlp_http_routes
from meshlens.collector.selfmetrics import CONTENT_TYPE, SelfMetrics, StoreStatsCollector
from meshlens.collector.store.objectstore import Shipper, shipper_from_settings
from meshlens.collector.store.store import Store, StoreOptions
from meshlens.httpd import (
    HttpOptions,
    Request,
    Response,
    Route,
    RunningHttpServer,
    start_http_server,
    tls_context,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class BoundPorts:
    grpc: int
    http: int  # -1 when the OTLP/HTTP port is off
    api: int


def check_tls(opts: GrpcOptions) -> None:
    """Load the TLS files the way both servers will, so a bad file is a ConfigError at start."""
    server_credentials(opts)  # both-or-neither, readable
    if opts.tls_cert:
        try:
            tls_context(opts.tls_cert, opts.tls_key, opts.tls_client_ca)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                "--tls-cert/--tls-key/--tls-client-ca",
                opts.tls_cert,
                f"not a usable PEM certificate, key or CA: {exc}",
            ) from None


class Collector:
    """`settings`: the parsed SERVE settings (argparse namespace or any object with them)."""

    def __init__(self, settings: Any, *, registry: CollectorRegistry | None = None) -> None:
        self.settings = settings
        self.data_dir = Path(settings.data_dir)
        self.metrics = SelfMetrics(registry)
        self._ready = threading.Event()
        self._stopping = False
        self._api: RunningHttpServer | None = None
        self._http: RunningHttpServer | None = None
        self._grpc: GrpcReceiver | None = None
        self._ingest: Ingest | None = None
        self.store: Store | None = None
        self.shipper: Shipper | None = None  # --object-store: ships Parquet files to S3
        self.ports: BoundPorts | None = None
        self.queries: QueryPool | None = None  # --query-workers > 0

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    # ---- API port ----------------------------------------------------------------------------

    def _healthz(self, req: Request) -> Response:
        return Response.json({"status": "ok"})

    def _readyz(self, req: Request) -> Response:
        if self.ready:
            return Response.json({"status": "ready"})
        state = "stopping" if self._stopping else "starting"
        return Response.json({"status": state}, 503)

    def _metrics(self, req: Request) -> Response:
        return Response(200, self.metrics.render(), CONTENT_TYPE)

    def api_routes(self) -> list[Route]:
        routes = [
            Route("GET", "/healthz", self._healthz),
            Route("GET", "/readyz", self._readyz),
            Route("GET", "/metrics", self._metrics),
        ]
        analytic = analytics_api.api_routes(self.settings)
        if self.queries is not None:
            analytic = forwarding_routes(
                analytic, self.queries, analytics_api.IN_PROCESS_ROUTES, analytics_api.sql_deadline
            )
        routes.extend(analytic)
        return routes

    def _start_queries(self, s: Any) -> None:
        workers = int(getattr(s, "query_workers", 0) or 0)
        if workers <= 0:
            return
        options = PoolOptions(
            size=workers,
            memory=int(s.query_memory),
            timeout_s=float(s.query_timeout),
            queue_wait_s=float(s.query_queue_wait),
            max_waiting=int(s.query_queue),
            max_response=int(s.query_max_response),
            # Inside the data directory, on the disk the operator sized, and emptied here.
            temp_root=self.data_dir.resolve() / ".tmp-query",
        )
        settings = dict(vars(s)) if hasattr(s, "__dict__") else dict(s)
        self.queries = QueryPool(analytics_api.api_routes, settings, options)
        self.queries.start()

    # ---- lifecycle ---------------------------------------------------------------------------

    def start(self) -> BoundPorts:
        s = self.settings
        try:
            return self._start(s)
        except BaseException:
            self.stop(grace_s=0)
            raise

    def _start(self, s: Any) -> BoundPorts:
        t0 = time.monotonic()
        grpc_opts = GrpcOptions(
            host=s.host,
            port=s.grpc_port,
            max_message_size=s.max_message_size,
            auth_token=s.auth_token,
            tls_cert=s.tls_cert,
            tls_key=s.tls_key,
            tls_client_ca=s.tls_client_ca,
            identity_binding=getattr(s, "identity_binding", "off"),
        )
        check_tls(grpc_opts)  # before anything binds or recovers
        self._start_queries(s)  # workers import analytics while the store recovers
        self._api = start_http_server(
            s.host,
            s.api_port,
            self.api_routes(),
            # TLS like the receivers, but no client certificates: probes and Prometheus
            # scrape it; the bearer token guards everything but /healthz and /readyz.
            HttpOptions(
                auth_token=s.auth_token,
                name="api",
                tls_cert=s.tls_cert,
                tls_key=s.tls_key,
                idle_timeout_s=s.http_idle_timeout,
                max_connections=s.http_max_connections,
                same_origin=True,  # browsers: checked only when no token is set
                allowed_hosts=tuple(h.strip() for h in s.api_allowed_hosts.split(",") if h.strip()),
            ),
        )
        self.store = Store(
            self.data_dir,
            StoreOptions.from_settings(s),
            after_maintenance=functools.partial(
                store_settled_hours, self.data_dir, settle=s.compact_after, in_child=True
            ),
        )
        self.store.start()
        self.metrics.register(StoreStatsCollector(self.store.stats))
        self.shipper = shipper_from_settings(s, self.data_dir, self.store.converted_below)
        if self.shipper is not None:
            self.shipper.start()
            self.metrics.register(self.shipper.metric_collector())
        for c in metric_collectors(self.data_dir):
            self.metrics.register(c)
        self._ingest = Ingest(self.store, self.metrics)
        self._grpc = GrpcReceiver(self._ingest, grpc_opts)
        grpc_port = self._grpc.start()
        http_port = -1
        if s.http_port >= 0:
            self._http = start_http_server(
                s.host,
                s.http_port,
                otlp_http_routes(self._ingest),
                HttpOptions(
                    auth_token=s.auth_token,
                    max_body=s.max_message_size,
                    tls_cert=s.tls_cert,
                    tls_key=s.tls_key,
                    tls_client_ca=s.tls_client_ca,
                    name="otlp-http",
                    open_paths=frozenset(),
                    idle_timeout_s=s.http_idle_timeout,
                    max_connections=s.http_max_connections,
                ),
            )
            http_port = self._http.port
        self.ports = BoundPorts(grpc_port, http_port, self._api.port)
        self._ready.set()
        log.info(
            "collector ready in %.2fs: grpc=%d http=%d api=%d data=%s",
            time.monotonic() - t0,
            grpc_port,
            http_port,
            self._api.port,
            self.data_dir,
        )
        return self.ports

    def stop(self, grace_s: float = 5.0) -> None:
        """Stop accepting, let in-flight requests finish (up to `grace_s`), flush the store."""
        self._ready.clear()
        self._stopping = True
        t0 = time.monotonic()
        if self._grpc is not None:
            self._grpc.stop(grace_s)
            self._grpc = None
        if self._http is not None:
            self._http.stop()
            self._http = None
        if self._ingest is not None and not self._ingest.close(grace_s):
            log.warning("some appends were still running after %.1fs", grace_s)
        if self.store is not None:
            self.store.close()
            self.store = None
        if self.shipper is not None:  # after the store's last conversion: ship everything
            self.shipper.stop(final=True)
            self.shipper = None
        if self._api is not None:
            self._api.stop()
            self._api = None
        if self.queries is not None:
            self.queries.stop()
            self.queries = None
        log.info("collector stopped in %.2fs", time.monotonic() - t0)
