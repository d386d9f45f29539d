"""Benchmark of the canary judge's quality on simulated mesh traffic, over a grid of traffic models.

    .venv/bin/python -m bench.judge_sim [--aa-rollouts 40] [--regression-rollouts 20]
        [--cells rps=20 bursts=shared ...] [--quick] [--seed 1] [--workers 2]
        [--check 0] [--json FILE]

A rollout lasts 30 minutes; every method judges it every minute on everything seen so far
(the window grows from the rollout's start). Traffic per version: Poisson arrivals at `rps`
times a diurnal factor (1 + 0.3 sin); log-latency = diurnal drift + a shared AR(1) load
component (sd 0.10, 50 s correlation time) + a per-version AR(1) level drift (pods of one
version drift together, independently of the other version) + per-request noise from a
heavy-tailed mix (lognormal body, 3% on a Pareto slow path); errors are Bernoulli 1% plus error
bursts (one every 10 minutes on average, 20-60 s long, +10 percentage points).

Grid (36 cells): error bursts shared by both versions (a dependency outage) or independent per
version (each version has its own burst process at the same rate: e.g. one sick node) x
per-version drift correlation time {5, 20, 60} s x drift size (sd of log latency) {5%, 20%} x
traffic {5, 20, 50} requests/s per version.

Scenarios per cell, on fresh traffic each rollout: A/A (identical versions), and three
regressions of the canary: errors x2 (1% -> 2%; bursts unchanged), latency +25% at p50 (every
canary latency x1.25), latency +25% at p99 (only the slow path is slower, calibrated so the
noise distribution's p99 rises 25%: the median does not move).

Methods, on the same simulated traffic:
  sequential    the default judge as the product decides (default_config: error rate and p99
                critical, p50 and the whole distribution not; alpha 0.01 split by
                analyze.metric_alphas; tolerances decision.DEFAULT_TOLERANCE): per metric,
                blocks from blocks.choose_block on the window, the minimum-sample guard, then
                error rate: blocks.count_blocks + seq_metrics.error_outcome; latency:
                blocks.paired_groups + seq_metrics.latency_test + latency_outcome; the verdict
                from scoring.roll_up. The per-block statistics are cached per block length
                (exact: the window starts at 0 and ends on a whole minute, a block boundary
                for every ladder length that divides 60 s - all this grid's traffic chooses -
                so earlier blocks do not change; a look where it is not goes through
                seq_metrics uncached) and the error-rate outcome skips the
                rate-ratio confidence sequence it does not use; --check N replays the first N
                rollouts of every cell and scenario through analyze.analyze_data (the
                product, unabridged: ~1-2 s a look) and counts the looks whose verdict or
                metric classifications differ (the exit status is 1 if any do).
  kayenta       NetflixACAJudge (analytics.judge.netflix) on per-step series (10 s steps: error
                ratio, p99, p50, mean latency; error ratio and p99 critical); a look fails
                when the score is <= marginal 75 (Kayenta's standalone "fail fast") and
                passes when it is >= pass 95.
  fixed-sample  fixed-sample tests on all requests of the window, ignoring blocks and
                burstiness, at the judge's per-metric alphas, one-sided (canary worse), at
                every look, after the same minimum-sample guard: a two-proportion z-test for
                errors, a two-proportion z-test of the share above the pooled p99 / p50 (a
                quantile test: a rank test cannot see a tail-only change), a Mann-Whitney U
                test (scipy) for the whole distribution;
                a metric passes when not significant ("no significant change", the old rule);
                the verdict from scoring.roll_up.

Columns (per cell and method):
  A/A n, false fail, 95% CI  share of A/A rollouts failed at any of the 30 looks (goal <= 1%),
                             Wilson 95% interval
  pass10, pass30             A/A rollouts passed by minute 10 / 30. sequential: some look <= t
                             passed (the gate advances on the first pass) before any fail;
                             kayenta and fixed-sample: the look at minute t passed and no
                             earlier look failed (the run stops at the first fail)
  reg n, passed              regressed rollouts (all three regressions) given a pass at some
                             look before any fail (goal <= 1%)
  err<=5 .. p99<=10          share of each regression's rollouts failed within 5 / 10 minutes
                             (a fail counts even after an earlier pass: the test's power when
                             looked at every minute; `passed` shows what a gate would do).
                             Goal >= 90% within 10 minutes at 20 rps.
Regressed rollouts stop at the first fail, or at minute 10 once a look has passed; A/A
rollouts stop at the first fail (per method). The summary pools the selected cells: A/A
false fails per method (all cells, shared and independent bursts) with which metrics failed
at the first false fail, regressions passed, and per regression the share failed within 10
minutes at 20 rps (pooled and per cell: the goal counts as met when the pooled share and every
20-rps cell reach 90%). --quick: 4 A/A and 2 rollouts per regression per cell. --json FILE
keeps every row with each rollout's first fail / pass minute.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import math
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from scipy import signal, stats

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from meshlens.analytics.judge import blocks, bounds, netflix, seq_metrics, sequential
from meshlens.analytics.judge.analyze import analyze_data, frame_for, metric_alphas
from meshlens.analytics.judge.config import default_config
from meshlens.analytics.judge.data import RequestData
from meshlens.analytics.judge.decision import decide, tolerance_of
from meshlens.analytics.judge.evaluate import base_result, min_guard
from meshlens.analytics.judge.model import MetricResult, MetricSpec
from meshlens.analytics.judge.scoring import roll_up

ROOT = Path(__file__).resolve().parents[1]
DURATION_S = 1800
LOOK_S = 60
LOOKS = DURATION_S // LOOK_S
CONFIG = default_config()
ALPHAS = metric_alphas(CONFIG)
FRAME = frame_for(CONFIG, 0.0, float(DURATION_S))  # min_guard reads only min_requests
MEDIAN_MS = 50.0
SIGMA = 0.5
P_SLOW = 0.03  # share of requests on the Pareto slow path
PARETO_XM, PARETO_A = 2.0, 2.5
BASE_ERR = 0.01
BURST_PER_S = 1 / 600  # burst starts per second (per process)
BURST_EXTRA = 0.10
LOAD_PHI, LOAD_SD = 0.98, 0.10  # shared AR(1) load, per second
REGRESSION = 1.25

BURSTS = ("shared", "independent")
DRIFT_TAU_S = (5.0, 20.0, 60.0)
DRIFT_SD = (0.05, 0.20)
RPS = (5.0, 20.0, 50.0)
METHODS = ("sequential", "kayenta", "fixed-sample")


@dataclass(frozen=True)
class Cell:
    bursts: str  # shared | independent
    tau_s: float  # correlation time of the per-version drift
    sd: float  # sd of the per-version drift (log latency)
    rps: float  # requests per second per version

    @property
    def label(self) -> str:
        drift = f"{self.tau_s:g}s/{100 * self.sd:.0f}%"
        return f"{self.bursts:11} {drift:8} {self.rps:>3g}"


GRID: tuple[Cell, ...] = tuple(
    Cell(b, t, s, r) for b in BURSTS for t in DRIFT_TAU_S for s in DRIFT_SD for r in RPS
)


@dataclass(frozen=True)
class Change:
    """What the canary does differently (nothing: A/A)."""

    name: str
    canary_err: float = BASE_ERR
    canary_scale: float = 1.0  # multiplies every canary latency
    canary_slow_scale: float = 1.0  # multiplies the canary's slow-path latencies

    @property
    def regression(self) -> bool:
        return self.name != "aa"


CHANGES = ("aa", "err", "p50", "p99")


def changes(slow_scale: float) -> tuple[Change, ...]:
    return (
        Change("aa"),
        Change("err", canary_err=2 * BASE_ERR),
        Change("p50", canary_scale=REGRESSION),
        Change("p99", canary_slow_scale=slow_scale),
    )


# --- traffic ------------------------------------------------------------------------------


def _ar1(rng: np.random.Generator, n: int, phi: float, sd: float) -> np.ndarray:
    """Stationary AR(1) with marginal sd `sd` at 1-second steps."""
    e = rng.standard_normal(n) * sd * math.sqrt(1 - phi * phi)
    e[0] = rng.standard_normal() * sd
    return np.asarray(signal.lfilter([1.0], [1.0, -phi], e))


def _bursts(rng: np.random.Generator, per_s: float) -> np.ndarray:
    """Per-second extra error probability from bursts (rate per second, 20-60 s, +10%)."""
    extra = np.zeros(DURATION_S)
    t = rng.exponential(1 / per_s)
    while t < DURATION_S:
        length = rng.uniform(20, 60)
        extra[int(t) : int(t + length)] += BURST_EXTRA
        t += length + rng.exponential(1 / per_s)
    return extra


def _noise(rng: np.random.Generator, n: int, slow_scale: float) -> np.ndarray:
    slow = rng.random(n) < P_SLOW
    x = np.exp(SIGMA * rng.standard_normal(n))
    pareto = PARETO_XM * (1 + rng.pareto(PARETO_A, n)) * slow_scale
    return np.where(slow, pareto, x)


def calibrate_slow_scale(target: float = REGRESSION, n: int = 2_000_000, seed: int = 99) -> float:
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
    ts: np.ndarray  # seconds from the rollout's start, sorted
    lat: np.ndarray  # ms
    err: np.ndarray  # bool

    def upto(self, t: float) -> int:
        """How many requests arrived before t."""
        return int(np.searchsorted(self.ts, t, side="left"))


def simulate(rng: np.random.Generator, cell: Cell, change: Change) -> tuple[Side, Side]:
    t0 = rng.uniform(0, 86400)
    secs = np.arange(DURATION_S)
    diurnal = np.sin(2 * math.pi * (t0 + secs) / 86400)
    rate = cell.rps * (1 + 0.3 * diurnal)
    shared = 0.15 * diurnal + _ar1(rng, DURATION_S, LOAD_PHI, LOAD_SD)
    shared_err = _bursts(rng, BURST_PER_S) if cell.bursts == "shared" else None
    phi = math.exp(-1.0 / cell.tau_s)
    out = []
    for is_canary in (False, True):
        own = _ar1(rng, DURATION_S, phi, cell.sd)
        sec = np.repeat(secs, rng.poisson(rate))
        n = sec.size
        # Sorting within a second keeps every request in its second (latency and errors
        # depend on the second only, the rest is i.i.d.).
        ts = np.sort(sec + rng.random(n))
        slow = change.canary_slow_scale if is_canary else 1.0
        scale = change.canary_scale if is_canary else 1.0
        lat = MEDIAN_MS * scale * np.exp(shared[sec] + own[sec]) * _noise(rng, n, slow)
        bursts = shared_err if shared_err is not None else _bursts(rng, BURST_PER_S)
        p = (change.canary_err if is_canary else BASE_ERR) + bursts[sec]
        err = rng.random(n) < np.minimum(p, 1.0)
        out.append(Side(ts, lat, err))
    return out[0], out[1]


# --- the default (sequential) judge, as the product decides ---------------------------------


def _result(spec: MetricSpec, cls: str) -> MetricResult:
    return base_result(spec, classification=cls)


def _verdict(classes: Iterable[str]) -> str:
    results = [_result(s, c) for s, c in zip(CONFIG.metrics, classes, strict=True)]
    return roll_up(results, CONFIG).verdict


class _Partition:
    """One block length's blocks over the whole rollout (blocks.block_keys, origin 0: the
    rollout's start): block k holds baseline rows sb[k]:sb[k+1] and canary rows sc[k]:sc[k+1]
    (the sides are sorted by time, so their keys are too)."""

    def __init__(self, b: Side, c: Side, block_s: float) -> None:
        kb = blocks.block_keys(b.ts, 0.0, block_s)
        kc = blocks.block_keys(c.ts, 0.0, block_s)
        last = max(int(kb[-1]) if kb.size else -1, int(kc[-1]) if kc.size else -1)
        self.n = last + 1
        keys = np.arange(self.n + 1)
        self.sb = np.searchsorted(kb, keys)
        self.sc = np.searchsorted(kc, keys)


class _ErrorBlocks:
    """blocks.count_blocks of the whole rollout for one block length (blocks where either side
    has requests), and the share betting e-process over them, which at block k depends on
    blocks <= k only (sequential.share_bet_eprocess: cumulative products), so a window's
    e-value is the whole rollout's at the window's last block."""

    def __init__(self, part: _Partition, b: Side, c: Side) -> None:
        def per_block(s: np.ndarray, flags: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            cum = np.concatenate([[0.0], np.cumsum(flags, dtype=float)])
            return np.diff(s).astype(float), cum[s[1:]] - cum[s[:-1]]

        nb, eb = per_block(part.sb, b.err)
        nc, ec = per_block(part.sc, c.err)
        keep = (nb + nc) > 0
        self.keys = np.flatnonzero(keep)
        self.nb, self.eb, self.nc, self.ec = nb[keep], eb[keep], nc[keep], ec[keep]
        self._log_e = np.zeros(0)

    def log_e(self, j: int) -> float:
        """log e-value of "no increase" after the first j blocks."""
        if j == 0:
            return 0.0
        if self._log_e.size < j:
            upto = min(self.keys.size, max(2 * j, 64))
            self._log_e = sequential.share_bet_eprocess(
                self.eb[:upto],
                self.nb[:upto],
                self.ec[:upto],
                self.nc[:upto],
                direction="increase",
            )
        return float(self._log_e[j - 1])


class _LatencyBlocks:
    """Per-block latency statistics (sequential.exceedance_blocks at `quantile`, or
    cles_blocks for None) of the canary scaled by 1 / (1 + r), for the blocks
    blocks.paired_groups keeps (blocks.least_per_side, as seq_metrics.seq_latency asks),
    computed as far as a look needs."""

    def __init__(
        self, part: _Partition, b: Side, c: Side, quantile: float | None, r: float
    ) -> None:
        self.part, self.b, self.c, self.quantile, self.r = part, b, c, quantile, r
        least = blocks.least_per_side(quantile)
        ok = (np.diff(part.sb) >= least) & (np.diff(part.sc) >= least)
        self.paired = np.flatnonzero(ok)  # keys of the blocks kept, in time order
        self.d = np.empty(self.paired.size)
        self.v = np.empty(self.paired.size)
        self.done = 0  # statistics of paired[:done] are in d, v

    def upto(self, k_end: int) -> tuple[np.ndarray, np.ndarray]:
        """(d, v) of the kept blocks with key < k_end."""
        j = int(np.searchsorted(self.paired, k_end))
        if j > self.done:
            sb, sc = self.part.sb, self.part.sc
            ks = self.paired[self.done : j]
            gb = [self.b.lat[sb[k] : sb[k + 1]] for k in ks]
            gc = [self.c.lat[sc[k] : sc[k + 1]] for k in ks]
            if self.r:  # as seq_metrics.latency_test scales the canary
                gc = [g / (1.0 + self.r) for g in gc]
            if self.quantile is None:
                d, v = sequential.cles_blocks(gb, gc)
            else:
                d, v = sequential.exceedance_blocks(gb, gc, self.quantile)
            if d.size != ks.size:
                raise AssertionError("block statistics skipped a paired block")
            self.d[self.done : j], self.v[self.done : j] = d, v
            self.done = j
        return self.d[:j], self.v[:j]


class SequentialJudge:
    """The default judge's verdict at each look (module doc), on one rollout."""

    def __init__(self, b: Side, c: Side) -> None:
        self.b, self.c = b, c
        self.failed: list[str] = []  # metrics failing at the last look
        self._parts: dict[float, _Partition] = {}
        self._err: dict[float, _ErrorBlocks] = {}
        self._lat: dict[tuple[float, float | None, float], _LatencyBlocks] = {}
        for spec in CONFIG.metrics:
            if spec.direction != "increase" or spec.kind not in ("error_rate", "latency"):
                raise ValueError(f"judge_sim handles increase error/latency metrics: {spec}")
        if CONFIG.block_s is not None:
            raise ValueError("judge_sim expects blocks chosen from the data (block_s None)")

    def _part(self, block_s: float) -> _Partition:
        if block_s not in self._parts:
            self._parts[block_s] = _Partition(self.b, self.c, block_s)
        return self._parts[block_s]

    def _error(self, spec: MetricSpec, alpha: float, end: float, nb: int, nc: int) -> str:
        choice = blocks.choose_block(self.b.ts[:nb], self.c.ts[:nc], quantile=None)
        L = choice.block_s
        k_end = _whole_blocks(end, L)
        if k_end is None:
            return _reference_metric(spec, alpha, self.b, self.c, end)
        if L not in self._err:
            self._err[L] = _ErrorBlocks(self._part(L), self.b, self.c)
        eb = self._err[L]
        j = int(np.searchsorted(eb.keys, k_end))
        # seq_metrics.error_outcome without the rate ratio's report: fail from the share
        # betting test, pass from the rate difference's CS.
        rejected = eb.log_e(j) >= math.log(1.0 / alpha)
        cs = bounds.error_diff_cs(
            eb.eb[:j], eb.nb[:j], eb.ec[:j], eb.nc[:j], alpha=alpha, block_s=L
        )
        outcome = decide(
            regression_rejected=rejected,
            improvement_rejected=False,
            lo=cs.lo,
            hi=cs.hi,
            tolerance=tolerance_of(spec),
            direction=spec.direction,
        )
        if cs.blocks < bounds.MIN_BOUND_BLOCKS and outcome != "fail":
            return "nodata"  # seq_metrics.error_counts_result
        return "high" if outcome == "fail" else outcome

    def _latency(self, spec: MetricSpec, alpha: float, end: float, nb: int, nc: int) -> str:
        q = spec.quantile
        choice = blocks.choose_block(self.b.ts[:nb], self.c.ts[:nc], quantile=q)
        L = choice.block_s
        k_end = _whole_blocks(end, L)
        if k_end is None:
            return _reference_metric(spec, alpha, self.b, self.c, end)
        part = self._part(L)
        floor = sequential.drift_corr_floor(L)

        def stats_at(r: float) -> tuple[np.ndarray, np.ndarray]:
            key = (L, q, r)
            if key not in self._lat:
                self._lat[key] = _LatencyBlocks(part, self.b, self.c, q, r)
            return self._lat[key].upto(k_end)

        if stats_at(0.0)[0].size < seq_metrics.MIN_BLOCKS:
            return "nodata"  # seq_metrics.seq_latency: too few paired blocks

        def test(r: float, direction: str) -> bool:  # seq_metrics.latency_test's test
            d, v = stats_at(r)
            if d.size < seq_metrics.MIN_BLOCKS:
                return False
            res = sequential.mean_test(
                d, alpha=alpha, direction=direction, null_var=v, min_drift_corr=floor, with_ci=False
            )
            return res.rejected

        outcome = seq_metrics.latency_outcome(
            test, tolerance=tolerance_of(spec), direction=spec.direction
        )
        return "high" if outcome == "fail" else outcome

    def classifications(self, minute: int) -> list[str]:
        end = float(minute * LOOK_S)
        nb, nc = self.b.upto(end), self.c.upto(end)
        out = []
        for spec, alpha in zip(CONFIG.metrics, ALPHAS, strict=True):
            if min_guard(spec, nb, nc, FRAME):
                out.append("nodata")
            elif spec.kind == "error_rate":
                out.append(self._error(spec, alpha, end, nb, nc))
            else:
                out.append(self._latency(spec, alpha, end, nb, nc))
        return out

    def verdict(self, minute: int) -> str:
        classes = self.classifications(minute)
        self.failed = _failed_names(classes)
        return _verdict(classes)


