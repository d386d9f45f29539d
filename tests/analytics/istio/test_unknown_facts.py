"""Three-valued evaluation: unknown facts never turn into a confident allow or deny; Istio's
PeerAuthentication composition; key normalisation and namespaces as kubectl applies them."""

from __future__ import annotations

from pathlib import Path

import pytest

from meshlens.analytics.errors import IstioConfigError
from meshlens.analytics.istio.authz import RequestFacts, check_policy, decide
from meshlens.analytics.istio.checks import run_check
from meshlens.analytics.istio.labels import KnownLabels
from meshlens.analytics.istio.mtls import EdgeObservation, check_mtls, effective_mode
from meshlens.analytics.istio.resources import json_keys, parse_documents
from tests.analytics.istio.conftest import WINDOW, caller, request_row, write_requests


def facts(
    principal: str | None = "cluster.local/ns/default/sa/reviews",
    app: str = "productpage",
    method: str | None = "GET",
    has_proxy: bool | None = True,
    labels: KnownLabels | None = None,
) -> RequestFacts:
    return RequestFacts(
        "default",
        app,
        "v1",
        principal,
        None if principal is None else "default",
        None,
        method,
        "/",
        9080,
        None,
        "",
        labels=labels,
        has_proxy=has_proxy,
    )


def policies(text: str) -> list:
    return list(parse_documents(text, "p.yaml").of_kind("AuthorizationPolicy"))


VIEWER = """
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: viewer, namespace: default}
spec:
  selector: {matchLabels: {app: productpage}}
  rules:
    - from: [{source: {principals: ["cluster.local/ns/default/sa/reviews"]}}]
"""
NOTHING = """
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-nothing, namespace: default}
spec: {}
"""


def test_unknown_principal_is_undetermined_not_denied() -> None:
    d = decide(policies(VIEWER), facts(principal=None))
    assert d.allowed is None
    assert "source principal" in d.policy and "AuthorizationPolicy default/viewer" in d.policy
    assert decide(policies(VIEWER), facts(principal="")).allowed is False  # plaintext: none


def test_unknown_label_that_cannot_change_the_outcome_is_decided() -> None:
    # Whether or not the viewer policy selects it, a request from reviews is allowed.
    d = decide(policies(VIEWER), facts(app=""))
    assert (d.allowed, d.policy) == (True, "allowed whatever the unknown destination labels")
    # With allow-nothing in the namespace, the label decides for reviews: undetermined, why.
    both = policies(VIEWER + "---" + NOTHING)
    d = decide(both, facts(app=""))
    assert d.allowed is None
    assert "destination label 'app' unknown" in d.policy
    # ... and not for anyone else: denied whichever policy selects the workload.
    other = decide(both, facts(app="", principal="cluster.local/ns/x/sa/y"))
    assert (other.allowed, other.policy) == (
        False,
        "denied whatever the unknown destination labels",
    )


def test_a_destination_without_a_sidecar_enforces_nothing() -> None:
    ps = policies(NOTHING)
    assert decide(ps, facts(has_proxy=False)).allowed is True
    assert decide(ps, facts(has_proxy=None)).allowed is None
    assert "no destination-side report" in decide(ps, facts(has_proxy=None)).policy


def test_a_deny_on_an_unknown_method_is_undetermined() -> None:
    deny = policies("""
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: no-delete, namespace: default}
spec:
  action: DENY
  rules: [{to: [{operation: {methods: [DELETE]}}]}]
""")
    assert decide(deny, facts(method=None)).allowed is None
    assert decide(deny, facts(method="GET")).allowed is True


def test_other_labels_are_accepted_once_a_manifest_knows_them() -> None:
    (p,) = policies(VIEWER.replace("app: productpage", "team: books"))
    with pytest.raises(IstioConfigError, match="give the workloads' manifests with --config"):
        check_policy(p)
    check_policy(p, {"team"})


def test_plaintext_with_a_known_client_has_no_principal(tmp_path: Path) -> None:
    """Istio's source.principal and source.namespace come from the peer certificate: a
    plaintext request from a known workload has neither."""
    write_requests(tmp_path, [caller("frontend-v1", ns="web", mtls=False), request_row(mtls=None)])
    iso = """
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: from-web, namespace: default}
spec:
  rules: [{from: [{source: {namespaces: [web]}}]}]
"""
    report = run_check("authz", tmp_path, WINDOW, parse_documents(iso, "p.yaml"))
    by_caller = {r["caller"]: r for r in report.rows}
    assert by_caller["web/frontend-v1"]["decision"] == "deny"
    assert by_caller["web/frontend-v1"]["principal"] == "(none)"
    assert by_caller["unknown/unknown"]["decision"] == "undetermined"


