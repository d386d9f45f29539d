"""The scale-out overlay says what the object-store path needs (test_manifests.py validates the
schemas): stateless collectors named after their pods, shipping to the bucket the UI reads."""

from __future__ import annotations

from typing import Any

from meshlens.collector.store.objectstore import StoreUrl
from meshlens.settings import OBJECT_STORE
from tests.deploy.test_manifests import DEPLOY, _build


def _by_kind() -> dict[tuple[str, str], dict[str, Any]]:
    docs = _build(DEPLOY / "k8s" / "overlays" / "scale-out")
    return {(d["kind"], d["metadata"]["name"]): d for d in docs}


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("valueFrom", e.get("value")) for e in container.get("env", [])}


def test_scale_out_overlay_wires_collectors_and_ui_to_the_bucket() -> None:
    objs = _by_kind()
    assert not [k for k in objs if k[0] == "StatefulSet"], "collectors must be stateless"
    config = objs[("ConfigMap", "meshlens-config")]["data"]
    StoreUrl.parse(config["MESHLENS_OBJECT_STORE"])  # a valid s3:// location
    for s in OBJECT_STORE:
        assert s.env in config, f"{s.env} not set in the overlay's ConfigMap"

    collector = objs[("Deployment", "meshlens-collector")]
    assert collector["spec"]["replicas"] >= 2
    pod = collector["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes["data"]
    env = _env(pod["containers"][0])
    assert env["MESHLENS_NODE"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["AWS_ACCESS_KEY_ID"]["secretKeyRef"]["name"] == "meshlens-s3"
    assert pod["terminationGracePeriodSeconds"] >= 60  # time for the final ship

    ui = objs[("Deployment", "meshlens-ui")]["spec"]["template"]["spec"]["containers"][0]
    ref = _env(ui)["MESHLENS_DATA_DIR"]["configMapKeyRef"]
    assert ref == {"name": "meshlens-config", "key": "MESHLENS_OBJECT_STORE"}
    assert objs[("Service", "meshlens-ui")]["spec"]["selector"] == {"app": "meshlens-ui"}
    ports = {p["port"] for p in objs[("Service", "meshlens")]["spec"]["ports"]}
    assert ports == {4317, 4318, 8080}
    for (kind, name), doc in objs.items():
        if kind not in ("Namespace", "ClusterRole"):
            assert doc["metadata"].get("namespace") == "meshlens", f"{kind}/{name}"