def _failed_names(classes: Iterable[str]) -> list[str]:
    return [s.name for s, c in zip(CONFIG.metrics, classes, strict=True) if c == "high"]


def _whole_blocks(end: float, block_s: float) -> int | None:
    """Blocks of block_s before `end` when the window [0, end) ends on a block boundary, else
    None (the cached statistics hold whole blocks only)."""
    k = end / block_s
    return round(k) if abs(k - round(k)) < 1e-9 else None


def _request_data(s: Side, end: float) -> RequestData:
    n = s.upto(end)
    return RequestData.from_arrays(s.ts[:n], s.lat[:n], np.where(s.err[:n], 503, 200))


def _reference_metric(spec: MetricSpec, alpha: float, b: Side, c: Side, end: float) -> str:
    """One metric through seq_metrics on the window [0, end) (the uncached path)."""
    fr = replace(frame_for(CONFIG, 0.0, end), alpha=alpha)
    rb, rc = _request_data(b, end), _request_data(c, end)
    if spec.kind == "error_rate":
        return seq_metrics.seq_error_rate(spec, rb, rc, fr).classification
    return seq_metrics.seq_latency(spec, rb, rc, fr).classification


def product_look(b: Side, c: Side, minute: int) -> tuple[str, list[str]]:
    """analyze.analyze_data on the window [0, minute): the product's verdict, unabridged."""
    end = float(minute * LOOK_S)
    v = analyze_data(
        _request_data(b, end), _request_data(c, end), config=CONFIG, start=0.0, end=end
    )
    return v.verdict, [m.classification for m in v.metrics]


