"""Deterministic checks of each statistic against scipy / closed forms on the same data."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from meshlens.analytics.judge import netflix, sequential


def test_rank_sum_z_matches_scipy_mannwhitneyu() -> None:
    rng = np.random.default_rng(3)
    x = np.round(rng.normal(10, 2, 40), 1)  # rounded: ties exercise the tie correction
    y = np.round(rng.normal(11, 2, 35), 1)
    z = netflix.wilcoxon_diff(x, y, 0.0, 0.0)
    p_ours = 2 * stats.norm.sf(abs(z))
    p_scipy = stats.mannwhitneyu(
        x, y, alternative="two-sided", use_continuity=True, method="asymptotic"
    ).pvalue
    assert p_ours == pytest.approx(p_scipy, rel=1e-9)


def test_hodges_lehmann_estimate_is_the_median_of_pairwise_differences() -> None:
    rng = np.random.default_rng(4)
    x, y = rng.normal(5, 1, 25), rng.normal(4, 1, 30)
    ci = netflix.mann_whitney_ci(x, y, 0.95)
    hl = float(np.median(np.subtract.outer(x, y)))
    assert ci.estimate == pytest.approx(hl, abs=2e-3)  # root found to 1e-4 (Kayenta's zeroin)
    assert ci.ci_low < hl < ci.ci_high


def test_zeroin_finds_roots_like_brent() -> None:
    f = lambda v: v**3 - 2 * v - 5  # noqa: E731 - classic Brent example, root 2.0945515
    root = netflix.zeroin(f, 2.0, 3.0, f(2.0), f(3.0), tol=1e-12)
    assert root == pytest.approx(2.0945514815423265, abs=1e-10)


def test_cles_matches_mannwhitney_u() -> None:
    rng = np.random.default_rng(5)
    e, c = rng.normal(1, 1, 30), rng.normal(0, 1, 20)
    u = stats.mannwhitneyu(e, c).statistic
    assert netflix.cles(e, c) == pytest.approx(u / (30 * 20))


def test_binomial_likelihood_ratio_matches_scipy() -> None:
    # One block: 12 errors, 9 on the canary, equal traffic: LR(theta=2 vs 1) is the binomial
    # likelihood ratio with q = 2/3 against q = 1/2.
    ll = sequential.rate_ratio_log_lr(
        np.array([3.0]), np.array([500.0]), np.array([9.0]), np.array([500.0]), 1.0, np.array([2.0])
    )
    want = stats.binom.logpmf(9, 12, 2 / 3) - stats.binom.logpmf(9, 12, 0.5)
    assert ll[0, 0] == pytest.approx(want)
    # Unequal traffic: pi = 100 / 400.
    ll = sequential.rate_ratio_log_lr(
        np.array([6.0]), np.array([300.0]), np.array([4.0]), np.array([100.0]), 1.0, np.array([3.0])
    )
    q1 = 3 * 0.25 / (3 * 0.25 + 0.75)
    want = stats.binom.logpmf(4, 10, q1) - stats.binom.logpmf(4, 10, 0.25)
    assert ll[0, 0] == pytest.approx(want)


def test_burst_weights_temper_only_outlying_blocks() -> None:
    lam = sequential.burst_weights(np.array([4.0, 5.0, 4.0, 60.0, 5.0]))
    assert lam.tolist()[:3] == [1.0, 1.0, 1.0]
    assert lam[3] == pytest.approx(1.5 * 4.5 / 60.0)
    assert lam[4] == 1.0


def test_rate_ratio_eprocess_grows_under_a_real_rise_and_not_under_the_null() -> None:
    rng = np.random.default_rng(6)
    n = np.full(40, 300.0)
    eb = rng.binomial(300, 0.01, 40).astype(float)
    ec_same = rng.binomial(300, 0.01, 40).astype(float)
    ec_worse = rng.binomial(300, 0.03, 40).astype(float)
    assert sequential.rate_ratio_test(eb, n, ec_worse, n, alpha=0.01).rejected
    res = sequential.rate_ratio_test(eb, n, ec_same, n, alpha=0.01)
    assert not res.rejected
    assert res.ci[0] < 1.0 < res.ci[1]


def test_rate_ratio_cs_covers_truth_on_average() -> None:
    rng = np.random.default_rng(7)
    n = np.full(40, 500.0)
    covered = 0
    for _ in range(40):
        eb = rng.binomial(500, 0.02, 40)
        ec = rng.binomial(500, 0.03, 40)
        lo, hi = sequential.rate_ratio_cs(eb, n, ec, n, alpha=0.05)
        covered += lo <= 1.5 <= hi
    assert covered >= 38  # nominal >= 95%; anytime-valid sets are conservative


def test_t_mixture_matches_the_bayes_factor_by_numeric_integration() -> None:
    """exp(t_mixture_log_e) is the Bayes factor of N(delta*sigma, sigma^2) data with
    delta ~ N(0, 1/c) against delta = 0, both with the right-Haar prior 1/sigma on sigma."""
    from scipy.integrate import dblquad, quad

    x = np.array([0.9, -0.2, 1.4, 0.5, 0.3])
    c = 4.0

    def lik(delta: float, sigma: float) -> float:
        return float(np.prod(stats.norm.pdf(x, delta * sigma, sigma))) / sigma

    num = dblquad(
        lambda d, s: lik(d, s) * stats.norm.pdf(d, 0, 1 / math.sqrt(c)), 1e-3, 20, -12, 12
    )[0]
    den = quad(lambda s: lik(0.0, s), 1e-3, 20)[0]
    got = math.exp(sequential.t_mixture_log_e(x, c))
    assert got == pytest.approx(num / den, rel=1e-4)


def test_dependence_factor_is_one_for_iid_and_large_for_persistent_series() -> None:
    rng = np.random.default_rng(12)
    assert sequential.dependence_factor(rng.normal(0, 1, 400)) == pytest.approx(1.0, abs=0.25)
    walk = np.cumsum(rng.normal(0, 1, 400)) * 0.1 + rng.normal(0, 0.1, 400)
    assert sequential.dependence_factor(walk) > 5


def test_long_run_variance_of_iid_and_ar1() -> None:
    rng = np.random.default_rng(8)
    iid = rng.normal(0, 2, 4000)
    assert sequential.long_run_variance(iid) == pytest.approx(4.0, rel=0.1)
    phi, e = 0.6, rng.normal(0, 1, 20000)
    ar = np.zeros_like(e)
    for i in range(1, e.size):
        ar[i] = phi * ar[i - 1] + e[i]
    truth = 1 / (1 - phi) ** 2  # long-run variance of an AR(1) with unit innovations
    assert sequential.long_run_variance(ar) == pytest.approx(truth, rel=0.15)


def test_exceedance_and_cles_diffs_are_zero_for_identical_blocks() -> None:
    rng = np.random.default_rng(9)
    blocks = [rng.lognormal(3, 0.5, 200) for _ in range(10)]
    assert np.allclose(sequential.exceedance_diffs(blocks, blocks, 0.99), 0.0)
    assert np.allclose(sequential.cles_diffs(blocks, blocks), 0.0)
    slower = [b * 1.5 for b in blocks]
    assert (sequential.cles_diffs(blocks, slower) > 0.1).all()


def test_cles_diffs_match_scipy_per_block() -> None:
    rng = np.random.default_rng(10)
    b, c = [rng.normal(0, 1, 50)], [rng.normal(0.3, 1, 60)]
    u = stats.mannwhitneyu(c[0], b[0]).statistic
    assert sequential.cles_diffs(b, c)[0] == pytest.approx(u / (50 * 60) - 0.5)


def test_mean_test_rejects_a_shift_and_covers_zero_without_one() -> None:
    rng = np.random.default_rng(11)
    null = sequential.mean_test(rng.normal(0, 1, 60), alpha=0.01)
    assert not null.rejected and null.ci[0] < 0 < null.ci[1]
    shifted = sequential.mean_test(rng.normal(0.8, 1, 60), alpha=0.01)
    assert shifted.rejected and shifted.ci[0] > 0
    ident = sequential.mean_test(np.zeros(30), alpha=0.01)
    assert not ident.rejected and ident.e_value <= 1.0


def test_directions() -> None:
    rng = np.random.default_rng(13)
    n = np.full(40, 300.0)
    eb = rng.binomial(300, 0.03, 40).astype(float)
    ec = rng.binomial(300, 0.005, 40).astype(float)  # the canary has FEWER errors
    assert not sequential.rate_ratio_test(eb, n, ec, n, alpha=0.01).rejected
    assert sequential.rate_ratio_test(eb, n, ec, n, alpha=0.01, direction="decrease").rejected
    assert sequential.rate_ratio_test(eb, n, ec, n, alpha=0.01, direction="either").rejected
    d = rng.normal(-1.0, 1.0, 40)
    assert not sequential.mean_test(d, alpha=0.01).rejected
    assert sequential.mean_test(d, alpha=0.01, direction="decrease").rejected
    assert sequential.mean_test(d, alpha=0.01, direction="either").rejected
    # A tolerance (margin) absorbs a small real shift.
    small = rng.normal(0.1, 0.2, 60)
    assert sequential.mean_test(small, alpha=0.01).rejected
    assert not sequential.mean_test(small, alpha=0.01, margin=0.3).rejected


def test_block_null_variances_match_permutations() -> None:
    """Under H0 (exchangeable values within a block) the exceedance difference and P(c > b)
    have the closed-form variances the latency tests use (ties included)."""
    rng = np.random.default_rng(21)
    pooled = np.round(rng.lognormal(3, 0.6, 90))  # integer milliseconds: ties
    nb = 40
    perms = [rng.permutation(pooled) for _ in range(4000)]
    gb = [p[:nb] for p in perms]
    gc = [p[nb:] for p in perms]
    for q in (0.5, 0.9):
        d, v = sequential.exceedance_blocks(gb, gc, q)
        assert np.allclose(v, v[0])
        assert float(np.var(d)) == pytest.approx(v[0], rel=0.08)
    d, v = sequential.cles_blocks(gb, gc)
    assert float(np.var(d)) == pytest.approx(v[0], rel=0.08)
    assert np.allclose(d, sequential.cles_diffs(gb, gc))


def _noise_plus_drift(rng: np.random.Generator, n: int, phi: float, drift_sd: float) -> np.ndarray:
    e = rng.normal(0, drift_sd * math.sqrt(1 - phi * phi), n)
    x = np.empty(n)
    x[0] = rng.normal(0, drift_sd)
    for i in range(1, n):
        x[i] = phi * x[i - 1] + e[i]
    return x + rng.normal(0, 1, n)  # + unit-variance sampling noise (known)


def test_known_null_var_recovers_the_long_run_variance_of_noise_plus_drift() -> None:
    rng = np.random.default_rng(22)
    phi, sd = 0.7, 1.2
    d = _noise_plus_drift(rng, 40000, phi, sd)
    truth = 1 + sd**2 * (1 + phi) / (1 - phi)
    assert sequential.known_null_var(d, 1.0) == pytest.approx(truth, rel=0.1)
    # The noise dilutes the raw lag-1 autocorrelation: AR(1) prewhitening under-corrects.
    assert sequential.long_run_variance(d) < 0.9 * truth
    # Without drift the factor is about 1: the floor only scales the (small) excess variance,
    # charged at its upper confidence bound (about 3% of the variance at 4000 blocks).
    iid = rng.normal(0, 1, 4000)
    assert sequential.dependence_factor(iid, null_var=1.0, min_drift_corr=0.5) < 1.2


def test_drift_floor_keeps_short_persistent_series_near_their_level() -> None:
    """Noise + persistent drift, judged at every look from 6 to 60 blocks: the known-noise
    drift correction keeps false rejections near alpha where the old correction did not."""
    rng = np.random.default_rng(23)
    alpha, runs = 0.05, 400
    new = old = 0
    for _ in range(runs):
        d = _noise_plus_drift(rng, 60, 0.75, 1.5)
        looks = range(6, 61, 6)
        new += any(
            sequential.mean_test(
                d[:k], alpha=alpha, with_ci=False, null_var=1.0, min_drift_corr=0.5
            ).rejected
            for k in looks
        )
        old += any(sequential.mean_test(d[:k], alpha=alpha, with_ci=False).rejected for k in looks)
    assert new / runs <= alpha
    assert new < old


def test_a_clear_shift_of_quiet_blocks_is_rejected_with_a_known_null_variance() -> None:
    # A real regression can make blocks far less noisy than the null variance says (every
    # canary value above the pooled median): that must not disable the test.
    d = np.full(12, 0.9) + np.random.default_rng(24).normal(0, 0.01, 12)
    r = sequential.mean_test(d, alpha=0.001, null_var=0.25 * 2 / 100, min_drift_corr=0.6)
    assert r.rejected and r.dependence == pytest.approx(1.0)


def test_t_mixture_on_the_effective_sample_size() -> None:
    x = np.random.default_rng(25).normal(0.5, 1, 50)
    base = sequential.t_mixture_log_e(x)
    assert sequential.t_mixture_log_e(x, f=1.0) == base
    # Charging the prior and the variance estimate on t / f blocks is stricter than log(E) / f.
    assert sequential.t_mixture_log_e(x, f=3.0) < base / 3
