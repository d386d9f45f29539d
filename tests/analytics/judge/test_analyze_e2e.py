"""End to end: Istio access logs imported by the collector (`meshlens import accesslog`) into the
store, then `meshlens canary analyze` (CLI), analyze() and POST /api/v1/canary/analyze."""

from __future__ import annotations

import json
import re
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from meshlens.analytics.catalog import connect
from meshlens.analytics.errors import JudgeInputError
from meshlens.analytics.judge.analyze import analyze
from meshlens.analytics.judge.api import judge_routes
from meshlens.analytics.judge.config import default_config, parse_config
from meshlens.analytics.window import TimeWindow
from meshlens.cli import main
from meshlens.collector.store.parquet_write import write_table
from meshlens.httpd import HttpOptions, Request, dispatch, start_http_server

START = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
MINUTES = 10
WINDOW = TimeWindow(START, START + timedelta(minutes=MINUTES))
ARGS = ["--from", "2026-11-25T10:00:00Z", "--to", "2026-11-25T10:10:00Z"]

# version -> (rps, 5xx probability, latency median ms)
VERSIONS = {"v1": (6.0, 0.01, 20.0), "v2": (6.0, 0.08, 30.0), "v3": (6.0, 0.01, 20.0)}


def _lines(rng: np.random.Generator) -> list[str]:
    out = []
    for version, (rps, p5xx, median) in VERSIONS.items():
        n = rng.poisson(rps * MINUTES * 60)
        ts = np.sort(rng.uniform(0, MINUTES * 60, n))
        lat = np.maximum(1, np.round(median * rng.lognormal(0, 0.5, n)))
        codes = np.where(rng.random(n) < p5xx, 503, 200)
        for i in range(n):
            t = START + timedelta(seconds=float(ts[i]))
            out.append(
                json.dumps(
                    {
                        "start_time": t.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                        "method": "GET",
                        "path": "/reviews/0",
                        "protocol": "HTTP/1.1",
                        "response_code": int(codes[i]),
                        "response_flags": "-",
                        "bytes_received": 0,
                        "bytes_sent": 300,
                        "duration": int(lat[i]),
                        "upstream_service_time": "1",
                        "x_forwarded_for": "-",
                        "user_agent": "e2e",
                        "request_id": f"{version}-{i}",
                        "authority": "reviews:9080",
                        "upstream_host": "10.0.0.5:9080",
                        "upstream_cluster": (
                            f"outbound|9080|{version}|reviews.default.svc.cluster.local"
                        ),
                        "downstream_local_address": "10.96.0.10:9080",
                        "downstream_remote_address": "10.0.0.9:40000",
                        "route_name": "default",
                    }
                )
            )
    return out


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("judge-e2e")
    log = d / "productpage-proxy.log"
    log.write_text("\n".join(_lines(np.random.default_rng(42))) + "\n")
    rc = main(
        [
            "import",
            "accesslog",
            str(log),
            "--data-dir",
            str(d / "data"),
            "--proxy-pod",
            "productpage-v1-7f9c8d6b5-x2x4p",
            "--proxy-namespace",
            "default",
            "--progress",
            "false",
        ]
    )
    assert rc == 0
    return d / "data"


def _cli(store: Path, *extra: str) -> int:
    return main(
        ["canary", "analyze", "--service", "reviews", "--data-dir", str(store), *ARGS, *extra]
    )


