from __future__ import annotations

from pathlib import Path

import pytest

from meshlens.analytics.catalog import connect
from meshlens.analytics.errors import IstioConfigError
from meshlens.analytics.istio.checks import run_check
from meshlens.analytics.istio.mtls import effective_mode
from meshlens.analytics.istio.resources import load_config, parse_documents
from meshlens.analytics.istio.telemetry import Context, load_context
from tests.analytics.istio.conftest import WINDOW, caller, write_requests

DATA = Path(__file__).parent / "data"
GUIDE = (DATA / "productpage.yaml").read_text()
MOBILE = "Mozilla/5.0 (iPhone) Mobile Safari"


def _pp(version: str, ua: str, n: int) -> list[dict]:
    return [
        caller(
            "reviews-v1",
            destination_version=version,
            destination_workload=f"productpage-{version}",
            user_agent=ua,
            at=i % 3000,
        )
        for i in range(n)
    ]


def test_mobile_rule_followed_is_ok(tmp_path: Path) -> None:
    write_requests(tmp_path, _pp("v2", MOBILE, 40) + _pp("v1", "curl/8", 60))
    report = run_check("routing", tmp_path, WINDOW, parse_documents(GUIDE, "g.yaml"))
    assert report.ok, [f.message for f in report.findings]
    by_route = {(r["route"], r["version"]): r for r in report.rows}
    assert by_route[("mobile", "v2")]["observed"] == 1.0
    assert by_route[("default", "v1")]["requests"] == 60


def test_mobile_traffic_landing_on_v1_is_flagged(tmp_path: Path) -> None:
    write_requests(tmp_path, _pp("v1", MOBILE, 30) + _pp("v1", "curl/8", 60))
    report = run_check("routing", tmp_path, WINDOW, parse_documents(GUIDE, "g.yaml"))
    msgs = [f.message for f in report.problems]
    assert any(
        "route mobile: productpage.default.svc.cluster.local v2 is configured for 100%" in m
        and "got none of 30" in m
        for m in msgs
    ), msgs


CANARY = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http:
    - name: split
      route:
        - destination: {host: reviews, subset: v1}
          weight: 90
        - destination: {host: reviews, subset: v2}
          weight: 10
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: default}
spec:
  host: reviews
  subsets:
    - {name: v1, labels: {version: v1}}
    - {name: v2, labels: {version: v2}}
    - {name: v9, labels: {version: v9}}
"""


def _reviews(version: str, n: int) -> list[dict]:
    return [
        caller(
            "productpage-v1",
            destination_service="reviews.default.svc.cluster.local",
            destination_workload=f"reviews-{version}",
            destination_version=version,
            destination_canonical_service="reviews",
            at=i % 3000,
        )
        for i in range(n)
    ]


def test_ninety_ten_split_within_tolerance(tmp_path: Path) -> None:
    write_requests(tmp_path, _reviews("v1", 905) + _reviews("v2", 95))
    report = run_check("routing", tmp_path, WINDOW, parse_documents(CANARY, "c.yaml"))
    # The split is fine. Subset v9 is named by no route: information, not a problem.
    assert report.ok, [f.message for f in report.problems]
    infos = [f.message for f in report.findings if f.severity == "info"]
    assert any("subset v9 (version=v9): no route sends traffic to it" in m for m in infos)


def test_split_off_and_stray_versions(tmp_path: Path) -> None:
    write_requests(tmp_path, _reviews("v1", 500) + _reviews("v2", 400) + _reviews("v3", 100))
    report = run_check("routing", tmp_path, WINDOW, parse_documents(CANARY, "c.yaml"))
    msgs = " | ".join(f.message for f in report.problems)
    assert "v2 got 40.0% of 1000 requests, configured 10%" in msgs
    assert (
        "100 requests reached reviews.default.svc.cluster.local version v3, which no route" in msgs
    )


def test_unverifiable_match_is_a_note_not_a_pass(tmp_path: Path) -> None:
    doc = GUIDE.replace("user-agent:", "x-canary:")
    write_requests(tmp_path, _pp("v1", "curl/8", 30))
    report = run_check("routing", tmp_path, WINDOW, parse_documents(doc, "g.yaml"))
    notes = [f.message for f in report.findings if f.severity == "info"]
    assert any("not verified: header 'x-canary' is not in telemetry" in n for n in notes)


PA = """
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: istio-system}
spec:
  mtls: {mode: PERMISSIVE}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: strict-ratings, namespace: default}
