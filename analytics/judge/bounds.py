"""Regression-side bounds for the non-inferiority ("pass") half of the sequential judge. Pure.

A metric passes only when an anytime-valid interval puts its regression-side bound inside the
metric's tolerance (Schultzberg et al., "Risk-aware product decisions in A/B tests with multiple
metrics", 2024: a guardrail needs a non-inferiority test, not the absence of a significant
deterioration). Two bounds live here:

- `error_diff_cs`: the canary's minus the baseline's error rate, absolute (tolerances for error
  rates are in percentage points). Per block, d_k = e_c/n_c - e_b/n_b. Counts are often all
  zero, and a t-statistic on zeros claims certainty, so the bound is a normal-mixture confidence
  sequence (Robbins; Howard et al. 2021, "Time-uniform, nonparametric, nonasymptotic confidence
  sequences") on a long-run variance that is never below the binomial sampling noise of the
  blocks, with the pooled rate estimated as (E + 1) / (N + 2): zero errors in a few hundred
  requests is not evidence that the rate is below 0.5 pp. Burst persistence is charged like
  latency drift (`sequential.known_null_var`, the same minimum correlation time).
- `relative_cs`: latency quantiles and the whole distribution on a relative scale: a canary
  "at most r slower" is the same as "canary / (1 + r) not slower", so the bound is the smallest
  r whose scaled canary the block test of `sequential.mean_test` finds faster, found by
  bisection; the lower bound likewise (the largest r whose scaled canary is still slower).
  The statistic is monotone in r (scaling the canary down lowers its exceedance share and its
  P(canary > baseline)), so the set of r not rejected is an interval.

`more_traffic` turns a bound that is still too wide into the factor of traffic that would
settle it (half-widths shrink about as 1/sqrt(n); the log factor of anytime validity is
ignored, so the estimate is optimistic by tens of percent).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import numpy as np

from meshlens.analytics.judge import sequential

RHO_BLOCKS: Final = 6.0  # normal-mixture prior scale, in blocks: tightest near ~60 blocks

MIN_BOUND_BLOCKS: Final = 6


def mixture_radius(k: float, alpha: float, rho: float = RHO_BLOCKS) -> float:
    """Two-sided normal-mixture boundary for a standardized sum over k (effective) blocks:
    |S_k / sigma| <= sqrt((k + rho) log((k + rho) / (rho alpha^2))) for all k with
    probability >= 1 - alpha (sub-Gaussian increments)."""
    return math.sqrt((k + rho) * math.log((k + rho) / (rho * alpha * alpha)))


@dataclass(frozen=True, slots=True)
class DiffCS:
    estimate: float  # mean of per-block differences
    lo: float
    hi: float
    blocks: int
    pooled_rate: float


def error_diff_cs(
    e_b: np.ndarray,
    n_b: np.ndarray,
    e_c: np.ndarray,
    n_c: np.ndarray,
    *,
    alpha: float,
    block_s: float,
) -> DiffCS:
    """Anytime-valid CS for the canary-minus-baseline error rate (absolute), module doc."""
    eb, nb, ec, nc = (np.asarray(a, float) for a in (e_b, n_b, e_c, n_c))
    ok = (nb > 0) & (nc > 0)
    eb, nb, ec, nc = eb[ok], nb[ok], ec[ok], nc[ok]
    k = int(eb.size)
    total_e, total_n = float(eb.sum() + ec.sum()), float(nb.sum() + nc.sum())
    pooled = (total_e + 1.0) / (total_n + 2.0)
    if k < MIN_BOUND_BLOCKS:
        return DiffCS(math.nan, -math.inf, math.inf, k, pooled)
    d = ec / nc - eb / nb
    null_var = pooled * (1.0 - pooled) * (1.0 / nb + 1.0 / nc)
    floor = sequential.drift_corr_floor(block_s)
    lrv = max(sequential.known_null_var(d, null_var, floor), float(np.mean(null_var)))
    half = math.sqrt(lrv) * mixture_radius(k, alpha) / k
    mean = float(d.mean())
    return DiffCS(mean, max(mean - half, -1.0), min(mean + half, 1.0), k, pooled)


# Test of "canary / (1 + r) is no faster (increase: slower)" at one r -> rejected?
ScaledTest = Callable[[float, str], bool]


def relative_cs(
    test: ScaledTest, *, tolerance: float, top: float = 9.0, steps: int = 16
) -> tuple[float, float]:
    """(lo, hi) on the relative scale by bisection on r of the scaled test (module doc).

    hi: the smallest r at which the scaled canary is significantly faster (`test(r,
    "decrease")`), inf when none up to `top` is; lo: the largest r at which it is still
    significantly slower (`test(r, "increase")`), -0.9 when none is. The test is monotone in r
    only approximately (its variance and dependence estimates move with r), so the search is
    bracketed by the test at the points that decide the outcome (0 and +-tolerance): the
    interval shown always agrees with the outcome."""
    tol = min(abs(tolerance), 0.9)
    hi = _bracketed(lambda r: test(r, "decrease"), (0.0, tol), -0.9, top, steps, first=True)
    lo = _bracketed(lambda r: test(r, "increase"), (-tol, 0.0), -0.9, top, steps, first=False)
    return lo, hi


def _bracketed(
    pred: Callable[[float], bool],
    cuts: tuple[float, float],
    a: float,
    b: float,
    steps: int,
    *,
    first: bool,
) -> float:
    """The boundary of pred (false then true when `first`, true then false otherwise) searched
    only inside the segment of [a, cuts[0], cuts[1], b] that pred at the cuts points to."""
    points = [a, *sorted(cuts), b]
    at = [pred(x) for x in points[1:-1]]
    if first:  # smallest x with pred(x): left of the first cut where pred holds
        for i, ok in enumerate(at):
            if ok:
                return _first_true(pred, points[i], points[i + 1], steps)
        return _first_true(pred, points[-2], b, steps)
    for i in range(len(at) - 1, -1, -1):  # largest x with pred(x): right of the last such cut
        if at[i]:
            return _last_true(pred, points[i + 1], points[i + 2], steps)
    return _last_true(pred, a, points[1], steps)


def _first_true(pred: Callable[[float], bool], a: float, b: float, steps: int) -> float:
    """Smallest x in [a, b] with pred(x) (pred false then true); inf when pred(b) is false."""
    if not pred(b):
        return math.inf
    if pred(a):
        return a
    for _ in range(steps):
        mid = _mid(a, b)
        a, b = (a, mid) if pred(mid) else (mid, b)
    return b


def _last_true(pred: Callable[[float], bool], a: float, b: float, steps: int) -> float:
    """Largest x in [a, b] with pred(x) (pred true then false); a when pred(a) is false."""
    if not pred(a):
        return a
    if pred(b):
        return b
    for _ in range(steps):
        mid = _mid(a, b)
        a, b = (mid, b) if pred(mid) else (a, mid)
    return a


def _mid(a: float, b: float) -> float:
    """Midpoint on the log(1 + r) scale: relative changes are multiplicative."""
    return math.expm1((math.log1p(a) + math.log1p(b)) / 2)


def more_traffic(estimate: float, bound: float, tolerance: float) -> float | None:
    """How many times the current traffic would bring `bound` (the regression-side bound)
    inside `tolerance`, if the estimate stays where it is: ((bound - est) / (tol - est))^2.
    None when the estimate itself is at or beyond the tolerance (more traffic is then expected
    to fail the metric or leave it undecided, not to pass it)."""
    if not (math.isfinite(estimate) and math.isfinite(tolerance)) or estimate >= tolerance:
        return None
    if not math.isfinite(bound):
        return math.inf
    width = bound - estimate
    if width <= 0:
        return 1.0
    return max(1.0, (width / (tolerance - estimate)) ** 2)
