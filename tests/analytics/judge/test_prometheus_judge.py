"""The judge's Prometheus source (analytics/judge/prometheus.py) against a real Prometheus.

Issue 14, item 5: the same `canary analyze` over a Prometheus holding Istio series failed the
canary in some runs and said "no data" in others. The series here are Istio-format counters
scraped every 15 s and backfilled as TSDB blocks (tests/analytics/judge/prom_backfill.py):

  reviews  scrapes 7.25 s past each 15 s boundary (a real target's fixed offset)
  ratings  scrapes on the 15 s boundaries (what a backfill on round timestamps looks like)

  v1  baseline: 12 rps, only 200s: no 5xx series at all
  v2  canary: 13.5 rps, 10% 503s, plus gRPC calls (1 rps OK, 0.5 rps UNAVAILABLE)
  v9  no series anywhere

Both reporters are present (the judge reads reporter="destination" only).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest

from meshlens.analytics.errors import JudgeInputError, PrometheusError
from meshlens.analytics.judge.model import MetricSpec
from meshlens.analytics.judge.prometheus import (
    DEFAULT_MIN_WINDOW_S,
    ERROR_RATE_QUERY,
    LATENCY_QUERY,
    CountSeries,
    PrometheusSource,
    align_window,
    duration,
    error_matchers,
    no_data_reason,
    paired_counts,
    query_for,
    query_selectors,
    query_step,
    render,
    side_counts,
    side_no_data_reason,
    side_selector,
    side_series,
    step_starts,
)
from tests.analytics.judge.prom_backfill import backfilled_prometheus
from tests.analytics.test_prometheus_source import BASE, free_port

T = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)


# --- align_window and the step grid (pure) ---------------------------------------------------


def test_align_window_rounds_start_up_and_end_down() -> None:
    s, e = align_window(T + timedelta(seconds=7), T + timedelta(minutes=10, seconds=53), 60)
    assert (s, e) == (T + timedelta(minutes=1), T + timedelta(minutes=10))
    assert align_window(T, T + timedelta(minutes=10), 60) == (T, T + timedelta(minutes=10))
    s, e = align_window(T + timedelta(microseconds=1), T + timedelta(seconds=59.999999), 60)
    assert (s, e) == (T + timedelta(minutes=1), T)  # no boundary inside: an empty grid
    assert align_window(T + timedelta(seconds=1), T + timedelta(seconds=44), 15) == (
        T + timedelta(seconds=15),
        T + timedelta(seconds=30),
    )
    s, e = align_window(T + timedelta(seconds=0.2), T + timedelta(seconds=1.9), 0.5)
    assert (s, e) == (T + timedelta(seconds=0.5), T + timedelta(seconds=1.5))


def test_align_window_is_the_same_for_windows_shifted_within_a_step() -> None:
    ref = align_window(T + timedelta(seconds=30), T + timedelta(minutes=10, seconds=30), 60)
    for shift_s in (0.0, 0.001, 1.0, 17.5, 29.999):
        start = T + timedelta(seconds=30 - shift_s)
        end = T + timedelta(minutes=10, seconds=30 + shift_s)
        assert align_window(start, end, 60) == ref
    # Across a boundary the grid moves by exactly one step.
    assert align_window(T + timedelta(seconds=61), T + timedelta(minutes=11), 60)[0] == (
        T + timedelta(minutes=2)
    )


def test_align_window_time_zones_and_epoch_multiples() -> None:
    cet = timezone(timedelta(hours=1))
    s, e = align_window(datetime(2026, 11, 25, 11, 0, 7, tzinfo=cet), T.replace(hour=11), 60)
    assert (s, e) == (T + timedelta(minutes=1), T + timedelta(hours=1))
    assert s.tzinfo is not None and s.utcoffset() == timedelta(0)
    naive = datetime(2026, 11, 25, 10, 0, 7)  # taken as UTC
    assert align_window(naive, naive + timedelta(minutes=5), 60)[0] == T + timedelta(minutes=1)
    # Multiples of the step since the epoch, not of the hour: 7 s steps.
    s, _ = align_window(T, T + timedelta(hours=1), 7)
    assert s.timestamp() % 7 == 0 and 0 <= (s - T).total_seconds() < 7


@pytest.mark.parametrize("bad", [0, -60, float("nan"), float("inf")])
def test_align_window_rejects_a_bad_step(bad: float) -> None:
    with pytest.raises(JudgeInputError, match="step must be a positive number"):
        align_window(T, T + timedelta(minutes=1), bad)


def test_query_step_is_a_multiple_of_the_step_of_at_least_the_minimum_window() -> None:
    assert DEFAULT_MIN_WINDOW_S == 60.0
    assert [query_step(s) for s in (10, 15, 25, 60, 90, 300)] == [60, 60, 75, 60, 90, 300]
    assert query_step(10, min_window_s=0) == 10
    assert query_step(10, min_window_s=120) == 120
    assert duration(60) == "60s" and duration(1.5) == "1500ms"


def test_step_starts_are_the_whole_steps_inside_the_window() -> None:
    got = step_starts(T + timedelta(seconds=5), T + timedelta(minutes=3, seconds=59), 60)
    assert got.tolist() == [(T + timedelta(minutes=m)).timestamp() for m in (1, 2)]
    assert step_starts(T, T + timedelta(seconds=59), 60).size == 0


# --- queries (pure) --------------------------------------------------------------------------


def test_error_matchers_follow_the_error_codes() -> None:
    assert error_matchers(("5xx",)) == ('response_code=~"5.."',)
    assert error_matchers(("4xx", "503", "no_response")) == ('response_code=~"4..|503|0"',)
    assert error_matchers(("grpc",)) == ('grpc_response_status!~"0|"',)
    assert error_matchers(("5xx", "grpc")) == (
        'response_code=~"5.."',
        'response_code!~"5..",grpc_response_status!~"0|"',
    )
    assert error_matchers(("5xx",), ("UNAVAILABLE", "4")) == (
        'response_code=~"5.."',
        'response_code!~"5..",grpc_response_status=~"14|4"',
    )
    assert error_matchers(()) == ()
    with pytest.raises(JudgeInputError, match="unknown error code class 'teapot'"):
        error_matchers(("teapot",))


def test_public_names_still_work() -> None:
    assert 'response_code=~"5.."' in ERROR_RATE_QUERY and "${interval}" in ERROR_RATE_QUERY
    assert "or on()" in ERROR_RATE_QUERY  # a side without 5xx series is 0, not empty
    assert "${quantile}" in LATENCY_QUERY
    assert query_for(MetricSpec(name="e", kind="error_rate")) == ERROR_RATE_QUERY
    assert query_for(MetricSpec(name="l", kind="latency")) == LATENCY_QUERY
    assert render("a ${x} ${x}", {"x": "1"}) == "a 1 1"
    with pytest.raises(PrometheusError, match="no built-in Prometheus query"):
        query_for(MetricSpec(name="m", kind="metric"))


def test_side_selector_escapes_label_values() -> None:
    assert side_selector("reviews", "v1") == (
        'istio_requests_total{reporter="destination",destination_service_name="reviews",'
        'destination_version="v1"}'
    )
    assert 'destination_version="a\\"b"' in side_selector("reviews", 'a"b')


def test_query_selectors() -> None:
    q = 'sum(rate(http_total{job="a",path=~"/x{1}"}[1m])) / sum(rate(other{v="}"}[1m])) + up'
    assert query_selectors(q) == ['http_total{job="a",path=~"/x{1}"}', 'other{v="}"}']


def test_no_data_reason_wording() -> None:
    sel = side_selector("reviews", "v9")
    s, e = T, T + timedelta(minutes=10)
    assert no_data_reason(sel, s, e, has_series=False).startswith(
        f"no data: Prometheus has no series matching {sel}"
    )
    assert no_data_reason(sel, s, e, has_series=True) == (
        f"no data in range: Prometheus has series matching {sel}, but no samples between "
        "2026-11-25T10:00:00Z and 2026-11-25T10:10:00Z"
    )
    assert no_data_reason(sel, s, e, has_series=True, in_range=True, window_s=10).startswith(
        "no points: series matching"
    )


def test_paired_counts_align_both_sides_on_their_steps() -> None:
    b = CountSeries(np.array([0.0, 60.0, 120.0]), np.zeros(3), np.array([5.0, 6.0, 7.0]), 60)
    c = CountSeries(np.array([60.0, 180.0]), np.array([1.0, 2.0]), np.array([10.0, 20.0]), 60)
    ts, eb, nb, ec, nc = paired_counts(b, c)
    assert ts.tolist() == [0, 60, 120, 180]
    assert nb.tolist() == [5, 6, 7, 0] and eb.tolist() == [0, 0, 0, 0]
    assert nc.tolist() == [0, 10, 0, 20] and ec.tolist() == [0, 1, 0, 2]
    assert CountSeries.empty(60).n == 0


# --- against a real Prometheus ---------------------------------------------------------------

SCRAPE_S = 15.0
OFFSETS = {"reviews": 7.25, "ratings": 0.0}
DATA_START = (datetime.now(UTC) - timedelta(hours=3)).replace(minute=0, second=0, microsecond=0)
DATA_END = DATA_START + timedelta(minutes=40)
START = DATA_START + timedelta(minutes=5)
END = START + timedelta(minutes=30)  # 30 steps of 60 s
STEPS = 30
RPS = {"v1": 12.0, "v2": 13.5}
GRPC = {"request_protocol": "grpc"}
# version -> [(extra labels, requests per second)]; each at both reporters
TRAFFIC: dict[str, list[tuple[dict[str, str], float]]] = {
    "v1": [
        ({"source_workload": "productpage-v1", "response_code": "200"}, 8.0),
        ({"source_workload": "istio-ingressgateway", "response_code": "200"}, 4.0),
    ],
    "v2": [
        ({"source_workload": "productpage-v1", "response_code": "200"}, 7.1),
        ({"source_workload": "productpage-v1", "response_code": "503"}, 0.9),
        ({"source_workload": "istio-ingressgateway", "response_code": "200"}, 3.55),
        ({"source_workload": "istio-ingressgateway", "response_code": "503"}, 0.45),
        (
            {
                **GRPC,
                "source_workload": "productpage-v1",
                "response_code": "200",
                "grpc_response_status": "0",
            },
            1.0,
        ),
        (
            {
                **GRPC,
                "source_workload": "productpage-v1",
                "response_code": "200",
                "grpc_response_status": "14",
            },
            0.5,
        ),
    ],
}
LATENCY = {  # version -> cumulative share of requests per bucket: p99 in (50, 100] for v1,
    # in (100, 250] for v2
    "v1": (("25", 0.6), ("50", 0.95), ("100", 0.999), ("250", 1.0)),
    "v2": (("25", 0.2), ("50", 0.5), ("100", 0.9), ("250", 1.0)),
}


def _labels(service: str, version: str, extra: dict[str, str]) -> dict[str, str]:
    return {
        **BASE,
        "destination_service": f"{service}.bookinfo.svc.cluster.local",
        "destination_service_name": service,
        "destination_canonical_service": service,
        "destination_workload": f"{service}-{version}",
        "destination_canonical_revision": version,
        "destination_app": service,
        "destination_version": version,
        **extra,
    }


def _text(name: str, labels: dict[str, str]) -> str:
    return name + "{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()) if v) + "}"


def openmetrics() -> str:
    """Counters growing by Poisson(rate x 15 s) per scrape (seeded), and latency buckets."""
    rng = np.random.default_rng(14)
    families: dict[str, list[str]] = {
        "istio_requests": [],
        "istio_request_duration_milliseconds": [],
    }
    n = int((DATA_END - DATA_START).total_seconds() // SCRAPE_S)
    for service, offset in OFFSETS.items():
        stamps = [DATA_START.timestamp() + offset + SCRAPE_S * i for i in range(n)]
        for version, flows in TRAFFIC.items():
            for extra, rps in flows:
                counts = np.cumsum(rng.poisson(rps * SCRAPE_S, n))
                for reporter in ("destination", "source"):
                    name = _text(
                        "istio_requests_total",
                        _labels(service, version, {**extra, "reporter": reporter}),
                    )
                    families["istio_requests"] += [
                        f"{name} {int(c)} {t:.3f}" for t, c in zip(stamps, counts, strict=True)
                    ]
            total = np.cumsum(rng.poisson(RPS[version] * SCRAPE_S, n))
            for le, share in (*LATENCY[version], ("+Inf", 1.0)):
                name = _text(
                    "istio_request_duration_milliseconds_bucket",
                    _labels(service, version, {"reporter": "destination", "le": le}),
                )
                families["istio_request_duration_milliseconds"] += [
                    f"{name} {int(c * share)} {t:.3f}" for t, c in zip(stamps, total, strict=True)
                ]
    lines = ["# TYPE istio_requests counter", *families["istio_requests"]]
    lines += [
        "# TYPE istio_request_duration_milliseconds histogram",
        *families["istio_request_duration_milliseconds"],
        "# EOF",
    ]
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def prom(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusSource]:
    root: Path = tmp_path_factory.mktemp("prom-judge")
    with backfilled_prometheus(root, openmetrics()) as url, PrometheusSource(url) as src:
        yield src


ERRORS = MetricSpec(name="errors", kind="error_rate", critical=True)


def _counts(
    src: PrometheusSource,
    version: str,
    *,
    service: str = "reviews",
    spec: MetricSpec = ERRORS,
    start: datetime = START,
    end: datetime = END,
    step_s: float = 60,
    **kw: float,
) -> CountSeries:
    return side_counts(
        src, spec, service=service, version=version, start=start, end=end, step_s=step_s, **kw
    )


def _series(
    src: PrometheusSource,
    version: str,
    *,
    service: str = "reviews",
    spec: MetricSpec = ERRORS,
    start: datetime = START,
    end: datetime = END,
    step_s: float = 60,
    **kw: float,
) -> tuple[np.ndarray, np.ndarray]:
    s = side_series(
        src, spec, service=service, version=version, start=start, end=end, step_s=step_s, **kw
    )
    return s.ts, s.values


integration = pytest.mark.integration
SHIFTS = [(0.0, 0.0), (0.4, 0.4), (0.9, 0.05), (0.05, 0.9), (0.5, 0.0)]  # fractions of a step


@integration
@pytest.mark.parametrize("service", list(OFFSETS))
def test_same_window_same_counts_and_series(prom: PrometheusSource, service: str) -> None:
    expected_ts = np.array([(START + timedelta(minutes=m)).timestamp() for m in range(STEPS)])
    for version in ("v1", "v2"):
        ref = _counts(prom, version, service=service)
        ref_series = _series(prom, version, service=service)
        assert ref.n == STEPS and np.array_equal(ref.ts, expected_ts) and ref.step_s == 60
        assert np.array_equal(ref_series[0], expected_ts)
        for _ in range(2):  # again
            again = _counts(prom, version, service=service)
            assert np.array_equal(again.total, ref.total)
            assert np.array_equal(again.errors, ref.errors)
        for early, late in SHIFTS:  # the window moved by less than a step at either end
            start = START - timedelta(seconds=60 * early)
            end = END + timedelta(seconds=60 * late)
            got = _counts(prom, version, service=service, start=start, end=end)
            assert np.array_equal(got.ts, ref.ts)
            assert np.array_equal(got.total, ref.total)
            assert np.array_equal(got.errors, ref.errors)
            ts, values = _series(prom, version, service=service, start=start, end=end)
            assert np.array_equal(ts, ref_series[0]) and np.array_equal(values, ref_series[1])


@integration
@pytest.mark.parametrize("service", list(OFFSETS))
def test_healthy_baseline_has_zero_errors_and_canary_ten_percent(
    prom: PrometheusSource, service: str
) -> None:
    b = _counts(prom, "v1", service=service)
    c = _counts(prom, "v2", service=service)
    # Destination reports only (the source's duplicates would double this), every step.
    assert b.n == STEPS and c.n == STEPS
    assert b.total.sum() == pytest.approx(RPS["v1"] * 60 * STEPS, rel=0.03)
    assert c.total.sum() == pytest.approx(RPS["v2"] * 60 * STEPS, rel=0.03)
    assert np.array_equal(b.errors, np.zeros(STEPS))  # no 5xx series: 0, not missing
    assert (b.total > 0).all()
    assert c.errors.sum() / c.total.sum() == pytest.approx(0.10, abs=0.01)
    # The ratio series says the same per step: 0.0 for the baseline, errors/total for v2.
    bts, bv = _series(prom, "v1", service=service)
    cts, cv = _series(prom, "v2", service=service)
    assert np.array_equal(bts, b.ts) and np.array_equal(bv, np.zeros(STEPS))
    assert np.array_equal(cts, c.ts) and np.allclose(cv, c.errors / c.total, rtol=1e-9)


@integration
def test_error_classes_reach_prometheus(prom: PrometheusSource) -> None:
    c = _counts(prom, "v2")
    with_grpc = _counts(
        prom, "v2", spec=MetricSpec(name="e", kind="error_rate", error_codes=("5xx", "grpc"))
    )
    unavailable = _counts(
        prom, "v2", spec=MetricSpec(name="e", kind="error_rate", grpc_codes=("UNAVAILABLE",))
    )
    no_4xx = _counts(prom, "v2", spec=MetricSpec(name="e", kind="error_rate", error_codes=("4xx",)))
    assert np.array_equal(with_grpc.total, c.total)
    assert with_grpc.errors.sum() / c.total.sum() == pytest.approx(1.85 / 13.5, abs=0.01)
    assert np.allclose(unavailable.errors, with_grpc.errors)
    assert no_4xx.n == STEPS and np.array_equal(no_4xx.errors, np.zeros(STEPS))


@integration
def test_block_sized_steps_still_get_data(prom: PrometheusSource) -> None:
    """The sequential judge asks for 10 s blocks; over 15 s scrapes a 10 s (or 15 s) rate
    window is empty, so the step is raised to the 60 s minimum window."""
    for version in ("v1", "v2"):
        counts = _counts(prom, version, step_s=10)
        assert counts.n == STEPS and counts.step_s == 60
        ts, values = _series(prom, version, step_s=10)
        assert ts.size == STEPS and np.isfinite(values).all()
        # What the old query did: a 10 s step over its own 10 s window finds < 2 samples.
        assert _counts(prom, version, step_s=10, min_window_s=0).n == 0


@integration
def test_latency_series(prom: PrometheusSource) -> None:
    spec = MetricSpec(name="p99", kind="latency", quantile=0.99)
    ts_b, b = _series(prom, "v1", spec=spec)
    ts_c, c = _series(prom, "v2", spec=spec)
    assert ts_b.size == STEPS and np.array_equal(ts_b, ts_c)
    assert ((b > 50) & (b <= 100)).all() and ((c > 100) & (c <= 250)).all()
    assert np.array_equal(_series(prom, "v2", spec=spec)[1], c)


@integration
def test_a_side_without_series_is_no_data_with_its_selector(prom: PrometheusSource) -> None:
    sel = side_selector("reviews", "v9")
    assert prom.has_series(sel) is False
    assert _counts(prom, "v9").n == 0 and _series(prom, "v9")[0].size == 0
    reason = side_no_data_reason(
        prom, ERRORS, service="reviews", version="v9", start=START, end=END, step_s=10
    )
    assert reason.startswith(f"no data: Prometheus has no series matching {sel}")
    assert 'destination_version="v9"' in reason


@integration
def test_series_outside_the_window_are_not_no_data(prom: PrometheusSource) -> None:
    sel = side_selector("reviews", "v1")
    later_start = DATA_END + timedelta(hours=1)
    later_end = later_start + timedelta(minutes=30)
    assert prom.has_series(sel) is True
    assert prom.has_series(sel, START, END) is True
    assert prom.has_series(sel, later_start, later_end) is False
    assert _counts(prom, "v1", start=later_start, end=later_end).n == 0
    reason = side_no_data_reason(
        prom, ERRORS, service="reviews", version="v1", start=later_start, end=later_end, step_s=60
    )
    lo, hi = align_window(later_start, later_end, 60)
    assert reason == (
        f"no data in range: Prometheus has series matching {sel}, but no samples between "
        f"{lo:%Y-%m-%dT%H:%M:%SZ} and {hi:%Y-%m-%dT%H:%M:%SZ}"
    )
    # Samples in range, but a window too short for two of them: the third wording.
    sparse = side_no_data_reason(
        prom,
        ERRORS,
        service="reviews",
        version="v1",
        start=START,
        end=END,
        step_s=10,
        min_window_s=0,
    )
    assert sparse.startswith(f"no points: series matching {sel} have samples between")


@integration
def test_custom_promql_and_its_errors(prom: PrometheusSource) -> None:
    spec = MetricSpec(
        name="rps",
        kind="promql",
        query='sum(rate(istio_requests_total{reporter="destination",'
        'destination_service_name="${service}",destination_version="${version}"}[${interval}]))',
    )
    ts, values = _series(prom, "v2", spec=spec)
    assert ts.size == STEPS and values.mean() == pytest.approx(13.5, rel=0.05)
    reason = side_no_data_reason(
        prom, spec, service="reviews", version="v9", start=START, end=END, step_s=60
    )
    assert reason.startswith("no data: Prometheus has no series matching istio_requests_total{")
    bad = MetricSpec(name="bad", kind="promql", query="sum(rate(istio_requests_total[")
    with pytest.raises(PrometheusError, match=r"HTTP 400 \(bad_data: .*parse error"):
        _series(prom, "v2", spec=bad)
    with pytest.raises(JudgeInputError, match="built-in Istio error_rate query only"):
        _counts(prom, "v2", spec=spec)


@integration
def test_prometheus_down_is_an_error_not_no_data() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with PrometheusSource(url, timeout_s=5) as src:
        with pytest.raises(PrometheusError, match=rf"^Prometheus at {url}: unreachable"):
            _counts(src, "v2")
        with pytest.raises(PrometheusError, match=rf"^Prometheus at {url}: unreachable"):
            _series(src, "v1")
        with pytest.raises(PrometheusError, match=rf"^Prometheus at {url}: unreachable"):
            src.has_series(side_selector("reviews", "v1"))


@integration
def test_long_grids_are_split_on_the_same_grid(
    prom: PrometheusSource, monkeypatch: pytest.MonkeyPatch
) -> None:
    ref = _counts(prom, "v2")
    monkeypatch.setattr("meshlens.analytics.judge.prometheus.MAX_POINTS_PER_QUERY", 7)
    split = _counts(prom, "v2")
    assert np.array_equal(split.ts, ref.ts) and np.array_equal(split.total, ref.total)
    assert np.array_equal(split.errors, ref.errors)


def test_canary_analyze_from_prometheus_is_deterministic(prom: PrometheusSource) -> None:
    """The issue's report: the same `canary analyze` (source prometheus, 10% errors on the
    canary) failed in some runs and was "no data" in others. Same window -> same verdict, and
    windows shifted within a step agree too."""
    import duckdb

    from meshlens.analytics.judge.analyze import analyze
    from meshlens.analytics.judge.config import parse_config
    from meshlens.analytics.window import TimeWindow

    cfg = parse_config(
        {
            "source": "prometheus",
            "prometheus_url": prom.url,
            "metrics": [{"name": "error-rate", "kind": "error_rate", "critical": True}],
        }
    )
    conn = duckdb.connect()
    verdicts = []
    for a, b in SHIFTS:
        window = TimeWindow(START + timedelta(seconds=60 * a), END + timedelta(seconds=60 * b))
        v = analyze(conn, service="reviews", baseline="v1", canary="v2", window=window, config=cfg)
        verdicts.append(v)
    m = verdicts[0].metrics[0]
    assert verdicts[0].verdict == "fail" and m.classification == "high", verdicts[0].reason
    assert m.baseline == 0.0 and m.canary is not None and 0.08 < m.canary < 0.12
    assert "Prometheus steps" in str(m.extra["block_choice"])
    for v in verdicts[1:]:  # shifted windows may hold one whole step fewer: same verdict
        assert v.verdict == "fail" and v.metrics[0].baseline == 0.0
    again = analyze(
        conn,
        service="reviews",
        baseline="v1",
        canary="v2",
        window=TimeWindow(START, END),
        config=cfg,
    )
    assert again.to_json() == verdicts[0].to_json()  # the same window: the same answer
    # A version Prometheus has never seen is no data, and says which series are missing.
    v9 = analyze(conn, service="reviews", baseline="v1", canary="v9", window=window, config=cfg)
    assert v9.verdict == "inconclusive"
    assert "canary: no data: Prometheus has no series matching" in v9.metrics[0].reason
