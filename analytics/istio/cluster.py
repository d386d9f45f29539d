"""Read Istio resources from a cluster through the Kubernetes API (a thin client over requests).

Credentials: in-cluster (the pod's service account) or a kubeconfig's current context (token or
client certificate; CA from file or inline data). Only GETs: the four kinds we check, and Pods and
Services for their labels (what policy selectors match; without them a selector on a label
telemetry lacks cannot be evaluated). Reading those two needs `list` on pods and services; when
RBAC refuses it, the check runs without them and says so.
"""

from __future__ import annotations

import base64
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import requests
import yaml

from meshlens.analytics.errors import ClusterAccessError
from meshlens.analytics.istio.resources import IstioConfig, merge, parse_documents

SA_DIR: Final = Path("/var/run/secrets/kubernetes.io/serviceaccount")
RESOURCES: Final = (
    ("networking.istio.io", "v1", "virtualservices"),
    ("networking.istio.io", "v1", "destinationrules"),
    ("security.istio.io", "v1", "authorizationpolicies"),
    ("security.istio.io", "v1", "peerauthentications"),
)
# Core objects read for labels only (group "" = /api/v1): optional.
LABEL_SOURCES: Final = (("", "v1", "pods"), ("", "v1", "services"))


@dataclass(frozen=True, slots=True)
class Credentials:
    server: str
    token: str = ""
    ca_file: str = ""
    ca_data: bytes = b""
    cert_data: bytes = b""
    key_data: bytes = b""
    insecure: bool = False


def in_cluster() -> Credentials | None:
    host = os.environ.get("KUBERNETES_SERVICE_HOST")
    if not host or not (SA_DIR / "token").exists():
        return None
    port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
    return Credentials(
        f"https://{host}:{port}", (SA_DIR / "token").read_text().strip(), str(SA_DIR / "ca.crt")
    )


def _b64(value: str | None) -> bytes:
    return base64.b64decode(value) if value else b""


def from_kubeconfig(path: Path) -> Credentials:
    try:
        cfg = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ClusterAccessError(str(path), f"cannot read kubeconfig: {exc}") from None
    ctx_name = cfg.get("current-context")
    ctx = next((c["context"] for c in cfg.get("contexts", []) if c["name"] == ctx_name), None)
    if ctx is None:
        raise ClusterAccessError(str(path), f"current-context {ctx_name!r} not found")
    cluster = next(
        (c["cluster"] for c in cfg.get("clusters", []) if c["name"] == ctx["cluster"]), None
    )
    user: dict[str, Any] = next(
        (u["user"] for u in cfg.get("users", []) if u["name"] == ctx.get("user")), {}
    )
    if cluster is None:
        raise ClusterAccessError(str(path), f"cluster {ctx['cluster']!r} not found")
    token = user.get("token", "")
    if not token and user.get("tokenFile"):
        token = Path(user["tokenFile"]).read_text().strip()
    return Credentials(
        server=cluster["server"].rstrip("/"),
        token=token,
        ca_file=cluster.get("certificate-authority", ""),
        ca_data=_b64(cluster.get("certificate-authority-data")),
        cert_data=_b64(user.get("client-certificate-data")),
        key_data=_b64(user.get("client-key-data")),
        insecure=bool(cluster.get("insecure-skip-tls-verify", False)),
    )


@contextmanager
def _session(creds: Credentials) -> Iterator[requests.Session]:
    with tempfile.TemporaryDirectory() as tmp, requests.Session() as s:
        if creds.token:
            s.headers["Authorization"] = f"Bearer {creds.token}"
        if creds.ca_data:
            (Path(tmp) / "ca.crt").write_bytes(creds.ca_data)
            s.verify = str(Path(tmp) / "ca.crt")
        elif creds.ca_file:
            s.verify = creds.ca_file
        if creds.insecure:
            s.verify = False
        if creds.cert_data:
            (Path(tmp) / "c.crt").write_bytes(creds.cert_data)
            (Path(tmp) / "c.key").write_bytes(creds.key_data)
            s.cert = (str(Path(tmp) / "c.crt"), str(Path(tmp) / "c.key"))
        yield s


def _url(server: str, group: str, version: str, plural: str, namespace: str | None) -> str:
    scope = f"/namespaces/{namespace}" if namespace else ""
    base = f"{server}/api/{version}" if not group else f"{server}/apis/{group}/{version}"
    return f"{base}{scope}/{plural}"


def load_from_cluster(
    creds: Credentials, namespace: str | None = None, timeout_s: float = 10.0
) -> IstioConfig:
    """Every resource of the checked kinds (all namespaces, or one), and the labels of the
    pods and services there."""
    configs: list[IstioConfig] = []
    notes: list[str] = []
    with _session(creds) as s:
        for group, version, plural in (*RESOURCES, *LABEL_SOURCES):
            url = _url(creds.server, group, version, plural, namespace)
            optional = (group, version, plural) in LABEL_SOURCES
            try:
                resp = s.get(url, timeout=timeout_s)
            except requests.RequestException as exc:
                raise ClusterAccessError(url, f"request failed: {type(exc).__name__}") from None
            if resp.status_code == 404:  # kind not installed
                continue
            if optional and resp.status_code in (401, 403):
                notes.append(
                    f"{plural} not readable at {url} (HTTP {resp.status_code}): workload labels "
                    "come from telemetry and --config manifests only"
                )
                continue
            if resp.status_code != 200:
                raise ClusterAccessError(url, f"HTTP {resp.status_code}: {resp.text[:200]}")
            body: dict[str, Any] = resp.json()
            kind = body.get("kind", "List").removesuffix("List")
            for item in body.get("items", []):
                item.setdefault("apiVersion", f"{group}/{version}" if group else version)
                item.setdefault("kind", kind)
            configs.append(
                parse_documents(
                    yaml.safe_dump({"kind": "List", "items": body.get("items", [])}), url
                )
            )
    return merge([*configs, IstioConfig(notes=tuple(notes))])
