"""--identity-binding: a sender's client certificate (its SPIFFE ID) must match the node identity
it claims, or (enforce) the ALS stream / OTLP request is refused with PERMISSION_DENIED. Real
`meshlens serve` with TLS and client certificates made here."""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from meshlens.collector.errors import ConfigError
from meshlens.collector.proto.gen import meshlens_als_pb2
from meshlens.collector.receivers import otlp
from meshlens.collector.receivers.grpc_server import GrpcOptions, server_credentials
from meshlens.collector.receivers.identity import Claim, als_claim, mismatch, parse_spiffe
from tests.collector.conftest import ServeProcess, http_get, wait_for
from tests.collector.receivers.grpc_client import export, stream_als
from tests.collector.receivers.payloads import als_message, istio_node, traces_request

# The identity payloads.istio_node() claims: namespace default, SA bookinfo-productpage.
PRODUCTPAGE = "spiffe://cluster.local/ns/default/sa/bookinfo-productpage"
ATTACKER = "spiffe://cluster.local/ns/evil/sa/default"


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    clients: dict[str, tuple[bytes, bytes]]  # name -> (key PEM, cert PEM)

    def creds(self, client: str) -> grpc.ChannelCredentials:
        key, cert = self.clients[client]
        return grpc.ssl_channel_credentials(self.ca.read_bytes(), key, cert)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_pki(d: Path, clients: dict[str, list[x509.GeneralName]]) -> Pki:
    d.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    pem = serialization.Encoding.PEM
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("identity test CA"))
        .issuer_name(_name("identity test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )

    def leaf(
        cn: str, usage: x509.ObjectIdentifier, san: list[x509.GeneralName]
    ) -> tuple[bytes, bytes]:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(cn))
            .issuer_name(ca.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(san), critical=False)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        key_pem = key.private_bytes(
            pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        return key_pem, cert.public_bytes(pem)

    server_key, server_cert = leaf(
        "meshlens",
        ExtendedKeyUsageOID.SERVER_AUTH,
        [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
    )
    pki = Pki(
        d / "ca.pem",
        d / "server.pem",
        d / "server.key",
        {n: leaf(n, ExtendedKeyUsageOID.CLIENT_AUTH, san) for n, san in clients.items()},
    )
    pki.ca.write_bytes(ca.public_bytes(pem))
    pki.server_cert.write_bytes(server_cert)
    pki.server_key.write_bytes(server_key)
    return pki


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    uri = x509.UniformResourceIdentifier
    return make_pki(
        tmp_path / "pki",
        {
            "productpage": [uri(PRODUCTPAGE)],
            "attacker": [uri(ATTACKER)],
            "no-spiffe": [x509.DNSName("client.example")],
        },
    )


def serve_with(serve_factory: Callable[..., ServeProcess], pki: Pki, mode: str) -> ServeProcess:
    return serve_factory(
        "--tls-cert",
        str(pki.server_cert),
        "--tls-key",
        str(pki.server_key),
        "--tls-client-ca",
        str(pki.ca),
        "--identity-binding",
        mode,
    )


def forged_503s(n: int = 50) -> list[bytes]:
    """The attack of the issue: productpage's identity, mtls, 503s."""
    return [als_message(n, first=True, code=503), als_message(n, first=False, code=503)]


def _denied(err: pytest.ExceptionInfo[grpc.RpcError]) -> str:
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED, err.value
    return str(err.value.details())


def test_enforce_refuses_forged_als_identity(
    serve_factory: Callable[..., ServeProcess], pki: Pki
) -> None:
    sp = serve_with(serve_factory, pki, "enforce")
    with grpc.secure_channel(sp.grpc_target, pki.creds("attacker")) as ch:
        with pytest.raises(grpc.RpcError) as err:
            stream_als(ch, forged_503s())
        msg = _denied(err)
        assert "identity binding: Envoy ALS stream: the client certificate " + ATTACKER in msg
        assert "does not match the claimed identity (namespace default, service account " in msg
    with grpc.secure_channel(sp.grpc_target, pki.creds("no-spiffe")) as ch:
        with pytest.raises(grpc.RpcError) as err:
            stream_als(ch, forged_503s())
        assert "the client certificate has no SPIFFE ID" in _denied(err)
    with grpc.secure_channel(sp.grpc_target, pki.creds("productpage")) as ch:
        # the first message must carry the identifier: without it nothing can be bound
        with pytest.raises(grpc.RpcError) as err:
            stream_als(ch, [als_message(5, first=False), als_message(5, first=True)])
        assert "the sender claims no namespace" in _denied(err)
        # the real productpage sidecar is accepted
        assert stream_als(ch, [als_message(5, first=True), als_message(5, first=False)]) == b""
    metrics = http_get(sp.api_url("/metrics"))[1].decode()
    denied = [
        ln
        for ln in metrics.splitlines()
        if 'outcome="permission_denied"' in ln and 'receiver="envoy_als"' in ln
    ]
    assert denied and float(denied[0].rsplit(" ", 1)[1]) == pytest.approx(3)
    ok = [
        ln
        for ln in metrics.splitlines()
        if "accepted" in ln and 'receiver="envoy_als"' in ln and not ln.startswith("#")
    ]
    # only the bound stream's 10 entries were stored
    assert any(float(ln.rsplit(" ", 1)[1]) == pytest.approx(10) for ln in ok), ok


def test_enforce_checks_otlp_resources(
    serve_factory: Callable[..., ServeProcess], pki: Pki
) -> None:
    sp = serve_with(serve_factory, pki, "enforce")

    def spans(namespace: str) -> bytes:
        req = traces_request(2)
        attrs = req.resource_spans[0].resource.attributes
        if namespace:
            attrs.add(key="k8s.namespace.name", value=AnyValue(string_value=namespace))
        return req.SerializeToString()

    with grpc.secure_channel(sp.grpc_target, pki.creds("productpage")) as ch:
        assert export(ch, otlp.TRACES, spans("default")) == b""
        with pytest.raises(grpc.RpcError) as err:
            export(ch, otlp.TRACES, spans("evil"))
        assert "OTLP traces: the client certificate" in _denied(err)
        with pytest.raises(grpc.RpcError) as err:
            export(ch, otlp.TRACES, spans(""))
        assert "claims no namespace" in _denied(err)
    with grpc.secure_channel(sp.grpc_target, pki.creds("attacker")) as ch:
        with pytest.raises(grpc.RpcError) as err:
            export(ch, otlp.TRACES, spans("default"))
        _denied(err)


def test_warn_accepts_and_logs(serve_factory: Callable[..., ServeProcess], pki: Pki) -> None:
    sp = serve_with(serve_factory, pki, "warn")
    with grpc.secure_channel(sp.grpc_target, pki.creds("attacker")) as ch:
        assert stream_als(ch, forged_503s(5)) == b""
    wait_for(lambda: "accepted: --identity-binding warn" in sp.log(), 10, "the warning")
    assert ATTACKER in sp.log()


def test_binding_needs_client_certificates() -> None:
    with pytest.raises(ConfigError, match=r"--identity-binding.*needs client certificates"):
        server_credentials(GrpcOptions(identity_binding="enforce"))
    with pytest.raises(ConfigError, match="choose one of off, warn, enforce"):
        server_credentials(GrpcOptions(identity_binding="strict"))


def test_claims_and_matching() -> None:
    claim = als_claim(istio_node().identifier.SerializeToString())
    assert claim == Claim("default", "bookinfo-productpage", "")
    peer = parse_spiffe(PRODUCTPAGE)
    assert peer is not None and mismatch([peer], claim) == ""
    assert mismatch([peer], Claim("default")) == ""  # no SA claimed: the namespace binds
    assert "does not match" in mismatch([peer], Claim("default", "reviews"))
    assert "does not match" in mismatch([peer], Claim("default", "", "other.domain"))
    # node id only (no metadata): the namespace comes from the node id
    msg = meshlens_als_pb2.StreamAccessLogsMessage()
    msg.identifier.node.id = "sidecar~10.0.0.9~ratings-v1-abc.shop~shop.svc.cluster.local"
    assert als_claim(msg.identifier.SerializeToString()) == Claim("shop")
    assert parse_spiffe("spiffe://td/ns/a/sa/b/extra") is None
