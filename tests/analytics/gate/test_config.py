"""rollout.yaml parsing, including the shipped examples in deploy/gate/."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from meshlens.analytics.errors import RolloutConfigError
from meshlens.analytics.gate.actuators.base import NoneActuator, build_actuator
from meshlens.analytics.gate.actuators.envoy import EnvoyActuator
from meshlens.analytics.gate.actuators.file import FileActuator
from meshlens.analytics.gate.config import load_rollout_config, parse_rollout_config

DEPLOY = Path(__file__).resolve().parents[3] / "deploy" / "gate"


def test_full_config(tmp_path: Path) -> None:
    path = tmp_path / "rollout.yaml"
    path.write_text("""
rollout: productpage
service: productpage.bookinfo.svc.cluster.local
baseline: v1
canary: v2
selector: version
judge: {config: canary.yaml}
analysis:
  interval: 30s
  window: 10m
  stepWeights: [5, 10, 25, 50]
  successesPerStep: 2
  failureLimit: 3
  consecutiveFailureLimit: 2
  inconclusive: pause
  inconclusiveLimit: 4
  progressDeadline: 1h
  deadlineAction: pause
dryRun: true
apply: {retries: 5, backoff: 500ms}
notify: {url: "http://127.0.0.1:9/hook", timeout: 2s}
actuator:
  type: envoy
  envoy: {admin: "127.0.0.1:15000", host: productpage.bookinfo.svc.cluster.local, port: 9080}
""")
    c = load_rollout_config(path)
    assert c.steps == (5, 10, 25, 50) and c.interval_s == 30.0
    assert (c.window, c.window_s) == ("lookback", 600.0)
    assert (c.successes_per_step, c.failure_limit, c.consecutive_failure_limit) == (2, 3, 2)
    assert (c.inconclusive, c.inconclusive_limit) == ("pause", 4)
    assert (c.progress_deadline_s, c.deadline_action) == (3600.0, "pause")
    assert c.dry_run and c.apply_retries == 5 and c.apply_backoff_s == 0.5
    assert c.notify_url == "http://127.0.0.1:9/hook" and c.notify_timeout_s == 2.0
    assert c.judge_config == "canary.yaml"
    act = build_actuator(c)
    assert isinstance(act, EnvoyActuator)
    assert act.admin_url == "http://127.0.0.1:15000"
    assert act.canary_key == (
        "meshlens.weights.productpage.bookinfo.svc.cluster.local.9080."
        "outbound|9080|v2|productpage.bookinfo.svc.cluster.local"
    )


def test_defaults() -> None:
    c = parse_rollout_config({"rollout": "r", "service": "s", "baseline": "a", "canary": "b"})
    assert c.steps == (10, 20, 30, 40, 50) and c.interval_s == 60.0 and c.window == "rollout"
    assert (c.failure_limit, c.inconclusive, c.progress_deadline_s) == (2, "hold", 0.0)
    assert isinstance(build_actuator(c), NoneActuator)


@pytest.mark.parametrize(
    ("doc", "match"),
    [
        ({"service": "s", "baseline": "a", "canary": "b"}, "rollout"),
        ({"rollout": "../etc", "service": "s", "baseline": "a", "canary": "b"}, "rollout"),
        ({"rollout": "r", "baseline": "a", "canary": "b"}, "service: is required"),
        (
            {
                "rollout": "r",
                "service": "s",
                "baseline": "a",
                "canary": "b",
                "analysis": {"interval": "0s"},
            },
            "analysis.interval: must be positive",
        ),
        (
            {
                "rollout": "r",
                "service": "s",
                "baseline": "a",
                "canary": "b",
                "analysis": {"inconclusive": "ignore"},
            },
            "choose one of hold, pause, fail",
        ),
        (
            {
                "rollout": "r",
                "service": "s",
                "baseline": "a",
                "canary": "b",
                "actuator": {"type": "istioctl"},
            },
            "actuator.type",
        ),
        (
            {
                "rollout": "r",
                "service": "s",
                "baseline": "a",
                "canary": "b",
                "analysis": {"failureLimit": 0},
            },
            "failureLimit: must be >= 1",
        ),
    ],
)
def test_invalid(doc: dict[str, object], match: str) -> None:
    with pytest.raises(RolloutConfigError, match=match):
        parse_rollout_config(doc, "x.yaml")


def test_shipped_rollout_examples_parse() -> None:
    files = sorted(DEPLOY.glob("rollout*.yaml"))
    assert len(files) >= 3, files
    kinds = set()
    for f in files:
        c = load_rollout_config(f)
        kinds.add(c.actuator.type)
        if c.actuator.type == "file":
            act = build_actuator(c)
            assert isinstance(act, FileActuator)
            assert act.path.exists(), act.path  # the example GitOps file ships with it
            assert act.current_canary_weight() == 0
    assert {"kubernetes", "file", "envoy"} <= kinds


def test_shipped_kubernetes_manifests_are_valid_yaml() -> None:
    for f in sorted(DEPLOY.glob("*.yaml")):
        docs = [d for d in yaml.safe_load_all(f.read_text()) if d is not None]
        assert docs, f


def test_actuators_refuse_weights_that_do_not_sum_to_100_before_any_io() -> None:
    from meshlens.analytics.errors import WeightError

    c = parse_rollout_config({"rollout": "r", "service": "s", "baseline": "a", "canary": "b"})
    envoy = EnvoyActuator("http://127.0.0.1:1", "k.a", "k.b")  # nothing listens there
    for act in (envoy, NoneActuator("r")):
        for bad in (101, -5):
            with pytest.raises(WeightError):
                act.set_canary_weight(bad)
    assert build_actuator(c).current_canary_weight() is None


def test_one_gate_per_rollout(tmp_path: Path) -> None:
    from meshlens.analytics.errors import GateStateError
    from meshlens.analytics.gate.state import is_locked, rollout_lock

    assert not is_locked(tmp_path, "r")
    with rollout_lock(tmp_path, "r"):
        assert is_locked(tmp_path, "r")
        with (
            pytest.raises(GateStateError, match="another gate is running"),
            rollout_lock(tmp_path, "r"),
        ):
            pass
    assert not is_locked(tmp_path, "r")
