"""Loaders of the Canary page: rollouts, gate state, verdict history, distributions."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import pandas as pd
import streamlit as st

from meshlens.analytics.catalog import connect
from meshlens.analytics.error_rule import IS_ERROR
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