# --- Kayenta-compatible mode on per-step series -------------------------------------------

_KP = {
    "error": netflix.KayentaParams(direction="increase", critical=True),
    "p99": netflix.KayentaParams(direction="increase", critical=True),
    "p50": netflix.KayentaParams(direction="increase"),
    "mean": netflix.KayentaParams(direction="increase"),
}


def _steps(s: Side, step: float) -> dict[str, np.ndarray]:
    n = math.ceil(DURATION_S / step)
    groups = sequential.split_blocks(s.ts, s.lat, 0.0, step, n)
    cnt, errs = sequential.block_counts(s.ts, s.err, 0.0, step, n)
    with np.errstate(invalid="ignore", divide="ignore"):
        er = np.where(cnt > 0, errs / np.maximum(cnt, 1), np.nan)

    def q(p: float) -> np.ndarray:
        return np.array([np.quantile(g, p) if g.size else np.nan for g in groups])

    mean = np.array([g.mean() if g.size else np.nan for g in groups])
    return {"error": er, "p99": q(0.99), "p50": q(0.5), "mean": mean}


class KayentaJudge:
    def __init__(self, b: Side, c: Side, step: float) -> None:
        self.sb, self.sc, self.per_look = _steps(b, step), _steps(c, step), LOOK_S / step
        self.failed: list[str] = []  # metrics not passing at the last look

    def verdict(self, minute: int) -> str:
        k = round(minute * self.per_look)
        scored = []
        self.failed = []
        for name, params in _KP.items():
            r = netflix.classify_metric(self.sc[name][:k], self.sb[name][:k], params)
            scored.append(netflix.ScoredMetric(r.label, ("default",), r.critical))
            if r.label != "Pass":
                self.failed.append(f"{name}:{r.label}" if r.label not in ("High", "Low") else name)
        score = netflix.weighted_sum_score(scored, {}).score
        if score <= CONFIG.thresholds.marginal:  # standalone canary analysis: stop the run
            return "fail"
        return "pass" if score >= CONFIG.thresholds.pass_ else "inconclusive"


