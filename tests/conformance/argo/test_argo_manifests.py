"""The Argo objects deploy/gate ships fit Argo Rollouts' CRD schemas (crd_schema.py, strict like
`kubectl apply`), the Rollout's pod template fits Kubernetes' PodTemplateSpec, and the Istio
objects fit Istio's (tests/deploy/test_manifests.py validates those for every deploy/ file)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tests.conformance.argo import crd_schema

ROOT = Path(__file__).resolve().parents[3]
GATE = ROOT / "deploy" / "gate"
ARGO_FILES = sorted(GATE.glob("argo-*.yaml"))


def argo_docs() -> list[dict[str, Any]]:
    docs = []
    for path in ARGO_FILES:
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def test_the_example_is_complete() -> None:
    kinds = sorted(d["kind"] for d in argo_docs())
    assert kinds == ["AnalysisTemplate", "DestinationRule", "Rollout", "VirtualService"]


@pytest.mark.parametrize("kind", ["Rollout", "AnalysisTemplate"])
def test_argo_objects_fit_the_crd_schema(kind: str) -> None:
    (doc,) = [d for d in argo_docs() if d["kind"] == kind]
    crd_schema.validate(doc)
    bad = copy.deepcopy(doc)
    bad["spec"]["unknownField"] = 1  # strict: a typo is an error, not silently dropped
    with pytest.raises(jsonschema.ValidationError):
        crd_schema.validate(bad)


def test_metric_fields_argo_reads() -> None:
    (doc,) = [d for d in argo_docs() if d["kind"] == "AnalysisTemplate"]
    (metric,) = doc["spec"]["metrics"]
    bad = copy.deepcopy(doc)
    bad["spec"]["metrics"][0]["provider"]["web"]["timeoutSeconds"] = "20s"
    with pytest.raises(jsonschema.ValidationError):
        crd_schema.validate(bad)
    # background analysis: no count, so it runs until the rollout completes
    assert "count" not in metric and metric["interval"] == "1m"


def test_rollout_pod_template_is_a_pod_template() -> None:
    import kubernetes_validate

    (ro,) = [d for d in argo_docs() if d["kind"] == "Rollout"]
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": ro["metadata"]["name"], "namespace": ro["metadata"]["namespace"]},
        "spec": {"selector": ro["spec"]["selector"], "template": ro["spec"]["template"]},
    }
    kubernetes_validate.validate(deployment, "1.33.0", strict=True)
