"""The three outcomes of one sequential metric, and the default tolerances. Pure.

    fail          the anytime-valid test rejects "no regression" (the interval excludes 0 on
                  the regression side)
    pass          the interval's regression-side bound lies inside the tolerance: the canary
                  is at most `tolerance` worse (a non-inferiority test)
    inconclusive  neither: the data still allow a regression beyond the tolerance

"No significant change" is not evidence of no regression: a verdict whose interval still allows
+289% errors is inconclusive, never pass.

Effects and bounds are on the metric's own scale, oriented so that positive is worse for
`increase` metrics: error rates as an absolute difference of rates (canary - baseline; 0.005 =
0.5 percentage points), latency as a relative change of the quantile (0.1 = 10% slower), series
as a relative change of the mean, the traffic share relative to the expected share.
"""

from __future__ import annotations

import math
from typing import Final, Literal

from meshlens.analytics.judge.model import MetricSpec

Outcome = Literal["pass", "fail", "inconclusive"]

# Documented defaults (README "Canary analysis"): what a metric may get worse by and still pass.
DEFAULT_TOLERANCE: Final = {
    "error_rate": 0.005,  # +0.5 percentage points of requests
    "latency": 0.10,  # +10% at the quantile (or a 10% upward shift of the distribution)
    "request_share": 0.20,  # the canary's share within 20% of the expected share
    "metric": 0.10,  # +10% of the baseline's mean
    "sql": 0.10,
    "promql": 0.10,
}


def tolerance_of(spec: MetricSpec) -> float:
    """The metric's tolerance: its own `tolerance`, else the default of its kind."""
    if spec.tolerance is not None:
        return float(spec.tolerance)
    return DEFAULT_TOLERANCE[spec.kind]


def decide(
    *,
    regression_rejected: bool,
    improvement_rejected: bool,
    lo: float,
    hi: float,
    tolerance: float,
    direction: str,
) -> Outcome:
    """One metric's outcome from its interval [lo, hi] (positive = the quantity went up).

    `regression_rejected`: the test of "no increase" rejected (the interval's lower end is
    above 0); `improvement_rejected` likewise for "no decrease". Which of them is a regression
    depends on `direction` (increase, decrease, either)."""
    worse_up = direction in ("increase", "either")
    worse_down = direction in ("decrease", "either")
    if (worse_up and regression_rejected) or (worse_down and improvement_rejected):
        return "fail"
    up_ok = not worse_up or (math.isfinite(hi) and hi < tolerance)
    down_ok = not worse_down or (math.isfinite(lo) and lo > -tolerance)
    return "pass" if up_ok and down_ok else "inconclusive"


def open_bound(lo: float, hi: float, tolerance: float, direction: str) -> tuple[str, float]:
    """Which bound keeps an inconclusive metric from passing: ("upper", hi) or ("lower", lo)."""
    if direction == "decrease":
        return "lower", lo
    lower_open = not (math.isfinite(lo) and lo > -tolerance)
    if direction == "either" and lower_open and math.isfinite(hi) and hi < tolerance:
        return "lower", lo
    return "upper", hi
