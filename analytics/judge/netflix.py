"""A clean-room port of Kayenta's NetflixACAJudge-v1.0 (pure functions over numpy arrays).

Per metric: NaN handling -> optional IQR outlier removal -> Mann-Whitney (Wilcoxon rank-sum)
location-shift confidence interval and Hodges-Lehmann estimate, computed like R's
`wilcox.test(x, y, conf.int=TRUE, correct=TRUE, exact=FALSE)` with Brent/`zeroin` roots at an
absolute tolerance of 1e-4 (Kayenta's solver: needed to match its numbers digit for digit) ->
High/Low when the CI clears `tolerance * |estimate|` and the effect size passes its threshold.
Roll-up: Kayenta's WeightedSumScorer and ThresholdScoreClassifier.

Assumption (Kayenta's, not ours): samples are independent. Per-step series of a mesh are not;
see analytics/judge/sequential.py for the default method. The behaviour is pinned by
`tests/analytics/reference/kayenta_vectors.json` (tests/analytics/judge/test_kayenta_vectors.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
from scipy.special import ndtri
from scipy.stats import rankdata

ZEROIN_TOL: Final = 1e-4
ZEROIN_MAXIT: Final = 1000
_EPS: Final = 2.220446049250313e-16
NODATA_THRESHOLD: Final = 50.0  # percent of Nodata results that zero the score


def zeroin(
    f: Callable[[float], float],
    ax: float,
    bx: float,
    fa: float,
    fb: float,
    tol: float = ZEROIN_TOL,
    maxit: int = ZEROIN_MAXIT,
) -> float:
    """Brent's root finder as in R's `R_zeroin2` (bracket [ax, bx] with f(ax)=fa, f(bx)=fb)."""
    a, b = ax, bx
    c, fc = a, fa
    if fa == 0.0:
        return a
    if fb == 0.0:
        return b
    for _ in range(maxit + 1):
        prev_step = b - a
        if abs(fc) < abs(fb):
            a, b, c = b, c, b
            fa, fb, fc = fb, fc, fb
        tol_act = 2 * _EPS * abs(b) + tol / 2
        new_step = (c - b) / 2
        if abs(new_step) <= tol_act or fb == 0.0:
            return b
        if abs(prev_step) >= tol_act and abs(fa) > abs(fb):
            cb = c - b
            if a == c:  # two distinct points: linear interpolation
                t1 = fb / fa
                p = cb * t1
                q = 1.0 - t1
            else:  # inverse quadratic interpolation
                q = fa / fc
                t1 = fb / fc
                t2 = fb / fa
                p = t2 * (cb * q * (q - t1) - (b - a) * (t1 - 1.0))
                q = (q - 1.0) * (t1 - 1.0) * (t2 - 1.0)
            if p > 0.0:
                q = -q
            else:
                p = -p
            if p < (0.75 * cb * q - abs(tol_act * q) / 2) and p < abs(prev_step * q / 2):
                new_step = p / q
        if abs(new_step) < tol_act:
            new_step = tol_act if new_step > 0 else -tol_act
        a, fa = b, fb
        b += new_step
        fb = f(b)
        if (fb > 0 and fc > 0) or (fb < 0 and fc < 0):
            c, fc = a, fa
    return b


def wilcoxon_diff(x: np.ndarray, y: np.ndarray, mu: float, quantile: float) -> float:
    """z(mu) - quantile: the continuity- and tie-corrected standardized rank-sum statistic of
    x - mu against y (R's `wdiff` in wilcox.test)."""
    nx, ny = float(len(x)), float(len(y))
    ranks = rankdata(np.concatenate([x - mu, y]), method="average")
    _, ties = np.unique(ranks, return_counts=True)
    dz = float(ranks[: len(x)].sum()) - nx * (nx + 1) / 2 - nx * ny / 2
    correction = math.copysign(0.5, dz) if dz != 0 else 0.0
    tie_term = float(np.sum(ties.astype(float) ** 3 - ties)) / ((nx + ny) * (nx + ny - 1))
    sigma = math.sqrt((nx * ny / 12) * ((nx + ny + 1) - tie_term))
    if sigma == 0:
        raise ValueError("cannot compute confidence interval when all observations are tied")
    return (dz - correction) / sigma - quantile


@dataclass(frozen=True, slots=True)
class MannWhitneyCI:
    ci_low: float
    ci_high: float
    estimate: float  # Hodges-Lehmann estimate of the shift x - y


def mann_whitney_ci(
    x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray, conf_level: float
) -> MannWhitneyCI:
    """Location-shift CI of x (experiment) minus y (control), Kayenta/R style."""
    xa = np.asarray(x, dtype=float)
    ya = np.asarray(y, dtype=float)
    alpha = 1.0 - conf_level
    mu_min = float(xa.min() - ya.max())
    mu_max = float(xa.max() - ya.min())

    def root(zq: float) -> float:
        f_lo = wilcoxon_diff(xa, ya, mu_min, zq)
        f_hi = wilcoxon_diff(xa, ya, mu_max, zq)
        if f_lo <= 0:
            return mu_min
        if f_hi >= 0:
            return mu_max
        return zeroin(lambda m: wilcoxon_diff(xa, ya, m, zq), mu_min, mu_max, f_lo, f_hi)

    zq = float(ndtri(alpha / 2))
    lo, hi = root(-zq), root(zq)
    est = zeroin(
        lambda m: wilcoxon_diff(xa, ya, m, 0.0),
        mu_min,
        mu_max,
        wilcoxon_diff(xa, ya, mu_min, 0.0),
        wilcoxon_diff(xa, ya, mu_max, 0.0),
    )
    return MannWhitneyCI(lo, hi, est)


# --- transforms and detectors -------------------------------------------------------------


def percentile_r7(data: np.ndarray, p: float) -> float:
    """Percentile p (0-100) with R-7 (linear) interpolation, as commons-math's R_7."""
    return float(np.percentile(data, p, method="linear"))


def iqr_outliers(
    data: Sequence[float] | np.ndarray, factor: float = 1.5, reduce_sensitivity: bool = False
) -> np.ndarray:
    """Mask of outliers outside [Q1 - f*IQR, Q3 + f*IQR]; with reduce_sensitivity the fences
    never cut more than the 1%/99% tails."""
    a = np.asarray(data, dtype=float)
    if a.size == 0:
        return np.zeros(0, dtype=bool)
    q1, q3 = percentile_r7(a, 25), percentile_r7(a, 75)
    iqr = q3 - q1
    lower, upper = q1 - factor * iqr, q3 + factor * iqr
    if reduce_sensitivity:
        lower = min(percentile_r7(a, 1), lower)
        upper = max(percentile_r7(a, 99), upper)
    return (a < lower) | (a > upper)


def ksigma_outliers(data: Sequence[float] | np.ndarray, k: float = 3.0) -> np.ndarray:
    """Mask of values more than k population standard deviations from the mean."""
    a = np.asarray(data, dtype=float)
    if a.size == 0:
        return np.zeros(0, dtype=bool)
    return np.abs(a - a.mean()) > k * a.std()


def remove_nans(data: Sequence[float] | np.ndarray) -> np.ndarray:
    a = np.asarray(data, dtype=float)
    return a[~np.isnan(a)]


def replace_nans(data: Sequence[float] | np.ndarray, value: float = 0.0) -> np.ndarray:
    a = np.asarray(data, dtype=float)
    return np.where(np.isnan(a), value, a)


# --- effect sizes -------------------------------------------------------------------------


def mean_ratio(experiment: np.ndarray, control: np.ndarray) -> float:
    """mean(experiment) / mean(control); NaN when either mean is 0 (Kayenta)."""
    if len(experiment) == 0 or len(control) == 0:
        return math.nan
    me, mc = float(np.mean(experiment)), float(np.mean(control))
    if me == 0.0 or mc == 0.0:
        return math.nan
    return me / mc


def cles(experiment: np.ndarray, control: np.ndarray) -> float:
    """Common-language effect size P(experiment > control), ties count half."""
    m, n = len(experiment), len(control)
    ranks = rankdata(np.concatenate([experiment, control]), method="average")
    r1 = float(ranks[:m].sum())
    return (2 * r1 - m * (m + 1)) / (2 * n * m)


def cohens_d(experiment: np.ndarray, control: np.ndarray) -> float:
    """Cohen's d with the pooled sample standard deviation."""
    n1, n2 = len(experiment), len(control)
    v1, v2 = float(np.var(experiment, ddof=1)), float(np.var(control, ddof=1))
    pooled = math.sqrt(((n1 - 1) * v1 + (n2 - 1) * v2) / (n1 + n2 - 2))
    return (float(np.mean(experiment)) - float(np.mean(control))) / pooled


def summary(data: np.ndarray) -> dict[str, float]:
    """Kayenta's per-side metadata stats."""
    if data.size == 0:
        return {"min": math.nan, "max": math.nan, "mean": math.nan, "std": math.nan, "count": 0}
    return {
        "min": float(data.min()),
        "max": float(data.max()),
        "mean": float(data.mean()),
        "std": float(data.std(ddof=1)) if data.size > 1 else math.nan,
        "count": int(data.size),
    }


# --- metric classification ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KayentaParams:
    """One metric's classifier parameters (judge defaults: tolerance 0.25, confLevel 0.98)."""

    tolerance: float = 0.25
    conf_level: float = 0.98
    direction: str = "either"
    nan_strategy: str = "remove"
    outlier_strategy: str = "keep"
    outlier_factor: float = 3.0
    effect_measure: str = "meanRatio"
    allowed_increase: float | None = None
    allowed_decrease: float | None = None
    critical_increase: float | None = None
    critical_decrease: float | None = None
    critical: bool = False
    must_have_data: bool = False

    def bound(self, value: float | None) -> float:
        if value is not None:
            return value
        return 0.5 if self.effect_measure == "cles" else 1.0


@dataclass(frozen=True, slots=True)
class KayentaMetricResult:
    label: str  # Pass | High | Low | Nodata | NodataFailMetric | Error
    reason: str
    deviation: float  # mean ratio (NaN when undefined)
    effect: float  # the configured effect measure
    critical: bool
    ci: MannWhitneyCI | None
    experiment: np.ndarray
    control: np.ndarray


def _prepare(values: Sequence[float] | np.ndarray, p: KayentaParams) -> np.ndarray:
    a = replace_nans(values) if p.nan_strategy == "replace" else remove_nans(values)
    if p.outlier_strategy == "remove" and a.size:
        a = a[~iqr_outliers(a, p.outlier_factor, reduce_sensitivity=True)]
    return a


def _effect(e: np.ndarray, c: np.ndarray, measure: str) -> float:
    return cles(e, c) if measure == "cles" else mean_ratio(e, c)


def _jitter(a: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    # Kayenta perturbs constant-but-different series so the rank test has no total tie.
    return a + rng.normal(0.0, 1.0, a.size) * (a * 1e-5)


def classify_metric(
    experiment: Sequence[float] | np.ndarray,
    control: Sequence[float] | np.ndarray,
    params: KayentaParams,
    *,
    seed: int = 0,
) -> KayentaMetricResult:
    """NetflixACAJudge's per-metric classification (MannWhitneyClassifier)."""
    e = _prepare(experiment, params)
    c = _prepare(control, params)
    p = params
    if e.size == 0 or c.size == 0:
        if p.nan_strategy == "replace":
            return KayentaMetricResult("Pass", "", math.nan, math.nan, False, None, e, c)
        side = "experiment" if e.size == 0 else "control"
        reason = f"Missing data: the {side} has no values"
        if p.must_have_data and not p.critical:
            return KayentaMetricResult(
                "NodataFailMetric", reason, math.nan, math.nan, False, None, e, c
            )
        return KayentaMetricResult("Nodata", reason, math.nan, math.nan, p.critical, None, e, c)
    if np.array_equal(np.sort(e), np.sort(c)):
        return KayentaMetricResult(
            "Pass",
            "The experiment and control data are identical",
            1.0,  # Kayenta reports ratio 1 for identical data
            _effect(e, c, p.effect_measure),
            False,
            None,
            e,
            c,
        )
    if np.unique(np.concatenate([e, c])).size == 1:
        return KayentaMetricResult(
            "Pass",
            "All values are identical",
            1.0,
            _effect(e, c, p.effect_measure),
            False,
            None,
            e,
            c,
        )
    if np.unique(e).size == 1 and np.unique(c).size == 1:
        rng = np.random.default_rng(seed)
        e, c = _jitter(e, rng), _jitter(c, rng)
    try:
        ci = mann_whitney_ci(e, c, p.conf_level)
    except (ValueError, ArithmeticError) as exc:
        return KayentaMetricResult(
            "Error",
            f"Metric Classification Failed: {exc}",
            math.nan,
            math.nan,
            p.critical,
            None,
            e,
            c,
        )
    ratio = mean_ratio(e, c)
    effect = _effect(e, c, p.effect_measure)
    bound = p.tolerance * abs(ci.estimate)
    nan_effect = math.isnan(effect)
    if (
        p.direction in ("increase", "either")
        and ci.ci_low > bound
        and (nan_effect or effect >= p.bound(p.allowed_increase))
    ):
        critical = p.critical and (nan_effect or effect >= p.bound(p.critical_increase))
        return KayentaMetricResult(
            "High", "The metric was classified as High", ratio, effect, critical, ci, e, c
        )
    if (
        p.direction in ("decrease", "either")
        and ci.ci_high < -bound
        and (nan_effect or effect <= p.bound(p.allowed_decrease))
    ):
        critical = p.critical and (nan_effect or effect <= p.bound(p.critical_decrease))
        return KayentaMetricResult(
            "Low", "The metric was classified as Low", ratio, effect, critical, ci, e, c
        )
    return KayentaMetricResult("Pass", "", ratio, effect, False, ci, e, c)


def classify_mean_inequality(
    experiment: Sequence[float] | np.ndarray,
    control: Sequence[float] | np.ndarray,
    direction: str = "either",
) -> str:
    """Kayenta's MeanInequalityClassifier (a benchmark classifier: no statistics)."""
    e, c = remove_nans(experiment), remove_nans(control)
    if e.size == 0 or c.size == 0:
        return "Nodata"
    me, mc = float(e.mean()), float(c.mean())
    if direction in ("increase", "either") and me > mc:
        return "High"
    if direction in ("decrease", "either") and me < mc:
        return "Low"
    return "Pass"


# --- scoring ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ScoredMetric:
    label: str
    groups: tuple[str, ...]
    critical: bool
    muted: bool = False


@dataclass(frozen=True, slots=True)
class KayentaScore:
    score: float
    group_scores: dict[str, float]
    no_data_groups: tuple[str, ...]
    reason: str


def weighted_sum_score(
    results: Sequence[ScoredMetric], group_weights: dict[str, float]
) -> KayentaScore:
    """Kayenta's WeightedSumScorer: group score = 100 * Pass / (Pass+High+Low+NodataFailMetric);
    empty groups count 100; groups without a weight share what is left of 100 equally;
    a critical non-Pass result or >= 50% Nodata zeroes the score."""
    active = [r for r in results if not r.muted]
    by_group: dict[str, list[str]] = {}
    for r in active:
        for g in r.groups or ("default",):
            by_group.setdefault(g, []).append(r.label)
    group_scores: dict[str, float] = {}
    no_data: list[str] = []
    for g, labels in by_group.items():
        passed = sum(1 for x in labels if x == "Pass")
        denom = sum(1 for x in labels if x in ("Pass", "High", "Low", "NodataFailMetric"))
        if denom == 0:
            no_data.append(g)
            group_scores[g] = 100.0
        else:
            group_scores[g] = 100.0 * passed / denom
    unweighted = [g for g in group_scores if g not in group_weights]
    share = (100.0 - sum(group_weights.values())) / len(unweighted) if unweighted else 0.0
    total = 0.0
    for g, s in group_scores.items():
        total += s * (group_weights.get(g, share)) / 100.0
    reason = ""
    critical_fail = [r for r in active if r.critical and r.label != "Pass"]
    nodata = sum(1 for r in active if r.label == "Nodata")
    if critical_fail:
        total, reason = 0.0, "Canary Failed: a critical metric did not pass"
    elif active and 100.0 * nodata / len(active) >= NODATA_THRESHOLD:
        total, reason = 0.0, f"Canary Failed: {nodata} of {len(active)} metrics had no data"
    return KayentaScore(round(total, 2), group_scores, tuple(no_data), reason)


def classify_score(score: float, pass_threshold: float, marginal_threshold: float) -> str:
    """Kayenta's ThresholdScoreClassifier: Pass / Marginal / Fail."""
    if score >= pass_threshold:
        return "Pass"
    if score >= marginal_threshold:
        return "Marginal"
    return "Fail"
