"""The default (sequential) judge, one metric at a time: pass, fail or inconclusive. Pure.

Each metric gets an anytime-valid interval for its effect (positive = the quantity went up)
and `decision.decide` turns it into an outcome: fail when the test of "no regression" rejects,
pass when the regression-side bound lies inside the tolerance, inconclusive otherwise - with a
reason that names the bound still too wide and how much more traffic would settle it.

Blocks (the unit of every test) follow the data unless the config fixes them (blocks.py).

error_rate     fail: the betting test on the canary's share of each block's errors
               (sequential.share_bet_eprocess: a block counts once, so a burst cannot
               dominate); pass: the normal-mixture CS of the absolute difference of rates
               (bounds.error_diff_cs)
latency        the t-mixture block test on the share above the pooled quantile (or
               P(canary > baseline) for the whole distribution), on the canary scaled by
               1 / (1 + r): fail at r = 0, the relative interval by bisection (bounds.relative_cs)
request_share  the t-mixture block test on the canary's share minus the expected share
series         the t-mixture block test on paired block means (relative to the baseline mean)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from meshlens.analytics.judge import blocks, bounds, sequential
from meshlens.analytics.judge.data import RequestData, Series, error_mask
from meshlens.analytics.judge.decision import Outcome, decide, open_bound, tolerance_of
from meshlens.analytics.judge.evaluate import (
    Frame,
    base_result,
    direction_label,
    min_guard,
    ms,
    pct,
    quantile_name,
)
from meshlens.analytics.judge.model import Classification, MetricResult, MetricSpec

MIN_BLOCKS = 6  # block tests judge nothing before this many blocks (minimum-sample guard)


def _rel(x: float | None) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    if math.isinf(x):
        return "+inf" if x > 0 else "-inf"
    return f"{100 * x:+.1f}%"


def _pp(x: float) -> str:
    if math.isnan(x):
        return "n/a"
    if math.isinf(x):
        return "+inf pp" if x > 0 else "-inf pp"
    return f"{100 * x:+.2f} pp"


def _level(fr: Frame) -> str:
    return f"{100 * (1 - fr.alpha):.4g}% CS"


def _choose(fr: Frame, ts_b: np.ndarray, ts_c: np.ndarray, q: float | None) -> blocks.BlockChoice:
    if fr.block_s:
        return blocks.BlockChoice(fr.block_s, 0.0, 0.0, 0.0, f"{fr.block_s:g}s blocks (config)")
    return blocks.choose_block(ts_b, ts_c, quantile=q)


def _classification(outcome: Outcome, spec: MetricSpec, sign: float) -> Classification:
    if outcome == "fail":
        return direction_label(spec, sign)  # type: ignore[return-value]
    return outcome


def _alpha_per_side(spec: MetricSpec, fr: Frame) -> float:
    """`either` runs two one-sided tests: each gets half of the metric's alpha."""
    return fr.alpha / 2 if spec.direction == "either" else fr.alpha


def settle_text(
    *,
    estimate: float,
    lo: float,
    hi: float,
    tolerance: float,
    direction: str,
    requests: int,
    span_s: float,
    fmt: Callable[[float], str],
) -> str:
    """Why an inconclusive metric is not a pass yet, and what traffic would settle it."""
    which, bound = open_bound(lo, hi, tolerance, direction)
    sign = -1.0 if which == "lower" else 1.0
    tol_text = fmt(sign * tolerance)
    head = f"the {which} bound {fmt(bound)} is beyond the tolerance {tol_text}"
    factor = bounds.more_traffic(sign * estimate, sign * bound, tolerance)
    if factor is None:
        return f"{head}, and so is the estimate: more traffic is more likely to fail it"
    if math.isinf(factor):
        return f"{head}: too few blocks to bound it yet"
    more = (factor - 1.0) * requests
    times = f"{factor:.2f}" if factor < 10 else f"{factor:.0f}"
    text = f"{head}; about {times}x the traffic so far would settle it ({more:,.0f} more"
    if span_s > 0 and requests > 0:
        per_min = requests / span_s * 60.0
        minutes = more / per_min
        when = f"{minutes:.1f}" if minutes < 10 else f"{minutes:,.0f}"
        text += f" requests, ~{when} min at the current {per_min:,.0f}/min)"
    else:
        text += " requests)"
    return text


