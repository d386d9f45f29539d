"""Workload labels: Kubernetes objects, telemetry, and what stays unknown."""

from __future__ import annotations

from typing import Any

from meshlens.analytics.istio.kube import KubeService, KubeWorkload, canonical_labels, from_document
from meshlens.analytics.istio.labels import (
    UNKNOWN,
    KnownLabels,
    build_index,
    from_telemetry,
    label_worlds,
    merge,
    selector_matches,
)
from meshlens.analytics.istio.resources import parse_documents

DEPLOYMENT = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: reviews-v2}
spec:
  template:
    metadata:
      labels: {app: reviews, version: v2, team: books}
    spec:
      serviceAccountName: bookinfo-reviews
---
apiVersion: v1
kind: Service
metadata: {name: reviews}
spec:
  selector: {app: reviews}
  ports:
    - {port: 9080, targetPort: 9081}
    - {port: 80, targetPort: http}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: bookinfo-reviews}
"""


def test_manifests_become_label_facts_with_what_the_injector_adds() -> None:
    cfg = parse_documents(DEPLOYMENT, "d.yaml", namespace="books")
    (wl,) = cfg.workloads
    assert (wl.namespace, wl.name, wl.service_account) == (
        "books",
        "reviews-v2",
        "bookinfo-reviews",
    )
    assert wl.labels == {
        "app": "reviews",
        "version": "v2",
        "team": "books",
        "security.istio.io/tlsMode": "istio",
        "service.istio.io/canonical-name": "reviews",
        "service.istio.io/canonical-revision": "v2",
    }
    (svc,) = cfg.services
    assert svc.selector == {"app": "reviews"}
    assert svc.target_ports == {9080: 9081}  # a named targetPort needs the pod spec
    assert cfg.skipped == ("ServiceAccount bookinfo-reviews (d.yaml#3)",)


def test_canonical_labels_follow_istio() -> None:
    assert canonical_labels({"app.kubernetes.io/name": "a", "app": "b"}, "w") == {
        "service.istio.io/canonical-name": "a",
        "service.istio.io/canonical-revision": "latest",
    }
    assert canonical_labels({}, "-my-workload-")["service.istio.io/canonical-name"] == "my-workload"


def test_live_pods_name_their_workload_by_owner() -> None:
    pod: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "reviews-v2-7d9c8f6b4-abcde",
            "namespace": "default",
            "uid": "1",
            "labels": {"app": "reviews", "pod-template-hash": "7d9c8f6b4"},
            "ownerReferences": [
                {"kind": "ReplicaSet", "name": "reviews-v2-7d9c8f6b4", "controller": True}
            ],
        },
        "spec": {"serviceAccountName": "r"},
    }
    wl = from_document(pod, "api", "default")
    assert isinstance(wl, KubeWorkload)
    assert (wl.name, wl.live, dict(wl.labels)) == ("reviews-v2", True, {"app": "reviews"})
    known = build_index([wl], []).destination("default", "reviews-v2")
    assert known.lookup("team") is None  # a live pod's labels are all there is
    cron = {
        **pod,
        "metadata": {
            **pod["metadata"],
            "ownerReferences": [{"kind": "Job", "name": "backup-29012345"}],
        },
    }
    job = from_document(cron, "api", "default")
    assert isinstance(job, KubeWorkload) and job.name == "backup"


def test_selector_on_unknown_labels_is_unknown_and_enumerated() -> None:
    known = from_telemetry("", "v1")
    assert selector_matches({"version": "v1"}, known) is True
    assert selector_matches({"version": "v2"}, known) is False
    assert selector_matches({"app": "x", "version": "v1"}, known) is None
    assert selector_matches({"app": "x", "version": "v2"}, known) is False
    worlds = label_worlds(known, [{"app": "x"}, {"app": "y"}, {"version": "v1"}])
    assert worlds is not None
    assert sorted(str(w.lookup("app")) for w in worlds) == ["None", "x", "y"]


def test_conflicting_evidence_makes_a_label_unknown() -> None:
    a = KnownLabels({"app": "a"}, evidence=("one",))
    b = KnownLabels({"app": "b"}, evidence=("two",))
    m = merge(a, b)
    assert m.lookup("app") is UNKNOWN
    assert "app=a per one but app=b per two" in m.conflicts["app"]


def test_index_prefers_manifests_unless_telemetry_contradicts_them() -> None:
    cfg = parse_documents(DEPLOYMENT, "d.yaml", namespace="books")
    index = build_index(cfg.workloads, cfg.services)
    ok = index.destination("books", "reviews-v2", "reviews", "reviews", "v2")
    assert ok.lookup("team") == "books" and ok.lookup("owner") is None
    stale = index.destination("books", "reviews-v2", "reviews", "reviews", "v3")
    assert stale.lookup("team") is UNKNOWN  # the manifest does not describe these pods
    assert stale.lookup("version") == "v3"
    by_service = index.destination("books", "unknown", "reviews")
    assert by_service.lookup("app") == "reviews" and by_service.lookup("version") is UNKNOWN
    assert index.target_port("books", "reviews", 9080) == 9081
    assert index.service_account("books", "reviews-v2") == "bookinfo-reviews"
    assert "team" in index.label_keys


def test_service_selector_without_workload() -> None:
    svc = KubeService("ns", "api", {"app": "api", "tier": "web"}, {}, "s.yaml")
    known = build_index([], [svc]).destination("ns", "", "api")
    assert selector_matches({"tier": "web"}, known) is True
    assert selector_matches({"tier": "db"}, known) is False
