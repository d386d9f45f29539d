"""The Argo Rollouts example of deploy/gate, end to end: Argo's exact Web-metric request (built
from the shipped AnalysisTemplate and Rollout the way Argo builds it, argo_sim.py) goes to the
real meshlens API on 127.0.0.1:0, which judges request rows written to a real store the way
Istio reports a subset-routed Rollout; our answer then goes through Argo's jsonPath and
conditions. A healthy canary is Successful, a 10%-error canary Failed, too little traffic
Inconclusive, and the pre-fix example (pod-template hashes, selector=version) never decides."""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pyarrow as pa
import pytest
import yaml

from meshlens.analytics.catalog import connect
from meshlens.analytics.gate.api import gate_routes
from meshlens.collector.store.parquet_write import write_table
from meshlens.httpd import start_http_server
from tests.conformance.argo import argo_sim

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]
GATE = ROOT / "deploy" / "gate"
UPSTREAM = Path(__file__).resolve().parent / "upstream"
SERVICE = "reviews.bookinfo.svc.cluster.local"
# What `valueFrom.podTemplateHashValue: Stable|Latest` would pass (rollouts-pod-template-hash).
STABLE_HASH, CANARY_HASH = "5f9c7b6d8", "7d9f8b6c5d"
EXPECTED_URL = (
    "http://meshlens.meshlens:8080/gate/argo/verdict?service=reviews.bookinfo.svc.cluster.local"
    "&rollout=reviews&selector=subset&baseline=stable&canary=canary&window=5m"
)


def load(path: Path, kind: str) -> dict[str, Any]:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d and d.get("kind") == kind]
    assert len(docs) == 1, f"{path.name}: expected one {kind}"
    return docs[0]


def template() -> dict[str, Any]:
    return load(GATE / "argo-analysistemplate.yaml", "AnalysisTemplate")


def rollout() -> dict[str, Any]:
    return load(GATE / "argo-rollout.yaml", "Rollout")


def resolved_metric(tmpl: dict[str, Any], ro: dict[str, Any]) -> dict[str, Any]:
    """The metric of the AnalysisRun Argo creates for `ro` (args resolved, templated)."""
    incoming = argo_sim.rollout_args(
        ro["spec"]["strategy"]["canary"]["analysis"]["args"],
        ro,
        stable_hash=STABLE_HASH,
        latest_hash=CANARY_HASH,
    )
    args = argo_sim.merge_args(incoming, tmpl["spec"]["args"])
    (metric,) = tmpl["spec"]["metrics"]
    return argo_sim.resolve_metric(metric, args)


# --- telemetry as Istio reports a subset-routed Rollout ----------------------------------------


def write_routed(
    data: Path, subset: str, *, n: int, seq: int, error_every: int = 0, base_ms: float = 8.0
) -> None:
    """n requests productpage -> reviews that the VirtualService sent to `subset`, over the last
    240 s, each reported by both proxies. The client's report names the subset in its cluster
    (outbound|9080|<subset>|<host>); neither report carries the pod-template hash: Istio gives a
    Rollout's pods the workload name `reviews` (hash stripped) and, without a `version` label,
    the canonical revision `latest`."""
    now = time.time()
    ts = [int((now - 240 + 239 * i / n) * 1e6) for i in range(n)]
    codes = [500 if error_every and i % error_every == 0 else 200 for i in range(n)]
    # base..base+4 ms, spread (a pseudo-random permutation), the same on every side: whole
    # milliseconds in five steps would put the healthy canary's p50 on a tie with the tolerance
    # boundary, where the block split (which moves with the clock) decides.
    server_ms = [base_ms + (i * 7919 % 1000) / 250 for i in range(n)]
    ids = [f"{subset}-{seq}-{i:06d}" for i in range(n)]

    def rows(reporter: str, cluster: str, extra_ms: float) -> pa.Table:
        return pa.table(
            {
                "ts": pa.array(ts, pa.timestamp("us", tz="UTC")),
                "duration_ms": [d + extra_ms for d in server_ms],
                "reporter": [reporter] * n,
                "protocol": ["http"] * n,
                "source_workload": ["productpage-v1"] * n,
                "source_namespace": ["bookinfo"] * n,
                "source_canonical_service": ["productpage"] * n,
                "source_version": ["v1"] * n,
                "destination_service": [SERVICE] * n,
                "destination_service_name": ["reviews"] * n,
                "destination_namespace": ["bookinfo"] * n,
                "destination_workload": ["reviews"] * n,
                "destination_canonical_service": ["reviews"] * n,
                "destination_version": ["latest"] * n,
                "method": ["GET"] * n,
                "path": ["/reviews/0"] * n,
                "response_code": codes,
                "response_flags": ["-"] * n,
                "grpc_status": [""] * n,
                "upstream_cluster": [cluster] * n,
                "request_id": ids,
            }
        )

    write_table(
        data, "requests", rows("source", f"outbound|9080|{subset}|{SERVICE}", 1.0), "t", seq
    )
    write_table(data, "requests", rows("destination", "inbound|9080||", 0.0), "t", seq + 1)


