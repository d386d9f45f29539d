"""Istio's "Authentication Policy" and "Mutual TLS Migration" tasks, scenario by scenario.

Setup (both tasks): httpbin and sleep with sidecars in `foo` and `bar`, without in `legacy`.
The tasks curl every sleep -> httpbin pair after each PeerAuthentication and print 200, or 000
with "command terminated with exit code 56" where the server's sidecar refuses plaintext.

The traffic is what the reachability loop sends before any policy (all 200: auto mTLS between
sidecars, plaintext from or to `legacy`). `meshlens check mtls` with each scenario's policies
must flag exactly the pairs the task prints 000 for, as "plaintext into STRICT" problems, and
nothing else: in particular not the requests to httpbin.legacy, which has no sidecar and which
PeerAuthentication does not govern.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

import pytest

from meshlens.analytics.istio.report import CheckReport
from meshlens.analytics.istio.resources import IstioConfig, merge, parse_documents
from tests.conformance.istio_policies.conftest import ART, check, config
from tests.conformance.istio_policies.mesh import (
    FULL,
    IMPORT,
    NAMESPACES,
    OTEL,
    authn_task_traffic,
)

PAIRS: Final = [(f, t) for f in NAMESPACES for t in NAMESPACES]
AUTHN: Final = "authn-policy"
# scenario -> (policies applied, pairs the task prints 000 for)
AUTHN_SCENARIOS: Final[dict[str, tuple[list[str], set[tuple[str, str]]]]] = {
    "setup, no policy": ([], set()),
    "globally enabling mutual TLS in STRICT mode": (
        [f"{AUTHN}/mesh-strict.yaml"],
        {("legacy", "foo"), ("legacy", "bar")},
    ),
    "namespace-wide policy": ([f"{AUTHN}/foo-strict.yaml"], {("legacy", "foo")}),
    "enable mutual TLS per workload": (
        [f"{AUTHN}/foo-strict.yaml", f"{AUTHN}/bar-httpbin-strict.yaml"],
        {("legacy", "foo"), ("legacy", "bar")},
    ),
    "per workload, port 80 DISABLE": (
        [f"{AUTHN}/foo-strict.yaml", f"{AUTHN}/bar-httpbin-strict-port-80-disable.yaml"],
        {("legacy", "foo")},
    ),
    # The task then adds overwrite-example (its bar policy is still applied) and curls
    # sleep.legacy -> httpbin.foo: 200.
    "policy precedence": (
        [
            f"{AUTHN}/foo-strict.yaml",
            f"{AUTHN}/bar-httpbin-strict-port-80-disable.yaml",
            f"{AUTHN}/foo-overwrite-example.yaml",
        ],
        set(),
    ),
}
HTTPBIN: Final = "samples/httpbin.yaml"


def _src(ns: str) -> str:
    """How telemetry names the client: a sidecar reports itself; legacy's sleep has none and
    sends plaintext, so the server knows no peer identity."""
    return f"{ns}/sleep" if ns != "legacy" else "unknown/unknown"


def refused(report: CheckReport) -> set[tuple[str, str]]:
    """The (from, to) pairs meshlens says the server's sidecar would refuse."""
    problems = {f.resource for f in report.problems}
    return {(f, t) for f, t in PAIRS if f"{_src(f)} -> {t}/httpbin" in problems}


def httpbin_manifests() -> IstioConfig:
    """samples/httpbin.yaml as the task applies it: `-n foo`, `-n bar`, `-n legacy`."""
    return merge(config(HTTPBIN, namespace=ns) for ns in NAMESPACES)


@pytest.mark.parametrize("scenario", list(AUTHN_SCENARIOS))
def test_authn_policy_task(tmp_path: Path, scenario: str) -> None:
    files, documented = AUTHN_SCENARIOS[scenario]
    report = check("mtls", tmp_path, authn_task_traffic(), FULL, config(*files))
    assert refused(report) == documented, [f.message for f in report.findings]
    assert {f.resource for f in report.problems} == {
        f"{_src(f)} -> {t}/httpbin" for f, t in documented
    }
    # httpbin.legacy has no sidecar: reported as not governed, never as a violation.
    legacy = [r for r in report.rows if r["destination"].startswith("legacy/")]
    assert legacy and {r["status"] for r in legacy} == {"no sidecar seen"}
    infos = [f.message for f in report.findings if f.resource.startswith("legacy/")]
    assert any("PeerAuthentication applies only to workloads with a sidecar" in m for m in infos)


