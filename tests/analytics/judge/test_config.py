"""Canary config files: YAML, Kayenta canary-config JSON import, precise errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from meshlens.analytics.errors import CanaryConfigError
from meshlens.analytics.judge.config import default_config, load_config, parse_config

EXAMPLE = """
mode: sequential
alpha: 0.02
min_requests: 100
block: 20s
thresholds: {pass: 90, marginal: 60}
metrics:
  - name: errors
    kind: error_rate
    error_codes: [5xx, no_response]
    grpc_codes: [UNAVAILABLE]
    critical: true
  - {name: p99, kind: latency, quantile: 0.99, critical: true, tolerance: 0.1}
  - {name: share, kind: request_share, expected_share: 0.1}
  - {name: cpu, kind: metric, metric_name: process.cpu.utilization, direction: either}
  - name: slow
    kind: sql
    query: "SELECT 'canary' AS side, ts, duration_ms AS value FROM traffic"
"""


def test_yaml_example_parses(tmp_path: Path) -> None:
    p = tmp_path / "canary.yaml"
    p.write_text(EXAMPLE)
    cfg = load_config(p)
    assert cfg.mode == "sequential" and cfg.alpha == 0.02 and cfg.block_s == 20.0
    assert cfg.thresholds.pass_ == 90.0
    errors, p99, share, cpu, slow = cfg.metrics
    assert errors.error_codes == ("5xx", "no_response") and errors.grpc_codes == ("UNAVAILABLE",)
    assert p99.quantile == 0.99 and p99.tolerance == 0.1 and p99.direction == "increase"
    assert share.direction == "decrease" and share.expected_share == 0.1
    assert cpu.source == "metrics" and cpu.direction == "either"
    assert slow.source == "sql"


def test_empty_file_is_the_default(tmp_path: Path) -> None:
    p = tmp_path / "empty.yaml"
    p.write_text("")
    assert load_config(p) == default_config()


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("mode: fast", r"canary.yaml: mode: 'fast' is not one of sequential, kayenta, flagger"),
        (
            "metrics: [{name: a, kind: latency, quantile: 1.5}]",
            r"metrics\[0\]\.quantile: must be <= 1",
        ),
        ("metrics: [{name: a}]", r"metrics\[0\]\.kind: missing"),
        (
            "metrics: [{name: a, kind: error_rate, error_codes: [5x]}]",
            r"metrics\[0\]\.error_codes: '5x' is not",
        ),
        (
            "metrics: [{name: a, kind: error_rate, critical: yes please}]",
            r"metrics\[0\]\.critical: expected true or false",
        ),
        ("metrics: [{name: a, kind: sql}]", r"metrics\[0\]\.query: a sql metric needs a query"),
        (
            "metrics: [{name: a, kind: error_rate, colour: red}]",
            r"metrics\[0\]\.colour: unknown key",
        ),
        ("block: soon", r"block: not a duration"),
        ("thresholds: {pass: 50, marginal: 80}", r"thresholds.marginal: 80 is above"),
        ("alpha: 0", r"alpha: must be > 0"),
        (
            "metrics: [{name: a, kind: error_rate}, {name: a, kind: latency}]",
            r"metrics: metric name 'a' is used twice",
        ),
        ("metrics: [{name: q, kind: promql, query: up}]", r"prometheus_url: needed"),
        ("group_weights: {a: 70, b: 40}", r"group_weights: weights sum to 110"),
        ("[1, 2]", r"expected a mapping"),
    ],
)
def test_errors_name_file_and_field(tmp_path: Path, text: str, match: str) -> None:
    p = tmp_path / "canary.yaml"
    p.write_text(text)
    with pytest.raises(CanaryConfigError, match=match) as info:
        load_config(p)
    assert info.value.path == str(p)


def test_unreadable_and_invalid_files(tmp_path: Path) -> None:
    with pytest.raises(CanaryConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("metrics: [")
    with pytest.raises(CanaryConfigError, match="not valid YAML"):
        load_config(bad)


KAYENTA = {
    "name": "integration-test-canary-config",
    "judge": {"name": "NetflixACAJudge-v1.0", "judgeConfigurations": {}},
    "metrics": [
        {
            "name": "5xx error rate",
            "query": {"type": "prometheus", "metricName": "errors"},
            "analysisConfigurations": {
                "canary": {
                    "critical": True,
                    "direction": "increase",
                    "nanStrategy": "replace",
                    "effectSize": {"allowedIncrease": 1.1, "criticalIncrease": 1.5},
                }
            },
            "groups": ["errors"],
            "scopeName": "default",
        },
        {
            "name": "p99 latency",
            "query": {"type": "prometheus", "metricName": "latency"},
            "analysisConfigurations": {
                "canary": {
                    "direction": "increase",
                    "outliers": {"strategy": "remove", "outlierFactor": 2.0},
                    "effectSize": {"measure": "cles"},
                }
            },
            "groups": ["latency"],
        },
        {
            "name": "cpu",
            "query": {"type": "prometheus", "metricName": "container_cpu"},
            "analysisConfigurations": {"canary": {"muted": True}},
            "groups": ["system"],
        },
        {
            "name": "exact",
            "query": {"type": "meshlens", "kind": "latency", "quantile": 0.9},
            "analysisConfigurations": {"canary": {}},
            "groups": ["latency"],
        },
    ],
    "classifier": {
        "groupWeights": {"errors": 60, "latency": 30, "system": 10},
        "scoreThresholds": {"marginal": 50, "pass": 75},
    },
}


def test_kayenta_canary_config_import(tmp_path: Path) -> None:
    p = tmp_path / "kayenta.json"
    p.write_text(json.dumps(KAYENTA))
    cfg = load_config(p)
    assert cfg.mode == "kayenta" and cfg.name == "integration-test-canary-config"
    assert cfg.group_weights == {"errors": 60.0, "latency": 30.0, "system": 10.0}
    assert (cfg.thresholds.pass_, cfg.thresholds.marginal) == (75.0, 50.0)
    errors, p99, cpu, exact = cfg.metrics
    assert errors.kind == "error_rate" and errors.critical and errors.direction == "increase"
    assert errors.kayenta.nan_strategy == "replace" and errors.kayenta.allowed_increase == 1.1
    assert errors.kayenta.critical_increase == 1.5
    assert p99.kind == "latency" and p99.quantile == 0.99
    assert p99.kayenta.outlier_strategy == "remove" and p99.kayenta.outlier_factor == 2.0
    assert p99.kayenta.effect_measure == "cles"
    assert cpu.kind == "promql" and cpu.muted and cpu.query == "container_cpu"
    assert exact.kind == "latency" and exact.quantile == 0.9


def test_kayenta_config_errors_name_the_field() -> None:
    bad = json.loads(json.dumps(KAYENTA))
    bad["metrics"][1]["analysisConfigurations"]["canary"]["direction"] = "up"
    with pytest.raises(
        CanaryConfigError,
        match=r"metrics\[1\]\.analysisConfigurations\.canary"
        r"\.direction: 'up'",
    ):
        parse_config(bad, "k.json")
