"""Flagger webhooks, the Argo Rollouts Web metric and Kayenta's RemoteJudge, over real HTTP on
127.0.0.1:0, judged by the real judge over requests written to a real store."""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import requests

from meshlens.analytics.catalog import connect
from meshlens.analytics.gate.api import gate_routes
from meshlens.analytics.gate.state import pending_commands, queue_command
from meshlens.collector.store.parquet_write import write_table
from meshlens.httpd import RunningHttpServer, start_http_server


def write_side(
    data_dir: Path, service: str, version: str, *, n: int, error_every: int = 0, seq: int
) -> None:
    """n destination-reported requests of one version over the last 240 s."""
    now = time.time()
    ts = [now - 240 + 239 * i / n for i in range(n)]
    codes = [500 if error_every and i % error_every == 0 else 200 for i in range(n)]
    name, ns = service.split(".")[0], service.split(".")[1]
    table = pa.table(
        {
            "ts": pa.array([int(t * 1e6) for t in ts], pa.timestamp("us", tz="UTC")),
            # 8..12 ms, spread (a pseudo-random permutation), the same on every side
            "duration_ms": [8.0 + (i * 7919 % 1000) / 250 for i in range(n)],
            "reporter": ["destination"] * n,
            "protocol": ["http"] * n,
            "destination_service": [service] * n,
            "destination_service_name": [name] * n,
            "destination_namespace": [ns] * n,
            "destination_version": [version] * n,
            "destination_workload": [f"{name}-{version}" if version.startswith("v") else version]
            * n,
            "response_code": codes,
            "response_flags": ["-"] * n,
            "grpc_status": [""] * n,
        }
    )
    write_table(data_dir, "requests", table, node="test", lo=seq)


