"""Patch an Istio VirtualService (networking.istio.io/v1) through the Kubernetes API.

A thin client over `requests`: GET the object, send a JSON Patch that changes only the owned
routes' weights (with `test` guards on resourceVersion and on each destination), GET it again and
verify. Credentials: an explicit kubeconfig, else the in-cluster service account
(/var/run/secrets/kubernetes.io/serviceaccount), else $KUBECONFIG or ~/.kube/config. Exec and
auth-provider plugins of kubeconfig are not supported (use a token or client certificate).
RBAC needed: get + patch on virtualservices in the namespace (deploy/gate/rbac.yaml).
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import requests
import yaml

from meshlens.analytics.errors import ActuatorError, RolloutConfigError
from meshlens.analytics.gate.config import RolloutConfig
from meshlens.analytics.gate.routes import (
    Ownership,
    current_canary_weight,
    json_patch,
    ownership_from_options,
    set_weights,
)

SA_DIR: Final = Path("/var/run/secrets/kubernetes.io/serviceaccount")
API_GROUP: Final = "networking.istio.io"
JSON_PATCH: Final = "application/json-patch+json"


@dataclass(frozen=True, slots=True)
class KubeCredentials:
    server: str  # https://host:port
    token: str = ""
    verify: bool | str = True  # CA bundle path, True (system CAs) or False (insecure)
    cert: tuple[str, str] | None = None  # client certificate + key files
    namespace: str = "default"
    source: str = ""


def _materialize(data_b64: str, suffix: str) -> str:
    """kubeconfig *-data fields -> a private temp file (requests wants paths)."""
    fd, path = tempfile.mkstemp(prefix="meshlens-kube-", suffix=suffix)
    with os.fdopen(fd, "wb") as f:
        f.write(base64.b64decode(data_b64))
    atexit.register(lambda: Path(path).unlink(missing_ok=True))
    return path


def in_cluster_credentials(
    sa_dir: Path = SA_DIR, environ: Mapping[str, str] | None = None
) -> KubeCredentials:
    env = os.environ if environ is None else environ
    host, port = env.get("KUBERNETES_SERVICE_HOST"), env.get("KUBERNETES_SERVICE_PORT", "443")
    if not host:
        raise ActuatorError("kubernetes", str(sa_dir), "KUBERNETES_SERVICE_HOST is not set")
    token = (sa_dir / "token").read_text().strip()  # re-read per client: tokens rotate
    ns_file = sa_dir / "namespace"
    namespace = ns_file.read_text().strip() if ns_file.exists() else "default"
    host = f"[{host}]" if ":" in host else host
    ca = sa_dir / "ca.crt"
    return KubeCredentials(
        f"https://{host}:{port}",
        token,
        str(ca) if ca.exists() else True,
        None,
        namespace,
        f"in-cluster ({sa_dir})",
    )


def kubeconfig_credentials(path: Path, context: str = "") -> KubeCredentials:
    try:
        cfg = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ActuatorError("kubernetes", str(path), f"cannot read kubeconfig: {exc}") from None

    def named(section: str, name: str) -> dict[str, Any]:
        for item in cfg.get(section) or []:
            if item.get("name") == name:
                return dict(item.get(section[:-1]) or {})
        raise ActuatorError("kubernetes", str(path), f"no {section[:-1]} named {name!r}")

    ctx_name = context or cfg.get("current-context") or ""
    ctx = named("contexts", ctx_name)
    cluster, user = named("clusters", ctx["cluster"]), named("users", ctx["user"])
    verify: bool | str = True
    if cluster.get("insecure-skip-tls-verify"):
        verify = False
    elif cluster.get("certificate-authority-data"):
        verify = _materialize(cluster["certificate-authority-data"], ".crt")
    elif cluster.get("certificate-authority"):
        verify = str((path.parent / cluster["certificate-authority"]).resolve())
    if user.get("exec") or user.get("auth-provider"):
        raise ActuatorError(
            "kubernetes",
            str(path),
            f"user {ctx['user']!r} uses an exec/auth "
            "plugin, which meshlens does not run; use a token or client cert",
        )
    token = str(user.get("token") or "")
    if not token and user.get("tokenFile"):
        token = Path(user["tokenFile"]).read_text().strip()
    cert = None
    if user.get("client-certificate-data"):
        cert = (
            _materialize(user["client-certificate-data"], ".crt"),
            _materialize(user["client-key-data"], ".key"),
        )
    elif user.get("client-certificate"):
        cert = (
            str(path.parent / user["client-certificate"]),
            str(path.parent / user["client-key"]),
        )
    return KubeCredentials(
        str(cluster["server"]).rstrip("/"),
        token,
        verify,
        cert,
        str(ctx.get("namespace") or "default"),
        f"kubeconfig {path}",
    )


def resolve_credentials(
    kubeconfig: str = "",
    context: str = "",
    sa_dir: Path = SA_DIR,
    environ: Mapping[str, str] | None = None,
) -> KubeCredentials:
    env = os.environ if environ is None else environ
    if kubeconfig:
        return kubeconfig_credentials(Path(kubeconfig).expanduser(), context)
    if (sa_dir / "token").exists() and env.get("KUBERNETES_SERVICE_HOST"):
        return in_cluster_credentials(sa_dir, env)
    path = Path(env.get("KUBECONFIG", "").split(os.pathsep)[0] or "~/.kube/config").expanduser()
    if path.exists():
        return kubeconfig_credentials(path, context)
    raise ActuatorError("kubernetes", "credentials", "not in a cluster and no kubeconfig found")


class KubeClient:
    """GET and PATCH of namespaced custom objects; nothing else."""

    def __init__(self, creds: KubeCredentials, timeout_s: float = 10.0) -> None:
        self.creds = creds
        self.timeout_s = timeout_s
        self.session = requests.Session()
        self.session.verify = creds.verify
        if creds.cert:
            self.session.cert = creds.cert
        if creds.token:
            self.session.headers["Authorization"] = f"Bearer {creds.token}"
        self.session.headers["Accept"] = "application/json"
        self.session.headers["User-Agent"] = "meshlens-gate"

    def url(self, group: str, version: str, namespace: str, plural: str, name: str) -> str:
        return f"{self.creds.server}/apis/{group}/{version}/namespaces/{namespace}/{plural}/{name}"

    def _call(self, method: str, url: str, **kw: Any) -> dict[str, Any]:
        try:
            resp = self.session.request(method, url, timeout=self.timeout_s, **kw)
        except requests.RequestException as exc:
            raise ActuatorError("kubernetes", url, f"{method} failed: {exc}") from None
        if resp.status_code >= 300:
            try:
                message = resp.json().get("message", resp.text)
            except ValueError:
                message = resp.text
            raise ActuatorError(
                "kubernetes", url, f"{method} -> HTTP {resp.status_code}: {str(message)[:300]}"
            )
        body = resp.json()
        return body if isinstance(body, dict) else {}

    def get(self, url: str) -> dict[str, Any]:
        return self._call("GET", url)

    def json_patch(self, url: str, ops: list[dict[str, Any]]) -> dict[str, Any]:
        return self._call("PATCH", url, data=json.dumps(ops), headers={"Content-Type": JSON_PATCH})


class KubernetesActuator:
    name = "kubernetes"

    def __init__(
        self,
        client: KubeClient,
        namespace: str,
        virtual_service: str,
        own: Ownership,
        version: str = "v1",
    ) -> None:
        self.client = client
        self.namespace = namespace
        self.virtual_service = virtual_service
        self.own = own
        self.url = client.url(API_GROUP, version, namespace, "virtualservices", virtual_service)
        self.sent: list[list[dict[str, Any]]] = []  # the patches sent, for logs and tests

    @classmethod
    def from_options(
        cls, opts: Mapping[str, Any], cfg: RolloutConfig, creds: KubeCredentials | None = None
    ) -> KubernetesActuator:
        vs = str(opts.get("virtualService") or opts.get("virtual_service") or "")
        if not vs:
            raise RolloutConfigError(cfg.source, "actuator.virtualService", "is required")
        creds = creds or resolve_credentials(
            str(opts.get("kubeconfig") or ""),
            str(opts.get("context") or ""),
            Path(str(opts.get("serviceAccountDir") or SA_DIR)),
        )
        own = ownership_from_options(opts, cfg.service, cfg.baseline, cfg.canary)
        namespace = str(opts.get("namespace") or creds.namespace)
        return cls(
            KubeClient(creds, float(opts.get("timeout", 10.0))),
            namespace,
            vs,
            own,
            str(opts.get("apiVersion", "v1")),
        )

    @property
    def target(self) -> str:
        return f"VirtualService {self.namespace}/{self.virtual_service}"

    def plan(self, obj: Mapping[str, Any], weight: int) -> list[dict[str, Any]]:
        """The exact patch for `obj` (pure; also used by tests and --dry-run logs)."""
        return json_patch(obj, self.own, weight)

    def set_canary_weight(self, weight: int) -> None:
        obj = self.client.get(self.url)
        ops = self.plan(obj, weight)
        expected = set_weights(obj.get("spec") or {}, self.own, weight, self.target)
        self.sent.append(ops)
        self.client.json_patch(self.url, ops)
        after = self.client.get(self.url)
        got = current_canary_weight(after.get("spec") or {}, self.own, self.target)
        if got != weight:
            raise ActuatorError(
                "kubernetes", self.target, f"read back canary weight {got}%, expected {weight}%"
            )
        # Nothing else in the spec may have changed by our hand (someone else may edit
        # concurrently; the resourceVersion test makes that a failed patch, not a merge).
        with contextlib.suppress(KeyError):
            if set_weights(after["spec"], self.own, weight, self.target) != expected:
                raise ActuatorError(
                    "kubernetes", self.target, "the object differs from the one patched"
                )

    def current_canary_weight(self) -> int | None:
        obj = self.client.get(self.url)
        return current_canary_weight(obj.get("spec") or {}, self.own, self.target)

    def describe(self) -> str:
        return f"kubernetes {self.target} ({self.own.describe()}) via {self.client.creds.source}"
