"""Idle and half-open connections on every port of a real `meshlens serve`: sockets that send
nothing, a partial HTTP/2 preface, a request line without its body, and (with TLS) a TCP
connection that never starts the handshake. The collector keeps serving everyone else."""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc

from meshlens.collector.receivers import otlp
from tests.collector.conftest import ServeProcess, http_get, http_post
from tests.collector.receivers.certs import make_tls_files
from tests.collector.receivers.grpc_client import export
from tests.collector.receivers.payloads import traces_request
from tests.collector.receivers.rows import count_rows

PB = {"Content-Type": "application/x-protobuf"}
IDLE_GRPC = 300
IDLE_HTTP = 20  # see test_a_burst_of_connections_is_accepted_promptly for why not more


@contextmanager
def hostile_sockets(port: int, n: int, payloads: list[bytes]) -> Iterator[list[socket.socket]]:
    """`n` connections to `port`, the i-th sending payloads[i % len] (b"" = nothing)."""
    socks: list[socket.socket] = []
    try:
        for i in range(n):
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            p = payloads[i % len(payloads)]
            if p:
                s.sendall(p)
            socks.append(s)
        yield socks
    finally:
        for s in socks:
            s.close()


def _timed(fn: Callable[[], object]) -> float:
    t = time.monotonic()
    fn()
    return time.monotonic() - t


def test_idle_and_half_open_connections_do_not_stop_service(
    serve_factory: Callable[..., ServeProcess],
) -> None:
    sp = serve_factory()
    spans = traces_request(7).SerializeToString()
    h2_partial = [b"", b"PRI * HTTP/2.0\r\n", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00"]
    h1_partial = [
        b"",
        b"POST /v1/traces HTTP/1.1\r\nHost: x\r\n",  # headers never end
        b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\nabc",  # no body
        b"GET /metr",
    ]
    with (
        hostile_sockets(sp.grpc_port, IDLE_GRPC, h2_partial),
        hostile_sockets(sp.http_port, IDLE_HTTP, h1_partial),
        hostile_sockets(sp.api_port, IDLE_HTTP, h1_partial),
        grpc.insecure_channel(sp.grpc_target) as ch,
    ):
        times = [
            _timed(lambda: export(ch, otlp.TRACES, spans)),
            _timed(lambda: http_post(sp.otlp_url("/v1/traces"), spans, PB, timeout=5)),
            _timed(lambda: http_get(sp.api_url("/readyz"), timeout=5)),
        ]
        assert http_post(sp.otlp_url("/v1/traces"), spans, PB, timeout=5)[0] == 200
        assert http_get(sp.api_url("/metrics"), timeout=5)[0] == 200
        assert max(times) < 5, times
    with grpc.insecure_channel(sp.grpc_target) as ch:  # and after they went away
        export(ch, otlp.TRACES, spans)
    assert sp.stop(timeout=30) == 0
    assert count_rows(sp.data_dir, "spans") == 7 * 4


def test_a_client_that_never_starts_tls_does_not_block_the_others(
    serve_factory: Callable[..., ServeProcess],
    tmp_path: Path,
) -> None:
    """TLS on the OTLP/HTTP port: a TCP connection that sends nothing must not hold up the
    handshake of every later client (accept() must not run the handshake)."""
    tls = make_tls_files(tmp_path / "tls")
    sp = serve_factory("--tls-cert", str(tls.server_cert), "--tls-key", str(tls.server_key))
    ctx = ssl.create_default_context(cafile=str(tls.ca))
    spans = traces_request(3).SerializeToString()
    creds = grpc.ssl_channel_credentials(tls.ca.read_bytes())
    with (
        hostile_sockets(sp.http_port, 3, [b"", b"\x16\x03\x01"]),
        hostile_sockets(sp.grpc_port, 3, [b"", b"\x16\x03\x01"]),
        grpc.secure_channel(sp.grpc_target, creds) as ch,
    ):
        export(ch, otlp.TRACES, spans)
        status, body, _ = http_post(
            sp.otlp_url("/v1/traces", "https"), spans, PB, timeout=5, context=ctx
        )
        assert status == 200, body
    assert sp.stop(timeout=30) == 0


def test_a_burst_of_connections_is_accepted_promptly(running_serve: ServeProcess) -> None:
    """200 clients connecting at once to the OTLP/HTTP and API ports are all accepted within
    5 s. With a listen backlog of 5 (socketserver's default `request_queue_size`, which
    meshlens/httpd.py's _Server keeps) the kernel drops SYNs under such a burst and each
    dropped client waits for a SYN retransmit (1 s, 3 s, ...): ~30 s for 200 clients."""
    for port in (running_serve.http_port, running_serve.api_port):
        socks: list[socket.socket] = []
        t0 = time.monotonic()
        try:
            while len(socks) < 200 and time.monotonic() - t0 < 5:
                socks.append(socket.create_connection(("127.0.0.1", port), timeout=10))
            elapsed = time.monotonic() - t0
        finally:
            for s in socks:
                s.close()
        assert len(socks) == 200, (
            f"port {port}: only {len(socks)} of 200 connections accepted in {elapsed:.1f}s"
        )
