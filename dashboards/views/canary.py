"""Canary: a rollout's phase and weights over time, per-metric verdicts with both distributions
and their confidence intervals, and the history of past rollouts."""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Any

import altair as alt
import pandas as pd
import streamlit as st

from meshlens.dashboards import controls, data

st.title("🐤 Canary")

ddir = controls.ddir()
all_rollouts = data.rollouts(ddir)
if all_rollouts.empty:
    st.info(
        "No canary verdicts yet. Start one with `meshlens gate run` or judge once with "
        "`meshlens canary analyze`."
    )
    st.stop()


def _wilson(errors: float, n: float, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson interval of an error ratio (for the per-version error bars)."""
    if n <= 0:
        return (math.nan, math.nan)
    p = errors / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


@st.fragment(run_every=controls.refresh_every())
def body() -> None:
    rollouts = data.rollouts(ddir)
    names = rollouts["rollout"].astype(str).tolist()
    rollout = st.selectbox("Rollout", names, index=0, key="canary_rollout")
    row = rollouts[rollouts["rollout"] == rollout].iloc[0]
    c = st.columns(5)
    c[0].metric("Phase", str(row["phase"]))
    c[1].metric("Canary weight", f"{int(row['canary_weight'] or 0)}%")
    c[2].metric("Last verdict", str(row["verdict"]))
    c[3].metric("Score", f"{float(row['score']):.1f}" if pd.notna(row["score"]) else "-")
    c[4].metric("Verdicts", int(row["verdicts"]))
    st.caption(
        f"service **{row['service']}** · baseline **{row['baseline']}** · canary "
        f"**{row['canary']}** · last action {row['action']}"
    )

    hist = data.verdict_history(ddir, str(rollout))
    st.subheader("Weight and score over time")
    c1, c2 = st.columns(2)
    weight = (
        alt.Chart(hist, title="Canary weight (%) by phase")
        .mark_line(interpolate="step-after", point=alt.OverlayMarkDef(size=60, filled=True))
        .encode(
            x=alt.X("ts:T", title=None),
            y=alt.Y("canary_weight:Q", title=None, scale=alt.Scale(domain=[0, 100])),
            tooltip=["ts:T", "phase:N", "canary_weight:Q", "verdict:N", "score:Q", "action:N"],
        )
    )
    phase_points = (
        alt.Chart(hist)
        .mark_point(filled=True, size=90)
        .encode(x="ts:T", y="canary_weight:Q", color=alt.Color("phase:N", title="phase"))
    )
    c1.altair_chart(weight + phase_points, width="stretch")
    score = (
        alt.Chart(hist, title="Verdict score")
        .mark_line(point=True)
        .encode(
            x=alt.X("ts:T", title=None),
            y=alt.Y("score:Q", title=None, scale=alt.Scale(domain=[0, 100])),
            color=alt.value("#6a6e73"),
            tooltip=["ts:T", "verdict:N", "score:Q"],
        )
    )
    verdict_points = (
        alt.Chart(hist)
        .mark_point(filled=True, size=90)
        .encode(
            x="ts:T",
            y="score:Q",
            color=alt.Color(
                "verdict:N",
                scale=alt.Scale(
                    domain=["pass", "inconclusive", "fail"],
                    range=["#3e8635", "#f0ab00", "#c9190b"],
                ),
            ),
        )
    )
    c2.altair_chart(score + verdict_points, width="stretch")

    st.subheader("Latest verdict per metric")
    metrics = data.verdict_metrics(str(hist["details"].iloc[-1]) if len(hist) else None)
    if metrics:
        _metric_table(metrics)
    else:
        st.caption("the latest verdict has no per-metric details")
    _distributions(row, hist)

    st.subheader("History")
    st.dataframe(
        hist.drop(columns=["details"]).sort_values("ts", ascending=False),
        hide_index=True,
        key="canary_history",
    )


def _metric_table(metrics: list[dict[str, Any]]) -> None:
    rows = []
    for m in metrics:
        ci = m.get("ci") or [None, None]
        rows.append(
            {
                "metric": m.get("name"),
                "classification": m.get("classification"),
                "baseline": m.get("baseline"),
                "canary": m.get("canary"),
                "unit": m.get("unit", ""),
                "effect": m.get("effect"),
                "ci_low": ci[0],
                "ci_high": ci[1],
                "n_baseline": m.get("n_baseline"),
                "n_canary": m.get("n_canary"),
                "critical": m.get("critical"),
                "reason": m.get("reason"),
            }
        )
    df = pd.DataFrame(rows)
    st.dataframe(df, hide_index=True, key="canary_metrics")
    ci = df.dropna(subset=["effect"])
    if ci.empty:
        return
    # One strip per metric: effects of different metrics have different units and scales.
    colours = {"pass": "#3e8635", "high": "#c9190b", "low": "#c9190b", "nodata": "#b8bbbe"}
    for rec in ci.to_dict("records"):
        one = pd.DataFrame([rec])
        colour = colours.get(str(rec["classification"]), "#6a6e73")
        title = f"{rec['metric']}: {rec['classification']} (effect with its confidence interval)"
        point = (
            alt.Chart(one, title=title)
            .mark_point(filled=True, size=90, color=colour)
            .encode(
                x=alt.X("effect:Q", title=None), tooltip=["effect", "ci_low", "ci_high", "reason"]
            )
        )
        layers = [point]
        if pd.notna(rec["ci_low"]) and pd.notna(rec["ci_high"]):
            layers.insert(
                0,
                alt.Chart(one)
                .mark_rule(strokeWidth=3, color=colour)
                .encode(x="ci_low:Q", x2="ci_high:Q"),
            )
        zero = alt.Chart(pd.DataFrame({"x": [0.0]})).mark_rule(strokeDash=[3, 3]).encode(x="x:Q")
        st.altair_chart(alt.layer(*layers, zero).properties(height=50), width="stretch")


def _distributions(row: pd.Series, hist: pd.DataFrame) -> None:
    """Both sides' request latency distributions and error ratios (95% CI) over the window
    ending at the last verdict."""
    versions = (str(row["baseline"]), str(row["canary"]))
    end = pd.Timestamp(hist["ts"].iloc[-1]).to_pydatetime() + timedelta(seconds=1)
    window = controls.current_window(end)
    sample = data.version_latencies(ddir, window, str(row["service"]), versions)
    st.subheader("Baseline vs canary distributions")
    if sample.empty:
        st.caption(f"no requests to {row['service']} {versions[0]}/{versions[1]} in the window")
        return
    sample = sample.assign(
        role=sample["version"].map(
            {versions[0]: f"baseline {versions[0]}", versions[1]: f"canary {versions[1]}"}
        )
    )
    c1, c2 = st.columns(2)
    lat = (
        alt.Chart(sample)
        .transform_filter("datum.duration_ms > 0")
        .transform_calculate(log_ms="log(datum.duration_ms) / LN10")
        .mark_bar(opacity=0.5, binSpacing=0)
        .encode(
            x=alt.X("log_ms:Q", bin=alt.Bin(maxbins=50), title="log10 latency (ms)"),
            y=alt.Y("count():Q", stack=None, title="requests"),
            color="role:N",
        )
    )
    c1.altair_chart(lat, width="stretch")
    agg = sample.groupby("role").agg(n=("error", "size"), errors=("error", "sum")).reset_index()
    bounds = [_wilson(float(e), float(n)) for e, n in zip(agg["errors"], agg["n"], strict=True)]
    agg["error_ratio"] = agg["errors"] / agg["n"]
    agg["lo"] = [b[0] for b in bounds]
    agg["hi"] = [b[1] for b in bounds]
    pts = (
        alt.Chart(agg)
        .mark_point(filled=True, size=90)
        .encode(
            x=alt.X("role:N", title=None),
            y=alt.Y("error_ratio:Q", axis=alt.Axis(format=".2%")),
            color="role:N",
            tooltip=["role", "n", "errors", "error_ratio", "lo", "hi"],
        )
    )
    err = alt.Chart(agg).mark_rule(strokeWidth=2).encode(x="role:N", y="lo:Q", y2="hi:Q")
    c2.altair_chart(err + pts, width="stretch")


body()
