"""The GitOps `file` actuator: only the owned weight tokens change; every other byte stays."""

from __future__ import annotations

import difflib
from pathlib import Path

import pytest
import yaml

from meshlens.analytics.errors import RouteNotOwned
from meshlens.analytics.gate.actuators.file import FileActuator, rewrite_weights
from meshlens.analytics.gate.routes import Dest, Ownership

# Real-world style: a kustomize-ish multi-document file with comments, flow mappings, quoted
# numbers, an unrelated header route, a second VirtualService that shares the host, CRLF-free.
GITOPS = """\
# Managed by Argo CD - bookinfo/productpage
# yamllint disable rule:line-length
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: productpage, namespace: bookinfo}
spec:
  host: productpage
  trafficPolicy:
    tls: {mode: ISTIO_MUTUAL}
  subsets:
    - name: v1
      labels: {version: v1}
    - name: v2
      labels: {version: v2}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: productpage
  namespace: bookinfo
  annotations:
    argocd.argoproj.io/sync-options: "Validate=false"
spec:
  hosts: [productpage]
  gateways:
    - mesh   # sidecars
  http:
    # QA sees the canary
    - name: qa
      match:
        - headers: {x-qa: {exact: "1"}}
      route:
        - destination: {host: productpage, subset: v2}
    - name: primary
      route:
        - destination:
            host: productpage
            subset: v1
          weight: 100 # stable
        - destination:
            host: productpage
            subset: v2
          weight: "0"  # canary (quoted on purpose)
      retries: {attempts: 3, perTryTimeout: 2s}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: productpage-edge
  namespace: bookinfo
spec:
  hosts: [bookinfo.example.com]
  http:
    - route:
        - destination: {host: productpage, subset: v1}
          weight: 100
        - destination: {host: productpage, subset: v2}
          weight: 0
"""

OWN = Ownership(Dest("productpage", "v1"), Dest("productpage", "v2"), ("primary",))


def changed_lines(before: str, after: str) -> list[tuple[str, str]]:
    sm = difflib.SequenceMatcher(a=before.splitlines(), b=after.splitlines())
    out: list[tuple[str, str]] = []
    for tag, i1, i2, j1, j2 in sm.get_opcodes():
        if tag != "equal":
            assert tag == "replace" and i2 - i1 == j2 - j1, (tag, i1, i2, j1, j2)
            out.extend(zip(before.splitlines()[i1:i2], after.splitlines()[j1:j2], strict=True))
    return out


def test_only_the_two_weight_tokens_change() -> None:
    after = rewrite_weights(GITOPS, "productpage", OWN, 25, namespace="bookinfo")
    assert changed_lines(GITOPS, after) == [
        ("          weight: 100 # stable", "          weight: 75 # stable"),
        (
            '          weight: "0"  # canary (quoted on purpose)',
            '          weight: "25"  # canary (quoted on purpose)',
        ),
    ]
    assert len(after) == len(GITOPS)  # same length: 100->75 and "0"->"25"
    docs = list(yaml.safe_load_all(after))
    assert len(docs) == 3 and docs[1]["spec"]["http"][1]["route"][0]["weight"] == 75
    assert docs[2]["spec"]["http"][0]["route"][1]["weight"] == 0  # the other VS is untouched
    # and back: exactly the original bytes
    again = rewrite_weights(after, "productpage", OWN, 0, namespace="bookinfo")
    assert again == GITOPS


def test_file_actuator_rewrites_in_place_and_reads_back(tmp_path: Path) -> None:
    path = tmp_path / "productpage.yaml"
    path.write_text(GITOPS)
    path.chmod(0o640)
    act = FileActuator(path, "productpage", OWN, "bookinfo")
    assert act.current_canary_weight() == 0
    for w in (10, 50, 100, 0):
        act.set_canary_weight(w)
        assert act.current_canary_weight() == w
    assert path.read_text() == GITOPS
    assert path.stat().st_mode & 0o777 == 0o640
    assert not list(tmp_path.glob(".*tmp*"))  # no temp files left behind


def test_missing_weight_keys_fall_back_to_round_trip_dump() -> None:
    text = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews   # the reviews service
spec:
  hosts:
  - reviews
  http:
  - route:
    - destination:
        host: reviews
        subset: v1
    - destination:
        host: reviews
        subset: v2
"""
    own = Ownership(Dest("reviews", "v1"), Dest("reviews", "v2"))
    after = rewrite_weights(text, "reviews", own, 10)
    assert "# the reviews service" in after  # comments survive the round trip
    doc = yaml.safe_load(after)
    assert [d["weight"] for d in doc["spec"]["http"][0]["route"]] == [90, 10]
    assert list(doc) == ["apiVersion", "kind", "metadata", "spec"]


def test_refuses_what_it_does_not_own() -> None:
    with pytest.raises(RouteNotOwned, match="exactly one VirtualService 'ratings'"):
        rewrite_weights(GITOPS, "ratings", OWN, 10)
    three = GITOPS.replace(
        "      retries:",
        "        - destination: {host: productpage, subset:"
        " v3}\n          weight: 0\n      retries:",
    )
    with pytest.raises(RouteNotOwned, match="not exactly"):
        rewrite_weights(three, "productpage", OWN, 10, namespace="bookinfo")
    with pytest.raises(RouteNotOwned, match="found 0"):
        rewrite_weights(GITOPS, "productpage", OWN, 10, namespace="default")
