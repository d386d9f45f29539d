"""Canary: run a rollout from here. Its phase and weight, pause / resume / promote / abort
(through the gate's command queue, signed-in users only), every analysis with each metric's
effect, interval and tolerance over time, how long an inconclusive analysis still needs, and
both versions' distributions over the rollout's window."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Final, TypeVar

import pandas as pd
import streamlit as st

from meshlens.dashboards import auth, canary_charts, canary_eta, controls, data

T = TypeVar("T")

COMMAND_LABELS: Final = {
    "pause": ("Pause", ":material/pause:"),
    "resume": ("Resume", ":material/play_arrow:"),
    "promote": ("Promote", ":material/rocket_launch:"),
    "abort": ("Abort", ":material/cancel:"),
}
# What each command makes the gate do (analytics/gate/machine.py on_command).
COMMAND_EFFECTS: Final = {
    "pause": "The gate holds the current weight and stops analysing until resumed.",
    "resume": "The gate re-applies the current weight and analyses again.",
    "promote": "The gate sends 100% of the traffic to the canary and finishes the rollout.",
    "abort": "The gate rolls the canary back to 0% and fails the rollout.",
}
PHASE_COLOURS: Final = {
    "initializing": "gray",
    "progressing": "blue",
    "paused": "orange",
    "promoting": "violet",
    "succeeded": "green",
    "failed": "red",
}
VERDICT_BADGES: Final = {
    "pass": ("green", ":material/check_circle:"),
    "inconclusive": ("orange", ":material/help:"),
    "fail": ("red", ":material/cancel:"),
}

st.title(":material/alt_route: Canary")


def _safe(load: Callable[[], T]) -> T:
    """Run a loader; a data-layer failure becomes an error message, never a traceback."""
    try:
        return load()
    except Exception as exc:  # any store or query failure ends the page politely
        st.error(f"Cannot read the store: {data.safe_message(str(exc), ddir)}")
        st.stop()
        raise  # unreachable: st.stop raises


ddir = controls.ddir()
all_rollouts = _safe(lambda: data.rollouts(ddir))
if all_rollouts.empty:
    st.info(
        "No canary verdicts yet. Start one with `meshlens gate run` or judge once with "
        "`meshlens canary analyze`."
    )
    st.stop()


def _details(text: object) -> dict[str, Any]:
    try:
        out = json.loads(str(text or "{}"))
    except ValueError:
        return {}
    return out if isinstance(out, dict) else {}


def _select_rollout(names: list[str]) -> str:
    """The rollout from the URL (?rollout=, the Mesh page links with it) or the selectbox,
    written back to the URL so the page can be shared."""
    url = st.query_params.get("rollout")
    if url and url not in names:
        st.warning(f"rollout `{url}` from the link has no verdicts in this store")
    # A new ?rollout= (a link followed in this session) wins over the previous choice.
    if url in names and url != st.session_state.get("_canary_url_seen"):
        st.session_state["canary_rollout"] = url
    if st.session_state.get("canary_rollout") not in names:
        st.session_state["canary_rollout"] = names[0]
    rollout = str(st.selectbox("Rollout", names, key="canary_rollout"))
    if st.query_params.get("rollout") != rollout:
        st.query_params["rollout"] = rollout
    st.session_state["_canary_url_seen"] = rollout
    return rollout


@st.fragment(run_every=controls.refresh_every())
def body() -> None:
    rollouts = _safe(lambda: data.rollouts(ddir))
    if rollouts.empty:
        st.info("No canary verdicts.")
        return
    rollout = _select_rollout(rollouts["rollout"].astype(str).tolist())
    row = rollouts[rollouts["rollout"] == rollout].iloc[0]
    hist = _safe(lambda: data.verdict_history(ddir, rollout))
    state = data.gate_state(ddir, rollout) or {}
    phase = str(state.get("phase") or row["phase"])
    details = [_details(d) for d in hist["details"]]
    metrics = [data.verdict_metrics(None if d is None else str(d)) for d in hist["details"]]
    analyses = [i for i, v in enumerate(hist["verdict"]) if v in canary_charts.OUTCOMES]
    last = analyses[-1] if analyses else None

    _header(row, hist, state, phase, last)
    _actions(rollout, phase, state)
    if len(hist):
        st.altair_chart(canary_charts.weight_chart(hist), width="stretch")
    _latest(hist, details, metrics, last)
    _metric_charts(hist, metrics)
    _history(hist, details)
    _distributions(row, hist, details, last)


def _header(
    row: pd.Series, hist: pd.DataFrame, state: dict[str, Any], phase: str, last: int | None
) -> None:
    verdict = str(hist["verdict"].iloc[last]) if last is not None else "-"
    score = hist["score"].iloc[last] if last is not None else None
    weight = state.get("canary_weight", row["canary_weight"])
    badges = st.container(horizontal=True)
    badges.badge(f"phase: {phase}", color=PHASE_COLOURS.get(phase, "gray"))  # type: ignore[arg-type]
    if verdict in VERDICT_BADGES:
        colour, icon = VERDICT_BADGES[verdict]
        badges.badge(f"last verdict: {verdict}", color=colour, icon=icon)  # type: ignore[arg-type]
    dry = hist["dry_run"].iloc[-1] if len(hist) else None
    if dry is not None and pd.notna(dry) and bool(dry):
        badges.badge("dry run: no traffic is moved", color="gray")
    # Tiles sized to their content: a phase or verdict name is never cut off.
    tiles = st.container(horizontal=True, gap="medium")
    tiles.metric("Phase", phase, border=True, width="content")
    tiles.metric("Canary weight", f"{int(weight or 0)}%", border=True, width="content")
    tiles.metric("Last verdict", verdict, border=True, width="content")
    score_value = float(score) if score is not None and pd.notna(score) else None
    scored = score_value is not None
    # An inconclusive analysis is neither good nor bad: its score (often 0) is not shown as one.
    tiles.metric(
        "Score",
        f"{score_value:.0f}" if scored and verdict != "inconclusive" else "-",
        border=True,
        width="content",
        help="The judge's 0-100 score of the last analysis; the verdict decides, not the score."
        + (
            f" This inconclusive analysis scored {score_value:.0f}: not enough evidence either "
            "way, not a failure."
            if scored and verdict == "inconclusive"
            else ""
        ),
    )
    n_analyses = int(hist["verdict"].isin(canary_charts.OUTCOMES).sum())
    tiles.metric("Analyses", n_analyses, border=True, width="content")
    if state:
        tiles.metric(
            "Failed checks", int(state.get("failed_checks") or 0), border=True, width="content"
        )
    st.caption(
        f"rollout **{row['rollout']}** · service **{row['service']}** · baseline "
        f"**{row['baseline']}** · canary **{row['canary']}** · last action {row['action']}"
    )
    if state.get("reason"):
        st.caption(f"gate: {state['reason']}")


# -- actions -------------------------------------------------------------------------------
def _ask(command: str) -> None:
    st.session_state["canary_confirm"] = command


def _cancel() -> None:
    st.session_state.pop("canary_confirm", None)


def _confirm(rollout: str, command: str) -> None:
    """Queue the confirmed command (a callback: runs before the page re-renders)."""
    st.session_state.pop("canary_confirm", None)
    user = auth.current_user()
    if user is None:
        st.session_state["canary_flash"] = ("error", "sign in to act")
        return
    # The phase may have moved since the page was drawn (the gate runs on its own).
    now_phase = (data.gate_state(ddir, rollout) or {}).get("phase")
    if now_phase and command not in data.gate_commands_for(str(now_phase)):
        st.session_state["canary_flash"] = (
            "error",
            f"{command} not queued: the rollout is now {now_phase}",
        )
        return
    reason = str(st.session_state.get("canary_reason", "")).strip()
    outcome = data.queue_gate_command(ddir, rollout, command, by=user, reason=reason)
    st.session_state["canary_reason"] = ""
    if outcome.error:
        st.session_state["canary_flash"] = ("error", f"{command} not queued: {outcome.error}")
    elif outcome.gate_running:
        st.session_state["canary_flash"] = (
            "success",
            f"{command} queued by {user}; the running gate applies it within a poll interval",
        )
    else:
        st.session_state["canary_flash"] = (
            "warning",
            f"{command} queued by {user}, but no gate is running this rollout here: it applies "
            "when the gate starts (the Flagger hooks honour pause, resume and abort)",
        )


def _actions(rollout: str, phase: str, state: dict[str, Any]) -> None:
    st.subheader("Actions")
    flash = st.session_state.pop("canary_flash", None)
    if flash:
        kind, text = flash
        {"error": st.error, "warning": st.warning}.get(kind, st.success)(text)
    allowed = data.gate_commands_for(phase)
    user = auth.current_user()
    if not allowed:
        st.caption(f"The rollout has {phase}: there is nothing left to do.")
    else:
        row = st.container(horizontal=True)
        for command in allowed:
            label, icon = COMMAND_LABELS[command]
            row.button(
                label,
                icon=icon,
                key=f"canary_act_{command}",
                disabled=user is None,
                help="sign in to act" if user is None else COMMAND_EFFECTS[command],
                on_click=_ask,
                args=(command,),
                type="primary" if command == "abort" else "secondary",
            )
        if user is None:
            st.caption(":material/lock: sign in to act")
        else:
            st.caption(f"signed in as **{user}**")
    pending = st.session_state.get("canary_confirm")
    if pending in allowed and user is not None:
        label, icon = COMMAND_LABELS[pending]
        with st.container(border=True):
            st.markdown(f"**{label} rollout `{rollout}`?** {COMMAND_EFFECTS[pending]}")
            st.text_input(
                "Reason (recorded with the command)",
                key="canary_reason",
                placeholder="e.g. error budget burning",
            )
            go = st.container(horizontal=True)
            go.button(
                f"Confirm {pending}",
                icon=icon,
                key="canary_confirm_go",
                type="primary",
                on_click=_confirm,
                args=(rollout, pending),
            )
            go.button("Cancel", key="canary_confirm_cancel", on_click=_cancel)
    queued = data.pending_gate_commands(ddir, rollout)
    if not queued.empty:
        st.markdown("**Queued commands** (not yet applied by the gate)")
        st.dataframe(
            queued,
            hide_index=True,
            key="canary_pending",
            column_config={
                "queued_at": st.column_config.DatetimeColumn(
                    "queued at (UTC)", format="YYYY-MM-DD HH:mm:ss"
                )
            },
        )
    if (pending or not queued.empty) and not data.gate_running(ddir, rollout):
        st.caption(
            "No gate process is running this rollout here: queued commands wait until "
            "`meshlens gate run` starts it."
            + (f" Last gate update: {state.get('reason')}" if state.get("reason") else "")
        )


# -- analyses ------------------------------------------------------------------------------
def _latest(
    hist: pd.DataFrame,
    details: list[dict[str, Any]],
    metrics: list[list[dict[str, Any]]],
    last: int | None,
) -> None:
    """The per-metric table of the latest analysis (shown whatever the phase: a pause or a
    command is a row without metrics, so the latest row WITH metrics is used)."""
    st.subheader("Latest analysis per metric")
    with_metrics = [i for i, m in enumerate(metrics) if m]
    if not with_metrics:
        st.caption("no analysis of this rollout recorded per-metric results yet")
        return
    i = with_metrics[-1]
    ts = pd.Timestamp(hist["ts"].iloc[i])
    verdict = hist["verdict"].iloc[i]
    st.caption(
        f"analysis at {ts:%Y-%m-%d %H:%M:%S} UTC · verdict **{verdict or '-'}**"
        + (f" · {details[i].get('judge_reason')}" if details[i].get("judge_reason") else "")
    )
    st.dataframe(
        canary_charts.metric_table(metrics[i]),
        hide_index=True,
        key="canary_metrics",
        column_config={"reason": st.column_config.TextColumn(width="large")},
    )
    if last is not None and hist["verdict"].iloc[last] == "inconclusive":
        _eta(details[last], metrics[last])


def _eta(details: dict[str, Any], metrics: list[dict[str, Any]]) -> None:
    eta = canary_eta.estimate(metrics, details, factor=data.more_traffic, side=data.open_bound)
    st.info(f"Inconclusive: {eta.headline()}.", icon=":material/hourglass_top:")
    lines = [f"- **{m.metric}**: {m.why}" for m in eta.metrics]
    if lines:
        st.markdown("\n".join(lines))
    if eta.minutes is not None:
        st.caption(f"The estimate {eta.assumes}.")


def _metric_charts(hist: pd.DataFrame, metrics: list[list[dict[str, Any]]]) -> None:
    st.subheader("Metrics over time")
    rows = [
        (hist["ts"].iloc[i], m)
        for i, m in enumerate(metrics)
        if hist["verdict"].iloc[i] in canary_charts.OUTCOMES
    ]
    frame = canary_charts.metric_history(rows)
    if frame.empty:
        st.caption("no per-metric results to chart yet")
        return
    st.caption(
        "Each point is one analysis: its effect (canary vs baseline, on the judge's scale), "
        "the bar and band its confidence interval, the dashed red line the tolerance. "
        "Pass = green circle, inconclusive = amber triangle, fail = red cross."
    )
    for metric, one in frame.groupby("metric", sort=False):
        one = one.reset_index(drop=True)
        st.altair_chart(canary_charts.effect_chart(one, str(metric)), width="stretch")
        missing = int(one["effect"].isna().sum())
        if missing:
            st.caption(
                f"{missing} of {len(one)} analyses of {metric} have no estimate yet (not enough "
                "data): they are in the table below, not on the chart"
            )


def _history(hist: pd.DataFrame, details: list[dict[str, Any]]) -> None:
    st.subheader("Analyses and decisions")
    table = pd.DataFrame(
        {
            "ts": hist["ts"],
            "canary_weight": hist["canary_weight"],
            "phase": hist["phase"],
            "verdict": hist["verdict"],
            "score": hist["score"],
            "action": hist["action"],
            "reason": [str(d.get("reason", "")) for d in details],
        }
    ).iloc[::-1]
    st.dataframe(
        table,
        hide_index=True,
        key="canary_history",
        column_config={
            "ts": st.column_config.DatetimeColumn("time (UTC)", format="YYYY-MM-DD HH:mm:ss"),
            "canary_weight": st.column_config.NumberColumn("weight %"),
            "reason": st.column_config.TextColumn(width="large"),
        },
    )


# -- distributions -------------------------------------------------------------------------
def _window(
    hist: pd.DataFrame, details: list[dict[str, Any]], last: int | None
) -> tuple[datetime, datetime]:
    """The latest analysis's window (what the judge looked at), else the rollout's span."""
    if last is not None:
        w = details[last].get("window")
        if isinstance(w, dict):
            try:
                return (
                    datetime.fromisoformat(str(w["start"])),
                    datetime.fromisoformat(str(w["end"])),
                )
            except (KeyError, ValueError):
                pass
    start = pd.Timestamp(hist["ts"].iloc[0]).to_pydatetime()
    end = pd.Timestamp(hist["ts"].iloc[-1]).to_pydatetime() + timedelta(seconds=1)
    if end - start < timedelta(minutes=1):  # one row: the minute before it
        start = end - timedelta(minutes=1)
    return start.astimezone(UTC), end.astimezone(UTC)


def _distributions(
    row: pd.Series, hist: pd.DataFrame, details: list[dict[str, Any]], last: int | None
) -> None:
    """Both versions' latencies and error ratios (95% Wilson) over the rollout's window."""
    st.subheader("Baseline vs canary distributions")
    if hist.empty:
        return
    versions = (str(row["baseline"]), str(row["canary"]))
    start, end = _window(hist, details, last)
    window = data.Window(start.isoformat(), end.isoformat())
    service = str(row["service"])
    sample = _safe(lambda: data.version_latencies(ddir, window, service, versions))
    st.caption(
        f"requests to {service}, {start:%H:%M:%S} → {end:%H:%M:%S} UTC "
        f"({'the last analysis window' if last is not None else 'the rollout so far'})"
    )
    if sample.empty:
        st.caption(f"no requests to {service} {versions[0]}/{versions[1]} in that window")
        return
    sample = sample.assign(
        role=sample["version"].map(
            {versions[0]: f"baseline {versions[0]}", versions[1]: f"canary {versions[1]}"}
        )
    )
    c1, c2, c3 = st.columns(3)
    c1.altair_chart(canary_charts.latency_histogram(sample), width="stretch")
    c2.altair_chart(canary_charts.latency_ecdf(sample), width="stretch")
    agg = canary_charts.error_ratios(sample)
    c3.altair_chart(canary_charts.error_ratio_chart(agg), width="stretch")
    st.dataframe(
        agg.rename(columns={"lo": "wilson_low", "hi": "wilson_high"}),
        hide_index=True,
        key="canary_error_ratios",
        column_config={
            "error_ratio": st.column_config.NumberColumn(format="percent"),
            "wilson_low": st.column_config.NumberColumn(format="percent"),
            "wilson_high": st.column_config.NumberColumn(format="percent"),
        },
    )


body()
