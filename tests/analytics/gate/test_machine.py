"""The pure state machine: every transition from (state, event, config, now)."""

from __future__ import annotations

import dataclasses

import pytest

from meshlens.analytics.errors import RolloutConfigError
from meshlens.analytics.gate import machine
from meshlens.analytics.gate.config import RolloutConfig, parse_rollout_config, step_weights
from meshlens.analytics.gate.model import Judgement
from meshlens.analytics.gate.state import GateState

PASS = Judgement("pass", 100.0, "ok")
FAIL = Judgement("fail", 0.0, "error rate up")
INC = Judgement("inconclusive", 0.0, "not enough traffic")


def cfg(**analysis: object) -> RolloutConfig:
    return parse_rollout_config(
        {
            "rollout": "reviews",
            "service": "reviews.default.svc.cluster.local",
            "baseline": "v1",
            "canary": "v2",
            "analysis": {"interval": "1m", "stepWeight": 25, "maxWeight": 50, **analysis},
        }
    )


def started(c: RolloutConfig, now: float = 1000.0) -> GateState:
    tr = machine.initial_state(c, now)
    assert tr.decision.action == "start" and tr.decision.target_weight == c.steps[0]
    assert tr.state.phase == "initializing" and tr.state.canary_weight == 0
    return machine.on_applied(tr.state, c, now, True)


def verdict(
    st: GateState, c: RolloutConfig, j: Judgement, *, ok: bool = True
) -> tuple[GateState, str]:
    """Analysis at the next due time, then the apply outcome (when weights change)."""
    now = st.next_analysis_at
    assert machine.analysis_due(st, now) and not machine.analysis_due(st, now - 1)
    tr = machine.on_verdict(st, c, now, j)
    new = tr.state
    if new.pending_weight is not None:
        new = machine.on_applied(new, c, now, ok, "" if ok else "boom")
    return new, tr.decision.action


def test_step_weights_from_step_and_max_or_list() -> None:
    assert step_weights(10, 50, None) == (10, 20, 30, 40, 50)
    assert step_weights(20, 50, None) == (20, 40, 50)  # capped at maxWeight (Flagger: 60)
    assert step_weights(None, None, [1, 5, 25, 80]) == (1, 5, 25, 80)
    with pytest.raises(RolloutConfigError, match="must increase"):
        step_weights(None, None, [10, 5])
    with pytest.raises(RolloutConfigError, match=r"1\.\.100"):
        step_weights(0, 50, None)


def test_happy_path_advances_each_step_then_promotes() -> None:
    c = cfg()
    st = started(c)
    assert (st.phase, st.canary_weight, st.step_index) == ("progressing", 25, 0)
    assert st.next_analysis_at == 1060.0
    st, action = verdict(st, c, PASS)
    assert (action, st.canary_weight, st.step_index) == ("advance", 50, 1)
    st, action = verdict(st, c, PASS)
    assert action == "promote" and st.phase == "succeeded" and st.canary_weight == 100
    assert st.terminal and machine.restart(st, 5000.0) is None


def test_successes_per_step_holds_until_enough_passes() -> None:
    c = cfg(successesPerStep=2)
    st = started(c)
    st, action = verdict(st, c, PASS)
    assert action == "hold" and st.canary_weight == 25 and st.step_successes == 1
    st, action = verdict(st, c, FAIL)  # a failure resets the count
    assert st.step_successes == 0
    st, _ = verdict(st, c, PASS)
    st, action = verdict(st, c, PASS)
    assert action == "advance" and st.canary_weight == 50


def test_cumulative_failure_limit_rolls_back() -> None:
    c = cfg(failureLimit=2)
    st = started(c)
    st, action = verdict(st, c, FAIL)
    assert action == "hold" and st.failed_checks == 1 and st.canary_weight == 25
    st, action = verdict(st, c, PASS)  # a pass does not reset the cumulative count
    assert action == "advance" and st.failed_checks == 1
    st, action = verdict(st, c, FAIL)
    assert action == "rollback" and st.phase == "failed" and st.canary_weight == 0
    assert "failed checks 2/2" in st.reason


def test_consecutive_failure_limit() -> None:
    c = cfg(failureLimit=10, consecutiveFailureLimit=2, stepWeights=[10, 20, 30])
    st = started(c)
    st, _ = verdict(st, c, FAIL)
    st, _ = verdict(st, c, PASS)
    st, _ = verdict(st, c, FAIL)
    assert st.phase == "progressing" and st.consecutive_failures == 1
    st, action = verdict(st, c, FAIL)
    assert action == "rollback" and st.phase == "failed" and "2 failed in a row" in st.reason


@pytest.mark.parametrize(
    ("policy", "action", "phase"),
    [
        ("hold", "hold", "progressing"),
        ("pause", "pause", "paused"),
        ("fail", "hold", "progressing"),
    ],
)
def test_inconclusive_policy(policy: str, action: str, phase: str) -> None:
    c = cfg(inconclusive=policy)
    st = started(c)
    st, got = verdict(st, c, INC)
    assert (got, st.phase, st.canary_weight) == (action, phase, 25)
    assert st.failed_checks == (1 if policy == "fail" else 0)
    if policy == "fail":
        st, got = verdict(st, c, INC)
        assert got == "rollback" and st.phase == "failed"


