"""Properties: identical inputs never fail; a strictly worse canary never scores better than an
equal one (sequential and Kayenta modes, on arrays through analyze_data)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshlens.analytics.judge.analyze import analyze_data
from meshlens.analytics.judge.config import default_config
from meshlens.analytics.judge.data import RequestData

DURATION = 600.0


@st.composite
def traffic(draw: st.DrawFn) -> RequestData:
    seed = draw(st.integers(0, 2**32 - 1))
    n = draw(st.integers(0, 4000))
    err = draw(st.floats(0.0, 0.5))
    sigma = draw(st.floats(0.05, 1.5))
    rng = np.random.default_rng(seed)
    ts = np.sort(rng.uniform(0, DURATION, n))
    lat = np.round(20 * rng.lognormal(0, sigma, n), draw(st.sampled_from([0, 1, 3])))
    codes = np.where(rng.random(n) < err, 503, 200)
    return RequestData.from_arrays(ts, lat, codes)


MODES = ("sequential", "kayenta")
FAST = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@FAST
@given(data=traffic(), mode=st.sampled_from(MODES))
def test_identical_inputs_never_fail(data: RequestData, mode: str) -> None:
    cfg = replace(default_config(), mode=mode)  # type: ignore[arg-type]
    v = analyze_data(data, data, config=cfg, start=0.0, end=DURATION)
    assert v.verdict != "fail", v.reason
    assert all(m.classification in ("pass", "nodata", "inconclusive") for m in v.metrics)


@FAST
@given(
    data=traffic(),
    mode=st.sampled_from(MODES),
    slower=st.floats(1.0, 3.0),
    extra_err=st.floats(0.0, 0.5),
    seed=st.integers(0, 1000),
)
def test_a_worse_canary_never_scores_better(
    data: RequestData, mode: str, slower: float, extra_err: float, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    flip = (rng.random(data.n) < extra_err) & (data.response_code < 500)
    worse = RequestData.from_arrays(
        data.ts, data.duration_ms * slower, np.where(flip, 503, data.response_code)
    )
    cfg = replace(default_config(), mode=mode)  # type: ignore[arg-type]
    equal = analyze_data(data, data, config=cfg, start=0.0, end=DURATION)
    bad = analyze_data(data, worse, config=cfg, start=0.0, end=DURATION)
    assert bad.score <= equal.score
    if bad.verdict == "pass":
        assert equal.verdict == "pass"


# --- the three outcomes (sequential mode) -------------------------------------------------

# Tolerances a few thousand requests can settle, so that passes happen and the properties bite.
LOOSE = replace(
    default_config(),
    metrics=tuple(
        replace(m, tolerance=0.02 if m.kind == "error_rate" else 0.3)
        for m in default_config().metrics
    ),
)


@st.composite
def busy_traffic(draw: st.DrawFn) -> RequestData:
    seed = draw(st.integers(0, 2**32 - 1))
    n = draw(st.integers(1500, 4000))
    err = draw(st.floats(0.0, 0.03))
    sigma = draw(st.floats(0.1, 0.8))
    rng = np.random.default_rng(seed)
    ts = np.sort(rng.uniform(0, DURATION, n))
    lat = np.round(20 * rng.lognormal(0, sigma, n), draw(st.sampled_from([0, 2])))
    codes = np.where(rng.random(n) < err, 503, 200)
    return RequestData.from_arrays(ts, lat, codes)


PROPS = settings(
    max_examples=12,
    deadline=None,
    derandomize=True,  # a fixed set of examples: the suite is the same on every machine
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@PROPS
@given(
    base=busy_traffic(),
    seed=st.integers(0, 1000),
    slower=st.floats(1.0, 2.0),
    extra_err=st.floats(0.0, 0.2),
)
def test_a_canary_worse_than_a_passing_one_never_passes_while_the_better_one_fails(
    base: RequestData, seed: int, slower: float, extra_err: float
) -> None:
    """Outcomes are ordered: if the better canary fails, the worse one cannot pass; if the
    worse one passes, the better one is not failed. (A canary identical to the baseline is the
    better one here.)"""
    rng = np.random.default_rng(seed)
    flip = (rng.random(base.n) < extra_err) & (base.response_code < 500)
    worse = RequestData.from_arrays(
        base.ts, base.duration_ms * slower, np.where(flip, 503, base.response_code)
    )
    better = analyze_data(base, base, config=LOOSE, start=0.0, end=DURATION)
    bad = analyze_data(base, worse, config=LOOSE, start=0.0, end=DURATION)
    assert better.verdict != "fail"
    if bad.verdict == "pass":
        assert better.verdict == "pass", (better.reason, bad.reason)
    if slower >= 1.5 or extra_err >= 0.1:  # far beyond the tolerances: never a pass
        assert bad.verdict != "pass", bad.reason


@PROPS
@given(
    base=busy_traffic(),
    canary=busy_traffic(),
    extra=busy_traffic(),
)
def test_adding_identical_traffic_never_turns_pass_into_fail(
    base: RequestData, canary: RequestData, extra: RequestData
) -> None:
    before = analyze_data(base, canary, config=LOOSE, start=0.0, end=DURATION)

    def plus(d: RequestData) -> RequestData:
        return RequestData.from_arrays(
            np.concatenate([d.ts, extra.ts]),
            np.concatenate([d.duration_ms, extra.duration_ms]),
            np.concatenate([d.response_code, extra.response_code]),
        )

    after = analyze_data(plus(base), plus(canary), config=LOOSE, start=0.0, end=DURATION)
    if before.verdict == "pass":
        assert after.verdict != "fail", (before.reason, after.reason)