def _unsettled(
    spec: MetricSpec,
    estimate: float,
    lo: float,
    hi: float,
    tolerance: float,
    requests: int,
    span_s: float,
    unit: str = "requests",
) -> str:
    """settle_text for a metric on a relative scale."""
    text = settle_text(
        estimate=estimate,
        lo=lo,
        hi=hi,
        tolerance=tolerance,
        direction=spec.direction,
        requests=requests,
        span_s=span_s,
        fmt=_rel,
    )
    return text if unit == "requests" else text.replace("requests", unit)


# --- error rate -------------------------------------------------------------------------------


def seq_error_rate(spec: MetricSpec, b: RequestData, c: RequestData, fr: Frame) -> MetricResult:
    eb_mask = error_mask(b, spec.error_codes, spec.grpc_codes)
    ec_mask = error_mask(c, spec.error_codes, spec.grpc_codes)
    rb = float(eb_mask.mean()) if b.n else None
    rc = float(ec_mask.mean()) if c.n else None
    guard = min_guard(spec, b.n, c.n, fr)
    if guard:
        return base_result(spec, baseline=rb, canary=rc, reason=guard, **_error_common(b.n, c.n))
    choice = _choose(fr, b.ts, c.ts, None)
    counts = blocks.count_blocks(
        b.ts,
        eb_mask,
        c.ts,
        ec_mask,
        origin=blocks.origin_for(fr.start, choice.block_s),
        block_s=choice.block_s,
    )
    return error_counts_result(spec, counts, fr, choice)


def _error_common(n_b: int, n_c: int, block: str = "block") -> dict[str, Any]:
    return {
        "n_baseline": n_b,
        "n_canary": n_c,
        "unit": "ratio",
        "effect_unit": "canary error rate - baseline error rate (absolute)",
        "statistic": (
            f"fail: betting test on the canary's share of the errors per {block}; "
            "pass: normal-mixture CS of the rate difference"
        ),
    }


@dataclass(frozen=True, slots=True)
class ErrorOutcome:
    outcome: Outcome
    e_value: float  # of the share betting test, in the regression direction
    rates: sequential.RateRatioResult  # rates, ratio and its interval, for the report
    diff: bounds.DiffCS


def error_outcome(
    counts: blocks.BlockCounts,
    *,
    alpha: float,
    tolerance: float,
    direction: str,
    block_s: float,
    with_ratio_ci: bool = True,
) -> ErrorOutcome:
    """The error-rate metric's outcome on per-block counts: fail from the share betting test of
    "no increase" (sequential.share_bet_eprocess; both ways for `either`, each at alpha / 2),
    pass from the rate difference's CS."""
    nb, eb, nc, ec = counts.n_b, counts.e_b, counts.n_c, counts.e_c
    a = alpha / 2 if direction == "either" else alpha

    def log_e(way: str) -> float:
        return (
            float(sequential.share_bet_eprocess(eb, nb, ec, nc, direction=way)[-1])
            if eb.size
            else 0.0
        )

    up = log_e("increase") if direction != "decrease" else 0.0
    down = log_e("decrease") if direction != "increase" else 0.0
    cs = bounds.error_diff_cs(eb, nb, ec, nc, alpha=alpha, block_s=block_s)
    outcome = decide(
        regression_rejected=up >= math.log(1.0 / a),
        improvement_rejected=down >= math.log(1.0 / a),
        lo=cs.lo,
        hi=cs.hi,
        tolerance=tolerance,
        direction=direction,
    )
    rates = sequential.rate_ratio_test(
        eb, nb, ec, nc, alpha=alpha, direction="increase", with_ci=with_ratio_ci
    )
    return ErrorOutcome(outcome, math.exp(min(max(up, down), 700.0)), rates, cs)


