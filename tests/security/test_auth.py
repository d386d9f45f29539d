"""`--auth-token` on every port and route, TLS and client certificates made in the test, and
what `meshlens ui` exposes.

tests/collector/receivers/test_security.py covers the token on OTLP traces / ALS / OTLP/HTTP
traces and /metrics, and TLS with and without client certificates; this adds every API route
(analytics, judge, gate, checks), every gRPC service and OTLP/HTTP path, certificates from a
foreign CA, the API port under TLS, and the UI's bind address.
"""

from __future__ import annotations

import os
import signal
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from meshlens.cli import build_parser
from meshlens.collector.receivers import otlp
from meshlens.localmesh.ports import free_port
from meshlens.server import Collector
from tests.collector.conftest import REPO, ServeProcess, _serve_env, http_get, http_post, wait_for
from tests.collector.receivers.certs import make_tls_files
from tests.collector.receivers.grpc_client import export, stream_als
from tests.collector.receivers.payloads import (
    als_message,
    logs_request,
    metrics_request,
    traces_request,
)

TOKEN = "tok-9f8e7d6c5b4a-secret"
GOOD = {"Authorization": f"Bearer {TOKEN}"}
BAD_HEADERS = [
    {},
    {"Authorization": "Bearer wrong"},
    {"Authorization": TOKEN},  # no scheme
    {"Authorization": f"Basic {TOKEN}"},
    {"Authorization": f"Bearer {TOKEN} "},
    {"Authorization": f"bearer {TOKEN}x"},
    {"X-Auth-Token": TOKEN},
]
OPEN = {"/healthz", "/readyz"}  # Kubernetes probes cannot send headers


def api_routes() -> list[tuple[str, str]]:
    parser, _ = build_parser("serve")
    ns = parser.parse_args(["--data-dir", "/nonexistent"])
    return [(r.method, r.path.replace("/*", "/demo")) for r in Collector(ns).api_routes()]


def test_every_api_route_requires_the_token(serve_factory: Callable[..., ServeProcess]) -> None:
    sp = serve_factory(env={"MESHLENS_AUTH_TOKEN": TOKEN})
    routes = api_routes()
    assert ("POST", "/api/v1/sql") in routes and len(routes) > 5
    open_to_anyone = []
    for method, path in routes:
        url = sp.api_url(path)
        for headers in BAD_HEADERS:
            if method == "GET":
                status, body, _ = http_get(url, headers)
            else:
                status, body, _ = http_post(
                    url, b"{}", {**headers, "Content-Type": "application/json"}
                )
            if path in OPEN:
                assert status == 200
            elif status != 401:
                open_to_anyone.append(f"{method} {path} {headers} -> {status}")
            assert TOKEN not in body.decode(errors="replace")
        if path not in OPEN:  # with the token the route is reached (whatever it answers)
            status = (
                http_get(url, GOOD)[0]
                if method == "GET"
                else http_post(url, b"{}", {**GOOD, "Content-Type": "application/json"})[0]
            )
            assert status != 401, (method, path)
    assert not open_to_anyone, "\n".join(open_to_anyone)


def test_every_grpc_service_and_otlp_http_path_requires_the_token(
    serve_factory: Callable[..., ServeProcess],
) -> None:
    sp = serve_factory("--auth-token", TOKEN)
    bodies = {
        otlp.TRACES: traces_request(2).SerializeToString(),
        otlp.METRICS: metrics_request(2).SerializeToString(),
        otlp.LOGS: logs_request(2).SerializeToString(),
    }
    bad_md = [
        (),
        (("authorization", "Bearer wrong"),),
        (("authorization", f"Basic {TOKEN}"),),
        (("authorization", TOKEN),),
    ]
    with grpc.insecure_channel(sp.grpc_target) as ch:
        for signal, raw in bodies.items():
            for md in bad_md:
                with pytest.raises(grpc.RpcError) as err:
                    export(ch, signal, raw, md)
                assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
                assert TOKEN not in (err.value.details() or "")
            export(ch, signal, raw, (("authorization", f"Bearer {TOKEN}"),))
        for md in bad_md:
            with pytest.raises(grpc.RpcError) as err:
                stream_als(ch, [als_message(1, first=True)], md)
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        # grpc.health.v1 stays open on purpose (kubelet gRPC probes send no metadata); it
        # reveals only SERVING / NOT_SERVING.
        health = health_pb2_grpc.HealthStub(ch)
        assert health.Check(health_pb2.HealthCheckRequest()).status == 1
    for signal, raw in bodies.items():
        url = sp.otlp_url(signal.http_path)
        for headers in BAD_HEADERS:
            status, body, _ = http_post(
                url, raw, {**headers, "Content-Type": "application/x-protobuf"}
            )
            assert status == 401, (signal.http_path, headers)
            assert TOKEN not in body.decode(errors="replace")
        assert http_post(url, raw, {**GOOD, "Content-Type": "application/x-protobuf"})[0] == 200
    # no route on the OTLP/HTTP port is open without the token, not even unknown paths
    assert http_get(sp.otlp_url("/healthz"))[0] == 401


