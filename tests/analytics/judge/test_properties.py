"""Properties: identical inputs never fail; a strictly worse canary never scores better than an
equal one (sequential and Kayenta modes, on arrays through analyze_data)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from analytics.judge.analyze import analyze_data
from analytics.judge.config import default_config
from analytics.judge.data import RequestData

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