@pytest.fixture
def api(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    data = tmp_path / "data"
    # Equal versions, enough traffic to bound the error rate within +0.5 pp (3000 requests a
    # side without errors) and latency within +10%: the judge passes them.
    write_side(data, "reviews.default.svc.cluster.local", "v1", n=3000, seq=1)
    write_side(data, "reviews.default.svc.cluster.local", "v2", n=3000, seq=2)
    write_side(data, "ratings.default.svc.cluster.local", "v1", n=500, seq=3)
    write_side(data, "ratings.default.svc.cluster.local", "v2", n=500, error_every=10, seq=4)
    # Flagger naming: primary and canary workloads of podinfo (destination_workload)
    write_side(data, "podinfo.test.svc.cluster.local", "podinfo-primary", n=500, seq=5)
    write_side(data, "podinfo.test.svc.cluster.local", "podinfo", n=500, error_every=10, seq=6)
    settings = argparse.Namespace(data_dir=data, gate_window=300.0, gate_judge_config="")
    server: RunningHttpServer = start_http_server("127.0.0.1", 0, gate_routes(settings))
    try:
        yield f"http://127.0.0.1:{server.port}", data
    finally:
        server.stop()


def flagger(
    base: str, hook: str, name: str, metadata: dict[str, str], namespace: str = "default"
) -> requests.Response:
    # Flagger's CanaryWebhookPayload, exactly as pkg/controller/webhook.go posts it
    payload = {
        "name": name,
        "namespace": namespace,
        "phase": "Progressing",
        "checksum": "85d557f47b",
        "metadata": metadata,
    }
    return requests.post(f"{base}/gate/flagger/{hook}", json=payload, timeout=30)


def md(service: str) -> dict[str, str]:
    return {
        "service": service,
        "baseline": "v1",
        "canary": "v2",
        "selector": "version",
        "window": "5m",
    }


def test_flagger_rollout_hook(api: tuple[str, Path]) -> None:
    base, data = api
    ok = flagger(base, "rollout", "reviews", md("reviews.default.svc.cluster.local"))
    assert ok.status_code == 200 and ok.json()["verdict"] == "pass", ok.json()["reason"]
    bad = flagger(base, "rollout", "ratings", md("ratings.default.svc.cluster.local"))
    assert bad.status_code == 412 and bad.json()["verdict"] == "fail"  # > 202: failed check
    assert "error" in bad.json()["reason"]
    idle = flagger(base, "rollout", "details", md("details.default.svc.cluster.local"))
    assert idle.status_code == 200 and idle.json()["verdict"] == "inconclusive"  # not a failure
    strict = flagger(
        base,
        "rollout",
        "details",
        {**md("details.default.svc.cluster.local"), "inconclusive": "fail"},
    )
    assert strict.status_code == 412
    conn = connect(data)
    try:
        rows = conn.execute("SELECT rollout, verdict, action FROM verdicts ORDER BY ts").fetchall()
    finally:
        conn.close()
    assert rows == [
        ("reviews", "pass", "flagger:rollout:200"),
        ("ratings", "fail", "flagger:rollout:412"),
        ("details", "inconclusive", "flagger:rollout:200"),
        ("details", "inconclusive", "flagger:rollout:412"),
    ]


def test_flagger_defaults_follow_its_naming(api: tuple[str, Path]) -> None:
    base, _ = api
    # no metadata: service podinfo.test.svc.cluster.local, podinfo-primary vs podinfo by workload
    resp = flagger(base, "rollout", "podinfo", {}, namespace="test")
    assert resp.status_code == 412 and resp.json()["verdict"] == "fail"


def test_flagger_confirm_hooks_gate_on_pass_only(api: tuple[str, Path]) -> None:
    base, data = api
    good = md("reviews.default.svc.cluster.local")
    assert flagger(base, "confirm-traffic-increase", "reviews", good).status_code == 200
    assert flagger(base, "confirm-promotion", "reviews", good).status_code == 200
    idle = md("details.default.svc.cluster.local")
    assert flagger(base, "confirm-promotion", "details", idle).status_code == 403
    assert flagger(base, "confirm-traffic-increase", "details", idle).status_code == 403
    # `meshlens gate pause --rollout reviews` holds even a passing canary until resume
    queue_command(data, "reviews", "pause")
    assert flagger(base, "confirm-traffic-increase", "reviews", good).status_code == 403
    assert flagger(base, "confirm-rollout", "reviews", {}).status_code == 403
    queue_command(data, "reviews", "resume")
    assert flagger(base, "confirm-promotion", "reviews", good).status_code == 200
    assert flagger(base, "confirm-rollout", "reviews", {}).status_code == 200


def test_flagger_rollback_hook(api: tuple[str, Path]) -> None:
    base, data = api
    assert flagger(base, "rollback", "reviews", {}).status_code == 403  # nothing asked
    queue_command(data, "reviews", "abort", reason="bad deploy")
    resp = flagger(base, "rollback", "reviews", {})
    assert resp.status_code == 200 and resp.json()["action"] == "rollback"
    assert pending_commands(data, "reviews") == []  # consumed: one rollback per abort
    assert flagger(base, "rollback", "reviews", {}).status_code == 403
    on_fail = {**md("ratings.default.svc.cluster.local"), "rollbackOnFail": "true"}
    assert flagger(base, "rollback", "ratings", on_fail).status_code == 200
    healthy = {**md("reviews.default.svc.cluster.local"), "rollbackOnFail": "true"}
    assert flagger(base, "rollback", "reviews", healthy).status_code == 403


def test_flagger_event_and_bad_payloads(api: tuple[str, Path]) -> None:
    base, _ = api
    assert flagger(base, "post-rollout", "reviews", {}).status_code == 200
    assert flagger(base, "event", "reviews", {"eventMessage": "x"}).status_code == 200
    r = requests.post(f"{base}/gate/flagger/rollout", data=b"not json", timeout=5)
    assert r.status_code == 400
    r = requests.post(f"{base}/gate/flagger/rollout", json={"namespace": "x"}, timeout=5)
    assert r.status_code == 400 and "name" in r.json()["error"]
    assert flagger(base, "pre-flight", "reviews", {}).status_code == 404


def test_argo_web_metric(api: tuple[str, Path]) -> None:
    base, _ = api
    # GET with the args templated into the URL, as the AnalysisTemplate in deploy/gate does
    r = requests.get(
        f"{base}/gate/argo/verdict",
        params={
            "service": "reviews.default.svc.cluster.local",
            "baseline": "v1",
            "canary": "v2",
            "selector": "version",
            "window": "5m",
        },
        timeout=30,
    )
    assert r.status_code == 200
    body = r.json()
    assert body["verdict"] == "pass" and body["score"] == 100.0
    assert {m["name"] for m in body["metrics"]} >= {"error-rate"}
    # POST with jsonBody
    r = requests.post(
        f"{base}/gate/argo/verdict",
        json={"service": "ratings.default.svc.cluster.local", "baseline": "v1", "canary": "v2"},
        timeout=30,
    )
    assert r.status_code == 200 and r.json()["verdict"] == "fail"  # 200: the condition decides
    r = requests.get(
        f"{base}/gate/argo/verdict",
        params={"service": "nothing.default.svc.cluster.local", "baseline": "v1", "canary": "v2"},
        timeout=30,
    )
    assert r.status_code == 200 and r.json()["verdict"] == "inconclusive"
    r = requests.get(f"{base}/gate/argo/verdict", params={"baseline": "v1"}, timeout=5)
    assert r.status_code == 400  # Argo counts it as an Error measurement, never a pass


def test_argo_summary_put_and_strict_json(tmp_path: Path) -> None:
    """The compact `summary` an AnalysisTemplate's jsonPath reads, PUT (Argo's third method),
    and a body Go's encoding/json accepts: no NaN/Infinity anywhere (else Argo would take the
    body as text and every condition would fail to evaluate: an Error measurement)."""
    from meshlens.analytics.gate.api import GateApi
    from meshlens.analytics.gate.model import Judgement

    details = {
        "metrics": [
            {"name": "error-rate", "n_baseline": 3100, "n_canary": 2900, "effect": float("nan")},
            {"name": "latency", "n_baseline": 3000, "n_canary": 2900, "ci": [0.0, float("inf")]},
        ]
    }

    def factory(service: str, baseline: str, canary: str, selector: str) -> Any:
        return lambda window, canary_weight=None: Judgement(
            "pass", float("nan"), "all good", details
        )

    api = GateApi(tmp_path, judge_factory=factory)
    server = start_http_server("127.0.0.1", 0, api.routes())
    try:
        r = requests.put(
            f"http://127.0.0.1:{server.port}/gate/argo/verdict",
            json={
                "service": "reviews.default.svc.cluster.local",
                "baseline": "stable",
                "canary": "canary",
                "selector": "subset",
            },
            timeout=30,
        )
    finally:
        server.stop()
    assert r.status_code == 200
    assert "NaN" not in r.text and "Infinity" not in r.text
    body = r.json()
    assert body["metrics"][0]["effect"] is None and body["metrics"][1]["ci"] == [0.0, None]
    assert body["requests"] == {"baseline": 3100, "canary": 2900}
    assert body["summary"] == {
        "verdict": "pass",
        "score": None,
        "reason": "all good",
        "baseline": "stable",
        "canary": "canary",
        "selector": "subset",
        "requests": {"baseline": 3100, "canary": 2900},
    }


def kayenta_request(control: list[Any], experiment: list[Any]) -> dict[str, Any]:
    """A RemoteJudgeRequest as kayenta-judge's RemoteJudge posts it."""
    return {
        "canaryConfig": {
            "name": "productpage-canary",
            "applications": ["bookinfo"],
            "judge": {"name": "RemoteJudge-v1.0", "judgeConfigurations": {}},
            "metrics": [
                {
                    "name": "error-rate",
                    "query": {"type": "prometheus", "metricName": "istio_requests_total"},
                    "groups": ["errors"],
                    "analysisConfigurations": {
                        "canary": {"direction": "increase", "critical": True}
                    },
                    "scopeName": "default",
                }
            ],
            "classifier": {
                "groupWeights": {"errors": 100},
                "scoreThresholds": {"marginal": 75, "pass": 95},
            },
        },
        "metricSetPairList": [
            {
                "name": "error-rate",
                "id": "a1b2",
                "tags": {"version": "v2"},
                "values": {"control": control, "experiment": experiment},
                "scopes": {
                    "control": {"startTimeIso": "2026-11-25T10:00:00Z", "step": 60},
                    "experiment": {"startTimeIso": "2026-11-25T10:00:00Z", "step": 60},
                },
                "attributes": {"control": {"query": "..."}, "experiment": {"query": "..."}},
            }
        ],
        "scoreThresholds": {"pass": 95.0, "marginal": 75.0},
    }


def test_kayenta_remote_judge(api: tuple[str, Path]) -> None:
    base, _ = api
    control = [0.010, 0.012, 0.011, 0.009, 0.010, 0.013, 0.011, 0.010, 0.012, 0.011] * 3
    r = requests.post(f"{base}/judge", json=kayenta_request(control, list(control)), timeout=30)
    assert r.status_code == 200, r.text
    result = r.json()
    assert result["score"]["classification"] == "Pass" and result["score"]["score"] == 100.0
    assert result["results"][0]["classification"] == "Pass"
    worse = [v * 5 for v in control]
    r = requests.post(f"{base}/judge", json=kayenta_request(control, worse), timeout=30)
    result = r.json()
    assert result["results"][0]["classification"] == "High"
    assert result["results"][0]["critical"] is True
    assert result["score"]["score"] == 0.0 and result["score"]["classification"] == "Fail"
    r = requests.post(f"{base}/judge", json={"metricSetPairList": "nope"}, timeout=5)
    assert r.status_code == 400


def test_rollout_state_endpoints(api: tuple[str, Path]) -> None:
    base, _ = api
    assert requests.get(f"{base}/gate/rollouts", timeout=5).json() == {"rollouts": []}
    assert requests.get(f"{base}/gate/rollouts/nope", timeout=5).status_code == 404


def test_a_judge_error_is_inconclusive_never_pass_or_fail(tmp_path: Path) -> None:
    from datetime import UTC, datetime, timedelta

    from meshlens.analytics.gate.judging import StoreJudge
    from meshlens.analytics.window import TimeWindow

    end = datetime.now(UTC)
    j = StoreJudge(tmp_path, service="reviews", baseline="v1", canary="v1")  # same: bad input
    got = j(TimeWindow(end - timedelta(minutes=5), end), 10)
    assert got.verdict == "inconclusive" and got.reason.startswith("judge failed: ")


def test_gate_routes_read_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from meshlens.analytics.api_settings import GATE_API

    monkeypatch.setenv("MESHLENS_GATE_WINDOW", "10m")
    assert {s.env for s in GATE_API} == {"MESHLENS_GATE_WINDOW", "MESHLENS_GATE_JUDGE_CONFIG"}
    routes = gate_routes({"data_dir": tmp_path})
    handler = next(r.handler for r in routes if r.path == "/gate/argo/verdict")
    assert handler.__self__.window_s == 600.0  # type: ignore[attr-defined]
