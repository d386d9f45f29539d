"""The "about N more minutes" of an inconclusive analysis (dashboards/canary_eta.py), on the
shapes of metric results the judge writes, with the judge's own rules passed in."""

from __future__ import annotations

from typing import Any

import pytest

from meshlens.dashboards import canary_eta, data


def _estimate(metrics: list[dict[str, Any]], seconds: float | None = 600.0) -> canary_eta.Eta:
    details: dict[str, Any] = {} if seconds is None else {"window": {"seconds": seconds}}
    return canary_eta.estimate(metrics, details, factor=data.more_traffic, side=data.open_bound)


def _interval(effect: float, ci: list[float | None], tol: float, **kw: Any) -> dict[str, Any]:
    return {
        "name": kw.pop("name", "error-rate"),
        "classification": kw.pop("classification", "inconclusive"),
        "effect": effect,
        "ci": ci,
        "direction": kw.pop("direction", "increase"),
        "n_baseline": 3000,
        "n_canary": 300,
        "details": {"tolerance": tol},
        "reason": "error rate not settled",
        **kw,
    }


def test_interval_wider_than_the_tolerance_uses_the_judges_traffic_factor() -> None:
    eta = _estimate([_interval(0.002, [-0.004, 0.009], 0.005)])
    # ((0.009 - 0.002) / (0.005 - 0.002))^2 = 5.44x the traffic of the 600 s window.
    assert eta.minutes == pytest.approx((49 / 9 - 1) * 10)
    assert eta.headline() == "about 45 minutes more until every metric can settle"
    assert "5.44x" in eta.metrics[0].why and "30/min" in eta.metrics[0].why


def test_decrease_metric_uses_its_lower_bound() -> None:
    eta = _estimate([_interval(-0.01, [-0.3, 0.05], 0.1, direction="decrease")])
    # lower bound -0.3, estimate -0.01, tolerance 0.1: ((0.3 - 0.01) / (0.1 - 0.01))^2
    assert eta.minutes == pytest.approx(((0.29 / 0.09) ** 2 - 1) * 10)
    assert "lower bound" in eta.metrics[0].why


def test_estimate_beyond_the_tolerance_is_not_estimated() -> None:
    # The demo's error rate: +4.4 pp with a 2 pp tolerance.
    eta = _estimate([_interval(0.044, [-0.16, 0.24], 0.02)])
    assert eta.minutes is None
    assert "beyond the tolerance" in eta.metrics[0].why
    assert "cannot be estimated" in eta.headline()


def test_open_bound_is_not_estimated() -> None:
    eta = _estimate([_interval(-0.09, [-0.9, None], 1.0, name="latency")])
    assert eta.minutes is None and "still open" in eta.metrics[0].why


def test_minimum_sample_guard_waits_for_the_slower_side() -> None:
    nodata = {
        "name": "error-rate",
        "classification": "nodata",
        "n_baseline": 121,
        "n_canary": 10,
        "reason": "not enough traffic to judge: baseline 121 and canary 10 requests, "
        "100 needed on each side",
    }
    eta = _estimate([nodata], seconds=5.0)
    # The canary gets 2/s and needs 90 more: 45 s. The baseline has enough.
    assert eta.minutes == pytest.approx(0.75)
    assert eta.headline() == "less than a minute more until every metric can settle"


def test_missing_blocks() -> None:
    nodata = {
        "name": "latency",
        "classification": "nodata",
        "reason": "not enough 10s blocks with traffic on both sides: 3 of 6 needed (why)",
    }
    assert _estimate([nodata]).minutes == pytest.approx(0.5)


def test_slowest_metric_decides_and_settled_or_muted_metrics_do_not_count() -> None:
    metrics = [
        _interval(0.002, [-0.004, 0.009], 0.005),
        _interval(0.0, [-0.05, 0.2], 0.1, name="latency"),  # (0.2 / 0.1)^2 = 4x -> 30 min
        _interval(0.0, [-0.05, 0.05], 0.1, name="ok", classification="pass"),
        _interval(0.0, [-0.05, 9.0], 0.1, name="muted", muted=True),
    ]
    eta = _estimate(metrics)
    assert [m.metric for m in eta.metrics] == ["error-rate", "latency"]
    assert eta.minutes == pytest.approx((49 / 9 - 1) * 10)


def test_no_window_or_no_metrics_is_said() -> None:
    assert _estimate([_interval(0.002, [-0.004, 0.009], 0.005)], seconds=None).minutes is None
    empty = _estimate([])
    assert empty.minutes is None and "cannot be estimated" in empty.headline()
