"""The scale-out overlay says what the object-store path needs (test_manifests.py validates the
schemas): collectors named after their pods, shipping to the bucket the UI reads, and nothing
acknowledged lost when a collector restarts: each one is a StatefulSet pod with its own
persistent volume under the data dir (WAL included) and a node name that survives restarts, so
it replays its own WAL and ships what it owed."""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any

import pytest

from meshlens.collector.store.layout import check_node, parse_wal_segment_name, wal_segment_path
from meshlens.collector.store.objectstore import StoreUrl
from meshlens.settings import OBJECT_STORE
from tests.deploy.test_manifests import DEPLOY, _build

Objs = dict[tuple[str, str], dict[str, Any]]
COLLECTOR = "meshlens-collector"


@pytest.fixture(scope="module")
def objs() -> Objs:
    docs = _build(DEPLOY / "k8s" / "overlays" / "scale-out")
    return {(d["kind"], d["metadata"]["name"]): d for d in docs}


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("valueFrom", e.get("value")) for e in container.get("env", [])}


def _collectors(objs: Objs) -> dict[str, Any]:
    assert ("Deployment", COLLECTOR) not in objs, "collectors must not be a Deployment"
    assert ("StatefulSet", COLLECTOR) in objs, "collectors must be a StatefulSet"
    return objs[("StatefulSet", COLLECTOR)]


def _serve(pod: dict[str, Any]) -> dict[str, Any]:
    (container,) = [c for c in pod["containers"] if c["args"][0] == "serve"]
    return container


def _data_dir(container: dict[str, Any]) -> PurePosixPath:
    args = container["args"]
    return PurePosixPath(args[args.index("--data-dir") + 1])


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and selector.items() <= labels.items()


def test_scale_out_overlay_wires_collectors_and_ui_to_the_bucket(objs: Objs) -> None:
    config = objs[("ConfigMap", "meshlens-config")]["data"]
    StoreUrl.parse(config["MESHLENS_OBJECT_STORE"])  # a valid s3:// location
    for s in OBJECT_STORE:
        assert s.env in config, f"{s.env} not set in the overlay's ConfigMap"
    assert ("StatefulSet", "meshlens") not in objs  # the base's collector+UI pod is replaced

    collector = _collectors(objs)
    assert collector["spec"]["replicas"] >= 2
    pod = collector["spec"]["template"]["spec"]
    env = _env(_serve(pod))
    assert env["AWS_ACCESS_KEY_ID"]["secretKeyRef"]["name"] == "meshlens-s3"
    assert env["MESHLENS_AUTH_TOKEN"]["secretKeyRef"]["name"] == "meshlens-auth"
    assert pod["terminationGracePeriodSeconds"] >= 60  # time for the final ship

    ui = objs[("Deployment", "meshlens-ui")]["spec"]["template"]["spec"]["containers"][0]
    ref = _env(ui)["MESHLENS_DATA_DIR"]["configMapKeyRef"]
    assert ref == {"name": "meshlens-config", "key": "MESHLENS_OBJECT_STORE"}
    assert objs[("Service", "meshlens-ui")]["spec"]["selector"] == {"app": "meshlens-ui"}
    for (kind, name), doc in objs.items():
        if kind not in ("Namespace", "ClusterRole"):
            assert doc["metadata"].get("namespace") == "meshlens", f"{kind}/{name}"


def test_each_collector_keeps_its_wal_on_its_own_persistent_volume(objs: Objs) -> None:
    spec = _collectors(objs)["spec"]
    pod = spec["template"]["spec"]
    container = _serve(pod)
    data_dir = _data_dir(container)
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    at_data = [m for m in mounts.values() if PurePosixPath(m["mountPath"]) == data_dir]
    assert len(at_data) == 1, f"no volume mounted at the data dir {data_dir}"
    (mount,) = at_data
    assert not mount.get("readOnly")
    # The WAL is where the store puts it under the data dir: on this mount, not a subPath.
    wal = PurePosixPath(wal_segment_path(Path(data_dir), "meshlens-collector-0", 1))
    assert wal.is_relative_to(PurePosixPath(mount["mountPath"])) and "subPath" not in mount

    templates = {t["metadata"]["name"]: t for t in spec.get("volumeClaimTemplates", [])}
    assert mount["name"] in templates, "the data dir must come from a volumeClaimTemplate"
    claim = templates[mount["name"]]["spec"]
    assert claim["accessModes"] == ["ReadWriteOnce"], "one volume per pod, one writer each"
    assert claim["resources"]["requests"]["storage"]
    # A pod volume of the same name would shadow the claim (an emptyDir dies with the pod).
    shadow = [v for v in pod.get("volumes", []) if v["name"] == mount["name"]]
    assert not shadow, f"the data dir is a pod volume, not the claim: {shadow}"
    # Scale-down keeps the volume: what the last ship missed is shipped when the pod returns.
    retention = spec.get("persistentVolumeClaimRetentionPolicy", {})
    assert retention.get("whenScaled", "Retain") == "Retain"
    assert retention.get("whenDeleted", "Retain") == "Retain"
    assert spec["podManagementPolicy"] == "Parallel"


def test_node_name_is_the_stable_pod_name(objs: Objs) -> None:
    sts = _collectors(objs)
    env = _env(_serve(sts["spec"]["template"]["spec"]))
    # A StatefulSet pod's name (<set>-<ordinal>) survives restarts and rescheduling, so the node
    # name in the WAL and Parquet file names on the volume is still this pod's after a restart.
    assert env["MESHLENS_NODE"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    hpa = objs[("HorizontalPodAutoscaler", COLLECTOR)]["spec"]
    assert hpa["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "name": COLLECTOR,
    }
    for ordinal in (0, hpa["maxReplicas"] - 1):
        node = check_node(f"{sts['metadata']['name']}-{ordinal}")
        # Recovery replays only the WAL segments that carry this node's name.
        assert parse_wal_segment_name(wal_segment_path(Path("/d"), node, 7).name) == (node, 7)


def test_headless_service_is_the_statefulsets_identity(objs: Objs) -> None:
    sts = _collectors(objs)["spec"]
    labels = sts["template"]["metadata"]["labels"]
    name = sts.get("serviceName", "")
    assert ("Service", name) in objs, f"no Service {name!r} for serviceName"
    headless = objs[("Service", name)]["spec"]
    assert headless.get("clusterIP") == "None", f"Service {name} is not headless"
    assert _selects(headless["selector"], labels)
    # Senders keep the client-facing Service, which balances over the collectors.
    client = objs[("Service", "meshlens")]["spec"]
    assert client.get("clusterIP") != "None" and _selects(client["selector"], labels)
    assert {p["port"] for p in client["ports"]} == {4317, 4318, 8080}
    assert ("Service", "meshlens-headless") not in objs  # the base's, for its removed pod


def test_disruption_budget_keeps_collectors_accepting(objs: Objs) -> None:
    sts = _collectors(objs)["spec"]
    labels = sts["template"]["metadata"]["labels"]
    pdbs = [
        d["spec"]
        for (kind, _), d in objs.items()
        if kind == "PodDisruptionBudget" and _selects(d["spec"]["selector"]["matchLabels"], labels)
    ]
    assert len(pdbs) == 1, "one PodDisruptionBudget must cover the collectors"
    (pdb,) = pdbs
    min_replicas = objs[("HorizontalPodAutoscaler", COLLECTOR)]["spec"]["minReplicas"]
    if "maxUnavailable" in pdb:
        assert 1 <= pdb["maxUnavailable"] < min_replicas
    else:
        assert 1 <= pdb["minAvailable"] < min_replicas