# --- fixed-sample tests, looked at every minute -------------------------------------------


def _p_greater(x_c: float, n_c: float, x_b: float, n_b: float) -> float:
    """One-sided p-value of the pooled two-proportion z-test: canary share > baseline's."""
    p = (x_c + x_b) / (n_c + n_b)
    if p <= 0.0 or p >= 1.0:
        return 1.0
    z = (x_c / n_c - x_b / n_b) / math.sqrt(p * (1 - p) * (1 / n_c + 1 / n_b))
    return 0.5 * math.erfc(z / math.sqrt(2.0))


class FixedSampleJudge:
    def __init__(self, b: Side, c: Side) -> None:
        self.b, self.c = b, c
        self.failed: list[str] = []  # metrics failing at the last look

    def classifications(self, minute: int) -> list[str]:
        end = float(minute * LOOK_S)
        nb, nc = self.b.upto(end), self.c.upto(end)
        lb, lc = self.b.lat[:nb], self.c.lat[:nc]
        out = []
        for spec, alpha in zip(CONFIG.metrics, ALPHAS, strict=True):
            if min_guard(spec, nb, nc, FRAME):
                out.append("nodata")
                continue
            if spec.kind == "error_rate":
                eb, ec = float(self.b.err[:nb].sum()), float(self.c.err[:nc].sum())
                p = _p_greater(ec, nc, eb, nb)
            elif spec.quantile is None:
                p = float(
                    stats.mannwhitneyu(lc, lb, alternative="greater", method="asymptotic").pvalue
                )
            else:
                tau = np.quantile(np.concatenate([lb, lc]), spec.quantile)
                p = _p_greater(float((lc > tau).sum()), nc, float((lb > tau).sum()), nb)
            out.append("high" if p < alpha else "pass")
        return out

    def verdict(self, minute: int) -> str:
        classes = self.classifications(minute)
        self.failed = _failed_names(classes)
        return _verdict(classes)