def test_cli_fails_a_worse_canary_with_json(
    store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = _cli(store, "--baseline", "v1", "--canary", "v2", "--format", "json")
    out = json.loads(capsys.readouterr().out)
    assert rc == 1 and out["verdict"] == "fail"
    for key in ("verdict", "score", "reason", "metrics"):
        assert key in out
    m = {x["name"]: x for x in out["metrics"]}
    err = m["error-rate"]
    for key in (
        "name",
        "classification",
        "baseline",
        "canary",
        "effect",
        "ci",
        "n_baseline",
        "n_canary",
        "reason",
    ):
        assert key in err
    assert err["classification"] == "high" and err["canary"] > err["baseline"]
    assert err["n_baseline"] > 3000 and err["n_canary"] > 3000
    assert err["e_value"] > 100 and err["ci"][0] > 0
    assert m["latency-distribution"]["classification"] == "high"


def test_cli_an_equal_canary_on_little_traffic_is_inconclusive_and_says_what_settles_it(
    store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # 6 rps per version for 10 minutes cannot bound the error rate within the default +0.5 pp:
    # no significant change is not evidence of no regression.
    rc = _cli(store, "--baseline", "v1", "--canary", "v3")
    out = capsys.readouterr().out
    assert rc == 3, out
    assert out.startswith("verdict: inconclusive")
    assert "critical metric error-rate is not settled" in out
    assert re.search(r"the upper bound \+[0-9.]+ pp is beyond the tolerance \+0\.50 pp", out)
    assert re.search(r"about [0-9.,]+x the traffic so far would settle it \([0-9,]+ more", out)


def test_cli_passes_an_equal_canary_within_its_tolerances(
    store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "canary.yaml"
    cfg.write_text(
        "metrics:\n"
        "  - {name: error-rate, kind: error_rate, critical: true, tolerance: 3pp}\n"
        "  - {name: p99, kind: latency, quantile: 0.99, critical: true, tolerance: 40%}\n"
        "  - {name: p50, kind: latency, quantile: 0.5, tolerance: 50%}\n"
    )
    rc = _cli(store, "--baseline", "v1", "--canary", "v3", "--config", str(cfg))
    out = capsys.readouterr().out
    assert rc == 0, out
    assert out.startswith("verdict: pass")
    assert "error rate within the tolerance +3.00 pp" in out


def test_cli_low_traffic_is_inconclusive(store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(
        [
            "canary",
            "analyze",
            "--service",
            "reviews",
            "--baseline",
            "v1",
            "--canary",
            "v2",
            "--data-dir",
            str(store),
            "--from",
            "2026-11-25T10:00:00Z",
            "--to",
            "2026-11-25T10:00:20Z",
            "--format",
            "json",
        ]
    )
    out = json.loads(capsys.readouterr().out)
    assert rc == 3 and out["verdict"] == "inconclusive"
    assert "not enough traffic" in out["reason"]


def test_cli_bad_config_and_usage_exit_2(
    store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("metrics: [{name: x, kind: latency, quantile: 2}]")
    assert _cli(store, "--baseline", "v1", "--canary", "v2", "--config", str(bad)) == 2
    assert "metrics[0].quantile" in capsys.readouterr().err
    assert _cli(store, "--baseline", "v1", "--canary", "v1") == 2
    assert _cli(store, "--baseline", "v1", "--canary", "v2", "--selector", "pod") == 2
    assert "invalid --selector 'pod'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:  # argparse: a missing required flag
        main(["canary", "analyze", "--service", "reviews", "--data-dir", str(store)])
    assert info.value.code == 2


@pytest.mark.parametrize("mode", ["kayenta", "flagger"])
def test_cli_compat_modes(store: Path, mode: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        _cli(store, "--baseline", "v1", "--canary", "v2", "--mode", mode, "--format", "json") == 1
    )
    out = json.loads(capsys.readouterr().out)
    assert out["mode"] == mode and out["verdict"] == "fail"


def test_cli_imports_a_kayenta_canary_config(
    store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = {
        "name": "reviews",
        "judge": {"name": "NetflixACAJudge-v1.0"},
        "metrics": [
            {
                "name": "error rate",
                "query": {"type": "meshlens", "kind": "error_rate"},
                "groups": ["g"],
                "analysisConfigurations": {"canary": {"critical": True, "direction": "increase"}},
            }
        ],
        "classifier": {"groupWeights": {"g": 100}, "scoreThresholds": {"pass": 95, "marginal": 75}},
    }
    p = tmp_path / "kayenta.json"
    p.write_text(json.dumps(cfg))
    assert (
        _cli(store, "--baseline", "v1", "--canary", "v2", "--config", str(p), "--format", "json")
        == 1
    )
    out = json.loads(capsys.readouterr().out)
    assert out["mode"] == "kayenta" and out["metrics"][0]["label"] == "High"


def test_selectors_see_the_same_requests(store: Path) -> None:
    conn = connect(store, WINDOW)
    cfg = default_config()
    by = {
        sel: analyze(
            conn,
            service="reviews.default.svc.cluster.local",
            baseline="v1",
            canary="v2",
            window=WINDOW,
            config=cfg,
            selector=sel,
        )
        for sel in ("version", "subset", "revision")
    }
    counts = {sel: (v.metrics[0].n_baseline, v.metrics[0].n_canary) for sel, v in by.items()}
    assert len(set(counts.values())) == 1, counts
    with pytest.raises(JudgeInputError, match="unknown selector"):
        analyze(
            conn,
            service="reviews",
            baseline="v1",
            canary="v2",
            window=WINDOW,
            config=cfg,
            selector="pod",
        )


def test_api_route_same_json(store: Path) -> None:
    routes = judge_routes({"data_dir": str(store)})
    body = {
        "service": "reviews",
        "baseline": "v1",
        "canary": "v2",
        "from": "2026-11-25T10:00:00Z",
        "to": "2026-11-25T10:10:00Z",
    }
    resp = dispatch(
        routes,
        HttpOptions(),
        Request("POST", "/api/v1/canary/analyze", {}, {}, json.dumps(body).encode()),
    )
    assert resp.status == 200
    out = json.loads(resp.body)
    assert out["verdict"] == "fail" and out["metrics"][0]["name"] == "error-rate"
    bad = dispatch(
        routes,
        HttpOptions(),
        Request(
            "POST", "/api/v1/canary/analyze", {}, {}, json.dumps({"service": "reviews"}).encode()
        ),
    )
    assert bad.status == 400 and "baseline" in json.loads(bad.body)["error"]
    cfg_bad = dispatch(
        routes,
        HttpOptions(),
        Request(
            "POST",
            "/api/v1/canary/analyze",
            {},
            {},
            json.dumps({**body, "config": {"mode": "magic"}}).encode(),
        ),
    )
    assert cfg_bad.status == 400 and "mode" in json.loads(cfg_bad.body)["error"]
    # Over a real socket too.
    server = start_http_server("127.0.0.1", 0, routes)
    try:
        req = urllib.request.Request(
            f"http://127.0.0.1:{server.port}/api/v1/canary/analyze",
            data=json.dumps({**body, "canary": "v3", "mode": "kayenta"}).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(req, timeout=30) as r:
            got: dict[str, Any] = json.loads(r.read())
        assert got["mode"] == "kayenta" and got["verdict"] in ("pass", "inconclusive")
    finally:
        server.stop()


def test_custom_sql_metric_in_the_sandbox(store: Path) -> None:
    cfg = parse_config(
        {
            "metrics": [
                {
                    "name": "slow-share",
                    "kind": "sql",
                    "critical": True,
                    "query": "SELECT CASE WHEN destination_version = ${canary} THEN 'canary' "
                    "ELSE 'baseline' END AS side, ts, CASE WHEN duration_ms > 40 THEN 1.0 "
                    "ELSE 0.0 END AS value FROM traffic WHERE destination_version IN "
                    "(${baseline}, ${canary})",
                }
            ]
        }
    )
    conn = connect(store, WINDOW)
    v = analyze(
        conn,
        service="reviews",
        baseline="v1",
        canary="v2",
        window=WINDOW,
        config=cfg,
        data_dir=store,
    )
    m = v.metrics[0]
    assert m.classification == "high" and v.verdict == "fail"
    assert m.canary is not None and m.baseline is not None and m.canary > m.baseline
    v_same = analyze(
        conn,
        service="reviews",
        baseline="v1",
        canary="v3",
        window=WINDOW,
        config=cfg,
        data_dir=store,
    )
    # No significant change is not a pass: the custom metric's default tolerance is +10% of
    # the baseline's mean, which 10 minutes of 6 rps cannot bound.
    assert v_same.verdict in ("pass", "inconclusive")
    assert v_same.metrics[0].classification in ("pass", "inconclusive")
    assert v_same.metrics[0].ci is not None and v_same.metrics[0].ci[0] is not None
    assert v_same.metrics[0].ci[0] < 0 < (v_same.metrics[0].ci[1] or 0)


def _spans(rng: np.random.Generator) -> pa.Table:
    rows: dict[str, list[Any]] = {
        k: []
        for k in (
            "trace_id",
            "span_id",
            "parent_span_id",
            "name",
            "kind",
            "start_ts",
            "end_ts",
            "duration_ms",
            "service_name",
            "service_version",
            "status_code",
            "http_status_code",
        )
    }
    for version, slow, err in (("1.0", 1.0, 0.01), ("1.1", 1.6, 0.01)):
        n = 2400
        ts = np.sort(rng.uniform(0, 600, n))
        dur = 15 * slow * rng.lognormal(0, 0.4, n)
        for i in range(n):
            s = START + timedelta(seconds=float(ts[i]))
            rows["trace_id"].append(f"{version}{i:030d}")
            rows["span_id"].append(f"{i:016x}")
            rows["parent_span_id"].append("")
            rows["name"].append("GET /pay")
            rows["kind"].append("server")
            rows["start_ts"].append(s)
            rows["end_ts"].append(s + timedelta(milliseconds=float(dur[i])))
            rows["duration_ms"].append(float(dur[i]))
            rows["service_name"].append("payments")
            rows["service_version"].append(version)
            bad = rng.random() < err
            rows["status_code"].append("error" if bad else "ok")
            rows["http_status_code"].append(500 if bad else 200)
    return pa.table(rows)


def test_spans_source(tmp_path: Path) -> None:
    write_table(tmp_path, "spans", _spans(np.random.default_rng(1)), node="test", lo=1)
    cfg = parse_config({"source": "spans"})
    conn = connect(tmp_path, WINDOW)
    v = analyze(conn, service="payments", baseline="1.0", canary="1.1", window=WINDOW, config=cfg)
    m = {x.name: x for x in v.metrics}
    assert m["error-rate"].classification in ("pass", "inconclusive")
    assert m["error-rate"].n_canary == 2400
    assert m["latency-p50"].classification == "high" and v.verdict == "fail"


def test_metric_series_source(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    rows: dict[str, list[Any]] = {
        k: [] for k in ("ts", "name", "kind", "service_name", "value", "resource_attributes")
    }
    for version, level in (("v1", 0.30), ("v2", 0.45)):
        for s in range(0, 600, 5):
            rows["ts"].append(START + timedelta(seconds=s))
            rows["name"].append("process.cpu.utilization")
            rows["kind"].append("gauge")
            rows["service_name"].append("reviews")
            rows["value"].append(level + rng.normal(0, 0.03))
            rows["resource_attributes"].append(json.dumps({"service.version": version}))
    write_table(tmp_path, "metrics", pa.table(rows), node="test", lo=1)
    cfg = parse_config(
        {
            "metrics": [
                {
                    "name": "cpu",
                    "kind": "metric",
                    "critical": True,
                    "metric_name": "process.cpu.utilization",
                    "tolerance": 0.1,
                }
            ]
        }
    )
    conn = connect(tmp_path, WINDOW)
    v = analyze(conn, service="reviews", baseline="v1", canary="v2", window=WINDOW, config=cfg)
    assert v.metrics[0].classification == "high" and v.verdict == "fail"
    assert v.metrics[0].effect == pytest.approx(0.5, abs=0.1)
    k = analyze(
        conn,
        service="reviews",
        baseline="v1",
        canary="v2",
        window=WINDOW,
        config=parse_config(
            {
                "mode": "kayenta",
                "metrics": [
                    {
                        "name": "cpu",
                        "kind": "metric",
                        "critical": True,
                        "metric_name": "process.cpu.utilization",
                    }
                ],
            }
        ),
    )
    assert k.metrics[0].label == "High" and k.verdict == "fail"


# source: prometheus runs against a real Prometheus in test_prometheus_judge.py.
