"""JSON Schemas of Argo Rollouts' CRDs (v1alpha1), trimmed, and strict validation against them.

The schemas in schemas/ are the `openAPIV3Schema` of argoproj/argo-rollouts'
manifests/crds/rollout-crd.yaml and analysis-template-crd.yaml (see SOURCES.md) with only the pod
specs cut out (Rollout spec.template.spec, the Job provider's spec): those are Kubernetes'
PodSpec, 230 kB each, and the tests validate the Rollout's pod template with kubernetes-validate
instead. Regenerate:

    python -m tests.conformance.argo.crd_schema <argo-rollouts checkout>/manifests/crds

`validate` is strict like `kubectl apply` (server-side field validation "Strict", kubectl's
default): an unknown field is an error unless the schema preserves unknown fields.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import jsonschema
import yaml

HERE = Path(__file__).resolve().parent
SCHEMAS = HERE / "schemas"
FILES = {
    "Rollout": ("rollout-crd.yaml", "rollout-v1alpha1.schema.json"),
    "AnalysisTemplate": ("analysis-template-crd.yaml", "analysistemplate-v1alpha1.schema.json"),
}
# (kind, path of property names) replaced by an object that keeps anything
_CUT: dict[str, list[tuple[str, ...]]] = {
    "Rollout": [("spec", "template", "spec")],
    "AnalysisTemplate": [("spec", "metrics", "*", "provider", "job", "spec")],
}
_ANY_OBJECT: dict[str, Any] = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}


def _cut(schema: dict[str, Any], path: tuple[str, ...]) -> None:
    node = schema
    for name in path[:-1]:
        node = node["items"] if name == "*" else node["properties"][name]
    node["properties"][path[-1]] = dict(_ANY_OBJECT)


def trimmed_schema(crd: dict[str, Any], kind: str) -> dict[str, Any]:
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1alpha1"]
    schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    for path in _CUT[kind]:
        _cut(schema, path)
    return schema


def _strict(node: Any) -> Any:
    """additionalProperties: false on every object schema that lists its properties and does not
    preserve unknown fields (what the API server's strict field validation enforces)."""
    if isinstance(node, list):
        return [_strict(v) for v in node]
    if not isinstance(node, dict):
        return node
    out = {k: _strict(v) for k, v in node.items()}
    if (
        "properties" in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
        and "additionalProperties" not in out
    ):
        out["additionalProperties"] = False
    return out


def load(kind: str) -> dict[str, Any]:
    schema = json.loads((SCHEMAS / FILES[kind][1]).read_text())
    strict: dict[str, Any] = _strict(schema)
    # metadata is ObjectMeta, left open by CRD schemas: the API server validates it.
    strict["properties"]["metadata"] = {"type": "object"}
    return strict


def validate(doc: dict[str, Any]) -> None:
    """Raises jsonschema.ValidationError when `doc` does not fit its kind's CRD schema."""
    assert doc.get("apiVersion") == "argoproj.io/v1alpha1", doc.get("apiVersion")
    jsonschema.Draft7Validator(load(str(doc["kind"]))).validate(doc)


def main(crd_dir: str) -> None:
    SCHEMAS.mkdir(exist_ok=True)
    for kind, (crd_file, out) in FILES.items():
        crd = yaml.safe_load((Path(crd_dir) / crd_file).read_text())
        text = json.dumps(trimmed_schema(crd, kind), indent=1, sort_keys=True) + "\n"
        (SCHEMAS / out).write_text(text)


if __name__ == "__main__":
    main(sys.argv[1])
