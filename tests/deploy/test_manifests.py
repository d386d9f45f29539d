"""Every manifest in deploy/ builds and validates: Kubernetes objects against the Kubernetes
OpenAPI schemas (kubernetes-validate, strict), Istio objects against models generated from
Istio's CRD schemas (cloudcoil-models-istio), the Dockerfile through hadolint."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from meshlens.analytics.errors import IstioConfigError
from meshlens.analytics.istio.resources import SCHEMAS, validate_document

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
BIN = Path(sys.executable).parent
KUSTOMIZATIONS = sorted(p.parent for p in DEPLOY.rglob("kustomization.yaml"))

# Kinds outside both schema sets, checked by their own tests or by hand-written checks below.
OTHER_KINDS = {
    "IstioOperator",
    "Canary",
    "AnalysisTemplate",
    "Rollout",
    "MetricTemplate",
}


def _tool(name: str) -> str:
    path = BIN / name
    if path.exists():
        return str(path)
    found = shutil.which(name)
    assert found, f"{name} is not installed (it comes with `make test`'s requirements.lock)"
    return found


def _build(kdir: Path) -> list[dict[str, Any]]:
    out = subprocess.run(
        [_tool("kubectl"), "kustomize", str(kdir)], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, f"kubectl kustomize {kdir.relative_to(ROOT)}: {out.stderr}"
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def validate_istio(doc: dict[str, Any]) -> None:
    validate_document(doc, "manifest", None)


def validate_kubernetes(doc: dict[str, Any]) -> None:
    import kubernetes_validate

    kubernetes_validate.validate(doc, "1.33.0", strict=True)


def _validate(doc: dict[str, Any]) -> None:
    group = doc.get("apiVersion", "").split("/")[0]
    if (group, doc.get("kind")) in SCHEMAS:
        validate_istio(doc)
    elif doc.get("kind") in OTHER_KINDS:
        assert doc.get("metadata", {}).get("name"), f"{doc['kind']} without a name"
    else:
        validate_kubernetes(doc)


@pytest.mark.parametrize("kdir", KUSTOMIZATIONS, ids=lambda p: str(p.relative_to(DEPLOY)))
def test_kustomization_builds_and_validates(kdir: Path) -> None:
    docs = _build(kdir)
    assert docs
    for doc in docs:
        _validate(doc)


def _plain_manifests() -> list[Path]:
    skip = {"kustomization.yaml"}
    dirs = [DEPLOY / "istio", DEPLOY / "gate"]
    return sorted(p for d in dirs if d.is_dir() for p in d.rglob("*.yaml") if p.name not in skip)


@pytest.mark.parametrize("path", _plain_manifests(), ids=lambda p: str(p.relative_to(DEPLOY)))
def test_plain_manifests_validate(path: Path) -> None:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    for doc in docs:
        if "apiVersion" in doc and "kind" in doc:
            _validate(doc)


def test_istio_operator_points_every_provider_at_meshlens() -> None:
    op = yaml.safe_load((DEPLOY / "istio" / "meshconfig.yaml").read_text())
    providers = op["spec"]["meshConfig"]["extensionProviders"]
    kinds = {k for p in providers for k in p if k != "name"}
    assert kinds == {"envoyHttpAls", "envoyTcpAls", "envoyOtelAls", "opentelemetry"}
    known = {
        "service",
        "port",
        "logName",
        "filterStateObjectsToLog",
        "additionalRequestHeadersToLog",
        "additionalResponseHeadersToLog",
        "logFormat",
        "maxTagLength",
        "grpc",
        "http",
    }
    for p in providers:
        body = next(v for k, v in p.items() if k != "name")
        assert body["service"] == "meshlens.meshlens.svc.cluster.local"
        assert body["port"] == 4317
        assert set(body) <= known, f"{p['name']}: unknown fields {set(body) - known}"


def test_schema_check_rejects_unknown_fields() -> None:
    doc = yaml.safe_load((DEPLOY / "istio" / "productpage-canary.yaml").read_text().split("---")[1])
    doc["spec"]["http"][0]["route"][0]["wieght"] = 5
    with pytest.raises(
        IstioConfigError, match=r"at spec.http\[0\].route\[0\].wieght: unknown field"
    ):
        validate_istio(doc)


def test_dockerfile_passes_hadolint() -> None:
    out = subprocess.run(
        [
            _tool("hadolint"),
            "--failure-threshold",
            "warning",
            str(DEPLOY / "docker" / "Dockerfile"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stdout + out.stderr
