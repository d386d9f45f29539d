"""Loaders of the Canary page: rollouts, gate state, verdict history, distributions, and the
gate's manual-command queue (the page's pause/resume/promote/abort buttons)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import pandas as pd
import streamlit as st

from meshlens.analytics.catalog import connect
from meshlens.analytics.error_rule import IS_ERROR
from meshlens.analytics.errors import AnalyticsError
from meshlens.analytics.gate import state as gate
from meshlens.analytics.judge import bounds, decision
from meshlens.analytics.window import TimeWindow
from meshlens.dashboards.data.common import (
    TO_SERVICE,
    TTL_S,
    Window,
    _df,
    _p,
)

# -- canary --------------------------------------------------------------------------------
_ALL_TIME: Final = TimeWindow(datetime(2000, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC))


@st.cache_data(ttl=TTL_S, show_spinner=False)
def rollouts(ddir: str) -> pd.DataFrame:
    """One row per rollout: latest verdict row plus the live gate state when a state file
    exists (<data_dir>/gate/<rollout>.json)."""
    conn = connect(Path(ddir), _ALL_TIME)
    try:
        df = _df(
            conn,
            """
            SELECT rollout, service, baseline, canary, phase, canary_weight, verdict, score,
                   action, ts AS last_verdict_at, count(*) OVER (PARTITION BY rollout) AS verdicts,
                   min(ts) OVER (PARTITION BY rollout) AS started_at
            FROM verdicts
            QUALIFY row_number() OVER (PARTITION BY rollout ORDER BY ts DESC) = 1
            ORDER BY last_verdict_at DESC""",
        )
    finally:
        conn.close()
    for i, rollout in enumerate(df["rollout"].tolist()):
        state = gate_state(ddir, str(rollout))
        if state:
            df.loc[i, "phase"] = state.get("phase", df.loc[i, "phase"])
            df.loc[i, "canary_weight"] = state.get("canary_weight", df.loc[i, "canary_weight"])
    return df


def gate_state(ddir: str, rollout: str) -> dict[str, Any] | None:
    path = Path(ddir) / "gate" / f"{rollout}.json"
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data


@st.cache_data(ttl=TTL_S, show_spinner=False)
def verdict_history(ddir: str, rollout: str) -> pd.DataFrame:
    conn = connect(Path(ddir), _ALL_TIME)
    try:
        return _df(
            conn,
            """
            SELECT ts, phase, canary_weight, verdict, score, action, dry_run, details
            FROM verdicts WHERE rollout = $r ORDER BY ts""",
            {"r": rollout},
        )
    finally:
        conn.close()


def verdict_metrics(details: str | None) -> list[dict[str, Any]]:
    """Per-metric results from a verdict row's `details` JSON (the judge's Verdict.to_json,
    possibly nested under "verdict")."""
    try:
        data = json.loads(details or "{}")
    except ValueError:
        return []
    if isinstance(data, dict) and isinstance(data.get("verdict"), dict):
        data = data["verdict"]
    metrics = data.get("metrics", []) if isinstance(data, dict) else []
    return [m for m in metrics if isinstance(m, dict)]


@st.cache_data(ttl=TTL_S, show_spinner=False)
def version_latencies(
    ddir: str, window: Window, service: str, versions: tuple[str, ...], limit: int = 20000
) -> pd.DataFrame:
    """A sample of request latencies and errors per version (both distributions of a canary)."""
    conn = connect(Path(ddir), window.tw)
    try:
        return _df(
            conn,
            f"""
            SELECT destination_version AS version, duration_ms, {IS_ERROR} AS error
            FROM traffic
            WHERE ts >= $start AND ts < $end AND {TO_SERVICE}
              AND destination_version IN (SELECT unnest($versions::VARCHAR[]))
              AND protocol <> 'tcp'
            USING SAMPLE reservoir({int(limit)} ROWS) REPEATABLE (7)""",
            {**_p(window), "svc": service, "versions": list(versions)},
        )
    finally:
        conn.close()


# -- the gate's command queue --------------------------------------------------------------
GATE_COMMANDS: Final = gate.COMMANDS


def gate_commands_for(phase: str) -> tuple[str, ...]:
    """The manual commands that change something in `phase` (analytics.gate.machine
    on_command): none once the rollout succeeded or failed; resume only when paused (pause
    only when not); promote is not offered again while promoting."""
    if phase in gate.TERMINAL:
        return ()
    if phase == "paused":
        return ("resume", "promote", "abort")
    if phase == "promoting":
        return ("pause", "abort")
    return ("pause", "promote", "abort")


@dataclass(frozen=True, slots=True)
class CommandOutcome:
    """The result of queueing a command: `error` is empty on success."""

    command: str
    error: str = ""
    gate_running: bool = False


def queue_gate_command(
    ddir: str, rollout: str, command: str, *, by: str, reason: str = ""
) -> CommandOutcome:
    """Queue `command` for the rollout's gate (the same file queue `meshlens gate pause|...`
    writes; the running gate or the Flagger hooks consume it)."""
    try:
        gate.queue_command(Path(ddir), rollout, command, by=by, reason=reason)
        running = gate.is_locked(Path(ddir), rollout)
    except (AnalyticsError, OSError) as exc:
        return CommandOutcome(command, error=str(exc))
    return CommandOutcome(command, gate_running=running)


def pending_gate_commands(ddir: str, rollout: str) -> pd.DataFrame:
    """Queued commands not yet consumed by the gate, oldest first (not cached: the page shows
    what was just queued)."""
    cols = ["queued_at", "command", "by", "reason"]
    try:
        items = gate.pending_commands(Path(ddir), rollout)
    except (AnalyticsError, OSError):
        return pd.DataFrame(columns=cols)
    rows = []
    for _path, body in items:
        at = body.get("queued_at")
        rows.append(
            {
                "queued_at": (
                    datetime.fromtimestamp(float(at), tz=UTC)
                    if isinstance(at, int | float)
                    else None
                ),
                "command": str(body.get("command", "")) or "(unreadable)",
                "by": str(body.get("by", "")),
                "reason": str(body.get("reason", "")),
            }
        )
    return pd.DataFrame(rows, columns=cols)


def gate_running(ddir: str, rollout: str) -> bool:
    """A gate process holds the rollout's lock right now (it consumes commands within a poll)."""
    try:
        return gate.is_locked(Path(ddir), rollout)
    except (AnalyticsError, OSError):
        return False


# -- the judge's own rules, for the page's "about N more minutes" --------------------------
def more_traffic(estimate: float, bound: float, tolerance: float) -> float | None:
    """analytics.judge.bounds.more_traffic: the factor of the traffic so far that would bring
    a regression-side bound inside the tolerance (None: the estimate is beyond it)."""
    return bounds.more_traffic(estimate, bound, tolerance)


def open_bound(lo: float, hi: float, tolerance: float, direction: str) -> tuple[str, float]:
    """analytics.judge.decision.open_bound: which bound keeps an inconclusive metric open."""
    return decision.open_bound(lo, hi, tolerance, direction)
