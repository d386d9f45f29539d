r"""The rollout state machine: (state, event, config, now) -> (new state, decision). Pure.

    initializing --start applied--> progressing --pass at last step--> promoting --> succeeded
         |                             |  ^   \--failure limit / deadline / abort--> failed
         |                             v  |                                  (canary weight 0)
         +-------- apply failed -----> paused (manual pause, inconclusive policy, apply failure)

A decision that changes weights is first stored as `pending_weight`; the runner applies it and
reports back with `on_applied`. Only then does the state commit the weight and the phase, so a
crash between deciding and applying resumes by finishing the same decision (`restart`), and a
failed apply pauses the rollout instead of guessing what the traffic is doing.
"""

from __future__ import annotations

import dataclasses

from meshlens.analytics.gate.config import RolloutConfig
from meshlens.analytics.gate.model import Decision, Judgement, Transition
from meshlens.analytics.gate.state import GateState


def _replace(state: GateState, now: float, **changes: object) -> GateState:
    return dataclasses.replace(state, updated_at=now, **changes)  # type: ignore[arg-type]


def initial_state(cfg: RolloutConfig, now: float) -> Transition:
    """A new rollout: send the first step's weight to the canary."""
    first = cfg.steps[0]
    state = GateState(
        rollout=cfg.rollout,
        service=cfg.service,
        phase="initializing",
        pending_weight=first,
        pending_action="start",
        dry_run=cfg.dry_run,
        updated_at=now,
        reason=f"starting: canary weight {first}%",
    )
    return Transition(state, Decision("start", first, state.reason))


def restart(state: GateState, now: float) -> Transition | None:
    """After a process restart: finish the decision in flight, else re-apply the CURRENT weight
    (never step 0), so the traffic split does not jump. Terminal rollouts are left alone."""
    if state.terminal:
        return None
    if state.pending_weight is not None:
        return Transition(
            state,
            Decision(
                state.pending_action or "reapply",
                state.pending_weight,
                f"restart: finishing {state.pending_action} to {state.pending_weight}%",
            ),
        )
    new = _replace(state, now, pending_weight=state.canary_weight, pending_action="reapply")
    return Transition(
        new,
        Decision(
            "reapply",
            state.canary_weight,
            f"restart: re-applying the current weight {state.canary_weight}%",
        ),
    )


def analysis_due(state: GateState, now: float) -> bool:
    return (
        state.phase == "progressing"
        and state.pending_weight is None
        and (now >= state.next_analysis_at)
    )


def analysis_window(state: GateState, cfg: RolloutConfig, now: float) -> tuple[float, float]:
    """[start, end) in epoch seconds of the data the judge looks at."""
    if cfg.window == "step":
        start = state.step_started_at
    elif cfg.window == "lookback":
        start = max(now - cfg.window_s, state.started_at)
    else:
        start = state.started_at
    return (min(start, now - 1e-3), now)


def on_applied(
    state: GateState, cfg: RolloutConfig, now: float, ok: bool, error: str = ""
) -> GateState:
    """The runner applied (or failed to apply) `pending_weight`."""
    weight, action = state.pending_weight, state.pending_action
    if weight is None:
        return state
    cleared = {"pending_weight": None, "pending_action": ""}
    if not ok:
        back = (
            state.phase
            if state.phase in ("initializing", "progressing", "promoting")
            else (state.paused_from or "progressing")
        )
        reason = (
            f"could not apply canary weight {weight}% ({action}): {error}; paused with "
            f"the last verified weight {state.canary_weight}% - fix it, then resume or "
            f"abort"
        )
        return _replace(state, now, phase="paused", paused_from=back, reason=reason, **cleared)
    if action == "start":
        return _replace(
            state,
            now,
            phase="progressing",
            canary_weight=weight,
            step_index=0,
            started_at=now,
            step_started_at=now,
            last_progress_at=now,
            next_analysis_at=now + cfg.interval_s,
            step_successes=0,
            **cleared,
        )
    if action == "advance":
        index = cfg.steps.index(weight) if weight in cfg.steps else state.step_index + 1
        return _replace(
            state,
            now,
            phase="progressing",
            canary_weight=weight,
            step_index=index,
            step_successes=0,
            step_started_at=now,
            last_progress_at=now,
            **cleared,
        )
    if action == "promote":
        return _replace(
            state, now, phase="succeeded", canary_weight=weight, paused_from="", **cleared
        )
    if action == "rollback":
        return _replace(state, now, phase="failed", canary_weight=weight, paused_from="", **cleared)
    return _replace(state, now, canary_weight=weight, **cleared)  # reapply / resume