# --- rollouts -------------------------------------------------------------------------------


@dataclass
class Record:
    """One method on one rollout: the verdict at each look until the run stopped."""

    verdicts: list[str] = field(default_factory=list)
    why: list[str] = field(default_factory=list)  # metrics failing at the first fail

    def first(self, verdict: str) -> int | None:
        return self.verdicts.index(verdict) + 1 if verdict in self.verdicts else None

    def done(self, regression: bool) -> bool:
        if "fail" in self.verdicts:
            return True
        return regression and "pass" in self.verdicts and len(self.verdicts) >= 10

    def passed_before_fail(self) -> bool:
        p, f = self.first("pass"), self.first("fail")
        return p is not None and (f is None or p < f)

    def passed_by(self, minute: int, method: str) -> bool:
        """A/A passes by `minute` (module doc: the gate's first pass for sequential, the look
        at `minute` for the others)."""
        if method == "sequential":
            p = self.first("pass")
            return p is not None and p <= minute and self.passed_before_fail()
        return len(self.verdicts) >= minute and self.verdicts[minute - 1] == "pass"


@dataclass
class TaskResult:
    cell: int
    change: str
    first: int  # first rollout index
    rollouts: list[dict[str, Any]]  # method -> {"fail": minute|None, "pass": ..., ...}
    seconds: dict[str, float]
    looks: dict[str, int]
    checked_looks: int = 0
    checked: dict[str, int] = field(default_factory=dict)  # product verdicts checked
    mismatches: list[str] = field(default_factory=list)


