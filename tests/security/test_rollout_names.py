"""Rollout names become file names under <data_dir>/gate/: every entry (CLI, API routes, Flagger
and Argo webhooks, rollout.yaml) refuses a name that is not a Kubernetes-style name, and the
state path builder itself refuses to leave its directory."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from meshlens.analytics.errors import GateStateError, RolloutConfigError
from meshlens.analytics.gate.api import gate_routes
from meshlens.analytics.gate.config import parse_rollout_config
from meshlens.analytics.gate.state import (
    commands_dir,
    queue_command,
    rollout_lock,
    rollout_name_problem,
    state_path,
)
from meshlens.cli import main
from meshlens.httpd import RunningHttpServer, start_http_server

BAD = ["../../x", "..", ".", "a/b", "/etc/passwd", "x/../../y", "-a", "a.", "", "a" * 254, "a\0b"]
GOOD = ["reviews", "podinfo-canary", "reviews.v2", "Reviews_2", "a", "a" * 253]


@pytest.mark.parametrize("name", GOOD)
def test_kubernetes_like_names_are_accepted(tmp_path: Path, name: str) -> None:
    assert rollout_name_problem(name) == ""
    assert state_path(tmp_path, name).parent == tmp_path / "gate"


@pytest.mark.parametrize("name", BAD)
def test_path_builders_refuse_bad_names(tmp_path: Path, name: str) -> None:
    for build in (state_path, commands_dir):
        with pytest.raises(GateStateError, match=r"rollout name .* is invalid: use 1-253 letters"):
            build(tmp_path, name)
    with pytest.raises(GateStateError, match="is invalid"), rollout_lock(tmp_path, name):
        pass
    with pytest.raises(GateStateError, match="is invalid"):
        queue_command(tmp_path, name, "pause")
    assert not (tmp_path / "x").exists()


def test_cli_pause_refuses_traversal(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "a" / "b" / "data"
    rc = main(["gate", "pause", "--rollout", "../../x", "--data-dir", str(data)])
    err = capsys.readouterr().err
    assert rc == 2
    assert "--rollout: rollout name '../../x' is invalid" in err
    assert "starting and ending with a letter or digit" in err
    assert not any(tmp_path.rglob("x*"))  # nothing written anywhere


def test_rollout_yaml_name_is_checked() -> None:
    doc = {"rollout": "../x", "service": "s.default.svc.cluster.local"}
    doc |= {"baseline": "v1", "canary": "v2"}
    with pytest.raises(RolloutConfigError, match=r"rollout: rollout name '\.\./x' is invalid"):
        parse_rollout_config(doc, "rollout.yaml")


@pytest.fixture
def api(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    data = tmp_path / "data"
    settings = argparse.Namespace(data_dir=data, gate_window=300.0, gate_judge_config="")
    server: RunningHttpServer = start_http_server("127.0.0.1", 0, gate_routes(settings))
    try:
        yield f"http://127.0.0.1:{server.port}", data
    finally:
        server.stop()


def test_flagger_webhook_refuses_bad_rollout(api: tuple[str, Path]) -> None:
    base, data = api
    body = {"name": "podinfo", "namespace": "test", "metadata": {"rollout": "../../x"}}
    resp = requests.post(f"{base}/gate/flagger/confirm-rollout", json=body, timeout=10)
    assert resp.status_code == 400
    assert "metadata.rollout: rollout name '../../x' is invalid" in resp.text
    assert not (data.parent / "x.commands").exists()


def test_argo_metric_refuses_bad_rollout(api: tuple[str, Path]) -> None:
    base, _data = api
    params = {"service": "reviews.default.svc.cluster.local", "baseline": "v1", "canary": "v2"}
    resp = requests.get(
        f"{base}/gate/argo/verdict", params={**params, "rollout": "../x"}, timeout=30
    )
    assert resp.status_code == 400
    assert "rollout: rollout name '../x' is invalid" in resp.text


def test_rollouts_route_refuses_bad_name(api: tuple[str, Path]) -> None:
    base, _data = api
    resp = requests.get(f"{base}/gate/rollouts/a..", timeout=10)
    assert resp.status_code == 400
    assert "is invalid" in resp.text
