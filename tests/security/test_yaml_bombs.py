"""YAML sent to the API (and read from config files) cannot expand without bound: a few KB of
aliases used to expand to millions of objects (14-31 s of CPU, GBs, ingest stalled)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import requests
import yaml

from meshlens.analytics.errors import CanaryConfigError, RolloutConfigError
from meshlens.analytics.gate.config import load_rollout_config
from meshlens.analytics.judge.config import load_config
from meshlens.analytics.yaml_input import API_LIMITS, YamlBudgetError, YamlLimits, load, load_all
from tests.collector.conftest import ServeProcess


def bomb(levels: int = 7, width: int = 8) -> str:
    """Each level repeats the previous one `width` times: width**levels leaves."""
    lines = ["a0: &a0 [" + ",".join(['"lol"'] * width) + "]"]
    lines += [f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * width) + "]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


def virtual_service_bomb(levels: int = 7, width: int = 8) -> str:
    """The issue's shape: a VirtualService whose spec repeats anchors (2 million nodes from
    453 bytes; validating it took 19 s before aliases were budgeted)."""
    lines = [
        "apiVersion: networking.istio.io/v1",
        "kind: VirtualService",
        "metadata: {name: r, namespace: default}",
        "spec:",
        "  hosts: [reviews]",
        "  x0: &x0 [" + ",".join(["{a: 1}"] * width) + "]",
    ]
    lines += [f"  x{i}: &x{i} [" + ",".join([f"*x{i - 1}"] * width) + "]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


VIRTUAL_SERVICE = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http:
  - match: [{headers: {end-user: {exact: jason}}}]
    retries: &retries {attempts: 3, perTryTimeout: 2s}
    route: [{destination: {host: reviews, subset: v2}}]
  - retries: *retries
    route: [{destination: {host: reviews, subset: v1}}]
"""


def test_bomb_is_small_text_but_millions_of_nodes() -> None:
    text = bomb()
    assert len(text) < 4096
    with pytest.raises(YamlBudgetError, match="expands to more than 250000 nodes"):
        load_all(text, API_LIMITS)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("&a [*a]", "recursive alias"),
        ("a: &a {b: *a}", "recursive alias"),
        ("[" * 150 + "]" * 150, "nesting deeper than 100 levels"),
        ("x: &x 1\n" + "".join(f"y{i}: *x\n" for i in range(101)), "more than 100 aliases"),
    ],
)
def test_limits_name_the_problem(text: str, match: str) -> None:
    with pytest.raises(YamlBudgetError, match=match):
        load_all(text, API_LIMITS)


def test_ordinary_yaml_loads_like_safe_load() -> None:
    assert load_all(VIRTUAL_SERVICE, API_LIMITS) == list(yaml.safe_load_all(VIRTUAL_SERVICE))
    assert load("a: 1\n") == {"a": 1}
    assert load("") is None
    tiny = YamlLimits(max_nodes=5, max_aliases=0, max_depth=3)
    with pytest.raises(YamlBudgetError, match="more than 5 nodes"):
        load_all("[1, 2, 3, 4, 5]", tiny)


def test_check_api_refuses_bomb_quickly(running_serve: ServeProcess) -> None:
    url = running_serve.api_url("/api/v1/check/routing")
    t0 = time.perf_counter()
    resp = requests.post(url, json={"config": virtual_service_bomb(), "since": "1h"}, timeout=30)
    elapsed = time.perf_counter() - t0
    assert resp.status_code == 400, resp.text
    assert "invalid YAML: document expands to more than 250000 nodes" in resp.json()["error"]
    assert elapsed < 5.0
    # anchors within the budget still work
    ok = requests.post(url, json={"config": VIRTUAL_SERVICE, "since": "1h"}, timeout=30)
    assert ok.status_code == 200, ok.text


def test_check_api_caps_document_size(running_serve: ServeProcess) -> None:
    big = "# padding\n" * 110_000  # 1.1 MB of comments
    resp = requests.post(
        running_serve.api_url("/api/v1/check/authz"), json={"config": big}, timeout=30
    )
    assert resp.status_code == 400
    assert "more than the 1048576 byte limit" in resp.json()["error"]


def test_config_files_refuse_bombs(tmp_path: Path) -> None:
    canary = tmp_path / "canary.yaml"
    canary.write_text(bomb(levels=9, width=9))  # 387 million leaves
    with pytest.raises(CanaryConfigError, match="not valid YAML: document expands"):
        load_config(canary)
    rollout = tmp_path / "rollout.yaml"
    rollout.write_text("rollout: &r [*r]\n")
    with pytest.raises(RolloutConfigError, match="not valid YAML: recursive alias"):
        load_rollout_config(rollout)
