"""The gate loop: the I/O around the pure state machine.

Each turn: apply queued manual commands, check the progress deadline, and when an analysis is
due ask the judge about the window and act on the verdict. Every decision is persisted before
it is applied (so a crash finishes it on restart), applied with bounded retries, persisted
again with the outcome, written to the `verdicts` table and optionally posted to a webhook.
Clock and sleep are injected, so tests run a whole rollout in simulated minutes.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from meshlens.analytics.errors import GateError
from meshlens.analytics.gate import machine
from meshlens.analytics.gate.actuators.base import Actuator
from meshlens.analytics.gate.config import RolloutConfig
from meshlens.analytics.gate.judging import Judge
from meshlens.analytics.gate.model import Decision, Transition
from meshlens.analytics.gate.record import notify, record_rows, verdict_row
from meshlens.analytics.gate.state import (
    GateState,
    consume,
    load_state,
    pending_commands,
    rollout_lock,
    save_state,
)
from meshlens.analytics.window import TimeWindow

log = logging.getLogger(__name__)


class Gate:
    def __init__(
        self,
        cfg: RolloutConfig,
        data_dir: Path,
        *,
        actuator: Actuator,
        judge: Judge,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], object] = time.sleep,
        poll_s: float = 0.5,
        on_decision: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.cfg = cfg
        self.data_dir = Path(data_dir)
        self.actuator = actuator
        self.judge = judge
        self.clock = clock
        self.sleep = sleep
        self.poll_s = poll_s
        self.on_decision = on_decision
        self.state: GateState | None = None
        self.rows: list[dict[str, Any]] = []  # this process's decisions (tests, CLI)

    # --- applying ------------------------------------------------------------------------

    def _apply(self, weight: int) -> tuple[bool, str]:
        """Set the weight with bounded retries; (ok, last error). Dry-run touches nothing."""
        if self.cfg.dry_run:
            return True, ""
        error = ""
        for attempt in range(self.cfg.apply_retries + 1):
            try:
                self.actuator.set_canary_weight(weight)
                return True, ""
            except GateError as exc:
                error = str(exc)
            except Exception as exc:  # an actuator bug must pause the rollout, not kill it
                error = f"{type(exc).__name__}: {exc}"
            log.warning(
                "gate %s: applying canary weight %d%% failed (attempt %d/%d): %s",
                self.cfg.rollout,
                weight,
                attempt + 1,
                self.cfg.apply_retries + 1,
                error,
            )
            if attempt < self.cfg.apply_retries:
                self.sleep(self.cfg.apply_backoff_s * (2**attempt))
        return False, error

    def _execute(self, tr: Transition) -> GateState:
        state, decision = tr.state, tr.decision
        before = self.state.canary_weight if self.state is not None else state.canary_weight
        state = save_state(self.data_dir, state)  # the decision is durable before it acts
        applied: bool | None = None
        extra: dict[str, Any] = {}
        if state.pending_weight is not None:
            ok, error = self._apply(state.pending_weight)
            applied = ok
            state = machine.on_applied(state, self.cfg, self.clock(), ok, error)
            state = save_state(self.data_dir, state)
            if not ok:
                extra = {"intended_action": decision.action, "error": error}
                decision = Decision(
                    "pause", None, state.reason, decision.judgement, decision.command
                )
        self.state = state
        row = verdict_row(
            state,
            decision,
            baseline=self.cfg.baseline,
            canary=self.cfg.canary,
            now=self.clock(),
            weight_before=before,
            applied=applied,
            extra=extra,
        )
        self.rows.append(row)
        try:
            record_rows(self.data_dir, [row])
        except OSError as exc:  # recording must not stop traffic decisions
            log.error("gate %s: cannot record the decision: %s", self.cfg.rollout, exc)
        log.info(
            "gate %s: %s -> phase %s, canary %d%%: %s",
            self.cfg.rollout,
            decision.action,
            state.phase,
            state.canary_weight,
            decision.reason,
        )
        if self.on_decision is not None:
            self.on_decision(row)
        notify(self.cfg.notify_url, row, self.cfg.notify_timeout_s)
        return state

    # --- the loop --------------------------------------------------------------------------

    def start(self) -> GateState:
        """Load the persisted state (or begin), and put the CURRENT weight back in place."""
        now = self.clock()
        state = load_state(self.data_dir, self.cfg.rollout)
        if state is None:
            return self._execute(machine.initial_state(self.cfg, now))
        self.state = state
        tr = machine.restart(state, now)
        return state if tr is None else self._execute(tr)

    def run_once(self) -> GateState:
        """One turn: commands, deadline, analysis. Returns the state after it."""
        if self.state is None:
            self.start()
        assert self.state is not None
        for path, body in pending_commands(self.data_dir, self.cfg.rollout):
            command = str(body.get("command", ""))
            tr = machine.on_command(
                self.state, self.cfg, self.clock(), command, str(body.get("by", "cli"))
            )
            self._execute(tr)
            consume(path)
        now = self.clock()
        tr_deadline = machine.check_deadline(self.state, self.cfg, now)
        if tr_deadline is not None:
            self._execute(tr_deadline)
        now = self.clock()
        if machine.analysis_due(self.state, now):
            start, end = machine.analysis_window(self.state, self.cfg, now)
            window = TimeWindow(
                datetime.fromtimestamp(start, tz=UTC), datetime.fromtimestamp(end, tz=UTC)
            )
            judgement = self.judge(window, self.state.canary_weight)
            self._execute(machine.on_verdict(self.state, self.cfg, now, judgement))
        return self.state

    def seconds_until_due(self) -> float:
        if self.state is None or self.state.phase != "progressing":
            return self.poll_s
        return max(0.0, min(self.poll_s, self.state.next_analysis_at - self.clock()))

    def run(self, stop: threading.Event | None = None) -> GateState:
        """Until the rollout succeeds or fails (or `stop` is set). Holds the rollout lock."""
        with rollout_lock(self.data_dir, self.cfg.rollout):
            self.state = None
            self.start()
            assert self.state is not None
            while not self.state.terminal and not (stop is not None and stop.is_set()):
                self.run_once()
                if self.state.terminal:
                    break
                self.sleep(self.seconds_until_due())
            return self.state
