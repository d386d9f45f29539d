from __future__ import annotations

import json
from pathlib import Path

import pytest

from meshlens.analytics.errors import IstioConfigError
from meshlens.analytics.istio.authz import RequestFacts, check_policy, decide, string_match
from meshlens.analytics.istio.checks import run_check
from meshlens.analytics.istio.resources import parse_documents
from meshlens.cli import main
from tests.analytics.istio.conftest import WINDOW, caller, request_row, write_requests

DATA = Path(__file__).parent / "data"


def facts(
    principal: str = "",
    ns: str = "",
    method: str = "GET",
    path: str = "/",
    app: str = "productpage",
) -> RequestFacts:
    return RequestFacts(
        "default",
        app,
        "v1",
        principal,
        ns,
        "10.0.0.1",
        method,
        path,
        9080,
        "productpage:9080",
        "curl/8",
    )


def policies(text: str) -> list:
    return list(parse_documents(text, "test.yaml").of_kind("AuthorizationPolicy"))


@pytest.mark.parametrize(
    ("pattern", "value", "ok"),
    [
        ("abc", "abc", True),
        ("abc*", "abcdef", True),
        ("*def", "abcdef", True),
        ("*", "x", True),
        ("*", "", False),
        ("abc", "abcd", False),
    ],
)
def test_istio_string_match(pattern: str, value: str, ok: bool) -> None:
    assert string_match(pattern, value) is ok


GUIDE = (DATA / "productpage.yaml").read_text()


def test_guide_policy_allows_only_reviews() -> None:
    ps = policies(GUIDE)
    assert decide(ps, facts("cluster.local/ns/default/sa/reviews")).allowed
    denied = decide(ps, facts("cluster.local/ns/default/sa/details"))
    assert not denied.allowed
    assert "matches no ALLOW policy" in denied.policy
    assert not decide(ps, facts("")).allowed  # plaintext: no principal
    # Other workloads are not selected: no ALLOW policy applies to them.
    assert decide(ps, facts("", app="details")).allowed


def test_deny_beats_allow_and_audit_only_marks() -> None:
    ps = policies("""
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-all, namespace: default}
spec:
  rules: [{}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: no-delete, namespace: default}
spec:
  action: DENY
  rules:
    - to: [{operation: {methods: [DELETE]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: audit-admin, namespace: default}
spec:
  action: AUDIT
  rules:
    - to: [{operation: {paths: ["/admin*"]}}]
""")
    assert decide(ps, facts(method="GET")).allowed
    d = decide(ps, facts(method="DELETE"))
    assert (d.allowed, d.policy) == (False, "denied by AuthorizationPolicy default/no-delete")
    audited = decide(ps, facts(path="/admin/x"))
    assert audited.allowed and audited.audited


def test_root_namespace_policies_apply_mesh_wide() -> None:
    ps = policies("""
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-plaintext, namespace: istio-system}
spec:
  action: DENY
  rules:
    - from: [{source: {notPrincipals: ["*"]}}]
""")
    assert not decide(ps, facts("")).allowed
    assert decide(ps, facts("cluster.local/ns/x/sa/y")).allowed


def test_when_conditions_on_telemetry_fields() -> None:
    ps = policies("""
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ns-only, namespace: default}
spec:
  rules:
    - when:
        - key: source.namespace
          values: ["frontend"]
        - key: request.headers[user-agent]
          notValues: ["*bot*"]
""")
    assert decide(ps, facts(ns="frontend")).allowed
    assert not decide(ps, facts(ns="other")).allowed


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("action: CUSTOM\n  provider: {name: ext}", r"at spec.action: .*CUSTOM .* out of scope"),
        (
            "rules:\n    - from: [{source: {requestPrincipals: ['*']}}]",
            r"spec.rules\[0\].from\[0\].source.requestPrincipals: .*cannot be evaluated",
        ),
        (
            "rules:\n    - when: [{key: 'request.auth.claims[iss]', values: [x]}]",
            r"spec.rules\[0\].when\[0\].key: .*'request.auth.claims\[iss\]' cannot be evaluated",
        ),
        (
            "selector: {matchLabels: {team: a}}",
            r"spec.selector.matchLabels.team: .*label 'team' is not in telemetry",
        ),
    ],
)
def test_unsupported_features_are_refused_precisely(spec: str, message: str) -> None:
    (p,) = policies(f"""
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: p, namespace: default}}
spec:
  {spec}
""")
    with pytest.raises(IstioConfigError, match=message):
        check_policy(p)


def _guide_traffic(tmp_path: Path) -> None:
    rows = (
        [caller("reviews-v1", at=i) for i in range(5)]
        + [caller("details-v1", at=i, path="/productpage?u=1") for i in range(3)]
        + [
            caller(
                "istio-ingressgateway-1",
                ns="istio-system",
                sa="istio-ingressgateway-service-account",
            )
            for _ in range(7)
        ]
        + [request_row(mtls=False, source_principal="unknown") for _ in range(2)]
        + [
            caller(
                "reviews-v1",
                destination_workload="ratings-v1",
                destination_canonical_service="ratings",
                destination_service="ratings.default.svc.cluster.local",
            )
        ]
    )
    write_requests(tmp_path, rows)


def test_what_if_names_exactly_the_callers_the_guide_policy_blocks(tmp_path: Path) -> None:
    _guide_traffic(tmp_path)
    config = parse_documents(GUIDE, "productpage.yaml")
    report = run_check("authz", tmp_path, WINDOW, config)
    denied = {(f.details["caller"], f.details["requests"]) for f in report.problems}
    assert denied == {
        ("default/details-v1", 3),
        ("istio-system/istio-ingressgateway-1", 7),
        ("unknown/unknown", 2),
    }
    allowed = {r["caller"] for r in report.rows if r["decision"] == "allow"}
    assert allowed == {"default/reviews-v1"}
    examples = next(f for f in report.problems if "details" in f.details["caller"]).details
    assert examples["examples"] == ["/productpage?u=1"]


def test_actually_denied_requests_are_reported(tmp_path: Path) -> None:
    write_requests(
        tmp_path,
        [
            caller(
                "details-v1",
                response_code=403,
                response_code_details="rbac_access_denied_matched_policy[none]",
            ),
        ],
    )
    report = run_check("authz", tmp_path, WINDOW, parse_documents(GUIDE, "g.yaml"))
    infos = [f.message for f in report.findings if f.severity == "info"]
    assert any("actually denied by Envoy RBAC" in m for m in infos)


def test_cli_exit_codes_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _guide_traffic(tmp_path)
    args = [
        "check",
        "authz",
        "--data-dir",
        str(tmp_path),
        "--config",
        str(DATA),
        "--from",
        WINDOW.start.isoformat(),
        "--to",
        WINDOW.end.isoformat(),
        "--format",
        "json",
    ]
    assert main(args) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["problems"] == 3 and out["ok"] is False


def test_cli_bad_config_is_exit_2_with_location(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(GUIDE.replace("action: ALLOW", "action: ALLOW\n  bogus: 1"))
    assert main(["check", "authz", "--data-dir", str(tmp_path), "--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"{bad} (document 3) at spec.bogus: unknown field" in err
