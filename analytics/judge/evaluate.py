"""One metric, one mode -> MetricResult. Pure: numpy arrays in, values out (no I/O).

sequential  three-outcome anytime-valid tests (analytics/judge/seq_metrics.py)
kayenta     NetflixACAJudge on per-step series built from the same data (netflix.py)
flagger     absolute thresholdRange checks on the canary alone
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from meshlens.analytics.judge import netflix, sequential
from meshlens.analytics.judge.data import RequestData, Series, error_mask
from meshlens.analytics.judge.model import MetricResult, MetricSpec

FLAGGER_SUCCESS_MIN = 99.0  # Flagger's documented request-success-rate example (percent)
FLAGGER_DURATION_MAX = 500.0  # Flagger's documented request-duration example (ms, P99)


@dataclass(frozen=True, slots=True)
class Frame:
    """The analysis frame every metric shares."""

    start: float  # epoch seconds
    end: float
    block_s: float | None  # None: each metric's blocks follow its data (blocks.py)
    step_s: float
    alpha: float  # per-metric level (the analysis's alpha split over the metrics)
    min_requests: int
    kayenta_tolerance: float = 0.25
    kayenta_conf_level: float = 0.98

    @property
    def n_steps(self) -> int:
        return max(1, math.ceil((self.end - self.start) / self.step_s - 1e-9))


def pct(x: float | None, digits: int = 2) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{100 * x:.{digits}f}%"


def ms(x: float | None) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{x:.1f} ms"


def quantile_name(q: float | None) -> str:
    if q is None:
        return "latency distribution"
    return f"p{100 * q:g}"


def base_result(spec: MetricSpec, **kw: object) -> MetricResult:
    defaults: dict[str, Any] = {
        "baseline": None,
        "canary": None,
        "effect": None,
        "ci": None,
        "statistic": "",
        "p_value": None,
        "e_value": None,
        "n_baseline": 0,
        "n_canary": 0,
        "reason": "",
        "classification": "nodata",
    }
    defaults.update(kw)
    return MetricResult(
        name=spec.name,
        critical=spec.critical,
        weight=spec.weight,
        direction=spec.direction,
        kind=spec.kind,
        groups=spec.groups,
        muted=spec.muted,
        **defaults,
    )


def min_guard(spec: MetricSpec, n_b: int, n_c: int, fr: Frame) -> str:
    need = spec.min_samples if spec.min_samples is not None else fr.min_requests
    if n_b < need or n_c < need:
        return (
            f"not enough traffic to judge: baseline {n_b} and canary {n_c} requests, "
            f"{need} needed on each side"
        )
    return ""


def direction_label(spec: MetricSpec, sign: float) -> str:
    if spec.direction == "increase":
        return "high"
    if spec.direction == "decrease":
        return "low"
    return "high" if sign >= 0 else "low"


# --- kayenta --------------------------------------------------------------------------------


def step_series(spec: MetricSpec, d: RequestData, fr: Frame, *, other_n: int = 0) -> np.ndarray:
    """The per-step series Kayenta would have fetched, built from request-level data: error
    ratio, latency quantile (or mean for the distribution), or the normalized request rate.
    Steps without requests are NaN (Kayenta's nanStrategy decides)."""
    idx = sequential.block_index(d.ts, fr.start, fr.step_s)
    ok = (idx >= 0) & (idx < fr.n_steps)
    n = np.bincount(idx[ok], minlength=fr.n_steps).astype(float)
    if spec.kind == "error_rate":
        e = np.bincount(
            idx[ok],
            weights=error_mask(d, spec.error_codes, spec.grpc_codes)[ok].astype(float),
            minlength=fr.n_steps,
        )
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(n > 0, e / np.maximum(n, 1), np.nan)
    if spec.kind == "request_share":
        return n / fr.step_s
    groups = sequential.split_blocks(d.ts, d.duration_ms, fr.start, fr.step_s, fr.n_steps)
    q = spec.quantile
    return np.array(
        [
            np.nan if g.size == 0 else (float(g.mean()) if q is None else float(np.quantile(g, q)))
            for g in groups
        ]
    )


def series_steps(s: Series, fr: Frame) -> np.ndarray:
    idx = sequential.block_index(s.ts, fr.start, fr.step_s)
    ok = (idx >= 0) & (idx < fr.n_steps)
    sums = np.bincount(idx[ok], weights=s.values[ok], minlength=fr.n_steps)
    cnt = np.bincount(idx[ok], minlength=fr.n_steps)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(cnt > 0, sums / np.maximum(cnt, 1), np.nan)


_LABELS = {
    "Pass": "pass",
    "High": "high",
    "Low": "low",
    "Nodata": "nodata",
    "NodataFailMetric": "low",
    "Error": "nodata",
}


def kayenta_metric(
    spec: MetricSpec,
    experiment: np.ndarray,
    control: np.ndarray,
    fr: Frame,
    *,
    n_baseline: int,
    n_canary: int,
    guard: str = "",
    seed: int = 0,
) -> MetricResult:
    """NetflixACAJudge on the two per-step series (experiment = canary)."""
    k = spec.kayenta
    params = netflix.KayentaParams(
        tolerance=fr.kayenta_tolerance,
        conf_level=fr.kayenta_conf_level,
        direction=spec.direction,
        nan_strategy=k.nan_strategy,
        outlier_strategy=k.outlier_strategy,
        outlier_factor=k.outlier_factor,
        effect_measure=k.effect_measure,
        allowed_increase=k.allowed_increase,
        allowed_decrease=k.allowed_decrease,
        critical_increase=k.critical_increase,
        critical_decrease=k.critical_decrease,
        critical=spec.critical,
        must_have_data=k.must_have_data,
    )
    common: dict[str, object] = {
        "n_baseline": n_baseline,
        "n_canary": n_canary,
        "statistic": f"Mann-Whitney {100 * fr.kayenta_conf_level:g}% CI "
        f"on {fr.step_s:g}s steps (NetflixACAJudge)",
        "effect_unit": "Hodges-Lehmann shift (canary - baseline)",
    }
    if guard:
        return base_result(spec, reason=guard, label="Nodata", **common)
    r = netflix.classify_metric(experiment, control, params, seed=seed)
    cls = _LABELS[r.label]
    eb = r.control
    ec = r.experiment
    mb = float(np.mean(eb)) if eb.size else None
    mc = float(np.mean(ec)) if ec.size else None
    ci = (r.ci.ci_low, r.ci.ci_high) if r.ci else None
    est = r.ci.estimate if r.ci else None
    if r.label in ("High", "Low"):
        reason = (
            f"{r.label}: the {100 * fr.kayenta_conf_level:g}% CI of the shift "
            f"[{ci[0]:.4g}, {ci[1]:.4g}] clears {fr.kayenta_tolerance:g} x |estimate "
            f"{est:.4g}|; mean ratio {r.deviation:.3g} over {ec.size} vs {eb.size} steps"
            if ci and est is not None
            else r.reason
        )
    elif r.label == "Pass":
        reason = (
            f"Pass: shift estimate {est:.4g}, CI [{ci[0]:.4g}, {ci[1]:.4g}], mean ratio "
            f"{r.deviation:.3g} over {ec.size} vs {eb.size} steps"
            if ci and est is not None
            else (r.reason or "Pass")
        )
    else:
        reason = r.reason or r.label
    return base_result(
        spec,
        classification=cls,
        baseline=mb,
        canary=mc,
        effect=est,
        ci=ci,
        reason=reason,
        label=r.label,
        extra={
            "mean_ratio": r.deviation,
            "effect_size": r.effect,
            "kayenta_critical": r.critical,
            "experiment_stats": netflix.summary(ec),
            "control_stats": netflix.summary(eb),
        },
        **common,
    )


# --- flagger --------------------------------------------------------------------------------


def flagger_requests(spec: MetricSpec, b: RequestData, c: RequestData, fr: Frame) -> MetricResult:
    """Flagger's built-ins on the canary: request-success-rate (percent of non-5xx, >= min) and
    request-duration (P99 ms, <= max); other kinds check the canary's value in [min, max]."""
    guard = min_guard(spec, b.n if b.n else fr.min_requests, c.n, fr)
    if spec.kind == "error_rate":
        value = (
            100.0 * (1.0 - float(error_mask(c, spec.error_codes, spec.grpc_codes).mean()))
            if c.n
            else None
        )
        lo = (
            spec.threshold_min
            if spec.threshold_min is not None
            else (FLAGGER_SUCCESS_MIN if spec.threshold_max is None else None)
        )
        return _flagger_check(
            spec, "request-success-rate (%)", value, lo, spec.threshold_max, b.n, c.n, guard
        )
    if spec.kind == "latency":
        q = spec.quantile if spec.quantile is not None else 0.99
        value = float(np.quantile(c.duration_ms, q)) if c.n else None
        hi = (
            spec.threshold_max
            if spec.threshold_max is not None
            else (FLAGGER_DURATION_MAX if spec.threshold_min is None else None)
        )
        return _flagger_check(
            spec,
            f"request-duration p{100 * q:g} (ms)",
            value,
            spec.threshold_min,
            hi,
            b.n,
            c.n,
            guard,
        )
    if spec.kind == "request_share":
        value = c.n / (c.n + b.n) if (b.n + c.n) else None
        return _flagger_check(
            spec, "canary share", value, spec.threshold_min, spec.threshold_max, b.n, c.n, guard
        )
    return base_result(spec, reason=f"{spec.kind} metrics need a series source in flagger mode")


def flagger_series(spec: MetricSpec, c: Series, n_baseline: int) -> MetricResult:
    value = float(np.nanmean(c.values)) if c.n else None
    guard = "" if c.n else "no data for the canary"
    return _flagger_check(
        spec, spec.name, value, spec.threshold_min, spec.threshold_max, n_baseline, c.n, guard
    )


def _flagger_check(
    spec: MetricSpec,
    what: str,
    value: float | None,
    lo: float | None,
    hi: float | None,
    n_b: int,
    n_c: int,
    guard: str,
) -> MetricResult:
    common: dict[str, object] = {
        "n_baseline": n_b,
        "n_canary": n_c,
        "canary": value,
        "statistic": "thresholdRange (Flagger)",
        "effect_unit": "distance outside the threshold range",
        "ci": (lo, hi),
    }
    if guard or value is None or not math.isfinite(value):
        return base_result(spec, reason=guard or f"no {what} value for the canary", **common)
    rng = f"[{'-inf' if lo is None else f'{lo:g}'}, {'+inf' if hi is None else f'{hi:g}'}]"
    if lo is not None and value < lo:
        return base_result(
            spec,
            classification="low",
            effect=value - lo,
            reason=f"canary {what} {value:.4g} is below the minimum {lo:g}",
            **common,
        )
    if hi is not None and value > hi:
        return base_result(
            spec,
            classification="high",
            effect=value - hi,
            reason=f"canary {what} {value:.4g} is above the maximum {hi:g}",
            **common,
        )
    return base_result(
        spec,
        classification="pass",
        effect=0.0,
        reason=f"canary {what} {value:.4g} is within {rng}",
        **common,
    )