def _rollback(
    state: GateState,
    now: float,
    reason: str,
    judgement: Judgement | None = None,
    command: str = "",
    changes: dict[str, object] | None = None,
) -> Transition:
    new = _replace(
        state, now, pending_weight=0, pending_action="rollback", reason=reason, **(changes or {})
    )
    return Transition(new, Decision("rollback", 0, reason, judgement, command))


def _promote(
    state: GateState,
    now: float,
    reason: str,
    judgement: Judgement | None = None,
    command: str = "",
    changes: dict[str, object] | None = None,
) -> Transition:
    new = _replace(
        state,
        now,
        phase="promoting",
        pending_weight=100,
        pending_action="promote",
        reason=reason,
        **(changes or {}),
    )
    return Transition(new, Decision("promote", 100, reason, judgement, command))


def _fail(
    state: GateState, cfg: RolloutConfig, now: float, j: Judgement, why: str, **changes: object
) -> Transition:
    failed, consecutive = state.failed_checks + 1, state.consecutive_failures + 1
    counts = {"failed_checks": failed, "consecutive_failures": consecutive, "step_successes": 0}
    if failed >= cfg.failure_limit:
        return _rollback(
            state,
            now,
            f"{why}; failed checks {failed}/{cfg.failure_limit}: rolling back",
            j,
            changes={**counts, **changes},
        )
    if cfg.consecutive_failure_limit and consecutive >= cfg.consecutive_failure_limit:
        return _rollback(
            state,
            now,
            f"{why}; {consecutive} failed in a row (limit "
            f"{cfg.consecutive_failure_limit}): rolling back",
            j,
            changes={**counts, **changes},
        )
    reason = f"{why}; failed checks {failed}/{cfg.failure_limit}: holding at {state.canary_weight}%"
    new = _replace(state, now, reason=reason, **counts, **changes)
    return Transition(new, Decision("hold", None, reason, j))


def on_verdict(state: GateState, cfg: RolloutConfig, now: float, j: Judgement) -> Transition:
    """One analysis result while progressing."""
    if state.phase != "progressing" or state.pending_weight is not None:
        return Transition(
            state, Decision("none", None, f"verdict ignored in phase {state.phase}", j)
        )
    seen = {
        "analyses": state.analyses + 1,
        "last_analysis_at": now,
        "next_analysis_at": now + cfg.interval_s,
        "last_verdict": j.verdict,
        "last_score": j.score,
    }
    why = f"{j.verdict} at {state.canary_weight}%" + (f" ({j.reason})" if j.reason else "")
    if j.verdict == "fail":
        return _fail(state, cfg, now, j, why, inconclusive_streak=0, **seen)
    if j.verdict == "pass":
        successes = state.step_successes + 1
        common = {**seen, "consecutive_failures": 0, "inconclusive_streak": 0}
        if successes < cfg.successes_per_step:
            reason = f"{why}; {successes}/{cfg.successes_per_step} passes at this step"
            new = _replace(state, now, step_successes=successes, reason=reason, **common)
            return Transition(new, Decision("hold", None, reason, j))
        if state.step_index < len(cfg.steps) - 1:
            target = cfg.steps[state.step_index + 1]
            reason = f"{why}; advancing to {target}%"
            new = _replace(
                state,
                now,
                step_successes=successes,
                pending_weight=target,
                pending_action="advance",
                reason=reason,
                **common,
            )
            return Transition(new, Decision("advance", target, reason, j))
        return _promote(
            state,
            now,
            f"{why}; last step passed: promoting to 100%",
            j,
            changes={"step_successes": successes, **common},
        )
    # inconclusive: not enough evidence either way (never a failure by itself)
    streak = state.inconclusive_streak + 1
    if cfg.inconclusive == "fail":
        return _fail(
            state,
            cfg,
            now,
            j,
            why + " (inconclusive counts as failed)",
            inconclusive_streak=streak,
            **seen,
        )
    if cfg.inconclusive == "pause" or (cfg.inconclusive_limit and streak >= cfg.inconclusive_limit):
        reason = f"{why}; pausing at {state.canary_weight}% ({streak} inconclusive in a row)"
        new = _replace(
            state,
            now,
            phase="paused",
            paused_from="progressing",
            inconclusive_streak=streak,
            reason=reason,
            **seen,
        )
        return Transition(new, Decision("pause", None, reason, j))
    reason = f"{why}; holding at {state.canary_weight}%"
    new = _replace(state, now, inconclusive_streak=streak, reason=reason, **seen)
    return Transition(new, Decision("hold", None, reason, j))


