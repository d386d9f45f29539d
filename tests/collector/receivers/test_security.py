"""Bearer token on every receiver (gRPC OTLP and ALS, OTLP/HTTP) and the API port; TLS with and
without client certificates on the gRPC and OTLP/HTTP ports."""

from __future__ import annotations

import ssl
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

from meshlens.collector.receivers import otlp
from tests.collector.conftest import REPO, ServeProcess, http_get, http_post
from tests.collector.receivers.certs import make_tls_files
from tests.collector.receivers.grpc_client import export, stream_als
from tests.collector.receivers.payloads import als_message, traces_request
from tests.collector.receivers.rows import count_rows
from tests.collector.receivers.sdk import send_spans

TOKEN = "s3cret-token-for-tests"
AUTH = (("authorization", f"Bearer {TOKEN}"),)
PB = {"Content-Type": "application/x-protobuf"}


def test_bearer_token_is_required_everywhere_but_health(
    serve_factory: Callable[..., ServeProcess],
) -> None:
    sp = serve_factory(env={"MESHLENS_AUTH_TOKEN": TOKEN})
    spans = traces_request(3).SerializeToString()
    with grpc.insecure_channel(sp.grpc_target) as ch:
        for md in [(), (("authorization", "Bearer wrong"),), (("authorization", TOKEN),)]:
            with pytest.raises(grpc.RpcError) as err:
                export(ch, otlp.TRACES, spans, md)
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
            with pytest.raises(grpc.RpcError) as err:
                stream_als(ch, [als_message(2, first=True)], md)
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        export(ch, otlp.TRACES, spans, AUTH)
        stream_als(ch, [als_message(2, first=True)], AUTH)
        # Kubernetes gRPC probes cannot send headers: health stays open.
        resp = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=""))
        assert resp.status == health_pb2.HealthCheckResponse.SERVING
    send_spans(
        OTLPSpanExporter(
            endpoint=sp.grpc_target, insecure=True, headers={"authorization": f"Bearer {TOKEN}"}
        ),
        10,
    )

    url = sp.otlp_url("/v1/traces")
    assert http_post(url, spans, PB)[0] == 401
    assert http_post(url, spans, {**PB, "Authorization": f"Bearer {TOKEN}"})[0] == 200
    assert http_get(sp.api_url("/metrics"))[0] == 401
    status, body, _ = http_get(sp.api_url("/metrics"), {"Authorization": f"Bearer {TOKEN}"})
    assert status == 200 and b'outcome="unauthenticated"' in body
    assert http_get(sp.api_url("/healthz"))[0] == 200
    assert http_get(sp.api_url("/readyz"))[0] == 200

    assert sp.stop() == 0
    assert TOKEN not in sp.log()
    assert count_rows(sp.data_dir, "spans") == 3 + 10 + 3
    assert count_rows(sp.data_dir, "requests") == 2


def test_tls_and_client_certificates(
    serve_factory: Callable[..., ServeProcess], tmp_path: Path
) -> None:
    tls = make_tls_files(tmp_path / "tls")
    ca = tls.ca.read_bytes()
    spans = traces_request(4).SerializeToString()

    sp = serve_factory("--tls-cert", str(tls.server_cert), "--tls-key", str(tls.server_key))
    with grpc.secure_channel(sp.grpc_target, grpc.ssl_channel_credentials(ca)) as ch:
        export(ch, otlp.TRACES, spans)
        stream_als(ch, [als_message(1, first=True)])
    with grpc.insecure_channel(sp.grpc_target) as ch:  # plaintext to a TLS port fails
        with pytest.raises(grpc.RpcError) as err:
            export(ch, otlp.TRACES, spans)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    ctx = ssl.create_default_context(cafile=str(tls.ca))
    assert http_post(sp.otlp_url("/v1/traces", "https"), spans, PB, context=ctx)[0] == 200
    send_spans(
        OTLPSpanExporter(
            endpoint=f"https://{sp.grpc_target}", credentials=grpc.ssl_channel_credentials(ca)
        ),
        5,
    )
    assert sp.stop() == 0
    assert count_rows(sp.data_dir, "spans") == 4 + 4 + 5

    mtls = serve_factory(
        "--tls-cert",
        str(tls.server_cert),
        "--tls-key",
        str(tls.server_key),
        "--tls-client-ca",
        str(tls.ca),
    )
    with grpc.secure_channel(mtls.grpc_target, grpc.ssl_channel_credentials(ca)) as ch:
        with pytest.raises(grpc.RpcError) as err:  # no client certificate
            export(ch, otlp.TRACES, spans)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    client_creds = grpc.ssl_channel_credentials(
        ca, tls.client_key.read_bytes(), tls.client_cert.read_bytes()
    )
    with grpc.secure_channel(mtls.grpc_target, client_creds) as ch:
        export(ch, otlp.TRACES, spans)
    with pytest.raises(OSError):  # https without a client certificate
        http_post(mtls.otlp_url("/v1/traces", "https"), spans, PB, context=ctx)
    ctx.load_cert_chain(str(tls.client_cert), str(tls.client_key))
    assert http_post(mtls.otlp_url("/v1/traces", "https"), spans, PB, context=ctx)[0] == 200
    assert mtls.stop() == 0
    assert count_rows(mtls.data_dir, "spans") == 8


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--tls-cert", "{d}/missing.pem", "--tls-key", "{d}/missing.key"], "cannot read"),
        (["--tls-cert", "{d}/garbage.pem", "--tls-key", "{d}/garbage.pem"], "not a usable PEM"),
        (["--tls-client-ca", "{d}/garbage.pem"], "needs --tls-cert and --tls-key"),
        (["--tls-cert", "{d}/garbage.pem"], "give both"),
    ],
    ids=["missing", "garbage", "ca-without-cert", "cert-without-key"],
)
def test_bad_tls_configuration_is_a_clear_startup_error(
    tmp_path: Path, flags: list[str], message: str
) -> None:
    (tmp_path / "garbage.pem").write_text("-----BEGIN CERTIFICATE-----\nnope\n")
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "meshlens",
            "serve",
            "--data-dir",
            str(tmp_path / "d"),
            "--grpc-port",
            "0",
            "--http-port",
            "0",
            "--api-port",
            "0",
            *(f.format(d=tmp_path) for f in flags),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert out.returncode == 2
    assert message in out.stderr and "Traceback" not in out.stderr
    assert "collector ready" not in out.stderr
