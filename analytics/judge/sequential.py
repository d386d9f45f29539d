"""Anytime-valid (sequential) tests for the default judge: pure functions over numpy arrays.

A gate looks every minute; a fixed-level test checked at every look raises false alarms far
above its nominal level. These tests produce e-values (nonnegative supermartingales under the
null, so P(sup_t E_t >= 1/alpha) <= alpha by Ville's inequality) and confidence sequences
(intervals that hold at every look simultaneously). References: Robbins' normal mixture;
Lindon, Sanden & Shirikian, "Rapid Regression Detection in Software Deployments through
Sequential Testing" (KDD 2022) for counting processes; Waudby-Smith, Arbour, Sinha, Kennedy &
Ramdas, "Time-uniform central limit theory and asymptotic confidence sequences" (2021).

Two tests:

1. `rate_ratio_test` - error counts. Time is cut into blocks; in block k the baseline served
   n_b requests with e_b errors and the canary n_c with e_c. Conditional on the block's total
   errors, each error is a canary error with probability q = theta*pi / (theta*pi + 1 - pi),
   pi = n_c / (n_b + n_c), theta = canary error rate / baseline error rate. The e-value is a
   discrete mixture over theta of the likelihood ratio against theta0 = 1 + tolerance.
   Assumptions: within a block both versions share the same (possibly time-varying) error
   rate up to the factor theta. Conditioning on block totals makes the test immune to common
   drift and to error bursts that hit both versions (a dependency outage): those change the
   block totals, not the split. Exact for Poisson counts; for Bernoulli requests the true
   conditional law (hypergeometric) is less dispersed than the binomial, so the e-value stays a
   supermartingale (Hoeffding 1963). Not protected: bursts that hit only one version with the
   same deployed code (e.g. one sick node) look like a real difference.

2. `mean_test` - any per-block difference d_k (canary minus baseline): exceedance of a pooled
   latency quantile, P(canary > baseline) - 1/2, a saturation series, the canary's traffic
   share. Blocks are the unit, so autocorrelation and bursts inside a block are absorbed in the
   block's variance; the variance of the sum is estimated with a Newey-West (Bartlett) long-run
   estimator over a few lags, so correlation between neighbouring blocks is accounted for too.
   The e-value is Robbins' Gaussian mixture with that plug-in variance; the confidence
   sequence is the asymptotic CS of Waudby-Smith et al. Assumption: block differences are
   weakly dependent with a stable variance (asymptotic validity: needs a few blocks, hence the
   minimum-block guard in the caller).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

import numpy as np
from scipy.special import log_ndtr

# Mixture over log(theta/theta0): a half-normal prior of scale TAU on a grid (1.02x .. 50x).
_LOG_R: Final = np.log(np.geomspace(1.02, 50.0, 48))
_TAU: Final = 1.0
_W: Final = np.exp(-(_LOG_R**2) / (2 * _TAU**2))
_W_NORM: Final = _W / _W.sum()
# Grid over theta for the confidence sequence of the rate ratio.
_THETA_GRID: Final = np.geomspace(1.0 / 200.0, 200.0, 321)


def _q(theta: np.ndarray | float, pi: np.ndarray) -> np.ndarray:
    return np.asarray(theta * pi / (theta * pi + 1.0 - pi))


def rate_ratio_log_lr(
    e_b: np.ndarray,
    n_b: np.ndarray,
    e_c: np.ndarray,
    n_c: np.ndarray,
    theta0: float | np.ndarray,
    thetas: np.ndarray,
) -> np.ndarray:
    """Per-block log likelihood ratios of theta (each of `thetas`) against theta0.

    Shapes: blocks (K,), thetas (J,) [theta0 scalar or (J,)] -> (K, J)."""
    n_b = np.asarray(n_b, float)
    n_c = np.asarray(n_c, float)
    tot = n_b + n_c
    ok = (n_b > 0) & (n_c > 0)
    pi = np.where(ok, n_c / np.where(tot > 0, tot, 1.0), 0.5)[:, None]
    q1 = _q(np.asarray(thetas)[None, :], pi)
    q0 = _q(np.asarray(theta0)[None, ...] if np.ndim(theta0) else theta0, pi)
    ec = np.where(ok, np.asarray(e_c, float), 0.0)[:, None]
    eb = np.where(ok, np.asarray(e_b, float), 0.0)[:, None]
    return np.asarray(ec * np.log(q1 / q0) + eb * np.log((1.0 - q1) / (1.0 - q0)))


def _log_mix(log_lr_sum: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """log sum_j w_j exp(l_j) along the last axis, stably."""
    m = np.max(log_lr_sum, axis=-1, keepdims=True)
    return np.asarray(np.squeeze(m, -1) + np.log(np.sum(weights * np.exp(log_lr_sum - m), -1)))


def rate_ratio_eprocess(
    e_b: np.ndarray,
    n_b: np.ndarray,
    e_c: np.ndarray,
    n_c: np.ndarray,
    *,
    theta0: float = 1.0,
    direction: str = "increase",
) -> np.ndarray:
    """The e-process after each block (cumulative): E_k for k = 1..K (log scale)."""
    down0 = 1.0 / theta0 if direction == "either" else theta0
    up = rate_ratio_log_lr(e_b, n_b, e_c, n_c, theta0, theta0 * np.exp(_LOG_R))
    down = rate_ratio_log_lr(e_b, n_b, e_c, n_c, down0, down0 * np.exp(-_LOG_R))
    if direction == "increase":
        return _log_mix(np.cumsum(up, 0), _W_NORM)
    if direction == "decrease":
        return _log_mix(np.cumsum(down, 0), _W_NORM)
    both = np.concatenate([np.cumsum(up, 0), np.cumsum(down, 0)], axis=1)
    return _log_mix(both, np.concatenate([_W_NORM, _W_NORM]) / 2)


@dataclass(frozen=True, slots=True)
class RateRatioResult:
    ratio: float  # pooled canary rate / baseline rate (nan when both are 0; inf when b = 0)
    ci: tuple[float, float]  # anytime-valid CS for theta at level 1 - alpha
    e_value: float  # against theta0 in `direction`
    rejected: bool  # e_value >= 1/alpha
    rate_b: float
    rate_c: float
    errors_b: int
    errors_c: int
    n_b: int
    n_c: int


def rate_ratio_test(
    e_b: np.ndarray,
    n_b: np.ndarray,
    e_c: np.ndarray,
    n_c: np.ndarray,
    *,
    alpha: float,
    tolerance: float = 0.0,
    direction: str = "increase",
) -> RateRatioResult:
    """Sequential test of canary vs baseline error rates on per-block counts (see module doc).

    direction "increase" tests H0: theta <= 1 + tolerance; "decrease" H0: theta >= 1/(1+tol);
    "either" averages both one-sided e-values (each at its own margin)."""
    eb, nb, ec, nc = (np.asarray(a, float) for a in (e_b, n_b, e_c, n_c))
    theta0 = 1.0 + tolerance
    if direction == "decrease":
        theta0 = 1.0 / theta0
    if eb.size == 0:
        log_e = 0.0
    else:
        log_e = float(rate_ratio_eprocess(eb, nb, ec, nc, theta0=theta0, direction=direction)[-1])
    e_value = math.exp(min(log_e, 700.0))
    ci = rate_ratio_cs(eb, nb, ec, nc, alpha=alpha)
    sb, sc, tb, tc = float(eb.sum()), float(ec.sum()), float(nb.sum()), float(nc.sum())
    rate_b = sb / tb if tb else math.nan
    rate_c = sc / tc if tc else math.nan
    if rate_b > 0:
        ratio = rate_c / rate_b
    else:
        ratio = math.inf if rate_c > 0 else math.nan
    return RateRatioResult(
        ratio,
        ci,
        e_value,
        log_e >= math.log(1.0 / alpha),
        rate_b,
        rate_c,
        int(sb),
        int(sc),
        int(tb),
        int(tc),
    )


def rate_ratio_cs(
    e_b: np.ndarray, n_b: np.ndarray, e_c: np.ndarray, n_c: np.ndarray, *, alpha: float
) -> tuple[float, float]:
    """Anytime-valid confidence set for theta: the thetas not rejected by the two-sided mixture
    test at level alpha (on a grid; 0 / inf when the set reaches the grid's ends)."""
    eb, nb, ec, nc = (np.asarray(a, float) for a in (e_b, n_b, e_c, n_c))
    if eb.size == 0 or (eb.sum() + ec.sum()) == 0:
        return (0.0, math.inf)
    grid = _THETA_GRID
    r = np.exp(np.concatenate([_LOG_R, -_LOG_R]))
    w = np.concatenate([_W_NORM, _W_NORM]) / 2
    # Sums over blocks of log LR for every (theta0 in grid, theta = theta0 * r).
    t0 = np.repeat(grid, r.size)
    t1 = t0 * np.tile(r, grid.size)
    ll = rate_ratio_log_lr(eb, nb, ec, nc, t0, t1).sum(0).reshape(grid.size, r.size)
    log_e = _log_mix(ll, w)
    keep = grid[log_e < math.log(1.0 / alpha)]
    if keep.size == 0:  # numerically everything rejected: report the point estimate
        sb, sc, tb, tc = eb.sum(), ec.sum(), nb.sum(), nc.sum()
        est = (sc / tc) / (sb / tb) if sb > 0 else math.inf
        return (est, est)
    lo = 0.0 if keep[0] == grid[0] else float(keep[0])
    hi = math.inf if keep[-1] == grid[-1] else float(keep[-1])
    return (lo, hi)


# --- block mean test ----------------------------------------------------------------------


def long_run_variance(d: np.ndarray, lags: int = 2) -> float:
    """Newey-West (Bartlett) long-run variance of a series, never below its plain variance."""
    n = d.size
    if n < 2:
        return 0.0
    x = d - d.mean()
    g0 = float(np.dot(x, x) / n)
    lr = g0
    for lag in range(1, min(lags, n - 1) + 1):
        lr += 2 * (1 - lag / (lags + 1)) * float(np.dot(x[lag:], x[:-lag]) / n)
    return max(g0, lr)


def mixture_rho2(alpha: float, horizon: float) -> float:
    """Mixture precision that makes the boundary tightest after `horizon` observations."""
    a = -2 * math.log(alpha)
    return (a + math.log(a + 1)) / max(horizon, 1.0)


def gaussian_mixture_log_e(z_sum: float, t: float, rho2: float, one_sided: bool) -> float:
    """log of Robbins' normal-mixture e-value for a standardized sum z_sum after t steps:
    two-sided N(0, rho2) mixture, or its half-normal (one-sided, positive drift) version."""
    v = 1.0 + rho2 * t
    base = -0.5 * math.log(v) + rho2 * z_sum * z_sum / (2 * v)
    if not one_sided:
        return base
    return math.log(2.0) + base + float(log_ndtr(math.sqrt(rho2) * z_sum / math.sqrt(v)))


def cs_radius(sigma: float, t: float, rho2: float, alpha: float) -> float:
    """Half-width of the asymptotic (Gaussian-mixture) confidence sequence for a mean."""
    v = t * rho2 + 1.0
    return sigma * math.sqrt(2 * v / (t * t * rho2) * math.log(math.sqrt(v) / alpha))


@dataclass(frozen=True, slots=True)
class MeanTestResult:
    mean: float
    ci: tuple[float, float]
    e_value: float
    rejected: bool
    blocks: int
    sigma: float


def mean_test(
    d: np.ndarray,
    *,
    alpha: float,
    margin: float = 0.0,
    direction: str = "increase",
    horizon_blocks: float = 40.0,
    lags: int = 2,
) -> MeanTestResult:
    """Sequential test on the mean of per-block differences d (canary minus baseline).

    increase: H0 mean <= margin; decrease: H0 mean >= -margin; either: both, e-values averaged.
    """
    d = np.asarray(d, float)
    d = d[np.isfinite(d)]
    t = d.size
    if t == 0:
        return MeanTestResult(math.nan, (-math.inf, math.inf), 1.0, False, 0, math.nan)
    mean = float(d.mean())
    sigma = math.sqrt(long_run_variance(d, lags)) if t > 1 else 0.0
    scale = max(sigma, 1e-12 * max(1.0, abs(mean)))
    rho2 = mixture_rho2(alpha, horizon_blocks)
    z_up = float(np.sum(d - margin)) / scale
    z_down = float(np.sum(-d - margin)) / scale
    if direction == "increase":
        log_e = gaussian_mixture_log_e(z_up, t, rho2, True)
    elif direction == "decrease":
        log_e = gaussian_mixture_log_e(z_down, t, rho2, True)
    else:
        a = gaussian_mixture_log_e(z_up, t, rho2, True)
        b = gaussian_mixture_log_e(z_down, t, rho2, True)
        m = max(a, b)
        log_e = m + math.log((math.exp(a - m) + math.exp(b - m)) / 2)
    if sigma == 0.0 and t > 1 and mean == 0.0:
        log_e = min(log_e, 0.0)  # identical sides: no evidence either way
    radius = cs_radius(scale, t, rho2, alpha) if t > 1 else math.inf
    e_value = math.exp(min(log_e, 700.0))
    return MeanTestResult(
        mean, (mean - radius, mean + radius), e_value, log_e >= math.log(1.0 / alpha), t, sigma
    )


# --- block statistics (pure, used by analyze and the benchmark) ----------------------------


def block_index(ts: np.ndarray, start: float, block_s: float) -> np.ndarray:
    return np.floor((np.asarray(ts, float) - start) / block_s).astype(np.int64)


def block_counts(
    ts: np.ndarray, flag: np.ndarray, start: float, block_s: float, n_blocks: int
) -> tuple[np.ndarray, np.ndarray]:
    """(requests, flagged) per block."""
    idx = block_index(ts, start, block_s)
    ok = (idx >= 0) & (idx < n_blocks)
    n = np.bincount(idx[ok], minlength=n_blocks)
    e = np.bincount(idx[ok], weights=np.asarray(flag, float)[ok], minlength=n_blocks)
    return n.astype(float), e


def exceedance_diffs(
    groups_b: list[np.ndarray], groups_c: list[np.ndarray], q: float, min_per_side: int = 5
) -> np.ndarray:
    """Per block: share of canary values above the block's pooled q-quantile minus the
    baseline's share. Under H0 (same distribution on both sides) its mean is 0, whatever the
    traffic split, drift or heavy tail. Blocks with too few values on a side are skipped."""
    out = []
    for b, c in zip(groups_b, groups_c, strict=True):
        if b.size < min_per_side or c.size < min_per_side:
            continue
        tau = np.quantile(np.concatenate([b, c]), q)
        out.append(float(np.mean(c > tau) - np.mean(b > tau)))
    return np.asarray(out, float)


def cles_diffs(
    groups_b: list[np.ndarray], groups_c: list[np.ndarray], min_per_side: int = 5
) -> np.ndarray:
    """Per block: P(canary value > baseline value) - 1/2 (ties count half): a whole-
    distribution shift statistic, mean 0 under H0."""
    from scipy.stats import rankdata

    out = []
    for b, c in zip(groups_b, groups_c, strict=True):
        m, n = c.size, b.size
        if m < min_per_side or n < min_per_side:
            continue
        ranks = rankdata(np.concatenate([c, b]))
        u = float(ranks[:m].sum()) - m * (m + 1) / 2
        out.append(u / (m * n) - 0.5)
    return np.asarray(out, float)


def split_blocks(
    ts: np.ndarray, values: np.ndarray, start: float, block_s: float, n_blocks: int
) -> list[np.ndarray]:
    """Values grouped by time block (list of length n_blocks)."""
    idx = block_index(ts, start, block_s)
    ok = (idx >= 0) & (idx < n_blocks)
    idx, vals = idx[ok], np.asarray(values, float)[ok]
    order = np.argsort(idx, kind="stable")
    idx, vals = idx[order], vals[order]
    cuts = np.searchsorted(idx, np.arange(n_blocks + 1))
    return [vals[cuts[i] : cuts[i + 1]] for i in range(n_blocks)]