def check_deadline(state: GateState, cfg: RolloutConfig, now: float) -> Transition | None:
    """No progress (a step advance, start or resume) within progressDeadline."""
    if (
        not cfg.progress_deadline_s
        or state.phase != "progressing"
        or state.pending_weight is not None
        or now - state.last_progress_at <= cfg.progress_deadline_s
    ):
        return None
    why = (
        f"no progress for {now - state.last_progress_at:.0f}s (progressDeadline "
        f"{cfg.progress_deadline_s:g}s) at {state.canary_weight}%"
    )
    if cfg.deadline_action == "pause":
        new = _replace(
            state, now, phase="paused", paused_from="progressing", reason=why + ": pausing"
        )
        return Transition(new, Decision("pause", None, new.reason))
    return _rollback(state, now, why + ": rolling back")


def on_command(
    state: GateState, cfg: RolloutConfig, now: float, command: str, by: str = "cli"
) -> Transition:
    """A manual command (meshlens gate pause|resume|promote|abort)."""
    who = f"{command} by {by}"
    if state.terminal:
        return Transition(
            state,
            Decision(
                "none", None, f"{who} ignored: rollout already {state.phase}", command=command
            ),
        )
    if command == "abort":
        return _rollback(state, now, f"{who}: rolling back to 0%", command=command)
    if command == "promote":
        return _promote(state, now, f"{who}: promoting to 100%", command=command)
    if command == "pause":
        if state.phase == "paused":
            return Transition(
                state, Decision("none", None, f"{who}: already paused", command=command)
            )
        new = _replace(
            state,
            now,
            phase="paused",
            paused_from=state.phase,
            reason=f"{who} at {state.canary_weight}%",
        )
        return Transition(new, Decision("pause", None, new.reason, command=command))
    if command == "resume":
        if state.phase != "paused":
            return Transition(
                state, Decision("none", None, f"{who}: not paused ({state.phase})", command=command)
            )
        back = state.paused_from or "progressing"
        if back == "initializing":
            first = cfg.steps[0]
            new = _replace(
                state,
                now,
                phase="initializing",
                paused_from="",
                pending_weight=first,
                pending_action="start",
                reason=f"{who}: starting at {first}%",
            )
            return Transition(new, Decision("start", first, new.reason, command=command))
        if back == "promoting":
            return _promote(
                state,
                now,
                f"{who}: promoting to 100%",
                command=command,
                changes={"paused_from": ""},
            )
        # Back to progressing; re-apply the current weight in case the pause came from a
        # failed apply and the route is in an unknown state.
        new = _replace(
            state,
            now,
            phase="progressing",
            paused_from="",
            inconclusive_streak=0,
            consecutive_failures=0,
            last_progress_at=now,
            next_analysis_at=now + cfg.interval_s,
            pending_weight=state.canary_weight,
            pending_action="reapply",
            reason=f"{who}: progressing at {state.canary_weight}%",
        )
        return Transition(new, Decision("resume", state.canary_weight, new.reason, command=command))
    return Transition(
        state, Decision("none", None, f"unknown command {command!r}", command=command)
    )