def test_inconclusive_limit_pauses_a_holding_rollout() -> None:
    c = cfg(inconclusiveLimit=3)
    st = started(c)
    for _ in range(2):
        st, action = verdict(st, c, INC)
        assert action == "hold"
    st, action = verdict(st, c, INC)
    assert action == "pause" and st.phase == "paused" and st.inconclusive_streak == 3


@pytest.mark.parametrize(
    ("deadline_action", "phase", "pending"),
    [("rollback", "progressing", 0), ("pause", "paused", None)],
)
def test_progress_deadline(deadline_action: str, phase: str, pending: int | None) -> None:
    c = cfg(progressDeadline="5m", deadlineAction=deadline_action)
    st = started(c, now=0.0)
    assert machine.check_deadline(st, c, 300.0) is None
    tr = machine.check_deadline(st, c, 301.0)
    assert tr is not None and tr.state.phase == phase and tr.state.pending_weight == pending
    assert "no progress for 301s" in tr.decision.reason
    assert machine.check_deadline(st, dataclasses.replace(c, progress_deadline_s=0), 1e9) is None


def test_manual_commands() -> None:
    c = cfg()
    st = started(c)
    tr = machine.on_command(st, c, 1010.0, "pause", "alice")
    assert tr.state.phase == "paused" and tr.state.paused_from == "progressing"
    assert not machine.analysis_due(tr.state, 1e9)  # paused: no analyses
    again = machine.on_command(tr.state, c, 1011.0, "pause")
    assert again.decision.action == "none"
    tr = machine.on_command(tr.state, c, 1020.0, "resume")
    # resume re-applies the current weight (the pause may have come from a failed apply)
    assert tr.decision.action == "resume" and tr.state.pending_weight == 25
    st = machine.on_applied(tr.state, c, 1020.0, True)
    assert st.phase == "progressing" and st.next_analysis_at == 1080.0
    tr = machine.on_command(st, c, 1030.0, "promote")
    assert tr.state.phase == "promoting" and tr.decision.target_weight == 100
    tr = machine.on_command(st, c, 1030.0, "abort", "bob")
    assert tr.decision.action == "rollback" and "abort by bob" in tr.decision.reason
    done = machine.on_applied(tr.state, c, 1031.0, True)
    assert done.phase == "failed" and done.canary_weight == 0
    assert machine.on_command(done, c, 1032.0, "resume").decision.action == "none"


def test_failed_apply_pauses_with_the_last_verified_weight() -> None:
    c = cfg()
    st = started(c)
    st, action = verdict(st, c, PASS, ok=False)
    assert st.phase == "paused" and st.canary_weight == 25 and st.pending_weight is None
    assert "could not apply canary weight 50%" in st.reason
    # resume -> re-apply 25, analyses continue; the next pass retries the advance
    tr = machine.on_command(st, c, 5000.0, "resume")
    st = machine.on_applied(tr.state, c, 5000.0, True)
    st, action = verdict(st, c, PASS)
    assert action == "advance" and st.canary_weight == 50


def test_failed_start_resumes_by_starting_again() -> None:
    c = cfg()
    tr = machine.initial_state(c, 0.0)
    st = machine.on_applied(tr.state, c, 0.0, False, "connection refused")
    assert st.phase == "paused" and st.paused_from == "initializing"
    tr = machine.on_command(st, c, 10.0, "resume")
    assert tr.decision.action == "start" and tr.state.pending_weight == 25


def test_restart_finishes_the_decision_in_flight_or_reapplies_current() -> None:
    c = cfg()
    st = started(c)
    # crashed after deciding to advance (persisted with pending) but before applying
    mid = machine.on_verdict(st, c, st.next_analysis_at, PASS).state
    tr = machine.restart(mid, 9999.0)
    assert tr is not None and tr.decision.action == "advance" and tr.state.pending_weight == 50
    # crashed between decisions: re-apply the current weight, never the first step or 0
    settled = machine.on_applied(mid, c, 1100.0, True)
    tr = machine.restart(settled, 9999.0)
    assert tr is not None and tr.decision == tr.decision.__class__(
        "reapply", 50, "restart: re-applying the current weight 50%"
    )
    after = machine.on_applied(tr.state, c, 9999.0, True)
    assert (after.canary_weight, after.step_index, after.phase) == (50, 1, "progressing")


def test_analysis_window_modes() -> None:
    st = dataclasses.replace(started(cfg(), 100.0), step_started_at=400.0)
    assert machine.analysis_window(st, cfg(), 1000.0) == (100.0, 1000.0)
    assert machine.analysis_window(st, cfg(window="step"), 1000.0) == (400.0, 1000.0)
    assert machine.analysis_window(st, cfg(window="2m"), 1000.0) == (880.0, 1000.0)


def test_verdict_outside_progressing_is_ignored() -> None:
    c = cfg()
    tr = machine.initial_state(c, 0.0)
    assert machine.on_verdict(tr.state, c, 1.0, PASS).decision.action == "none"