def run_task(
    cell_i: int, change: Change, first: int, stop: int, seed: int, step: float, check: int
) -> TaskResult:
    cell = GRID[cell_i]
    seconds = dict.fromkeys(METHODS, 0.0)
    looks = dict.fromkeys(METHODS, 0)
    res = TaskResult(cell_i, change.name, first, [], seconds, looks)
    for r in range(first, stop):
        rng = np.random.default_rng([seed, cell_i, CHANGES.index(change.name), r])
        b, c = simulate(rng, cell, change)
        judges: dict[str, Any] = {
            "sequential": SequentialJudge(b, c),
            "kayenta": KayentaJudge(b, c, step),
            "fixed-sample": FixedSampleJudge(b, c),
        }
        recs = {m: Record() for m in METHODS}
        for minute in range(1, LOOKS + 1):
            for m in METHODS:
                if recs[m].done(change.regression):
                    continue
                t0 = time.perf_counter()
                verdict = judges[m].verdict(minute)
                seconds[m] += time.perf_counter() - t0
                recs[m].verdicts.append(verdict)
                if verdict == "fail":
                    recs[m].why = list(judges[m].failed)
                looks[m] += 1
            if r < check:
                fast = judges["sequential"].classifications(minute)
                product, classes = product_look(b, c, minute)
                res.checked_looks += 1
                res.checked[product] = res.checked.get(product, 0) + 1
                if classes != fast or product != _verdict(fast):
                    res.mismatches.append(
                        f"{' '.join(cell.label.split())} {change.name} rollout {r} "
                        f"minute {minute}: "
                        f"product {product} {classes}, bench {_verdict(fast)} {fast}"
                    )
            if all(recs[m].done(change.regression) for m in METHODS) and r >= check:
                break
        res.rollouts.append(
            {
                "rollout": r,
                **{
                    m: {
                        "fail": recs[m].first("fail"),
                        "pass": recs[m].first("pass"),
                        "passed": recs[m].passed_before_fail(),
                        "pass10": recs[m].passed_by(10, m),
                        "pass30": recs[m].passed_by(30, m),
                        "why": recs[m].why,
                    }
                    for m in METHODS
                },
            }
        )
    return res


