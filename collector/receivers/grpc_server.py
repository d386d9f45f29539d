"""The gRPC port (:4317): OTLP Trace/Metrics/Logs, Envoy ALS and grpc.health.v1 on one grpc.aio
server running its own event loop in a background thread.

Why grpc.aio: Envoy holds one client-streaming ALS call open per sidecar for as long as it runs.
In sync grpcio each open stream pins a worker thread; in asyncio it is a coroutine, so a
thousand sidecars cost a thousand small objects, not a thousand threads. Blocking work (parse +
durable append) runs in a bounded thread pool (`append_workers`): many appends in flight is what
lets the store's group commit share one fsync among them.

Limits: `grpc.max_receive_message_length` is `--max-message-size` (grpc itself answers
RESOURCE_EXHAUSTED "Received message larger than max (N vs. LIMIT)" before buffering more; it
applies to the decompressed size too). Auth: a bearer-token interceptor covers every method
except grpc.health.v1 (Kubernetes gRPC probes cannot send headers; /healthz and /readyz are
open for the same reason). SO_REUSEPORT is off so a second collector cannot silently share a port.
Identity: with client certificates, --identity-binding checks each ALS stream's and OTLP
request's claimed node identity against the certificate's SPIFFE ID (receivers/identity.py).
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import logging
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from meshlens.collector.errors import ConfigError
from meshlens.collector.receivers import envoy_als, otlp
from meshlens.collector.receivers.identity import MODES, Binding
from meshlens.collector.receivers.ingest import Ingest
from meshlens.collector.receivers.otlp_grpc import RECEIVER as OTLP_RECEIVER
from meshlens.collector.receivers.otlp_grpc import otlp_handlers
from meshlens.collector.selfmetrics import SelfMetrics

log = logging.getLogger(__name__)

HEALTH_SERVICE: Final = "grpc.health.v1.Health"
_OPEN_PREFIX: Final = f"/{HEALTH_SERVICE}/"
SERVICES: Final = (*(s.service for s in otlp.SIGNALS), envoy_als.SERVICE)
WINDOW_BYTES: Final = 256 * 1024  # per-stream HTTP/2 receive window


@dataclass(frozen=True, slots=True)
class GrpcOptions:
    host: str = "127.0.0.1"
    port: int = 0
    max_message_size: int = 16 * 1024 * 1024
    auth_token: str = field(default="", repr=False)  # never in logs or tracebacks
    tls_cert: str = ""
    tls_key: str = ""
    tls_client_ca: str = ""
    identity_binding: str = "off"  # off | warn | enforce (collector/receivers/identity.py)
    append_workers: int = 64


def _labels_for(method: str) -> tuple[str, str]:
    if method == envoy_als.METHOD:
        return envoy_als.RECEIVER, envoy_als.SIGNAL
    for s in otlp.SIGNALS:
        if method == s.grpc_method:
            return OTLP_RECEIVER, s.name
    return "grpc", "other"


async def _deny(request: Any, context: Any) -> None:
    await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or invalid bearer token")


def _deny_like(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    """A handler of the same streaming shape as `handler` that answers UNAUTHENTICATED."""
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(_deny)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(_deny)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(_deny)
    return grpc.unary_unary_rpc_method_handler(_deny)


class BearerAuthInterceptor(grpc.aio.ServerInterceptor):
    """Require `authorization: Bearer <token>` on every method but health."""

    def __init__(self, token: str, metrics: SelfMetrics) -> None:
        self._expected = f"Bearer {token}".encode()
        self._metrics = metrics

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None or details.method.startswith(_OPEN_PREFIX):
            return handler
        got = b""
        for key, value in details.invocation_metadata or ():
            if key == "authorization" and isinstance(value, str):
                got = value.encode()
        if hmac.compare_digest(got, self._expected):
            return handler
        self._metrics.request(*_labels_for(details.method), "unauthenticated")
        return _deny_like(handler)


def _read(setting: str, path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(setting, path, f"cannot read: {exc.strerror or exc}") from None


def server_credentials(opts: GrpcOptions) -> grpc.ServerCredentials | None:
    if opts.identity_binding not in MODES:
        raise ConfigError(
            "--identity-binding", opts.identity_binding, f"choose one of {', '.join(MODES)}"
        )
    if opts.identity_binding != "off" and not opts.tls_client_ca:
        raise ConfigError(
            "--identity-binding",
            opts.identity_binding,
            "needs client certificates: --tls-cert, --tls-key and --tls-client-ca",
        )
    if not opts.tls_cert and not opts.tls_key:
        if opts.tls_client_ca:
            raise ConfigError(
                "--tls-client-ca", opts.tls_client_ca, "needs --tls-cert and --tls-key"
            )
        return None
    if not (opts.tls_cert and opts.tls_key):
        raise ConfigError("--tls-cert/--tls-key", "", "give both the certificate and its key")
    ca = _read("--tls-client-ca", opts.tls_client_ca) if opts.tls_client_ca else None
    return grpc.ssl_server_credentials(
        [(_read("--tls-key", opts.tls_key), _read("--tls-cert", opts.tls_cert))],
        root_certificates=ca,
        require_client_auth=ca is not None,
    )


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class GrpcReceiver:
    """The gRPC port. `start()` binds and returns the port; `stop()` drains; both are sync."""

    def __init__(self, ingest: Ingest, options: GrpcOptions) -> None:
        self._ingest = ingest
        self._opts = options
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="grpc-loop", daemon=True
        )
        self._pool = ThreadPoolExecutor(options.append_workers, thread_name_prefix="ingest")
        self._server: grpc.aio.Server | None = None
        self._health: Any = None
        self.port = 0

    async def _run_blocking(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await self._loop.run_in_executor(self._pool, functools.partial(fn, *args))

    def _call(self, coro: Awaitable[Any], timeout: float) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)  # type: ignore[arg-type]

    def start(self) -> int:
        creds = server_credentials(self._opts)  # config errors before anything starts
        self._thread.start()
        self.port = int(self._call(self._start(creds), timeout=30))
        return self.port

    async def _start(self, creds: grpc.ServerCredentials | None) -> int:
        opts = self._opts
        interceptors = []
        if opts.auth_token:
            interceptors.append(BearerAuthInterceptor(opts.auth_token, self._ingest.metrics))
        server = grpc.aio.server(
            interceptors=interceptors,
            options=[
                ("grpc.max_receive_message_length", opts.max_message_size),
                ("grpc.so_reuseport", 0),
                # Bounded receive buffers. With BDP probing gRPC grows each stream's flow-control
                # window without limit on a fast link, and a sender faster than the WAL got
                # 2.3 GiB buffered in this process (measured with 8 ALS streams). A fixed window
                # keeps buffered bytes <= streams x WINDOW_BYTES, and backpressure reaches the
                # sender through HTTP/2 flow control.
                ("grpc.http2.bdp_probe", 0),
                ("grpc.http2.lookahead_bytes", WINDOW_BYTES),
                # Sidecars keep ALS streams open for hours; allow their keepalive pings.
                ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
                ("grpc.keepalive_permit_without_calls", 1),
            ],
        )
        binding = Binding(opts.identity_binding)
        server.add_generic_rpc_handlers(otlp_handlers(self._ingest, self._run_blocking, binding))
        server.add_generic_rpc_handlers(
            [envoy_als.als_handler(self._ingest, self._run_blocking, binding)]
        )
        self._health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        addr = _address(opts.host, opts.port)
        try:
            port = (
                server.add_secure_port(addr, creds)
                if creds is not None
                else server.add_insecure_port(addr)
            )
        except RuntimeError as exc:
            raise ConfigError("--grpc-port", opts.port, f"cannot bind {addr}: {exc}") from None
        if not port:
            raise ConfigError("--grpc-port", opts.port, f"cannot bind {addr}")
        await server.start()
        self._server = server
        for name in ("", *SERVICES):
            await self._health.set(name, health_pb2.HealthCheckResponse.SERVING)
        return int(port)

    def stop(self, grace_s: float) -> None:
        """Refuse new RPCs, give running ones `grace_s` to finish, then cancel the rest."""
        if self._server is not None:
            self._call(self._stop(grace_s), timeout=grace_s + 30)
            self._server = None
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
        self._pool.shutdown(wait=True)

    async def _stop(self, grace_s: float) -> None:
        if self._health is not None:
            await self._health.enter_graceful_shutdown()
        assert self._server is not None
        await self._server.stop(grace_s)
