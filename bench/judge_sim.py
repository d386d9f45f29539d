"""Benchmark of the canary judge's quality on simulated mesh traffic.

    .venv/bin/python -m bench.judge_sim [--rollouts 200] [--identical-rollouts 1500] [--seed 1]
        [--plot judge_sim.png]

A rollout lasts 30 minutes; the gate judges every minute on everything seen so far and stops
at the first `fail`. Traffic per version: Poisson arrivals at 20 rps (times a diurnal factor),
log-latency = diurnal drift + a shared AR(1) load component + a per-version AR(1) component
(pods of one version drift together, independently of the other version) + per-request noise
from a heavy-tailed mix (lognormal body, Pareto slow path); errors are Bernoulli 1% plus error
bursts (20-60 s at +10%) that hit both versions (a dependency outage) and, in one scenario,
bursts that hit one version only.

Scenarios: identical versions (false-fail rate per rollout), canary error rate 1% -> 2%,
canary p99 +25% (only the slow tail gets slower: the median does not move). Identical versions
run 1500 times through the sequential judge (a 1% goal needs thousands of rollouts: 3/200 and
1/200 cannot be told apart), the first --rollouts of them also through Kayenta; the table shows
Wilson 95% intervals.

Methods on the same traffic:
  sequential  the default judge (analytics.judge.sequential): mixture SPRT on error counts
              conditioned per 10 s block, block tests on latency exceedances / P(canary >
              baseline) with known block noise + per-version drift as the dependence
              correction, alpha 0.01 split over 4 metrics, critical error rate and p99.
  kayenta     NetflixACAJudge (analytics.judge.netflix) on per-step series (error ratio, p99,
              p50, mean latency per step), same critical metrics; the run fails at the first
              interval scoring <= marginal (Kayenta's standalone "fail fast").

Everything runs on numpy arrays through the judge's pure statistic functions.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analytics.judge import netflix, sequential
from analytics.judge.analyze import metric_alphas
from analytics.judge.config import default_config
from analytics.judge.evaluate import MIN_BLOCKS

DURATION_S = 1800
LOOK_S = 60
RPS = 20.0
CONFIG = default_config()  # error rate + p99 (critical), p50 + distribution; alpha 0.01
MEDIAN_MS = 50.0
SIGMA = 0.5
P_SLOW = 0.03  # share of requests on the Pareto slow path
PARETO_XM, PARETO_A = 2.0, 2.5
BASE_ERR = 0.01


@dataclass(frozen=True)
class Scenario:
    name: str
    canary_err: float = BASE_ERR
    canary_slow_scale: float = 1.0  # multiplies slow-path latencies of the canary
    own_bursts: bool = False  # error bursts that hit one version only
    own_drift_sd: float = 0.08  # sd of the per-version AR(1) log-latency level
    regression: bool = False


def _ar1(rng: np.random.Generator, n: int, phi: float, sd: float) -> np.ndarray:
    """Stationary AR(1) with marginal sd `sd` at 1-second steps."""
    e = rng.standard_normal(n) * sd * math.sqrt(1 - phi * phi)
    x = np.empty(n)
    x[0] = rng.standard_normal() * sd
    for i in range(1, n):
        x[i] = phi * x[i - 1] + e[i]
    return x


def _bursts(rng: np.random.Generator, per_s: float) -> np.ndarray:
    """Per-second extra error probability from bursts (rate per second, 20-60 s, +10%)."""
    extra = np.zeros(DURATION_S)
    t = rng.exponential(1 / per_s)
    while t < DURATION_S:
        length = rng.uniform(20, 60)
        extra[int(t) : int(t + length)] += 0.10
        t += length + rng.exponential(1 / per_s)
    return extra


def _noise(rng: np.random.Generator, n: int, slow_scale: float) -> np.ndarray:
    slow = rng.random(n) < P_SLOW
    x = np.exp(SIGMA * rng.standard_normal(n))
    pareto = PARETO_XM * (1 + rng.pareto(PARETO_A, n)) * slow_scale
    return np.where(slow, pareto, x)


def calibrate_slow_scale(target: float = 1.25, n: int = 2_000_000, seed: int = 99) -> float:
    """The slow-path scale that raises the p99 of the noise distribution by `target`."""
    rng = np.random.default_rng(seed)
    base = np.quantile(_noise(rng, n, 1.0), 0.99)
    lo, hi = 1.0, 2.0
    for _ in range(30):
        mid = (lo + hi) / 2
        q = np.quantile(_noise(np.random.default_rng(seed + 1), n, mid), 0.99)
        lo, hi = (mid, hi) if q < base * target else (lo, mid)
    return (lo + hi) / 2


@dataclass
class Side:
    ts: np.ndarray
    lat: np.ndarray
    err: np.ndarray


def simulate(rng: np.random.Generator, sc: Scenario) -> tuple[Side, Side]:
    t0 = rng.uniform(0, 86400)
    secs = np.arange(DURATION_S)
    diurnal = np.sin(2 * math.pi * (t0 + secs) / 86400)
    rate = RPS * (1 + 0.3 * diurnal)
    shared = 0.15 * diurnal + _ar1(rng, DURATION_S, 0.98, 0.10)
    shared_err = _bursts(rng, 1 / 600)
    out = []
    for is_canary in (False, True):
        own = _ar1(rng, DURATION_S, 0.95, sc.own_drift_sd)
        counts = rng.poisson(rate)
        sec = np.repeat(secs, counts)
        n = sec.size
        ts = sec + rng.random(n)
        scale = sc.canary_slow_scale if is_canary else 1.0
        lat = MEDIAN_MS * np.exp(shared[sec] + own[sec]) * _noise(rng, n, scale)
        p = (sc.canary_err if is_canary else BASE_ERR) + shared_err[sec]
        if sc.own_bursts:
            p = p + _bursts(rng, 1 / 900)[sec]
        err = rng.random(n) < np.minimum(p, 1.0)
        out.append(Side(ts, lat, err))
    return out[0], out[1]


# --- the default (sequential) judge, as the gate runs it ----------------------------------


def sequential_first_fail(b: Side, c: Side) -> int | None:
    """Minute of the first `fail` verdict, or None (the rules of analytics.judge.scoring with
    the default config: a critical metric failing, or a score below the marginal 75)."""
    a_err, a_p99, a_p50, a_dist = metric_alphas(CONFIG)
    block = CONFIG.block_s
    nblocks = int(DURATION_S / block)
    nb, eb = sequential.block_counts(b.ts, b.err, 0.0, block, nblocks)
    nc, ec = sequential.block_counts(c.ts, c.err, 0.0, block, nblocks)
    log_e_err = sequential.rate_ratio_eprocess(eb, nb, ec, nc, theta0=1.0, direction="increase")
    gb = sequential.split_blocks(b.ts, b.lat, 0.0, block, nblocks)
    gc = sequential.split_blocks(c.ts, c.lat, 0.0, block, nblocks)
    tests = (
        (*sequential.exceedance_blocks(gb, gc, 0.99), a_p99),
        (*sequential.exceedance_blocks(gb, gc, 0.5), a_p50),
        (*sequential.cles_blocks(gb, gc), a_dist),
    )
    floor = sequential.drift_corr_floor(block)
    per_look = int(LOOK_S / block)
    for minute in range(1, DURATION_S // LOOK_S + 1):
        k = minute * per_look
        if log_e_err[k - 1] >= math.log(1 / a_err):
            return minute
        if k < MIN_BLOCKS:  # latency metrics are nodata: a critical nodata is inconclusive
            continue
        fails = [
            sequential.mean_test(
                d[:k], alpha=a, with_ci=False, null_var=v[:k], min_drift_corr=floor
            ).rejected
            for d, v, a in tests
        ]
        if fails[0]:  # p99 is critical
            return minute
        if 100.0 * (4 - sum(fails)) / 4 < CONFIG.thresholds.marginal:
            return minute
    return None


# --- Kayenta-compatible mode on per-step series -------------------------------------------


def _steps(s: Side, step: float) -> dict[str, np.ndarray]:
    n = int(DURATION_S / step)
    groups = sequential.split_blocks(s.ts, s.lat, 0.0, step, n)
    cnt, errs = sequential.block_counts(s.ts, s.err, 0.0, step, n)
    with np.errstate(invalid="ignore", divide="ignore"):
        er = np.where(cnt > 0, errs / np.maximum(cnt, 1), np.nan)

    def q(p: float) -> np.ndarray:
        return np.array([np.quantile(g, p) if g.size else np.nan for g in groups])

    mean = np.array([g.mean() if g.size else np.nan for g in groups])
    return {"error": er, "p99": q(0.99), "p50": q(0.5), "mean": mean}


_KP = {
    "error": netflix.KayentaParams(direction="increase", critical=True),
    "p99": netflix.KayentaParams(direction="increase", critical=True),
    "p50": netflix.KayentaParams(direction="increase"),
    "mean": netflix.KayentaParams(direction="increase"),
}


def kayenta_first_fail(b: Side, c: Side, step: float) -> int | None:
    sb, sc = _steps(b, step), _steps(c, step)
    per_look = LOOK_S / step
    for minute in range(1, DURATION_S // LOOK_S + 1):
        k = round(minute * per_look)
        scored = []
        for name, params in _KP.items():
            r = netflix.classify_metric(sc[name][:k], sb[name][:k], params)
            scored.append(netflix.ScoredMetric(r.label, ("default",), r.critical))
        score = netflix.weighted_sum_score(scored, {}).score
        if score <= 75.0:  # standalone canary analysis: <= marginal stops the run
            return minute
    return None


# --- driver -------------------------------------------------------------------------------


def run(
    rollouts: int, seed: int, kayenta_step: float, identical_rollouts: int | None = None
) -> list[dict[str, object]]:
    """Every scenario `rollouts` times with both methods; the identical-versions scenario runs
    `identical_rollouts` (at least `rollouts`) through the sequential judge - a false-fail
    rate near 1% needs thousands of rollouts to be told from 1.5% - and Kayenta judges its
    first `rollouts` (the same traffic as the other scenarios' comparison)."""
    identical_rollouts = max(rollouts, identical_rollouts or rollouts)
    scale = calibrate_slow_scale()
    scenarios = [
        Scenario("identical"),
        Scenario("identical + one-version bursts", own_bursts=True),
        Scenario("errors 1% -> 2%", canary_err=0.02, regression=True),
        Scenario("p99 +25% (tail only)", canary_slow_scale=scale, regression=True),
        Scenario(
            "p99 +25%, no per-version drift",
            canary_slow_scale=scale,
            regression=True,
            own_drift_sd=0.0,
        ),
    ]
    rows = []
    for i, sc in enumerate(scenarios):
        rng = np.random.default_rng([seed, i])
        res: dict[str, list[int | None]] = {"sequential": [], "kayenta": []}
        secs = {"sequential": 0.0, "kayenta": 0.0}
        n_seq = identical_rollouts if i == 0 else rollouts
        for r in range(n_seq):
            b, c = simulate(rng, sc)
            t0 = time.perf_counter()
            res["sequential"].append(sequential_first_fail(b, c))
            t1 = time.perf_counter()
            secs["sequential"] += t1 - t0
            if r < rollouts:
                res["kayenta"].append(kayenta_first_fail(b, c, kayenta_step))
                secs["kayenta"] += time.perf_counter() - t1
        for method, fails in res.items():
            n = len(fails)
            failed = [m for m in fails if m is not None]
            within10 = [m for m in failed if m <= 10]
            rows.append(
                {
                    "scenario": sc.name,
                    "method": method,
                    "regression": sc.regression,
                    "rollouts": n,
                    "failed": len(failed),
                    "fail_rate": len(failed) / n,
                    "within_10min": len(within10) / n,
                    "median_ttd_min": float(np.median(failed)) if failed else math.nan,
                    "p90_ttd_min": float(np.quantile(failed, 0.9)) if failed else math.nan,
                    "fail_minutes": fails,
                    "seconds": secs[method],
                }
            )
    return rows


def wilson(p: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson 95% interval of a rate p observed on n rollouts."""
    den = 1 + z * z / n
    mid = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return max(0.0, mid - half), min(1.0, mid + half)


def _ci(p: float, n: int) -> str:
    lo, hi = wilson(p, n)
    return f"[{100 * lo:.2f}, {100 * hi:.2f}]"


def print_table(rows: list[dict[str, object]], kayenta_step: float) -> None:
    print(
        f"\n30-minute rollouts, judged every minute; 20 rps/version; kayenta step {kayenta_step:g}s"
    )
    head = (
        f"{'scenario':32} {'method':10} {'rollouts':>8} {'fail rate':>9} {'95% CI':>16} "
        f"{'<=10 min':>8} {'median TTD':>10} {'p90 TTD':>7}"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        n = int(r["rollouts"])  # type: ignore[call-overload]
        fr = float(r["fail_rate"])  # type: ignore[arg-type]
        if r["regression"]:
            w10 = f"{100 * float(r['within_10min']):7.1f}%"  # type: ignore[arg-type]
            med = f"{float(r['median_ttd_min']):9.1f}m"  # type: ignore[arg-type]
            p90 = f"{float(r['p90_ttd_min']):6.1f}m"  # type: ignore[arg-type]
        else:
            w10, med, p90 = f"{'-':>8}", f"{'-':>10}", f"{'-':>7}"
        print(
            f"{r['scenario']!s:32} {r['method']!s:10} {n:8d} {100 * fr:8.2f}% {_ci(fr, n):>16} "
            f"{w10} {med} {p90}"
        )
    ident = next(r for r in rows if r["scenario"] == "identical" and r["method"] == "sequential")
    n = int(ident["rollouts"])  # type: ignore[call-overload]
    fr = float(ident["fail_rate"])  # type: ignore[arg-type]
    lo, hi = wilson(fr, n)
    verdict = "met" if hi <= 0.01 else ("not met" if lo > 0.01 else "not resolved at this n")
    print(
        f"\nidentical versions, sequential judge: {ident['failed']}/{n} false fails = "
        f"{100 * fr:.2f}%, 95% CI [{100 * lo:.2f}%, {100 * hi:.2f}%]; goal <= 1%: {verdict}"
    )
    print(
        "\nfail rate: share of rollouts with a fail verdict at any look (identical versions:"
        " false fails; goal <= 1%).\n<=10 min: share of regressed rollouts failed within 10"
        " minutes (goal >= 95%). TTD: time to detect, minutes. 95% CI: Wilson."
    )


def plot(rows: list[dict[str, object]], path: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot", file=sys.stderr)
        return
    fig, ax = plt.subplots(figsize=(8, 4.5))
    minutes = np.arange(0, DURATION_S // LOOK_S + 1)
    for r in rows:
        fails = [m for m in r["fail_minutes"] if m is not None]  # type: ignore[attr-defined]
        n = int(r["rollouts"])  # type: ignore[call-overload]
        cdf = [sum(1 for m in fails if m <= t) / n for t in minutes]
        ax.step(minutes, cdf, where="post", label=f"{r['scenario']} / {r['method']}")
    ax.set_xlabel("minutes into the rollout")
    ax.set_ylabel("share of rollouts failed")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"plot written to {path}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rollouts", type=int, default=200, help="simulated rollouts per scenario")
    p.add_argument(
        "--identical-rollouts",
        type=int,
        default=1500,
        help="rollouts of identical versions for the sequential judge (Kayenta: --rollouts)",
    )
    p.add_argument("--seed", type=int, default=1)
    p.add_argument(
        "--kayenta-step",
        type=float,
        default=10.0,
        help="step (s) of the per-step series Kayenta judges",
    )
    p.add_argument("--plot", default="", help="write a PNG (needs matplotlib)")
    args = p.parse_args(argv)
    started = time.perf_counter()
    rows = run(args.rollouts, args.seed, args.kayenta_step, args.identical_rollouts)
    print_table(rows, args.kayenta_step)
    print(f"\n{time.perf_counter() - started:.0f}s total")
    if args.plot:
        plot(rows, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
