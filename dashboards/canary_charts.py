"""The Canary page's frames and altair charts. Pure (pandas + altair, no Streamlit).

Outcomes are the judge's three (analytics/judge/decision.py): pass, fail, inconclusive; a
metric's classification maps onto them (high/low are fails, nodata is inconclusive: not enough
data is never a failure by itself). Every outcome has its own colour AND shape, so the charts
read in grey scale and for colour-blind users too.

Effects are on the judge's own scale (the one its tolerance is defined on): error rates as an
absolute difference (shown in percentage points), latency and series as a relative change
(shown in %). Intervals come from the verdict rows; a missing bound is an open (infinite) one
and is drawn to the edge of the chart.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Final, cast

import altair as alt
import pandas as pd

OUTCOMES: Final = ("pass", "inconclusive", "fail")
OUTCOME_COLOURS: Final = ("#3e8635", "#f0ab00", "#c9190b")
OUTCOME_SHAPES: Final = ("circle", "triangle-up", "cross")
_OUTCOME_OF: Final = {
    "pass": "pass",
    "high": "fail",
    "low": "fail",
    "inconclusive": "inconclusive",
    "nodata": "inconclusive",
}
TIME_TITLE: Final = "analysis time (UTC)"


def utc_x(title: str = TIME_TITLE) -> alt.X:
    """A time axis in UTC (the browser's zone would disagree with the tables), 24-hour."""
    return alt.X(
        "ts:T",
        title=title,
        scale=alt.Scale(type="utc"),
        axis=alt.Axis(format="%H:%M", labelOverlap=True, tickMinStep=60_000),
    )


def _utc_text(ts: pd.Series) -> list[str]:
    return [f"{pd.Timestamp(t):%Y-%m-%d %H:%M:%S} UTC" for t in ts]


def metric_outcome(classification: object) -> str:
    """pass / fail / inconclusive of one metric's classification."""
    return _OUTCOME_OF.get(str(classification), "inconclusive")


def outcome_color(title: str = "outcome", field: str = "outcome") -> alt.Color:
    return alt.Color(
        f"{field}:N",
        title=title,
        scale=alt.Scale(domain=list(OUTCOMES), range=list(OUTCOME_COLOURS)),
    )


def outcome_shape(title: str = "outcome", field: str = "outcome") -> alt.Shape:
    return alt.Shape(
        f"{field}:N",
        title=title,
        scale=alt.Scale(domain=list(OUTCOMES), range=list(OUTCOME_SHAPES)),
    )


def _num(x: Any) -> float | None:
    if isinstance(x, bool) or not isinstance(x, int | float):
        return None
    x = float(x)
    return x if not math.isnan(x) else None


def effect_scale(kind: str, unit: str) -> tuple[float, str, str]:
    """(display factor, y-axis title, what the axis is) of a metric's effect on the judge's
    scale. Axis titles stay short: a y title longer than the plot makes Streamlit's fit-to-
    container layout shrink the plot to a sliver."""
    if kind == "error_rate" or unit == "ratio":
        return 100.0, "effect (pp)", "canary - baseline error rate, percentage points"
    return 100.0, "effect (%)", "canary vs baseline, % change"


def metric_table(metrics: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """One row per metric of one analysis, outcome first."""
    rows = []
    for m in metrics:
        ci = m.get("ci") if isinstance(m.get("ci"), list | tuple) else [None, None]
        extra = m.get("details") if isinstance(m.get("details"), Mapping) else {}
        assert isinstance(extra, Mapping) and ci is not None
        rows.append(
            {
                "metric": m.get("name"),
                "outcome": metric_outcome(m.get("classification")),
                "classification": m.get("classification"),
                "baseline": _num(m.get("baseline")),
                "canary": _num(m.get("canary")),
                "unit": m.get("unit", ""),
                "effect": _num(m.get("effect")),
                "ci_low": _num(ci[0]) if len(ci) > 0 else None,
                "ci_high": _num(ci[1]) if len(ci) > 1 else None,
                "tolerance": _num(extra.get("tolerance")),
                "effect_unit": m.get("effect_unit", ""),
                "n_baseline": m.get("n_baseline"),
                "n_canary": m.get("n_canary"),
                "critical": m.get("critical"),
                "reason": m.get("reason"),
            }
        )
    return pd.DataFrame(rows)


def metric_history(rows: Sequence[tuple[Any, Sequence[Mapping[str, Any]]]]) -> pd.DataFrame:
    """One row per (analysis, metric) from (verdict time, its per-metric results)."""
    out: list[dict[str, Any]] = []
    for ts, metrics in rows:
        for m in metrics:
            ci = m.get("ci") if isinstance(m.get("ci"), list | tuple) else None
            extra = m.get("details") if isinstance(m.get("details"), Mapping) else {}
            assert isinstance(extra, Mapping)
            lo: float | None = None
            hi: float | None = None
            if ci is not None and len(ci) == 2:
                # JSON null inside an interval is an open (infinite) bound.
                lo = -math.inf if ci[0] is None else _num(ci[0])
                hi = math.inf if ci[1] is None else _num(ci[1])
            out.append(
                {
                    "ts": ts,
                    "metric": str(m.get("name", "?")),
                    "kind": str(m.get("kind", "")),
                    "unit": str(m.get("unit", "")),
                    "effect_unit": str(m.get("effect_unit", "")),
                    "classification": str(m.get("classification", "")),
                    "outcome": metric_outcome(m.get("classification")),
                    "effect": _num(m.get("effect")),
                    "lo": lo,
                    "hi": hi,
                    "tolerance": _num(extra.get("tolerance")),
                    "direction": str(m.get("direction", "increase")),
                    "baseline": _num(m.get("baseline")),
                    "canary": _num(m.get("canary")),
                    "n_baseline": m.get("n_baseline"),
                    "n_canary": m.get("n_canary"),
                    "reason": str(m.get("reason", "")),
                }
            )
    cols = [
        "ts",
        "metric",
        "kind",
        "unit",
        "effect_unit",
        "classification",
        "outcome",
        "effect",
        "lo",
        "hi",
        "tolerance",
        "direction",
        "baseline",
        "canary",
        "n_baseline",
        "n_canary",
        "reason",
    ]
    return pd.DataFrame(out, columns=cols)


def _fmt(x: float) -> str:
    if math.isinf(x):
        return "open (+inf)" if x > 0 else "open (-inf)"
    return f"{x:+.2f}"


def tolerance_lines(tolerance: float, direction: str) -> list[float]:
    """Where the tolerance lies on the effect axis (positive = the quantity went up)."""
    lines = []
    if direction in ("increase", "either"):
        lines.append(tolerance)
    if direction in ("decrease", "either"):
        lines.append(-tolerance)
    return lines


def effect_frame(one: pd.DataFrame) -> tuple[pd.DataFrame, list[float], tuple[float, float]]:
    """One metric's history on the display scale: the analyses that have an estimate, the
    tolerance lines, and the y domain (open bounds drawn to its edge)."""
    kind = str(one["kind"].iloc[0]) if len(one) else ""
    unit = str(one["unit"].iloc[0]) if len(one) else ""
    factor, _title, _what = effect_scale(kind, unit)
    df = one.dropna(subset=["effect"]).copy()
    tols: set[float] = set()
    for tol, direction in zip(one["tolerance"], one["direction"], strict=True):
        if tol is not None and not pd.isna(tol):
            tols.update(factor * t for t in tolerance_lines(float(tol), str(direction)))
    values = [0.0, *tols]
    for col in ("effect", "lo", "hi"):
        vals = pd.to_numeric(df[col], errors="coerce") * factor
        values += [float(v) for v in vals if pd.notna(v) and math.isfinite(v)]
    lo_edge, hi_edge = min(values), max(values)
    pad = (hi_edge - lo_edge) * 0.08 or 1.0
    lo_edge, hi_edge = lo_edge - pad, hi_edge + pad
    df["time"] = _utc_text(df["ts"])
    df["effect_d"] = df["effect"].astype(float) * factor
    lo = pd.to_numeric(df["lo"], errors="coerce").astype(float) * factor
    hi = pd.to_numeric(df["hi"], errors="coerce").astype(float) * factor
    df["lo_text"] = [_fmt(v) if pd.notna(v) else "n/a" for v in lo]
    df["hi_text"] = [_fmt(v) if pd.notna(v) else "n/a" for v in hi]
    df["lo_d"] = lo.clip(lower=lo_edge).fillna(df["effect_d"])
    df["hi_d"] = hi.clip(upper=hi_edge).fillna(df["effect_d"])
    return df, sorted(tols), (lo_edge, hi_edge)


def effect_chart(one: pd.DataFrame, metric: str) -> alt.LayerChart:
    """One metric over the analyses: its effect, the interval (band and bars), the tolerance
    (dashed red) and zero (grey); each analysis marked by its outcome."""
    kind = str(one["kind"].iloc[0]) if len(one) else ""
    unit = str(one["unit"].iloc[0]) if len(one) else ""
    _factor, y_title, what = effect_scale(kind, unit)
    df, tols, (lo_edge, hi_edge) = effect_frame(one)
    x = utc_x()
    y_scale = alt.Scale(domain=[lo_edge, hi_edge], clamp=True, nice=False)
    base = alt.Chart(df)
    band = base.mark_area(opacity=0.15, color="#6a6e73").encode(
        x=x, y=alt.Y("lo_d:Q", title=y_title, scale=y_scale), y2="hi_d:Q"
    )
    bars = base.mark_rule(strokeWidth=2, color="#8a8d90").encode(x=x, y="lo_d:Q", y2="hi_d:Q")
    line = base.mark_line(color="#6a6e73", strokeWidth=1).encode(x=x, y="effect_d:Q")
    points = base.mark_point(filled=True, size=110, opacity=1).encode(
        x=x,
        y=alt.Y("effect_d:Q", title=y_title, scale=y_scale),
        color=outcome_color(),
        shape=outcome_shape(),
        tooltip=[
            alt.Tooltip("time:N"),
            alt.Tooltip("outcome:N"),
            alt.Tooltip("classification:N"),
            alt.Tooltip("effect_d:Q", title="effect", format="+.2f"),
            alt.Tooltip("lo_text:N", title="interval low"),
            alt.Tooltip("hi_text:N", title="interval high"),
            alt.Tooltip("n_baseline:Q", title="baseline n"),
            alt.Tooltip("n_canary:Q", title="canary n"),
            alt.Tooltip("reason:N"),
        ],
    )
    zero = (
        alt.Chart(pd.DataFrame({"y": [0.0]}))
        .mark_rule(color="#8a8d90", strokeDash=[2, 2])
        .encode(y=alt.Y("y:Q", scale=y_scale))
    )
    layers: list[Any] = [band, bars, line, zero, points]
    if tols:
        tol = (
            alt.Chart(pd.DataFrame({"y": tols, "what": ["tolerance"] * len(tols)}))
            .mark_rule(color="#c9190b", strokeDash=[6, 4], strokeWidth=1.5)
            .encode(y=alt.Y("y:Q", scale=y_scale), tooltip=[alt.Tooltip("y:Q", title="tolerance")])
        )
        layers.insert(3, tol)
    return cast(alt.LayerChart, alt.layer(*layers)).properties(
        title=alt.TitleParams(
            f"{metric}: {what}",
            subtitle=str(one["effect_unit"].iloc[0]) if len(one) else "",
        ),
        height=300,
    )


def weight_chart(hist: pd.DataFrame) -> alt.LayerChart:
    """Canary weight over time (step line) and each analysis's verdict (colour + shape)."""
    frame = hist[["ts", "phase", "canary_weight", "verdict", "score", "action"]].copy()
    frame["canary_weight"] = pd.to_numeric(frame["canary_weight"], errors="coerce")
    frame["time"] = _utc_text(frame["ts"])
    x = utc_x("time (UTC)")
    y = alt.Y("canary_weight:Q", title="canary weight (%)", scale=alt.Scale(domain=[0, 100]))
    line = (
        alt.Chart(frame)
        .mark_line(interpolate="step-after", color="#6a6e73")
        .encode(x=x, y=y, tooltip=["time:N", "phase:N", "canary_weight:Q", "action:N"])
    )
    analyses = frame[frame["verdict"].isin(OUTCOMES)]
    points = (
        alt.Chart(analyses)
        .mark_point(filled=True, size=110, opacity=1)
        .encode(
            x=x,
            y=y,
            color=outcome_color("verdict", "verdict"),
            shape=outcome_shape("verdict", "verdict"),
            tooltip=[
                "time:N",
                "verdict:N",
                "score:Q",
                "phase:N",
                "canary_weight:Q",
                "action:N",
            ],
        )
    )
    return cast(alt.LayerChart, alt.layer(line, points)).properties(
        title="Canary weight and each analysis's verdict", height=280
    )


def wilson(errors: float, n: float, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson interval of an error ratio."""
    if n <= 0:
        return (math.nan, math.nan)
    p = errors / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def error_ratios(sample: pd.DataFrame) -> pd.DataFrame:
    """Per role: requests, errors, ratio and its 95% Wilson interval."""
    agg = sample.groupby("role").agg(n=("error", "size"), errors=("error", "sum")).reset_index()
    bounds = [wilson(float(e), float(n)) for e, n in zip(agg["errors"], agg["n"], strict=True)]
    agg["error_ratio"] = agg["errors"] / agg["n"]
    agg["lo"] = [b[0] for b in bounds]
    agg["hi"] = [b[1] for b in bounds]
    return agg


def latency_histogram(sample: pd.DataFrame) -> alt.Chart:
    return (
        alt.Chart(sample, title="Latency histogram")
        .transform_filter("datum.duration_ms > 0")
        .transform_calculate(log_ms="log(datum.duration_ms) / LN10")
        .mark_bar(opacity=0.5, binSpacing=0)
        .encode(
            x=alt.X("log_ms:Q", bin=alt.Bin(maxbins=50), title="log10 latency (ms)"),
            y=alt.Y("count():Q", stack=None, title="requests"),
            color=alt.Color("role:N", title=None),
        )
    )


def latency_ecdf(sample: pd.DataFrame) -> alt.Chart:
    """Empirical CDF per role (share of requests at or below each latency)."""
    return (
        alt.Chart(sample, title="Latency ECDF")
        .transform_filter("datum.duration_ms > 0")
        .transform_window(ecdf="cume_dist()", sort=[{"field": "duration_ms"}], groupby=["role"])
        .mark_line(interpolate="step-after")
        .encode(
            x=alt.X("duration_ms:Q", title="latency (ms, log scale)", scale=alt.Scale(type="log")),
            y=alt.Y("ecdf:Q", title="share of requests at or below", axis=alt.Axis(format="%")),
            color=alt.Color("role:N", title=None),
        )
    )


def error_ratio_chart(agg: pd.DataFrame) -> alt.LayerChart:
    pts = (
        alt.Chart(agg)
        .mark_point(filled=True, size=100)
        .encode(
            x=alt.X("role:N", title=None),
            y=alt.Y("error_ratio:Q", title="error ratio (95% Wilson)", axis=alt.Axis(format=".2%")),
            color=alt.Color("role:N", title=None),
            tooltip=["role", "n", "errors", "error_ratio", "lo", "hi"],
        )
    )
    err = alt.Chart(agg).mark_rule(strokeWidth=2).encode(x="role:N", y="lo:Q", y2="hi:Q")
    return cast(alt.LayerChart, alt.layer(err, pts)).properties(title="Error ratio")