spec:
  selector: {matchLabels: {app: ratings}}
  mtls: {mode: STRICT}
"""


def test_effective_mode_layers() -> None:
    cfg = parse_documents(PA, "pa.yaml")
    assert effective_mode(cfg, "default", "ratings", "v1")[0] == "STRICT"
    assert effective_mode(cfg, "default", "reviews", "v1") == (
        "PERMISSIVE",
        "PeerAuthentication istio-system/default",
    )
    assert effective_mode(parse_documents("", "x"), "default", "a", "v1")[0] == "PERMISSIVE"


def test_mtls_coverage_and_plaintext_edges(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rows = (
        [
            caller(
                "reviews-v1",
                destination_workload="ratings-v1",
                destination_canonical_service="ratings",
                mtls=False,
            )
            for _ in range(3)
        ]
        + [
            caller(
                "reviews-v1",
                destination_workload="ratings-v1",
                destination_canonical_service="ratings",
            )
            for _ in range(7)
        ]
        + [
            caller(
                "productpage-v1",
                destination_workload="reviews-v1",
                destination_canonical_service="reviews",
                mtls=False,
            )
            for _ in range(4)
        ]
    )
    write_requests(tmp_path, rows)
    report = run_check("mtls", tmp_path, WINDOW, parse_documents(PA, "pa.yaml"))
    assert [f.resource for f in report.problems] == ["default/reviews-v1 -> default/ratings-v1"]
    assert "3 of 10 requests were plaintext" in report.problems[0].message
    warnings = [f.resource for f in report.findings if f.severity == "warning"]
    assert warnings == ["default/productpage-v1 -> default/reviews-v1"]
    ns = report.tables["namespaces"]
    assert ns == [{"namespace": "default", "requests": 14, "mtls_ratio": 0.5}]
    ids = {(r["workload"], r["principal"]) for r in report.tables["identities"]}
    assert ("ratings-v1", "spiffe://cluster.local/ns/default/sa/reviews") in ids
    # The app passes the window's identities it computed once for both checks: the same
    # report, without scanning the reports again.
    conn = connect(tmp_path, WINDOW)
    try:
        context = load_context(conn)
    finally:
        conn.close()

    def scan_again(_conn: object) -> Context:
        raise AssertionError("load_context ran although a context was given")

    monkeypatch.setattr("meshlens.analytics.istio.checks.load_context", scan_again)
    shared = run_check("mtls", tmp_path, WINDOW, parse_documents(PA, "pa.yaml"), context=context)
    assert shared.to_json() == report.to_json()


def test_loader_reads_lists_and_directories(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "list.yaml").write_text("""
apiVersion: v1
kind: List
items:
  - apiVersion: networking.istio.io/v1beta1
    kind: DestinationRule
    metadata: {name: r, namespace: ns1}
    spec: {host: r}
  - apiVersion: networking.istio.io/v1
    kind: Gateway
    metadata: {name: gw}
    spec: {selector: {istio: ingressgateway}}
""")
    cfg = load_config([tmp_path])
    assert [r.ref for r in cfg.resources] == ["DestinationRule ns1/r"]
    assert cfg.skipped[0].startswith("Gateway gw (")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a: [", r"x.yaml at line \d+, column \d+: invalid YAML"),
        ("just a string", r"x.yaml \(document 1\): not a Kubernetes object"),
        (
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: v}\n"
            "spec: {hosts: notalist}",
            r"\(document 1\) at spec.hosts: Input should be a valid list",
        ),
        (
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: v}\n"
            "spec: {hosts: [a], htp: []}",
            r"\(document 1\) at spec.htp: unknown field",
        ),
        (
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {}\nspec: {}",
            r"at metadata.name: every resource needs a name",
        ),
    ],
)
def test_invalid_resources_give_file_document_field(text: str, message: str) -> None:
    with pytest.raises(IstioConfigError, match=message):
        parse_documents(text, "x.yaml")


def test_missing_config_path(tmp_path: Path) -> None:
    with pytest.raises(IstioConfigError, match="no such file or directory"):
        load_config([tmp_path / "nope.yaml"])