def error_counts_result(
    spec: MetricSpec, counts: blocks.BlockCounts, fr: Frame, choice: blocks.BlockChoice
) -> MetricResult:
    """The error-rate metric on per-block counts (requests or Prometheus steps)."""
    n_b, n_c = round(float(counts.n_b.sum())), round(float(counts.n_c.sum()))
    common = _error_common(n_b, n_c, f"{choice.block_s:g}s block")
    tol = tolerance_of(spec)
    a = _alpha_per_side(spec, fr)
    res = error_outcome(
        counts, alpha=fr.alpha, tolerance=tol, direction=spec.direction, block_s=choice.block_s
    )
    outcome, up, cs = res.outcome, res.rates, res.diff
    diff = up.rate_c - up.rate_b
    if cs.blocks < bounds.MIN_BOUND_BLOCKS and outcome != "fail":
        return base_result(
            spec,
            baseline=up.rate_b,
            canary=up.rate_c,
            reason=(
                f"not enough {choice.block_s:g}s blocks with traffic on both sides: "
                f"{cs.blocks} of {bounds.MIN_BOUND_BLOCKS} needed"
            ),
            **common,
        )
    what = (
        f"errors {pct(up.rate_c)} of {up.n_c} canary requests vs {pct(up.rate_b)} of "
        f"{up.n_b} baseline ({_pp(diff)}, {_level(fr)} [{_pp(cs.lo)}, {_pp(cs.hi)}])"
    )
    cls = _classification(outcome, spec, diff if math.isfinite(diff) else 1.0)
    if outcome == "fail":
        ratio_ci = f"[{up.ci[0]:.3g}, {up.ci[1]:.3g}]"
        reason = (
            f"canary error rate is {'higher' if cls == 'high' else 'lower'}: {what}; rate "
            f"ratio {up.ratio:.3g} ({_level(fr)} {ratio_ci}); share test e-value "
            f"{res.e_value:.3g} >= {1 / a:.3g} over {cs.blocks} blocks"
        )
    elif outcome == "pass":
        reason = f"error rate within the tolerance {_pp(tol)}: {what}"
    else:
        reason = f"error rate not settled: {what}: " + settle_text(
            estimate=cs.estimate if math.isfinite(cs.estimate) else diff,
            lo=cs.lo,
            hi=cs.hi,
            tolerance=tol,
            direction=spec.direction,
            requests=n_b + n_c,
            span_s=choice.span_s,
            fmt=_pp,
        )
    return base_result(
        spec,
        classification=cls,
        baseline=up.rate_b,
        canary=up.rate_c,
        effect=diff,
        ci=(cs.lo, cs.hi),
        e_value=res.e_value,
        p_value=min(1.0, 1.0 / res.e_value),
        reason=reason,
        extra={
            "errors_baseline": up.errors_b,
            "errors_canary": up.errors_c,
            "rate_ratio": up.ratio,
            "rate_ratio_ci": list(up.ci),
            "tolerance": tol,
            "blocks": cs.blocks,
            "block_s": choice.block_s,
            "block_choice": choice.why,
        },
        **common,
    )


# --- latency ----------------------------------------------------------------------------------


def latency_test(
    gb: list[np.ndarray],
    gc: list[np.ndarray],
    quantile: float | None,
    *,
    alpha: float,
    block_s: float,
) -> Callable[[float, str], bool]:
    """The block test of "canary / (1 + r) is not slower" (direction increase) or "... not
    faster" (decrease), as a function of r: rejected?"""
    floor = sequential.drift_corr_floor(block_s)

    def test(r: float, direction: str) -> bool:
        scaled = [g / (1.0 + r) for g in gc] if r else gc
        if quantile is None:
            d, v = sequential.cles_blocks(gb, scaled)
        else:
            d, v = sequential.exceedance_blocks(gb, scaled, quantile)
        if d.size < MIN_BLOCKS:
            return False
        res = sequential.mean_test(
            d, alpha=alpha, direction=direction, null_var=v, min_drift_corr=floor, with_ci=False
        )
        return res.rejected

    return test