def test_port_level_mode_is_applied_to_the_workload_port(tmp_path: Path) -> None:
    """httpbin's Service port 8000 targets container port 80: the port-80 DISABLE governs the
    curls to httpbin.bar:8000; other ports stay STRICT."""
    files, _ = AUTHN_SCENARIOS["per workload, port 80 DISABLE"]
    report = check("mtls", tmp_path, authn_task_traffic(), FULL, config(*files))
    bar = {r["source"]: r for r in report.rows if r["destination"] == "bar/httpbin"}
    assert bar["unknown/unknown"]["mode"] == "DISABLE"
    assert bar["unknown/unknown"]["port"] == 80
    assert bar["foo/sleep"]["status"] == "ok"
    from meshlens.analytics.istio.mtls import effective_mode

    cfg = config(*files)
    assert effective_mode(cfg, "bar", "httpbin", "v1", port=80)[0] == "DISABLE"
    assert effective_mode(cfg, "bar", "httpbin", "v1", port=8080)[0] == "STRICT"
    assert effective_mode(cfg, "bar", "sleep", "unknown", port=80)[0] == "PERMISSIVE"


def test_integer_and_quoted_port_keys_are_the_same_policy() -> None:
    text = (ART / AUTHN / "bar-httpbin-strict-port-80-disable.yaml").read_text()
    as_int = parse_documents(text, "int.yaml").resources[0].spec
    as_str = parse_documents(text.replace("    80:", '    "80":'), "str.yaml").resources[0].spec
    assert as_int == as_str
    assert as_int["portLevelMtls"] == {"80": {"mode": "DISABLE"}}


@pytest.mark.parametrize("scenario", list(AUTHN_SCENARIOS))
@pytest.mark.parametrize("flavour", [IMPORT, OTEL])
def test_authn_policy_task_from_text_logs(tmp_path: Path, scenario: str, flavour: str) -> None:
    """Istio's text access log (imported per pod, or the default OpenTelemetry log), with the
    httpbin manifests applied as the task does. The sidecar-to-sidecar requests show Istio's
    mTLS SNI; legacy's plaintext requests show none, and the decoder records their TLS state as
    unknown. So meshlens cannot *prove* they are plaintext: where the task prints 000 it warns
    that STRICT cannot be verified for them; it never calls a 200 pair refused."""
    files, documented = AUTHN_SCENARIOS[scenario]
    cfg = merge([config(*files), httpbin_manifests()]) if files else httpbin_manifests()
    report = check("mtls", tmp_path, authn_task_traffic(), flavour, cfg)
    assert not report.problems, [f.message for f in report.problems]
    warned = {
        t
        for f in report.findings
        if f.severity == "warning" and "cannot be verified" in f.message
        for t in ("foo", "bar")
        if f.resource.endswith((f"-> {t}/httpbin", f"-> {t}/unknown"))
    }
    strict_targets = {t for _f, t in documented}
    assert warned == strict_targets, [f.message for f in report.findings]


def test_workload_policy_without_labels_is_undetermined_not_guessed(tmp_path: Path) -> None:
    """Default OpenTelemetry logs name no workload: without httpbin's manifests, whether
    `selector: app: httpbin` picks the server in bar is unknown, and the check says so."""
    files, _ = AUTHN_SCENARIOS["enable mutual TLS per workload"]
    report = check("mtls", tmp_path, authn_task_traffic(), OTEL, config(*files))
    assert not report.problems
    bar = [r for r in report.rows if r["destination"].startswith("bar/")]
    assert {r["mode"] for r in bar if r["tls_unknown"]} == {"undetermined"}
    msgs = [f.message for f in report.findings if f.resource.endswith("bar/unknown")]
    assert any(
        "destination label 'app' unknown" in m and "PeerAuthentication bar/httpbin" in m
        for m in msgs
    ), msgs


MIGRATION: Final = "mtls-migration/default-strict.yaml"
MIGRATION_PAIRS: Final = [(f, t) for f in NAMESPACES for t in ("foo", "bar")]


@pytest.mark.parametrize(
    ("namespaces", "documented"),
    [
        ((), set()),
        (("foo",), {("legacy", "foo")}),
        (("foo", "istio-system"), {("legacy", "foo"), ("legacy", "bar")}),
    ],
    ids=["set up the cluster", "lock down by namespace", "lock down the entire mesh"],
)
def test_mtls_migration_task(
    tmp_path: Path, namespaces: tuple[str, ...], documented: set[tuple[str, str]]
) -> None:
    """The migration task applies one manifest without a namespace, `kubectl apply -n foo`
    and then `-n istio-system`."""
    cfg = merge(config(MIGRATION, namespace=ns) for ns in namespaces)
    report = check("mtls", tmp_path, authn_task_traffic(), FULL, cfg)
    assert {p for p in refused(report) if p in MIGRATION_PAIRS} == documented
    assert refused(report) == documented
    if not namespaces:
        warned = {f.resource for f in report.findings if f.severity == "warning"}
        # PERMISSIVE: plaintext from legacy is what blocks the move to STRICT.
        assert warned == {"unknown/unknown -> foo/httpbin", "unknown/unknown -> bar/httpbin"}
