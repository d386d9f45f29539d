"""Kiali's tolerance model: defaults, regex matching, config files, errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from meshlens.analytics.errors import HealthConfigError
from meshlens.analytics.health import (
    DEFAULT_TOLERANCES,
    DEGRADED,
    FAILURE,
    HEALTHY,
    NA,
    code_regex,
    evaluate,
    load_health_config,
    parse_health_config,
)


@pytest.mark.parametrize(
    ("codes", "protocol", "status"),
    [
        ({"200": 1000}, "http", HEALTHY),
        ({"200": 999, "500": 1}, "http", DEGRADED),  # 0.1 %: any 5xx degrades
        ({"200": 9999, "500": 1}, "http", HEALTHY),  # 0.01 % shows as 0.0 % in Kiali
        ({"200": 90, "503": 10}, "http", FAILURE),  # 10 % 5xx
        ({"200": 91, "404": 9}, "http", HEALTHY),  # 4xx below 10 %
        ({"200": 90, "404": 10}, "http", DEGRADED),
        ({"200": 80, "404": 20}, "http", FAILURE),
        ({"200": 90, "-": 10}, "http", FAILURE),  # no response
        ({"0": 95, "14": 5}, "grpc", DEGRADED),
        ({"0": 90, "14": 10}, "grpc", FAILURE),
        ({}, "http", NA),
        ({"-": 5}, "tcp", NA),
    ],
)
def test_default_tolerances(codes: dict[str, int], protocol: str, status: str) -> None:
    assert evaluate(codes, protocol, "inbound", DEFAULT_TOLERANCES).status == status


def test_code_shorthand() -> None:
    assert code_regex("5XX") == r"^5\d\d$" and code_regex("4xx") == r"^4\d\d$"
    assert code_regex("^[1-9]$") == "^[1-9]$"


CONFIG = """
health_config:
  rate:
    - namespace: "bookinfo"
      kind: "workload"
      name: "details.*"
      tolerance:
        - code: "404"
          protocol: "http"
          direction: "inbound"
          degraded: 30
          failure: 50
    - tolerance:
        - code: "5XX"
          failure: 1
"""


def test_config_rules_match_namespace_kind_name_and_direction(tmp_path: Path) -> None:
    path = tmp_path / "health.yaml"
    path.write_text(CONFIG)
    cfg = load_health_config(path)
    details = cfg.tolerances("bookinfo", "workload", "details-v1")
    assert evaluate({"200": 80, "404": 20}, "http", "inbound", details).status == HEALTHY
    assert evaluate({"200": 60, "404": 40}, "http", "inbound", details).status == DEGRADED
    assert evaluate({"200": 60, "404": 40}, "http", "outbound", details).status == HEALTHY
    other = cfg.tolerances("bookinfo", "workload", "reviews-v1")
    assert evaluate({"200": 99, "500": 1}, "http", "inbound", other).status == FAILURE


@pytest.mark.parametrize(
    ("doc", "match"),
    [
        ("rate: []", r"non-empty list"),
        ("rate: [{namespace: x}]", r"rate\[0\].tolerance must be a non-empty list"),
        ("rate: [{tolerance: [{protocol: http}]}]", r"tolerance\[0\] needs a code"),
        ("rate: [{tolerance: [{code: '(', failure: 1}]}]", r"bad regex"),
        ("rate: [{tolerance: [{code: '5XX', degraded: 20, failure: 10}]}]", r"degraded 20.0 > "),
        ("rate: [{tolerance: [{code: '5XX', failure: lots}]}]", r"could not convert"),
    ],
)
def test_bad_configs(doc: str, match: str) -> None:
    import yaml

    with pytest.raises(HealthConfigError, match=match):
        parse_health_config(yaml.safe_load(doc), "h.yaml")


def test_missing_and_invalid_files(tmp_path: Path) -> None:
    with pytest.raises(HealthConfigError, match=r"No such file"):
        load_health_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("rate: [")
    with pytest.raises(HealthConfigError, match=r"not valid YAML"):
        load_health_config(bad)