def latency_outcome(
    test: Callable[[float, str], bool], *, tolerance: float, direction: str
) -> Outcome:
    """Fail when the test at r = 0 rejects "no regression"; pass when the canary scaled by
    1 / (1 + tolerance) is significantly faster (and, for decrease, scaled by
    1 / (1 - tolerance) significantly slower); else inconclusive."""
    up, down = direction in ("increase", "either"), direction in ("decrease", "either")
    if (up and test(0.0, "increase")) or (down and test(0.0, "decrease")):
        return "fail"
    up_ok = not up or test(tolerance, "decrease")
    down_ok = not down or test(-min(tolerance, 0.9), "increase")
    return "pass" if up_ok and down_ok else "inconclusive"


def seq_latency(spec: MetricSpec, b: RequestData, c: RequestData, fr: Frame) -> MetricResult:
    q = spec.quantile
    label = quantile_name(q)
    stat_q = 0.5 if q is None else q
    vb = float(np.quantile(b.duration_ms, stat_q)) if b.n else None
    vc = float(np.quantile(c.duration_ms, stat_q)) if c.n else None
    common: dict[str, Any] = {
        "n_baseline": b.n,
        "n_canary": c.n,
        "unit": "ms",
        "baseline": vb,
        "canary": vc,
        "effect_unit": (
            "relative change of the median (canary/baseline - 1); interval: the shift of the "
            "whole distribution"
            if q is None
            else f"relative change of the {label} (canary/baseline - 1)"
        ),
    }
    guard = min_guard(spec, b.n, c.n, fr)
    if guard:
        return base_result(spec, reason=guard, statistic="", **common)
    choice = _choose(fr, b.ts, c.ts, q)
    gb, gc = blocks.paired_groups(
        b.ts,
        b.duration_ms,
        c.ts,
        c.duration_ms,
        origin=blocks.origin_for(fr.start, choice.block_s),
        block_s=choice.block_s,
        min_per_side=blocks.least_per_side(q),
    )
    common["statistic"] = f"t-mixture e-value on per-{choice.block_s:g}s-block " + (
        "P(canary > baseline) - 1/2" if q is None else f"share above the pooled {label}"
    )
    if len(gb) < MIN_BLOCKS:
        return base_result(
            spec,
            reason=(
                f"not enough {choice.block_s:g}s blocks with traffic on both sides: "
                f"{len(gb)} of {MIN_BLOCKS} needed ({choice.why})"
            ),
            **common,
        )
    tol = tolerance_of(spec)
    a = _alpha_per_side(spec, fr)
    test = latency_test(gb, gc, q, alpha=a, block_s=choice.block_s)
    outcome = latency_outcome(test, tolerance=tol, direction=spec.direction)
    regressed = outcome == "fail" and test(0.0, "increase")
    # The interval shown is the bisection of the same test over r (display only: the outcome
    # above is the test at r = 0 and r = +-tolerance).
    lo, hi = bounds.relative_cs(test, tolerance=tol)
    change = (vc / vb - 1) if vb and vc is not None else math.nan
    name = label if q is not None else "median"
    values = (
        f"{name} {ms(vc)} canary vs {ms(vb)} baseline ({_rel(change)}); {_level(fr)} of the "
        f"{'shift' if q is None else 'change'} [{_rel(lo)}, {_rel(hi)}] over {len(gb)} "
        f"{choice.block_s:g}s blocks"
    )
    cls = _classification(outcome, spec, 1.0 if regressed else -1.0)
    if outcome == "fail":
        reason = f"canary {label} is {'slower' if cls == 'high' else 'faster'}: {values}"
    elif outcome == "pass":
        reason = f"{label} within the tolerance {_rel(tol)}: {values}"
    else:
        est = min(max(change, lo), hi) if math.isfinite(change) else 0.0
        reason = f"{label} not settled: {values}: " + _unsettled(
            spec, est, lo, hi, tol, b.n + c.n, choice.span_s
        )
    return base_result(
        spec,
        classification=cls,
        effect=change if math.isfinite(change) else None,
        ci=(lo, hi),
        reason=reason,
        extra={
            "blocks": len(gb),
            "block_s": choice.block_s,
            "block_choice": choice.why,
            "tolerance": tol,
        },
        **common,
    )


