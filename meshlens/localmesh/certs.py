"""A demo certificate authority and SPIFFE workload certificates (like Istio's istiod CA).

Leaf certificates carry exactly one URI SAN `spiffe://<trust-domain>/ns/<ns>/sa/<sa>` and are
valid for both TLS server and client auth, as Istio's workload certificates are. Keys are
ECDSA P-256 (fast to make; Envoy/BoringSSL accepts them).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DEFAULT_TRUST_DOMAIN: Final = "cluster.local"
_VALIDITY: Final = dt.timedelta(days=2)


def spiffe_id(
    namespace: str, service_account: str, trust_domain: str = DEFAULT_TRUST_DOMAIN
) -> str:
    return f"spiffe://{trust_domain}/ns/{namespace}/sa/{service_account}"


@dataclass(frozen=True, slots=True)
class CertFiles:
    """PEM files of one identity: its chain, key and the CA bundle to verify peers with."""

    cert: Path
    key: Path
    ca: Path
    spiffe_id: str


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


class DemoCA:
    """A self-signed root that issues SPIFFE workload certificates into `directory`."""

    def __init__(self, directory: Path, trust_domain: str = DEFAULT_TRUST_DOMAIN) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.trust_domain = trust_domain
        self._key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        name = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, trust_domain),
                x509.NameAttribute(NameOID.COMMON_NAME, "meshlens demo root CA"),
            ]
        )
        self._name = name
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + _VALIDITY * 5)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(self._key.public_key()), critical=False
            )
            .sign(self._key, hashes.SHA256())
        )
        self.ca_path = self.directory / "root-cert.pem"
        self.ca_path.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    def issue(self, namespace: str, service_account: str, name: str | None = None) -> CertFiles:
        """A workload certificate for `spiffe://<td>/ns/<namespace>/sa/<service_account>`."""
        uri = spiffe_id(namespace, service_account, self.trust_domain)
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            # Istio's workload certificates have an empty subject; a short O= keeps tools happy.
            .subject_name(
                x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, self.trust_domain)])
            )
            .issuer_name(self._name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + _VALIDITY)
            .add_extension(
                x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri)]), critical=True
            )
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=True,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()),
                critical=False,
            )
            .sign(self._key, hashes.SHA256())
        )
        stem = name or f"{namespace}.{service_account}"
        cert_path = self.directory / f"{stem}.cert.pem"
        key_path = self.directory / f"{stem}.key.pem"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(_key_pem(key))
        key_path.chmod(0o600)
        return CertFiles(cert_path, key_path, self.ca_path, uri)
