"""Istio's "Explicit deny" task and the security policy examples, over the sleep -> httpbin
traffic of the authentication task.

- authz-deny task (istio.io docs/tasks/security/authorization/authz-deny): `deny-method-get`
  makes `GET /get` answer 403 while `POST /post` answers 200; the variant with
  `when: request.headers[x-token]` reads a header proxies do not log and must be refused
  precisely; `allow-path-ip` lets `/ip` through and nothing else (the task's steps with the
  `admin` token, where the variant denies nothing, isolate it: `/ip` 200, `/get` 403).
- security policy examples (istio.io docs/ops/configuration/security/security-policy-examples):
  `foo-isolation` (ALLOW from namespace foo), `require-mtls` (DENY `notPrincipals: ["*"]`),
  `ns-isolation-except-ingress` (DENY `notNamespaces` + `notPrincipals`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import pytest

from meshlens.analytics.errors import IstioConfigError
from meshlens.analytics.istio.report import CheckReport
from meshlens.analytics.istio.resources import merge
from meshlens.cli import main
from tests.conformance.istio_policies.conftest import ART, WINDOW, check, config
from tests.conformance.istio_policies.mesh import (
    FULL,
    IMPORT,
    INGRESS,
    OTEL,
    Call,
    authn_task_traffic,
    curl_httpbin,
    httpbin,
    write_traffic,
)

DENY: Final = "authz-deny"
EXAMPLES: Final = "security-policy-examples"


def by_request(report: CheckReport) -> dict[tuple[str, str], set[str]]:
    """(caller, first example path) -> decisions."""
    out: dict[tuple[str, str], set[str]] = {}
    for r in report.rows:
        for path in r["examples"]:
            out.setdefault((r["caller"], path), set()).add(r["decision"])
    return out


def deny_task_traffic() -> list[Call]:
    return [
        curl_httpbin("foo", "foo", "/get"),
        curl_httpbin("foo", "foo", "/post", method="POST"),
        curl_httpbin("foo", "foo", "/ip"),
    ]


def test_deny_method_get(tmp_path: Path) -> None:
    report = check(
        "authz", tmp_path, deny_task_traffic(), FULL, config(f"{DENY}/deny-method-get.yaml")
    )
    got = by_request(report)
    assert got[("foo/sleep", "/get")] == {"deny"}  # the task's 403
    assert got[("foo/sleep", "/post")] == {"allow"}  # the task's 200
    problem = next(f for f in report.problems if "/get" in f.details["examples"])
    assert "denied by AuthorizationPolicy foo/deny-method-get" in problem.message


def test_deny_on_a_header_telemetry_lacks_is_refused_precisely(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(IstioConfigError, match=r"spec.rules\[0\].when\[0\].key: .*x-token"):
        check(
            "authz",
            tmp_path,
            deny_task_traffic(),
            FULL,
            config(f"{DENY}/deny-method-get-x-token.yaml"),
        )
    code = main(
        [
            "check",
            "authz",
            "--data-dir",
            str(tmp_path / "data-full"),
            "--config",
            str(ART / DENY / "deny-method-get-x-token.yaml"),
            "--from",
            WINDOW.start.isoformat(),
            "--to",
            WINDOW.end.isoformat(),
        ]
    )
    assert code == 2
    assert "request.headers[x-token]" in capsys.readouterr().err


def test_allow_path_ip(tmp_path: Path) -> None:
    report = check(
        "authz", tmp_path, deny_task_traffic(), FULL, config(f"{DENY}/allow-path-ip.yaml")
    )
    got = by_request(report)
    assert got[("foo/sleep", "/ip")] == {"allow"}  # step 9: 200
    assert got[("foo/sleep", "/get")] == {"deny"}  # step 10: 403
    assert got[("foo/sleep", "/post")] == {"deny"}
    reasons = {r["reason"] for r in report.rows if r["decision"] == "deny"}
    assert reasons == {"matches no ALLOW policy (AuthorizationPolicy foo/allow-path-ip)"}


def example_traffic() -> list[Call]:
    ingress = Call(
        INGRESS,
        httpbin("foo"),
        "httpbin.foo.svc.cluster.local",
        8000,
        80,
        "httpbin.example.com",
        path="/headers",
    )
    return [*authn_task_traffic(), ingress]


def to_foo(report: CheckReport) -> dict[str, set[str]]:
    """Caller -> decisions on its requests to httpbin.foo."""
    out: dict[str, set[str]] = {}
    for r in report.rows:
        if r["destination"].startswith("foo/"):
            out.setdefault(r["caller"], set()).add(r["decision"])
    return out


LEGACY: Final = "unknown/unknown"  # sleep.legacy: no sidecar, plaintext, no identity
INGRESS_CALLER: Final = "istio-system/istio-ingressgateway"


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        (
            "foo-isolation.yaml",
            {"foo/sleep": "allow", "bar/sleep": "deny", LEGACY: "deny", INGRESS_CALLER: "deny"},
        ),
        (
            "require-mtls.yaml",
            {"foo/sleep": "allow", "bar/sleep": "allow", LEGACY: "deny", INGRESS_CALLER: "allow"},
        ),
        (
            "ns-isolation-except-ingress-deny.yaml",
            {"foo/sleep": "allow", "bar/sleep": "deny", LEGACY: "deny", INGRESS_CALLER: "allow"},
        ),
    ],
)
def test_security_policy_examples(tmp_path: Path, policy: str, expected: dict[str, str]) -> None:
    report = check("authz", tmp_path, example_traffic(), FULL, config(f"{EXAMPLES}/{policy}"))
    assert to_foo(report) == {c: {d} for c, d in expected.items()}
    # The policies live in foo: nothing to bar or legacy changes.
    others = {r["decision"] for r in report.rows if not r["destination"].startswith("foo/")}
    assert others == {"allow"}


@pytest.mark.parametrize("flavour", [IMPORT, OTEL])
@pytest.mark.parametrize(
    "policy", ["foo-isolation.yaml", "require-mtls.yaml", "ns-isolation-except-ingress-deny.yaml"]
)
def test_security_policy_examples_from_text_logs(tmp_path: Path, flavour: str, policy: str) -> None:
    """Text logs: no peer certificates, and legacy's plaintext is not recorded as such. The
    sidecar callers' principals derive from the httpbin/sleep manifests (imported per pod) or are
    unknown (OpenTelemetry default); a decision is the documented one or undetermined."""
    manifests = [
        config(f"samples/{m}.yaml", namespace=ns)
        for m in ("httpbin", "sleep")
        for ns in ("foo", "bar", "legacy")
    ]
    cfg = merge([config(f"{EXAMPLES}/{policy}"), *manifests])
    report = check("authz", tmp_path, example_traffic(), flavour, cfg)
    full = check("authz", tmp_path, example_traffic(), FULL, config(f"{EXAMPLES}/{policy}"))
    truth = {_where(r): r["decision"] for r in full.rows}
    assert report.rows
    for r in report.rows:
        caller, ns, path = _where(r)
        candidates = {
            d
            for (c, n, p), d in truth.items()
            if n == ns and p == path and caller in (c, "unknown/unknown")
        }
        assert r["decision"] == "undetermined" or candidates == {r["decision"]}, (r, candidates)


def _where(row: Mapping[str, Any]) -> tuple[str, str, str]:
    examples = row["examples"]
    assert isinstance(examples, list)
    return str(row["caller"]), str(row["destination"]).split("/")[0], str(examples[0])


def test_json_report_names_undetermined_requests(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "otel"
    data.mkdir()
    write_traffic(data, example_traffic(), OTEL)
    code = main(
        [
            "check",
            "authz",
            "--data-dir",
            str(data),
            "--config",
            str(ART / EXAMPLES / "foo-isolation.yaml"),
            "--from",
            WINDOW.start.isoformat(),
            "--to",
            WINDOW.end.isoformat(),
            "--format",
            "json",
        ]
    )
    out = json.loads(capsys.readouterr().out)
    undetermined = [r for r in out["rows"] if r["decision"] == "undetermined"]
    assert undetermined and all("source namespace" in r["reason"] for r in undetermined)
    assert code == (1 if out["problems"] else 0)