PA = """
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: istio-system}
spec: {mtls: {mode: STRICT}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: ignored, namespace: istio-system}
spec:
  selector: {matchLabels: {app: api}}
  mtls: {mode: DISABLE}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: ns, namespace: shop}
spec: {mtls: {mode: PERMISSIVE}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: api, namespace: shop}
spec:
  selector: {matchLabels: {app: api}}
  mtls: {mode: UNSET}
  portLevelMtls:
    8080: {mode: DISABLE}
    9090: {mode: UNSET}
"""


def test_peer_authentication_composition_follows_istio() -> None:
    cfg = parse_documents(PA, "pa.yaml")
    # A selector policy in the root namespace is ignored: mesh STRICT holds for api in web.
    assert effective_mode(cfg, "web", "api", "v1")[0] == "STRICT"
    # Workload UNSET inherits the namespace's PERMISSIVE; port-level UNSET inherits that too.
    assert effective_mode(cfg, "shop", "api", "v1", port=443) == (
        "PERMISSIVE",
        "PeerAuthentication shop/ns",
    )
    assert effective_mode(cfg, "shop", "api", "v1", port=9090)[0] == "PERMISSIVE"
    assert effective_mode(cfg, "shop", "api", "v1", port=8080) == (
        "DISABLE",
        "PeerAuthentication shop/api (port 8080)",
    )
    assert effective_mode(cfg, "shop", "api", "v1")[0] == "undetermined"  # port unknown
    assert effective_mode(cfg, "shop", "", "", port=8080)[0] == "undetermined"  # label unknown
    assert effective_mode(cfg, "shop", "web", "v1", port=8080)[0] == "PERMISSIVE"


def test_the_oldest_policy_of_a_scope_wins() -> None:
    two = """
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: new, namespace: shop, creationTimestamp: "2024-05-01T00:00:00Z"}
spec: {mtls: {mode: DISABLE}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: old, namespace: shop, creationTimestamp: "2023-01-01T00:00:00Z"}
spec: {mtls: {mode: STRICT}}
"""
    cfg = parse_documents(two, "pa.yaml")
    assert effective_mode(cfg, "shop", "a", "v1") == ("STRICT", "PeerAuthentication shop/old")
    edge = EdgeObservation("x", "y", "", "shop", "a-v1", "a", "v1", True, 1, port=80)
    findings, _, _ = check_mtls(cfg, [edge])
    assert any(
        "Istio uses the oldest, taken to be PeerAuthentication shop/old" in f.message
        for f in findings
    )


def test_unknown_tls_is_not_plaintext() -> None:
    cfg = parse_documents(PA, "pa.yaml")
    edges = [
        EdgeObservation("x", "y", "", "web", "api-v1", "api", "v1", None, 4, port=80),
        EdgeObservation("x", "y", "", "web", "api-v1", "api", "v1", True, 6, port=80),
    ]
    findings, rows, _ = check_mtls(cfg, edges)
    assert [f.severity for f in findings] == ["warning"]
    assert "4 of 10 requests have no TLS state" in findings[0].message
    assert rows[0]["mtls_ratio"] == 1.0 and rows[0]["tls_unknown"] == 4


def test_yaml_keys_and_namespaces_as_kubectl_applies_them() -> None:
    assert json_keys({80: {True: 1.5}, "a": [{None: 1}]}) == {
        "80": {"true": 1.5},
        "a": [{"null": 1}],
    }
    text = (
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: d}\nspec: {}"
    )
    assert parse_documents(text, "x").resources[0].namespace == "default"
    assert parse_documents(text, "x", namespace="foo").resources[0].namespace == "foo"


def test_a_canonical_service_that_may_be_the_workload_name_fallback_is_not_an_app_label(
    tmp_path: Path,
) -> None:
    """Decoders name the canonical service after the workload when no label is reported
    (Istio's rule). Outside the gRPC ALS (which always carries the labels) such a value says
    nothing about `app`: the selector is undetermined, not 'does not apply'."""
    same = {"destination_workload": "productpage", "destination_canonical_service": "productpage"}
    viewer = VIEWER.replace("principals", "notPrincipals").replace("reviews", "nobody")
    config = parse_documents(viewer + "---" + NOTHING, "p.yaml")
    decisions = {}
    for origin in ("otel_als", "envoy_als"):
        write_requests(tmp_path / origin, [caller("reviews-v1", origin=origin, **same)])
        (row,) = run_check("authz", tmp_path / origin, WINDOW, config).rows
        decisions[origin] = row["decision"]
    assert decisions == {"otel_als": "undetermined", "envoy_als": "allow"}