@contextmanager
def meshlens(data: Path) -> Iterator[tuple[str, int]]:
    """`meshlens serve`'s gate routes on 127.0.0.1:0 with the judge's default config."""
    settings = argparse.Namespace(data_dir=data, gate_window=300.0, gate_judge_config="")
    server = start_http_server("127.0.0.1", 0, gate_routes(settings))
    try:
        yield ("127.0.0.1", server.port)
    finally:
        server.stop()


@pytest.fixture(scope="module")
def healthy_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Equal subsets with enough traffic for the default judge to bound the error rate within
    +0.5 pp and latency within +10% (3000 requests a side without errors)."""
    data = tmp_path_factory.mktemp("healthy")
    write_routed(data, "stable", n=3000, seq=1)
    write_routed(data, "canary", n=3000, seq=3)
    return data


# --- the request -------------------------------------------------------------------------------


def test_the_exact_request_argo_sends() -> None:
    tmpl, ro = template(), rollout()
    metric = resolved_metric(tmpl, ro)
    req = argo_sim.web_request(metric)
    assert req.method == "GET" and req.body is None
    assert req.url == EXPECTED_URL
    assert req.headers == [
        ("Host", "meshlens.meshlens:8080"),
        ("User-Agent", "Go-http-client/1.1"),
        ("Accept-Encoding", "gzip"),
    ]
    assert req.timeout_s == 20.0
    # The sides asked for are the subsets Argo maintains, the only identity telemetry carries.
    query = dict(parse_qsl(urlsplit(req.url).query))
    dr = ro["spec"]["strategy"]["canary"]["trafficRouting"]["istio"]["destinationRule"]
    assert query == {
        "service": SERVICE,
        "rollout": ro["metadata"]["name"],
        "selector": "subset",
        "baseline": dr["stableSubsetName"],
        "canary": dr["canarySubsetName"],
        "window": "5m",
    }
    assert STABLE_HASH not in req.url and CANARY_HASH not in req.url


# --- the three outcomes ------------------------------------------------------------------------


def run_measurement(data: Path, metric: dict[str, Any]) -> argo_sim.Measurement:
    with meshlens(data) as addr:
        m = argo_sim.measure(metric, addr)
    assert m.sent is not None
    assert m.sent.request_line.startswith("GET /gate/argo/verdict?service=")
    return m


def check_answer(m: argo_sim.Measurement, verdict: str, *, n_baseline: int, n_canary: int) -> None:
    assert m.sent is not None and m.sent.status == 200
    body = json.loads(m.sent.body)
    assert body["verdict"] == verdict == m.result["verdict"]
    # The measurement value Argo stores is the compact summary (Go's json.Marshal of it).
    assert m.value == argo_sim.go_marshal(body["summary"])
    assert len(m.value) < 2000
    assert m.result["requests"] == {"baseline": n_baseline, "canary": n_canary}
    assert m.result["selector"] == "subset"
    assert (m.result["baseline"], m.result["canary"]) == ("stable", "canary")


def test_healthy_canary_is_successful(healthy_store: Path) -> None:
    m = run_measurement(healthy_store, resolved_metric(template(), rollout()))
    assert m.phase == argo_sim.SUCCESSFUL, m.value
    check_answer(m, "pass", n_baseline=3000, n_canary=3000)
    assert "hint" not in m.result
    conn = connect(healthy_store)
    try:
        rows = conn.execute(
            "SELECT rollout, service, baseline, canary, verdict, action FROM verdicts "
            "WHERE baseline = 'stable'"
        ).fetchall()
    finally:
        conn.close()
    assert rows == [("reviews", SERVICE, "stable", "canary", "pass", "argo:pass")]


def test_canary_with_ten_percent_errors_fails(tmp_path: Path) -> None:
    write_routed(tmp_path, "stable", n=3000, seq=1)
    write_routed(tmp_path, "canary", n=3000, seq=3, error_every=10)
    m = run_measurement(tmp_path, resolved_metric(template(), rollout()))
    assert m.phase == argo_sim.FAILED, m.value
    check_answer(m, "fail", n_baseline=3000, n_canary=3000)
    assert "error" in m.result["reason"]


def test_too_little_traffic_is_inconclusive(tmp_path: Path) -> None:
    write_routed(tmp_path, "stable", n=100, seq=1)
    write_routed(tmp_path, "canary", n=100, seq=3)
    m = run_measurement(tmp_path, resolved_metric(template(), rollout()))
    assert m.phase == argo_sim.INCONCLUSIVE, m.value
    check_answer(m, "inconclusive", n_baseline=100, n_canary=100)
    assert "hint" not in m.result  # both sides have requests: just not enough yet


# --- the cause of the issue ----------------------------------------------------------------------

# The example as it was: pod-template hashes as the sides, judged on destination_version.
PRE_FIX_TEMPLATE: dict[str, Any] = {
    "spec": {
        "args": [{"name": "service"}, {"name": "baseline"}, {"name": "canary"}],
        "metrics": [
            {
                "name": "meshlens-verdict",
                "interval": "1m",
                "count": 10,
                "failureLimit": 0,
                "inconclusiveLimit": 2,
                "successCondition": 'result.verdict == "pass"',
                "failureCondition": 'result.verdict == "fail"',
                "provider": {
                    "web": {
                        "url": "http://meshlens.meshlens:8080/gate/argo/verdict?service="
                        "{{args.service}}&baseline={{args.baseline}}&canary={{args.canary}}"
                        "&selector=version&window=5m",
                        "timeoutSeconds": 20,
                        "jsonPath": "{$}",
                    }
                },
            }
        ],
    }
}
PRE_FIX_ROLLOUT_ARGS = [
    {"name": "service", "value": SERVICE},
    {"name": "baseline", "valueFrom": {"podTemplateHashValue": "Stable"}},
    {"name": "canary", "valueFrom": {"podTemplateHashValue": "Latest"}},
]


def test_pod_template_hashes_never_decide_and_meshlens_says_why(healthy_store: Path) -> None:
    ro = rollout()
    ro["spec"]["strategy"]["canary"]["analysis"]["args"] = PRE_FIX_ROLLOUT_ARGS
    metric = resolved_metric(PRE_FIX_TEMPLATE, ro)
    assert f"baseline={STABLE_HASH}&canary={CANARY_HASH}" in metric["provider"]["web"]["url"]
    # The same healthy traffic that passes by subset: by hash it is never judged.
    m = run_measurement(healthy_store, metric)
    assert m.phase == argo_sim.INCONCLUSIVE
    assert m.result["verdict"] == "inconclusive"
    assert m.result["requests"] == {"baseline": 0, "canary": 0}
    hint = m.result["hint"]
    assert f"{STABLE_HASH!r}, {CANARY_HASH!r} look like Argo Rollouts pod-template hashes" in hint
    assert "selector=subset" in hint
    # ... and lists what the telemetry does carry for the service.
    assert "subset: canary (3000), stable (3000)" in hint
    assert "version: latest (6000)" in hint
    assert "workload: reviews (6000)" in hint


# --- routing: the subsets select the pods Argo labels ------------------------------------------


def pod_labels(ro: dict[str, Any], pod_hash: str) -> dict[str, str]:
    """A pod of one of the Rollout's ReplicaSets: the template's labels plus the hash label
    (no canaryMetadata / stableMetadata in the example)."""
    canary = ro["spec"]["strategy"]["canary"]
    assert "canaryMetadata" not in canary and "stableMetadata" not in canary
    labels = dict(ro["spec"]["template"]["metadata"]["labels"])
    labels[argo_sim.POD_TEMPLATE_HASH_LABEL] = pod_hash
    return labels


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def test_subsets_select_exactly_the_pods_argo_calls_stable_and_canary() -> None:
    ro = rollout()
    istio = ro["spec"]["strategy"]["canary"]["trafficRouting"]["istio"]
    dr = load(GATE / "argo-routing.yaml", "DestinationRule")
    vs = load(GATE / "argo-routing.yaml", "VirtualService")
    assert dr["metadata"]["name"] == istio["destinationRule"]["name"]
    assert vs["metadata"]["name"] == istio["virtualService"]["name"]
    names = {
        istio["destinationRule"]["stableSubsetName"],
        istio["destinationRule"]["canarySubsetName"],
    }
    # Argo drops every other subset from the DestinationRule it manages.
    assert {s["name"] for s in dr["spec"]["subsets"]} == names
    labelled = argo_sim.update_hash(
        dr,
        stable_subset=istio["destinationRule"]["stableSubsetName"],
        canary_subset=istio["destinationRule"]["canarySubsetName"],
        stable_hash=STABLE_HASH,
        canary_hash=CANARY_HASH,
    )
    subsets = {s["name"]: s["labels"] for s in labelled["spec"]["subsets"]}
    stable_pod, canary_pod = pod_labels(ro, STABLE_HASH), pod_labels(ro, CANARY_HASH)
    assert selects(subsets["stable"], stable_pod) and not selects(subsets["stable"], canary_pod)
    assert selects(subsets["canary"], canary_pod) and not selects(subsets["canary"], stable_pod)
    # The Rollout's selector matches both ReplicaSets' pods (what the Service selects too).
    match = ro["spec"]["selector"]["matchLabels"]
    assert selects(match, stable_pod) and selects(match, canary_pod)
    # The route Argo weights: the two subsets of the DestinationRule's host, 100/0 at rest.
    (route,) = [r for r in vs["spec"]["http"] if r["name"] in istio["virtualService"]["routes"]]
    dests = {d["destination"]["subset"]: d for d in route["route"]}
    assert set(dests) == names
    assert {d["destination"]["host"] for d in dests.values()} == {dr["spec"]["host"]}
    assert dests["stable"]["weight"] == 100 and dests["canary"]["weight"] == 0
    # ... laid out like Argo's own example (examples/istio/istio-subset-split.yaml).
    up_vs = load(UPSTREAM / "istio-subset-split.yaml", "VirtualService")
    up_dr = load(UPSTREAM / "istio-subset-split.yaml", "DestinationRule")
    up_route = up_vs["spec"]["http"][0]
    assert route["name"] == up_route["name"] == "primary"
    assert [d["destination"]["subset"] for d in route["route"]] == [
        d["destination"]["subset"] for d in up_route["route"]
    ]
    assert [d["weight"] for d in route["route"]] == [d["weight"] for d in up_route["route"]]
    assert {s["name"] for s in up_dr["spec"]["subsets"]} == names


def test_template_defaults_are_the_rollouts_subset_names() -> None:
    ro = rollout()
    dr = ro["spec"]["strategy"]["canary"]["trafficRouting"]["istio"]["destinationRule"]
    tmpl_args = {a["name"]: a.get("value") for a in template()["spec"]["args"]}
    assert tmpl_args["stable-subset"] == dr["stableSubsetName"]
    assert tmpl_args["canary-subset"] == dr["canarySubsetName"]