def test_client_certificates_from_another_ca_are_refused(
    serve_factory: Callable[..., ServeProcess],
    tmp_path: Path,
) -> None:
    ours = make_tls_files(tmp_path / "ours")
    theirs = make_tls_files(tmp_path / "theirs")  # a different CA with look-alike certificates
    sp = serve_factory(
        "--tls-cert",
        str(ours.server_cert),
        "--tls-key",
        str(ours.server_key),
        "--tls-client-ca",
        str(ours.ca),
    )
    spans = traces_request(2).SerializeToString()
    ca = ours.ca.read_bytes()
    foreign = grpc.ssl_channel_credentials(
        ca, theirs.client_key.read_bytes(), theirs.client_cert.read_bytes()
    )
    with grpc.secure_channel(sp.grpc_target, foreign) as ch:
        with pytest.raises(grpc.RpcError) as err:
            export(ch, otlp.TRACES, spans)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    # a client that trusts another CA does not accept our server
    with grpc.secure_channel(
        sp.grpc_target,
        grpc.ssl_channel_credentials(
            theirs.ca.read_bytes(), ours.client_key.read_bytes(), ours.client_cert.read_bytes()
        ),
    ) as ch:
        with pytest.raises(grpc.RpcError) as err:
            export(ch, otlp.TRACES, spans)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    ctx = ssl.create_default_context(cafile=str(ours.ca))
    ctx.load_cert_chain(str(theirs.client_cert), str(theirs.client_key))
    with pytest.raises(OSError):
        http_post(
            sp.otlp_url("/v1/traces", "https"),
            spans,
            {"Content-Type": "application/x-protobuf"},
            context=ctx,
        )
    good = ssl.create_default_context(cafile=str(ours.ca))
    good.load_cert_chain(str(ours.client_cert), str(ours.client_key))
    assert (
        http_post(
            sp.otlp_url("/v1/traces", "https"),
            spans,
            {"Content-Type": "application/x-protobuf"},
            context=good,
        )[0]
        == 200
    )


def test_the_api_port_is_tls_too_when_tls_is_configured(
    serve_factory: Callable[..., ServeProcess],
    tmp_path: Path,
) -> None:
    """With --tls-cert the API port (which carries the bearer token and answers
    /api/v1/sql) speaks TLS too, so the token never crosses the network in clear."""
    tls = make_tls_files(tmp_path / "tls")
    sp = serve_factory(
        "--tls-cert", str(tls.server_cert), "--tls-key", str(tls.server_key), "--auth-token", TOKEN
    )
    ctx = ssl.create_default_context(cafile=str(tls.ca))
    url = f"https://127.0.0.1:{sp.api_port}/metrics"
    req = urllib.request.Request(url, headers=GOOD)
    try:
        with urllib.request.urlopen(req, timeout=5, context=ctx) as resp:
            status = resp.status
    except OSError as exc:
        pytest.fail(f"the API port does not speak TLS with --tls-cert set: {exc}")
    assert status == 200


def test_meshlens_ui_binds_loopback_only_by_default(tmp_path: Path) -> None:
    """`meshlens ui` listens on loopback only unless asked to (--host 0.0.0.0 in a container,
    where it requires sign-in: tests/dashboards/test_auth_signin.py). On loopback it makes a
    random sign-in token, prints the sign-in URL, and hands the token to Streamlit in the
    environment, not on the command line where `ps` shows it."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "meshlens", "ui", "--data-dir", str(tmp_path), "--port", str(port)],
        cwd=REPO,
        env=_serve_env(None),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        printed = [proc.stderr.readline().decode() for _ in range(3)]  # type: ignore[union-attr]
        urls = [ln.split(" at ", 1)[1].strip() for ln in printed if "sign in at " in ln]
        assert len(urls) == 1, printed
        prefix = f"http://127.0.0.1:{port}/?token="
        assert urls[0].startswith(prefix), urls
        token = urls[0][len(prefix) :]
        assert len(token) >= 40

        def listening() -> list[str]:
            if proc.poll() is not None:
                raise AssertionError(f"meshlens ui exited: {proc.stderr.read()!r}")  # type: ignore[union-attr]
            found = []
            for table in ("/proc/net/tcp", "/proc/net/tcp6"):
                for line in Path(table).read_text().splitlines()[1:]:
                    local, state = line.split()[1], line.split()[3]
                    if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
                        found.append(local.rsplit(":", 1)[0])
            return found

        addrs = wait_for(listening, 60, f"meshlens ui listening on {port}")
        # 0100007F = 127.0.0.1 (little-endian hex); anything else would be reachable from
        # other hosts
        assert set(addrs) == {"0100007F"}, addrs
        status = 0
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and status != 200:
            status = http_get(f"http://127.0.0.1:{port}/_stcore/health")[0]
        assert status == 200
        # exec: the Streamlit server is this process
        assert token not in Path(f"/proc/{proc.pid}/cmdline").read_bytes().decode()
        assert f"MESHLENS_UI_TOKEN={token}" in Path(f"/proc/{proc.pid}/environ").read_text()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