# --- request share ----------------------------------------------------------------------------


def _mean_outcome(
    spec: MetricSpec, d: np.ndarray, fr: Frame, *, scale: float, tol: float
) -> tuple[Outcome, sequential.MeanTestResult, float, float]:
    """Fail / pass / inconclusive from the t-mixture block test on differences d, on the
    relative scale d / scale."""
    a = _alpha_per_side(spec, fr)
    up = sequential.mean_test(d, alpha=a, direction="increase", with_ci=False).rejected
    down = sequential.mean_test(d, alpha=a, direction="decrease", with_ci=False).rejected
    r = sequential.mean_test(d, alpha=fr.alpha, direction=spec.direction)
    lo, hi = r.ci[0] / scale, r.ci[1] / scale
    outcome = decide(
        regression_rejected=up and spec.direction != "decrease",
        improvement_rejected=down and spec.direction != "increase",
        lo=lo,
        hi=hi,
        tolerance=tol,
        direction=spec.direction,
    )
    return outcome, r, lo, hi


def seq_request_share(spec: MetricSpec, b: RequestData, c: RequestData, fr: Frame) -> MetricResult:
    share = c.n / (b.n + c.n) if (b.n + c.n) else None
    common: dict[str, Any] = {
        "n_baseline": b.n,
        "n_canary": c.n,
        "unit": "share",
        "baseline": spec.expected_share,
        "canary": share,
        "effect_unit": "canary share / expected share - 1",
        "statistic": "t-mixture e-value on the per-block canary share",
    }
    if spec.expected_share is None:
        return base_result(
            spec,
            reason="no expected_share configured: the canary's traffic share "
            f"is {pct(share)} (not judged)",
            **common,
        )
    if b.n + c.n < (spec.min_samples or fr.min_requests):
        return base_result(
            spec, reason=f"not enough traffic to judge the share: {b.n + c.n} requests", **common
        )
    choice = _choose(fr, b.ts, c.ts, None)
    counts = blocks.count_blocks(
        b.ts,
        np.zeros(b.n),
        c.ts,
        np.zeros(c.n),
        origin=blocks.origin_for(fr.start, choice.block_s),
        block_s=choice.block_s,
    )
    tot = counts.n_b + counts.n_c
    d = counts.n_c[tot > 0] / tot[tot > 0] - spec.expected_share
    if d.size < MIN_BLOCKS:
        return base_result(
            spec, reason=f"not enough blocks with traffic: {d.size} of {MIN_BLOCKS}", **common
        )
    tol = tolerance_of(spec)
    outcome, r, lo, hi = _mean_outcome(spec, d, fr, scale=spec.expected_share, tol=tol)
    rel = r.mean / spec.expected_share
    text = (
        f"canary got {pct(share)} of requests, expected {pct(spec.expected_share)} "
        f"({_rel(rel)}, {_level(fr)} [{_rel(lo)}, {_rel(hi)}])"
    )
    cls = _classification(outcome, spec, r.mean)
    if outcome == "fail":
        reason = f"canary traffic share is off: {text} (e-value {r.e_value:.3g})"
    elif outcome == "pass":
        reason = f"traffic share as expected within {_rel(tol)}: {text}"
    else:
        reason = f"traffic share not settled: {text}: " + _unsettled(
            spec, rel, lo, hi, tol, b.n + c.n, choice.span_s
        )
    return base_result(
        spec,
        classification=cls,
        effect=rel,
        ci=(lo, hi),
        e_value=r.e_value,
        p_value=min(1.0, 1.0 / r.e_value),
        reason=reason,
        extra={"blocks": int(d.size), "block_s": choice.block_s, "tolerance": tol},
        **common,
    )


