"""Issue 18 item 10: idle connections to the OTLP/HTTP port cannot use up the descriptors of a
`meshlens serve` whose RLIMIT_NOFILE is low; gRPC ingest and /readyz keep working, and the
port serves again once the idle clients leave."""

from __future__ import annotations

import os
import resource
import socket
import time
from collections.abc import Callable

import grpc
import pytest

from meshlens.collector.receivers import otlp
from tests.collector.conftest import ServeProcess, http_get, http_post, wait_for
from tests.collector.receivers.grpc_client import export
from tests.collector.receivers.payloads import traces_request
from tests.collector.receivers.rows import wait_rows

FD_LIMIT = 256
IDLE = 240  # with the process's own descriptors, more than FD_LIMIT without a cap
CAP = 64
PB = {"Content-Type": "application/x-protobuf"}


def _open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


@pytest.mark.integration
def test_idle_http_connections_leave_descriptors_for_the_rest(
    serve_factory: Callable[..., ServeProcess],
) -> None:
    sp = serve_factory("--http-max-connections", str(CAP))
    resource.prlimit(sp.proc.pid, resource.RLIMIT_NOFILE, (FD_LIMIT, FD_LIMIT))
    spans = traces_request(5).SerializeToString()
    idle: list[socket.socket] = []
    try:
        for _ in range(IDLE):
            idle.append(socket.create_connection(("127.0.0.1", sp.http_port), timeout=5))
        # The refused ones are closed by the server: wait until it has seen all of them.
        wait_for(lambda: _open_fds(sp.proc.pid) < FD_LIMIT - 32, 20, "refused sockets closed")
        t0 = time.monotonic()
        assert http_get(sp.api_url("/readyz"), timeout=10)[0] == 200
        with grpc.insecure_channel(sp.grpc_target) as ch:
            export(ch, otlp.TRACES, spans)
        assert time.monotonic() - t0 < 10
        # Over the cap: a 503 sent at accept, or, when the request was still being written as
        # the server closed, a reset; both are retried by exporters, neither holds a descriptor.
        try:
            status, _, headers = http_post(sp.otlp_url("/v1/traces"), spans, PB)
            assert status == 503 and headers.get("Retry-After") == "1"
        except OSError:
            pass
    finally:
        for s in idle:
            s.close()

    def http_export() -> bool:
        try:
            return http_post(sp.otlp_url("/v1/traces"), spans, PB)[0] == 200
        except OSError:
            return False

    wait_for(http_export, 20, "OTLP/HTTP after the idle clients left")
    assert wait_rows(sp.data_dir, "spans", 10) == 10
    assert "Too many open files" not in sp.log()
