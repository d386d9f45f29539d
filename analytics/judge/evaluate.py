"""One metric, one mode -> MetricResult. Pure: numpy arrays in, values out (no I/O).

sequential  anytime-valid tests on request-level data (analytics/judge/sequential.py)
kayenta     NetflixACAJudge on per-step series built from the same data (netflix.py)
flagger     absolute thresholdRange checks on the canary alone
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from analytics.judge import netflix, sequential
from analytics.judge.data import RequestData, Series, error_mask
from analytics.judge.model import MetricResult, MetricSpec

MIN_BLOCKS = 6  # block tests judge nothing before this many blocks (minimum-sample guard)
FLAGGER_SUCCESS_MIN = 99.0  # Flagger's documented request-success-rate example (percent)
FLAGGER_DURATION_MAX = 500.0  # Flagger's documented request-duration example (ms, P99)


@dataclass(frozen=True, slots=True)
class Frame:
    """The analysis frame every metric shares."""

    start: float  # epoch seconds
    end: float
    block_s: float
    step_s: float
    alpha: float  # per-metric level (the analysis's alpha split over the metrics)
    min_requests: int
    kayenta_tolerance: float = 0.25
    kayenta_conf_level: float = 0.98

    @property
    def n_blocks(self) -> int:
        return max(1, math.ceil((self.end - self.start) / self.block_s - 1e-9))

    @property
    def n_steps(self) -> int:
        return max(1, math.ceil((self.end - self.start) / self.step_s - 1e-9))


def pct(x: float | None, digits: int = 2) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{100 * x:.{digits}f}%"


def ms(x: float | None) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{x:.1f} ms"


def _qname(q: float | None) -> str:
    if q is None:
        return "latency distribution"
    return f"p{100 * q:g}"


def _base(spec: MetricSpec, **kw: object) -> MetricResult:
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


def _min_guard(spec: MetricSpec, n_b: int, n_c: int, fr: Frame) -> str:
    need = spec.min_samples if spec.min_samples is not None else fr.min_requests
    if n_b < need or n_c < need:
        return (
            f"not enough traffic to judge: baseline {n_b} and canary {n_c} requests, "
            f"{need} needed on each side"
        )
    return ""


def _direction_label(spec: MetricSpec, sign: float) -> str:
    if spec.direction == "increase":
        return "high"
    if spec.direction == "decrease":
        return "low"
    return "high" if sign >= 0 else "low"


# --- sequential -----------------------------------------------------------------------------


def seq_error_rate(spec: MetricSpec, b: RequestData, c: RequestData, fr: Frame) -> MetricResult:
    eb_mask = error_mask(b, spec.error_codes, spec.grpc_codes)
    ec_mask = error_mask(c, spec.error_codes, spec.grpc_codes)
    common = {
        "n_baseline": b.n,
        "n_canary": c.n,
        "unit": "ratio",
        "effect_unit": "relative change of the error rate (canary/baseline - 1)",
        "statistic": (
            f"mixture SPRT on the rate ratio, errors conditioned per {fr.block_s:g}s block"
        ),
    }
    rb = float(eb_mask.mean()) if b.n else None
    rc = float(ec_mask.mean()) if c.n else None
    guard = _min_guard(spec, b.n, c.n, fr)
    if guard:
        return _base(spec, baseline=rb, canary=rc, reason=guard, **common)
    nb, eb = sequential.block_counts(b.ts, eb_mask, fr.start, fr.block_s, fr.n_blocks)
    nc, ec = sequential.block_counts(c.ts, ec_mask, fr.start, fr.block_s, fr.n_blocks)
    r = sequential.rate_ratio_test(
        eb, nb, ec, nc, alpha=fr.alpha, tolerance=spec.tolerance, direction=spec.direction
    )
    effect = r.ratio - 1 if math.isfinite(r.ratio) else (math.inf if r.ratio > 0 else None)
    ci = (r.ci[0] - 1, r.ci[1] - 1)
    ci_text = f"[{_rel(ci[0])}, {_rel(ci[1])}]"
    what = (
        f"errors {pct(r.rate_c)} of {r.n_c} canary requests vs {pct(r.rate_b)} of {r.n_b} baseline"
    )
    if r.rejected:
        cls = _direction_label(spec, (r.ratio if math.isfinite(r.ratio) else 2.0) - 1)
        reason = (
            f"canary error rate is {'higher' if cls == 'high' else 'lower'}: {what} "
            f"({_rel(effect)}, {100 * (1 - fr.alpha):g}% CS {ci_text}; e-value "
            f"{r.e_value:.3g} >= {1 / fr.alpha:.3g})"
        )
    else:
        cls = "pass"
        reason = (
            f"no significant error-rate change: {what} ({_rel(effect)}, "
            f"{100 * (1 - fr.alpha):g}% CS {ci_text})"
        )
    return _base(
        spec,
        classification=cls,
        baseline=r.rate_b,
        canary=r.rate_c,
        effect=effect,
        ci=ci,
        e_value=r.e_value,
        p_value=min(1.0, 1.0 / r.e_value),
        reason=reason,
        extra={"errors_baseline": r.errors_b, "errors_canary": r.errors_c, "rate_ratio": r.ratio},
        **common,
    )


def _rel(x: float | None) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    if math.isinf(x):
        return "+inf" if x > 0 else "-inf"
    return f"{100 * x:+.1f}%"


def seq_latency(spec: MetricSpec, b: RequestData, c: RequestData, fr: Frame) -> MetricResult:
    q = spec.quantile
    label = _qname(q)
    stat_q = 0.5 if q is None else q
    vb = float(np.quantile(b.duration_ms, stat_q)) if b.n else None
    vc = float(np.quantile(c.duration_ms, stat_q)) if c.n else None
    common: dict[str, object] = {
        "n_baseline": b.n,
        "n_canary": c.n,
        "unit": "ms",
        "baseline": vb,
        "canary": vc,
        "statistic": (
            f"t-mixture e-value on per-{fr.block_s:g}s-block "
            + (
                "P(canary > baseline) - 1/2"
                if q is None
                else f"share above the pooled {label} (canary - baseline)"
            )
        ),
        "effect_unit": (
            "P(canary > baseline) - 0.5"
            if q is None
            else f"share of requests above the pooled {label}: canary - baseline"
        ),
    }
    guard = _min_guard(spec, b.n, c.n, fr)
    if guard:
        return _base(spec, reason=guard, **common)
    gb = sequential.split_blocks(b.ts, b.duration_ms, fr.start, fr.block_s, fr.n_blocks)
    gc = sequential.split_blocks(c.ts, c.duration_ms, fr.start, fr.block_s, fr.n_blocks)
    if q is None:
        d, null_var = sequential.cles_blocks(gb, gc)
        margin = spec.tolerance
    else:
        d, null_var = sequential.exceedance_blocks(gb, gc, q)
        margin = spec.tolerance * (1 - q)
    if d.size < MIN_BLOCKS:
        return _base(
            spec,
            reason=(
                f"not enough {fr.block_s:g}s blocks with traffic on both "
                f"sides: {d.size} of {MIN_BLOCKS} needed"
            ),
            **common,
        )
    # Known sampling noise + per-version level drift (sequential.known_null_var).
    r = sequential.mean_test(
        d,
        alpha=fr.alpha,
        margin=margin,
        direction=spec.direction,
        null_var=null_var,
        min_drift_corr=sequential.drift_corr_floor(fr.block_s),
    )
    change = (vc / vb - 1) if vb and vc is not None else None
    name = label if q is not None else "median"
    values = f"{name} {ms(vc)} canary vs {ms(vb)} baseline ({_rel(change)})"
    if q is None:
        detail = (
            f"P(canary slower) - 1/2 = {r.mean:+.3f}, "
            f"{100 * (1 - fr.alpha):g}% CS [{r.ci[0]:+.3f}, {r.ci[1]:+.3f}]"
        )
    else:
        detail = (
            f"canary exceeds the pooled {label} {_pp(r.mean)} more often, "
            f"{100 * (1 - fr.alpha):g}% CS [{_pp(r.ci[0])}, {_pp(r.ci[1])}]"
        )
    if r.rejected:
        cls = _direction_label(spec, r.mean)
        reason = (
            f"canary {label} is {'slower' if cls == 'high' else 'faster'}: {values}; "
            f"{detail}; e-value {r.e_value:.3g} over {r.blocks} blocks"
        )
    else:
        cls = "pass"
        reason = f"no significant {label} change: {values}; {detail}"
    return _base(
        spec,
        classification=cls,
        effect=r.mean,
        ci=r.ci,
        e_value=r.e_value,
        p_value=min(1.0, 1.0 / r.e_value),
        reason=reason,
        extra={"blocks": r.blocks, "relative_change": change},
        **common,
    )


def _pp(x: float) -> str:
    return "n/a" if not math.isfinite(x) else f"{100 * x:+.2f} pp"


def seq_request_share(spec: MetricSpec, b: RequestData, c: RequestData, fr: Frame) -> MetricResult:
    share = c.n / (b.n + c.n) if (b.n + c.n) else None
    common: dict[str, object] = {
        "n_baseline": b.n,
        "n_canary": c.n,
        "unit": "share",
        "baseline": spec.expected_share,
        "canary": share,
        "effect_unit": "canary share - expected share",
        "statistic": f"t-mixture e-value on the per-{fr.block_s:g}s-block canary share",
    }
    if spec.expected_share is None:
        return _base(
            spec,
            reason="no expected_share configured: the canary's traffic share "
            f"is {pct(share)} (not judged)",
            **common,
        )
    if b.n + c.n < (spec.min_samples or fr.min_requests):
        return _base(
            spec, reason=f"not enough traffic to judge the share: {b.n + c.n} requests", **common
        )
    nb, _ = sequential.block_counts(b.ts, np.zeros(b.n), fr.start, fr.block_s, fr.n_blocks)
    nc, _ = sequential.block_counts(c.ts, np.zeros(c.n), fr.start, fr.block_s, fr.n_blocks)
    tot = nb + nc
    d = (nc[tot > 0] / tot[tot > 0]) - spec.expected_share
    if d.size < MIN_BLOCKS:
        return _base(
            spec, reason=f"not enough blocks with traffic: {d.size} of {MIN_BLOCKS}", **common
        )
    margin = spec.tolerance * spec.expected_share if spec.tolerance else 0.2 * spec.expected_share
    r = sequential.mean_test(d, alpha=fr.alpha, margin=margin, direction=spec.direction)
    text = f"canary got {pct(share)} of requests, expected {pct(spec.expected_share)}"
    if r.rejected:
        cls = _direction_label(spec, r.mean)
        reason = f"canary traffic share is off: {text} (e-value {r.e_value:.3g})"
    else:
        cls, reason = "pass", f"traffic share as expected: {text}"
    return _base(
        spec,
        classification=cls,
        effect=r.mean,
        ci=r.ci,
        e_value=r.e_value,
        p_value=min(1.0, 1.0 / r.e_value),
        reason=reason,
        **common,
    )


def _block_means(s: Series, fr: Frame) -> np.ndarray:
    idx = sequential.block_index(s.ts, fr.start, fr.block_s)
    ok = (idx >= 0) & (idx < fr.n_blocks) & np.isfinite(s.values)
    sums = np.bincount(idx[ok], weights=s.values[ok], minlength=fr.n_blocks)
    cnt = np.bincount(idx[ok], minlength=fr.n_blocks)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(cnt > 0, sums / np.maximum(cnt, 1), np.nan)


def seq_series(spec: MetricSpec, b: Series, c: Series, fr: Frame) -> MetricResult:
    mb = float(np.nanmean(b.values)) if b.n else None
    mc = float(np.nanmean(c.values)) if c.n else None
    common: dict[str, object] = {
        "n_baseline": b.n,
        "n_canary": c.n,
        "baseline": mb,
        "canary": mc,
        "effect_unit": "relative difference of the means (canary/baseline - 1)",
        "statistic": f"t-mixture e-value on paired per-{fr.block_s:g}s-block mean differences",
    }
    if b.n == 0 or c.n == 0:
        return _base(spec, reason=f"no data: baseline {b.n} and canary {c.n} points", **common)
    d = _block_means(c, fr) - _block_means(b, fr)
    d = d[np.isfinite(d)]
    if d.size < MIN_BLOCKS:
        return _base(
            spec,
            reason=(
                f"not enough {fr.block_s:g}s blocks with data on both sides: "
                f"{d.size} of {MIN_BLOCKS}"
            ),
            **common,
        )
    scale = abs(mb) if mb else 1.0
    r = sequential.mean_test(
        d,
        alpha=fr.alpha,
        margin=spec.tolerance * scale,
        direction=spec.direction,
    )
    rel = r.mean / scale
    ci = (r.ci[0] / scale, r.ci[1] / scale)
    text = f"mean {mc:.4g} canary vs {mb:.4g} baseline ({_rel(rel)})"
    if r.rejected:
        cls = _direction_label(spec, r.mean)
        reason = (
            f"canary {spec.name} is {'higher' if cls == 'high' else 'lower'}: {text}; "
            f"e-value {r.e_value:.3g}"
        )
    else:
        cls, reason = "pass", f"no significant change: {text}"
    return _base(
        spec,
        classification=cls,
        effect=rel,
        ci=ci,
        e_value=r.e_value,
        p_value=min(1.0, 1.0 / r.e_value),
        reason=reason,
        **common,
    )


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
        return _base(spec, reason=guard, label="Nodata", **common)
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
    return _base(
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
    guard = _min_guard(spec, b.n if b.n else fr.min_requests, c.n, fr)
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
    return _base(spec, reason=f"{spec.kind} metrics need a series source in flagger mode")


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
        return _base(spec, reason=guard or f"no {what} value for the canary", **common)
    rng = f"[{'-inf' if lo is None else f'{lo:g}'}, {'+inf' if hi is None else f'{hi:g}'}]"
    if lo is not None and value < lo:
        return _base(
            spec,
            classification="low",
            effect=value - lo,
            reason=f"canary {what} {value:.4g} is below the minimum {lo:g}",
            **common,
        )
    if hi is not None and value > hi:
        return _base(
            spec,
            classification="high",
            effect=value - hi,
            reason=f"canary {what} {value:.4g} is above the maximum {hi:g}",
            **common,
        )
    return _base(
        spec,
        classification="pass",
        effect=0.0,
        reason=f"canary {what} {value:.4g} is within {rng}",
        **common,
    )