# --- series -----------------------------------------------------------------------------------


def _block_means(s: Series, origin: float, block_s: float, keys: np.ndarray) -> np.ndarray:
    k = blocks.block_keys(s.ts, origin, block_s)
    ok = np.isfinite(s.values)
    pos = np.searchsorted(keys, k[ok])
    sums = np.bincount(pos, weights=s.values[ok], minlength=keys.size)
    cnt = np.bincount(pos, minlength=keys.size)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(cnt > 0, sums / np.maximum(cnt, 1), np.nan)


def seq_series(spec: MetricSpec, b: Series, c: Series, fr: Frame) -> MetricResult:
    mb = float(np.nanmean(b.values)) if b.n else None
    mc = float(np.nanmean(c.values)) if c.n else None
    common: dict[str, Any] = {
        "n_baseline": b.n,
        "n_canary": c.n,
        "baseline": mb,
        "canary": mc,
        "effect_unit": "relative difference of the means (canary/baseline - 1)",
        "statistic": "t-mixture e-value on paired per-block mean differences",
    }
    if b.n == 0 or c.n == 0:
        return base_result(
            spec, reason=f"no data: baseline {b.n} and canary {c.n} points", **common
        )
    block_s = fr.block_s or blocks.series_block(b.ts, c.ts)
    origin = blocks.origin_for(fr.start, block_s)
    keys = np.unique(blocks.block_keys(np.concatenate([b.ts, c.ts]), origin, block_s))
    d = _block_means(c, origin, block_s, keys) - _block_means(b, origin, block_s, keys)
    d = d[np.isfinite(d)]
    if d.size < MIN_BLOCKS:
        return base_result(
            spec,
            reason=(
                f"not enough {block_s:g}s blocks with data on both sides: {d.size} of {MIN_BLOCKS}"
            ),
            **common,
        )
    assert mb is not None and mc is not None
    scale = abs(mb) if mb else 1.0
    tol = tolerance_of(spec)
    outcome, r, lo, hi = _mean_outcome(spec, d, fr, scale=scale, tol=tol)
    rel = r.mean / scale
    text = (
        f"mean {mc:.4g} canary vs {mb:.4g} baseline ({_rel(rel)}, {_level(fr)} "
        f"[{_rel(lo)}, {_rel(hi)}] over {d.size} {block_s:g}s blocks)"
    )
    cls = _classification(outcome, spec, r.mean)
    if outcome == "fail":
        reason = (
            f"canary {spec.name} is {'higher' if cls == 'high' else 'lower'}: {text}; "
            f"e-value {r.e_value:.3g}"
        )
    elif outcome == "pass":
        reason = f"{spec.name} within the tolerance {_rel(tol)}: {text}"
    else:
        span = float(max(b.ts.max(), c.ts.max()) - min(b.ts.min(), c.ts.min()))
        reason = f"{spec.name} not settled: {text}: " + _unsettled(
            spec, rel, lo, hi, tol, b.n + c.n, span, unit="points"
        )
    return base_result(
        spec,
        classification=cls,
        effect=rel,
        ci=(lo, hi),
        e_value=r.e_value,
        p_value=min(1.0, 1.0 / r.e_value),
        reason=reason,
        extra={"blocks": int(d.size), "block_s": block_s, "tolerance": tol},
        **common,
    )