# --- statistics and tables ------------------------------------------------------------------


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson 95% interval of k successes in n."""
    if n == 0:
        return 0.0, 1.0
    p = k / n
    den = 1 + z * z / n
    mid = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return max(0.0, mid - half), min(1.0, mid + half)


REGRESSIONS = ("err", "p50", "p99")
REG_TITLE = {"err": "errors x2", "p50": "latency +25% at p50", "p99": "latency +25% at p99"}


def summarize(cell_i: int, method: str, by_change: dict[str, list[dict[str, Any]]]) -> dict:
    cell = GRID[cell_i]
    aa = [r[method] for r in by_change.get("aa", [])]
    out: dict[str, Any] = {
        "bursts": cell.bursts,
        "drift_tau_s": cell.tau_s,
        "drift_sd": cell.sd,
        "rps": cell.rps,
        "method": method,
        "aa": {
            "rollouts": len(aa),
            "false_fails": sum(r["fail"] is not None for r in aa),
            "pass10": sum(r["pass10"] for r in aa),
            "pass30": sum(r["pass30"] for r in aa),
            "rollout_ids": [r["rollout"] for r in by_change.get("aa", [])],
            "fail_minutes": [r["fail"] for r in aa],
            "pass_minutes": [r["pass"] for r in aa],
            "fail_metrics": [r["why"] for r in aa],
        },
        "regressions": {},
    }
    for name in REGRESSIONS:
        rs = [r[method] for r in by_change.get(name, [])]
        out["regressions"][name] = {
            "rollouts": len(rs),
            "passed": sum(r["passed"] for r in rs),
            "failed_5": sum(r["fail"] is not None and r["fail"] <= 5 for r in rs),
            "failed_10": sum(r["fail"] is not None and r["fail"] <= 10 for r in rs),
            "fail_minutes": [r["fail"] for r in rs],
            "pass_minutes": [r["pass"] for r in rs],
        }
    return out


def _pct(k: int, n: int, width: int = 5, digits: int = 1) -> str:
    return f"{'-':>{width}}" if n == 0 else f"{100 * k / n:{width}.{digits}f}"


HEAD = (
    f"{'bursts':11} {'drift':8} {'rps':>3} {'method':12} {'A/A n':>5} {'false fail':>10} "
    f"{'95% CI':>14} {'pass10':>6} {'pass30':>6} {'reg n':>5} {'passed':>6} "
    f"{'err<=5':>6} {'err<=10':>7} {'p50<=5':>6} {'p50<=10':>7} {'p99<=5':>6} {'p99<=10':>7}"
)


def row(s: dict) -> str:
    aa, reg = s["aa"], s["regressions"]
    n = aa["rollouts"]
    lo, hi = wilson(aa["false_fails"], n)
    reg_n = sum(reg[g]["rollouts"] for g in REGRESSIONS)
    passed = sum(reg[g]["passed"] for g in REGRESSIONS)
    cell = Cell(s["bursts"], s["drift_tau_s"], s["drift_sd"], s["rps"])
    text = (
        f"{cell.label} {s['method']:12} {n:5d} {_pct(aa['false_fails'], n, 9, 2)}% "
        f"{f'[{100 * lo:.1f}, {100 * hi:.1f}]':>14} {_pct(aa['pass10'], n, 5)}% "
        f"{_pct(aa['pass30'], n, 5)}% {reg_n:5d} {_pct(passed, reg_n, 5)}%"
    )
    for g in REGRESSIONS:
        k = reg[g]["rollouts"]
        text += f" {_pct(reg[g]['failed_5'], k, 5)}% {_pct(reg[g]['failed_10'], k, 6)}%"
    return text


def summary_lines(rows: list[dict]) -> list[str]:
    out = ["", "summary over the cells above (pooled rollouts; 95% Wilson intervals)"]
    for method in METHODS:
        ms = [s for s in rows if s["method"] == method]
        if not ms:
            continue
        out.append(f"{method}:")
        for label, sel in (
            ("all cells", ms),
            ("shared bursts", [s for s in ms if s["bursts"] == "shared"]),
            ("independent bursts", [s for s in ms if s["bursts"] == "independent"]),
        ):
            n = sum(s["aa"]["rollouts"] for s in sel)
            k = sum(s["aa"]["false_fails"] for s in sel)
            if n == 0:
                continue
            lo, hi = wilson(k, n)
            verdict = "met" if hi <= 0.01 else ("not met" if lo > 0.01 else "not resolved")
            p10 = sum(s["aa"]["pass10"] for s in sel)
            p30 = sum(s["aa"]["pass30"] for s in sel)
            out.append(
                f"  A/A false fails, {label:18}: {k:4d}/{n:<5d} = {100 * k / n:5.2f}% "
                f"[{100 * lo:.2f}, {100 * hi:.2f}] (goal <= 1%: {verdict}); passed by 10 min "
                f"{100 * p10 / n:.1f}%, by 30 min {100 * p30 / n:.1f}%"
            )
        for bursts in BURSTS:
            counts: dict[str, int] = {}
            for s in ms:
                if s["bursts"] == bursts:
                    for why in s["aa"]["fail_metrics"]:
                        for name in why:
                            counts[name] = counts.get(name, 0) + 1
            if counts:
                out.append(
                    f"  metrics failing at the first false fail, {bursts} bursts: "
                    + ", ".join(f"{k} {v}" for k, v in sorted(counts.items(), key=lambda x: -x[1]))
                )
        n = sum(s["regressions"][g]["rollouts"] for s in ms for g in REGRESSIONS)
        k = sum(s["regressions"][g]["passed"] for s in ms for g in REGRESSIONS)
        if n:
            lo, hi = wilson(k, n)
            verdict = "met" if hi <= 0.01 else ("not met" if lo > 0.01 else "not resolved")
            out.append(
                f"  regressions passed: {k}/{n} = {100 * k / n:.2f}% [{100 * lo:.2f}, "
                f"{100 * hi:.2f}] (goal <= 1%: {verdict})"
            )
        at20 = [s for s in ms if s["rps"] == 20.0]
        for g in REGRESSIONS:
            per_cell = [
                (s["regressions"][g]["failed_10"], s["regressions"][g]["rollouts"]) for s in at20
            ]
            n = sum(t for _, t in per_cell)
            if n == 0:
                continue
            k = sum(f for f, _ in per_cell)
            met_cells = sum(1 for f, t in per_cell if t and f / t >= 0.9)
            worst = min(f / t for f, t in per_cell if t)
            out.append(
                f"  {REG_TITLE[g]:20} failed within 10 min at 20 rps: {100 * k / n:5.1f}% "
                f"pooled, {met_cells}/{len(per_cell)} cells >= 90% (worst {100 * worst:.0f}%): "
                f"goal >= 90% {'met' if k / n >= 0.9 and met_cells == len(per_cell) else 'not met'}"
            )
    return out


def judge_version() -> str:
    """The judge code this run measured: git HEAD and uncommitted changes under
    analytics/judge (the numbers move with that code)."""
    try:

        def git(*a: str) -> str:
            return subprocess.run(
                ["git", *a], cwd=ROOT, capture_output=True, text=True, timeout=10, check=True
            ).stdout

        head = git("rev-parse", "--short", "HEAD").strip()
        dirty = [
            ln[3:] for ln in git("status", "--porcelain", "--", "analytics/judge").splitlines()
        ]
    except (OSError, subprocess.SubprocessError):
        return "unknown (no git)"
    return head + (f" + uncommitted {', '.join(dirty)}" if dirty else "")


def select_cells(terms: list[str]) -> list[int]:
    """Cells matching every term key=v1[,v2...]; keys bursts, tau (s), sd (%), rps."""
    keys = {"bursts": "bursts", "tau": "tau_s", "sd": "sd", "rps": "rps"}
    picked = list(range(len(GRID)))
    for term in terms:
        key, sep, values = term.partition("=")
        if not sep or key not in keys:
            raise SystemExit(f"--cells: expected key=value[,value] with key in {list(keys)}")
        wanted: set[object] = set()
        for v in values.split(","):
            if key == "bursts":
                wanted.add(v)
            elif key == "sd":
                wanted.add(round(float(v.rstrip("%")) / 100, 6))
            else:
                wanted.add(float(v.rstrip("s")))
        picked = [i for i in picked if getattr(GRID[i], keys[key]) in wanted]
    if not picked:
        raise SystemExit("--cells selects no cell")
    return picked


def tasks_for(cells: list[int], aa: int, reg: int, chunk: int) -> list[tuple[int, str, int, int]]:
    out: list[tuple[int, str, int, int]] = []
    for i in cells:
        for name, n in (("aa", aa), ("err", reg), ("p50", reg), ("p99", reg)):
            out.extend((i, name, a, min(a + chunk, n)) for a in range(0, n, chunk))
    # Expensive first (more traffic, A/A runs all 30 looks) so the two workers end together.
    out.sort(key=lambda t: -(GRID[t[0]].rps + 10) * (3 if t[1] == "aa" else 1) * (t[3] - t[2]))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--aa-rollouts", type=int, default=None, help="A/A rollouts per cell")
    p.add_argument(
        "--regression-rollouts", type=int, default=None, help="rollouts per regression per cell"
    )
    p.add_argument(
        "--cells",
        nargs="*",
        default=[],
        metavar="KEY=V[,V]",
        help="select cells: bursts=shared,independent tau=5,20,60 sd=5,20 rps=5,20,50",
    )
    p.add_argument("--quick", action="store_true", help="few rollouts: a smoke run")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--workers", type=int, default=2, help="worker processes (at most 2)")
    p.add_argument("--kayenta-step", type=float, default=10.0, help="Kayenta's step (s)")
    p.add_argument(
        "--check",
        type=int,
        default=0,
        help="replay the first N rollouts of each cell and scenario through analyze_data",
    )
    p.add_argument("--json", default="", help="write the per-cell numbers to this file")
    args = p.parse_args(argv)
    aa = args.aa_rollouts if args.aa_rollouts is not None else (4 if args.quick else 40)
    reg = (
        args.regression_rollouts
        if args.regression_rollouts is not None
        else (2 if args.quick else 20)
    )
    workers = max(1, min(2, args.workers))
    cells = select_cells(args.cells)
    started = time.perf_counter()
    version = judge_version()
    slow_scale = calibrate_slow_scale()
    by_name = {ch.name: ch for ch in changes(slow_scale)}
    tasks = tasks_for(cells, aa, reg, chunk=5)
    results: list[TaskResult] = []
    with cf.ProcessPoolExecutor(max_workers=workers) as pool:
        futures = [
            pool.submit(run_task, i, by_name[name], a, z, args.seed, args.kayenta_step, args.check)
            for i, name, a, z in tasks
        ]
        step = max(1, len(futures) // 20)
        for done, fut in enumerate(cf.as_completed(futures), 1):
            results.append(fut.result())
            if done % step == 0 or done == len(futures):
                el = time.perf_counter() - started
                print(
                    f"  {done}/{len(futures)} tasks, {el:.0f}s elapsed, "
                    f"~{el / done * (len(futures) - done):.0f}s to go",
                    file=sys.stderr,
                    flush=True,
                )
    grouped: dict[int, dict[str, list[dict[str, Any]]]] = {}
    seconds = dict.fromkeys(METHODS, 0.0)
    looks = dict.fromkeys(METHODS, 0)
    checked, mismatches = 0, []
    checked_verdicts: dict[str, int] = {}
    for tr in sorted(results, key=lambda t: (t.cell, t.change, t.first)):
        grouped.setdefault(tr.cell, {}).setdefault(tr.change, []).extend(tr.rollouts)
        for m in METHODS:
            seconds[m] += tr.seconds[m]
            looks[m] += tr.looks[m]
        checked += tr.checked_looks
        for v, k in tr.checked.items():
            checked_verdicts[v] = checked_verdicts.get(v, 0) + k
        mismatches.extend(tr.mismatches)
    rows = [summarize(i, m, grouped[i]) for i in cells for m in METHODS]
    wall = time.perf_counter() - started
    print(
        f"\n30-minute rollouts judged every minute; {aa} A/A and {reg} rollouts per regression "
        f"per cell; seed {args.seed}; kayenta step {args.kayenta_step:g}s; p99 slow-path scale "
        f"{slow_scale:.3f}; judge code: git {version}"
    )
    print(HEAD)
    print("-" * len(HEAD))
    last = None
    for s in rows:
        key = (s["bursts"], s["drift_tau_s"], s["drift_sd"], s["rps"])
        if last is not None and key != last:
            print()
        print(row(s))
        last = key
    for line in summary_lines(rows):
        print(line)
    cost = ", ".join(f"{m} {1e3 * seconds[m] / max(1, looks[m]):.1f} ms/look" for m in METHODS)
    print(f"\nCPU per look: {cost}")
    if args.check:
        print(
            f"check against analyze_data: {checked} looks (product verdicts "
            f"{dict(sorted(checked_verdicts.items()))}), {len(mismatches)} differ"
            + "".join(f"\n  {x}" for x in mismatches[:10])
        )
    print(f"{wall:.0f}s total on {workers} worker(s)")
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "aa_rollouts": aa,
                    "regression_rollouts": reg,
                    "seed": args.seed,
                    "judge_code": version,
                    "kayenta_step_s": args.kayenta_step,
                    "slow_scale": slow_scale,
                    "seconds": wall,
                    "cpu_ms_per_look": {m: 1e3 * seconds[m] / max(1, looks[m]) for m in METHODS},
                    "cpu_s": seconds,
                    "looks": looks,
                    "check": {
                        "looks": checked,
                        "verdicts": checked_verdicts,
                        "mismatches": mismatches,
                    },
                    "rows": rows,
                },
                indent=1,
            )
        )
        print(f"per-cell numbers written to {args.json}")
    return 1 if mismatches else 0


if __name__ == "__main__":
    sys.exit(main())
