"""The three-outcome rule on constructed intervals, tolerances, the traffic estimate, the
verdict roll-up and blocks from the data (pure functions, no traffic)."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from meshlens.analytics.errors import CanaryConfigError
from meshlens.analytics.judge import blocks, bounds
from meshlens.analytics.judge.config import default_config, parse_config
from meshlens.analytics.judge.decision import DEFAULT_TOLERANCE, decide, open_bound, tolerance_of
from meshlens.analytics.judge.model import MetricResult, MetricSpec
from meshlens.analytics.judge.scoring import roll_up
from meshlens.analytics.judge.seq_metrics import settle_text


def _decide(lo: float, hi: float, tol: float = 0.1, direction: str = "increase", **kw: bool) -> str:
    return decide(
        regression_rejected=kw.get("up", lo > 0),
        improvement_rejected=kw.get("down", hi < 0),
        lo=lo,
        hi=hi,
        tolerance=tol,
        direction=direction,
    )


@pytest.mark.parametrize(
    ("lo", "hi", "expected"),
    [
        (-0.05, 0.08, "pass"),  # inside the tolerance
        (-0.02, 0.02, "pass"),
        (-0.30, 0.09, "pass"),  # a wide improvement side does not matter
        (-0.05, 0.12, "inconclusive"),  # straddles the tolerance
        (-0.50, 2.89, "inconclusive"),  # the issue's +289%: never a pass
        (-0.05, math.inf, "inconclusive"),  # unbounded
        (0.02, 0.08, "fail"),  # excludes "no regression", even inside the tolerance
        (0.20, 0.40, "fail"),  # outside
    ],
)
def test_increase_metric_outcomes(lo: float, hi: float, expected: str) -> None:
    assert _decide(lo, hi) == expected


def test_the_bound_must_lie_strictly_inside_the_tolerance() -> None:
    assert _decide(-0.1, 0.1) == "inconclusive"
    assert _decide(-0.1, 0.0999) == "pass"


@pytest.mark.parametrize(
    ("lo", "hi", "expected"),
    [
        (-0.08, 0.50, "pass"),  # decrease: only the lower bound matters
        (-0.12, 0.50, "inconclusive"),
        (-0.30, -0.05, "fail"),
    ],
)
def test_decrease_metric_outcomes(lo: float, hi: float, expected: str) -> None:
    assert _decide(lo, hi, direction="decrease") == expected


@pytest.mark.parametrize(
    ("lo", "hi", "expected"),
    [
        (-0.08, 0.08, "pass"),
        (-0.12, 0.08, "inconclusive"),
        (-0.08, 0.12, "inconclusive"),
        (0.01, 0.08, "fail"),
        (-0.08, -0.01, "fail"),
    ],
)
def test_either_metric_outcomes(lo: float, hi: float, expected: str) -> None:
    assert _decide(lo, hi, direction="either") == expected


def test_improvement_is_not_a_failure_of_an_increase_metric() -> None:
    assert _decide(-0.4, -0.2, down=True) == "pass"


def test_open_bound_names_the_side_that_blocks_the_pass() -> None:
    assert open_bound(-0.5, 0.3, 0.1, "increase") == ("upper", 0.3)
    assert open_bound(-0.5, 0.3, 0.1, "decrease") == ("lower", -0.5)
    assert open_bound(-0.5, 0.05, 0.1, "either") == ("lower", -0.5)
    assert open_bound(-0.05, 0.3, 0.1, "either") == ("upper", 0.3)


def test_default_tolerances_per_kind_and_overrides() -> None:
    cfg = default_config()
    by = {m.name: m for m in cfg.metrics}
    assert tolerance_of(by["error-rate"]) == 0.005  # 0.5 percentage points
    assert tolerance_of(by["latency-p99"]) == DEFAULT_TOLERANCE["latency"] == 0.1
    custom = parse_config(
        {
            "metrics": [
                {"name": "e", "kind": "error_rate", "tolerance": "1.5pp"},
                {"name": "p", "kind": "latency", "quantile": 0.9, "tolerance": "25%"},
                {"name": "m", "kind": "latency", "tolerance": 0.3},
            ]
        }
    )
    assert [tolerance_of(m) for m in custom.metrics] == pytest.approx([0.015, 0.25, 0.3])


@pytest.mark.parametrize(
    ("metric", "match"),
    [
        ({"name": "e", "kind": "error_rate", "tolerance": "10%"}, r"tolerance.*absolute.*0\.5pp"),
        ({"name": "p", "kind": "latency", "tolerance": "3pp"}, r"percentage points are for"),
        ({"name": "p", "kind": "latency", "tolerance": "-5%"}, r"must be >= 0"),
        ({"name": "p", "kind": "latency", "tolerance": "lots"}, r"expected a number"),
    ],
)
def test_bad_tolerances_name_the_field(metric: dict[str, object], match: str) -> None:
    with pytest.raises(CanaryConfigError, match=r"metrics\[0\]\.tolerance.*" + match):
        parse_config({"metrics": [metric]})


def test_block_auto_and_fixed() -> None:
    assert parse_config({"block": "auto"}).block_s is None
    assert parse_config({"block": "20s"}).block_s == pytest.approx(20.0)
    with pytest.raises(CanaryConfigError, match="block"):
        parse_config({"block": "soon"})


def test_more_traffic() -> None:
    # bound 2x as far from the estimate as the tolerance is: 4x the traffic
    assert bounds.more_traffic(0.0, 0.2, 0.1) == pytest.approx(4.0)
    assert bounds.more_traffic(0.15, 0.3, 0.1) is None  # the estimate is beyond it already
    assert bounds.more_traffic(0.0, math.inf, 0.1) == math.inf
    assert bounds.more_traffic(0.0, 0.05, 0.1) == 1.0


def test_settle_text_says_what_would_settle_it() -> None:
    text = settle_text(
        estimate=0.0,
        lo=-0.01,
        hi=0.01,
        tolerance=0.005,
        direction="increase",
        requests=12_000,
        span_s=600.0,
        fmt=lambda x: f"{100 * x:+.2f} pp",
    )
    assert text.startswith("the upper bound +1.00 pp is beyond the tolerance +0.50 pp")
    assert "about 4.00x the traffic so far would settle it (36,000 more requests, ~30 min" in text
    beyond = settle_text(
        estimate=0.01,
        lo=0.0,
        hi=0.02,
        tolerance=0.005,
        direction="increase",
        requests=100,
        span_s=60.0,
        fmt=str,
    )
    assert "and so is the estimate" in beyond


def test_relative_cs_agrees_with_the_decisions_at_zero_and_the_tolerance() -> None:
    # A non-monotone "test" (true again far above the tolerance): the interval stays
    # consistent with the tests at 0 and at the tolerance that decide the outcome.
    def test(r: float, direction: str) -> bool:
        if direction == "decrease":
            return 0.05 <= r <= 0.3 or r > 2
        return r < -0.2

    lo, hi = bounds.relative_cs(test, tolerance=0.1)
    assert 0.0 < hi <= 0.1 and -0.9 <= lo < 0.0
    assert hi == pytest.approx(0.05, abs=1e-3) and lo == pytest.approx(-0.2, abs=1e-3)


def test_mixture_radius_grows_slower_than_linearly() -> None:
    r = [bounds.mixture_radius(k, 0.01) / k for k in (10, 100, 1000)]
    assert r[0] > r[1] > r[2]


def test_zero_errors_on_few_requests_is_not_evidence() -> None:
    # 300 requests a side without an error cannot bound the difference within 0.5 pp; 30,000
    # can.
    few = bounds.error_diff_cs(
        np.zeros(15), np.full(15, 20.0), np.zeros(15), np.full(15, 20.0), alpha=0.004, block_s=10
    )
    many = bounds.error_diff_cs(
        np.zeros(120),
        np.full(120, 250.0),
        np.zeros(120),
        np.full(120, 250.0),
        alpha=0.004,
        block_s=10,
    )
    assert few.hi > 0.005 > many.hi > 0


# --- blocks from the data ---------------------------------------------------------------------


def test_a_dense_burst_gets_short_blocks_and_a_trickle_long_ones() -> None:
    rng = np.random.default_rng(1)
    burst = blocks.choose_block(rng.uniform(0, 10, 600), rng.uniform(0, 10, 600))
    assert burst.block_s <= 0.5 and burst.span_s < 10.1
    trickle = blocks.choose_block(rng.uniform(0, 3600, 1800), rng.uniform(0, 3600, 1800))
    assert trickle.block_s >= 30  # 0.5 requests/s a side: 20 requests take 40 s
    p99 = blocks.choose_block(rng.uniform(0, 600, 1200), rng.uniform(0, 600, 1200), quantile=0.99)
    p50 = blocks.choose_block(rng.uniform(0, 600, 1200), rng.uniform(0, 600, 1200))
    assert p99.block_s > p50.block_s


def test_blocks_are_the_same_whatever_the_window_start() -> None:
    ts = np.array([100.2, 100.7, 101.3, 105.0])
    a = blocks.count_blocks(
        ts, np.ones(4), ts, np.zeros(4), origin=blocks.origin_for(99.9, 1.0), block_s=1.0
    )
    b = blocks.count_blocks(
        ts, np.ones(4), ts, np.zeros(4), origin=blocks.origin_for(63.2, 1.0), block_s=1.0
    )
    assert a.n_b.tolist() == b.n_b.tolist() == [2.0, 1.0, 1.0]


def test_paired_groups_keep_blocks_with_both_sides() -> None:
    tb = np.array([0.1, 0.2, 0.3, 1.1, 1.2, 1.3, 2.5])
    tc = np.array([0.5, 0.6, 0.7, 2.1, 2.2, 2.3])
    gb, gc = blocks.paired_groups(tb, tb * 10, tc, tc * 10, origin=0.0, block_s=1.0, min_per_side=1)
    assert len(gb) == len(gc) == 2  # block 1 has no canary
    assert gb[1].tolist() == pytest.approx([25.0])


# --- the verdict ------------------------------------------------------------------------------


def _result(name: str, cls: str, *, critical: bool = False) -> MetricResult:
    return MetricResult(
        name=name,
        classification=cls,  # type: ignore[arg-type]
        baseline=None,
        canary=None,
        effect=None,
        ci=None,
        statistic="",
        p_value=None,
        e_value=None,
        n_baseline=0,
        n_canary=0,
        reason=f"{name} is {cls}",
        critical=critical,
        weight=1.0,
        direction="increase",
    )


CFG = default_config()


def test_a_failing_critical_metric_fails_whatever_the_others_show() -> None:
    r = roll_up(
        [_result("err", "high", critical=True), _result("p99", "nodata", critical=True)], CFG
    )
    assert r.verdict == "fail" and r.score == 0 and "critical metric err failed" in r.reason


def test_pass_needs_every_critical_metric_to_pass() -> None:
    ok = [_result("err", "pass", critical=True), _result("p99", "pass", critical=True)]
    assert roll_up(ok, CFG).verdict == "pass"
    held = [_result("err", "pass", critical=True), _result("p99", "inconclusive", critical=True)]
    r = roll_up(held, CFG)
    assert r.verdict == "inconclusive" and "critical metric p99 is not settled" in r.reason
    nodata = [_result("err", "pass", critical=True), _result("p99", "nodata", critical=True)]
    assert "critical metric p99 has no data" in roll_up(nodata, CFG).reason


def test_inconclusive_never_fails_but_failures_that_cap_the_score_do() -> None:
    unsure = [_result("err", "pass", critical=True)] + [
        _result(f"m{i}", "inconclusive") for i in range(3)
    ]
    r = roll_up(unsure, CFG)
    assert r.verdict == "inconclusive" and r.score == 25
    failing = [_result("err", "pass", critical=True)] + [_result(f"m{i}", "high") for i in range(3)]
    r = roll_up(failing, CFG)
    assert r.verdict == "fail" and "cannot reach marginal 75" in r.reason


def test_kayenta_and_flagger_modes_keep_their_rules() -> None:
    flagger = replace(CFG, mode="flagger")
    r = roll_up([_result("a", "pass"), _result("b", "high")], flagger)
    assert r.verdict == "fail"  # any failing check fails in Flagger's model


def test_metric_spec_tolerance_defaults_to_none() -> None:
    assert MetricSpec("x", "latency").tolerance is None
