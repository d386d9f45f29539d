"""The Canary page's frames and charts (dashboards/canary_charts.py): outcomes, open intervals,
tolerance lines, colour AND shape per outcome."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd

from meshlens.dashboards import canary_charts as cc

T0 = datetime(2026, 12, 7, 14, 0, tzinfo=UTC)


def _metric(cls: str, effect: float | None, ci: list[float | None] | None) -> dict[str, Any]:
    return {
        "name": "latency",
        "kind": "latency",
        "unit": "ms",
        "classification": cls,
        "effect": effect,
        "ci": ci,
        "direction": "increase",
        "details": {"tolerance": 0.1},
        "effect_unit": "relative change of the p99 (canary/baseline - 1)",
    }


def test_classifications_map_to_the_three_outcomes() -> None:
    assert [cc.metric_outcome(c) for c in ("pass", "high", "low", "inconclusive", "nodata")] == [
        "pass",
        "fail",
        "fail",
        "inconclusive",
        "inconclusive",
    ]


def test_history_keeps_open_bounds_open_and_the_chart_draws_them_to_the_edge() -> None:
    rows = [
        (T0, [_metric("nodata", None, None)]),
        (T0 + timedelta(minutes=1), [_metric("inconclusive", -0.09, [-0.9, None])]),
        (T0 + timedelta(minutes=2), [_metric("high", 0.3, [0.2, 0.4])]),
    ]
    hist = cc.metric_history(rows)
    assert list(hist["outcome"]) == ["inconclusive", "inconclusive", "fail"]
    assert math.isinf(hist["hi"].iloc[1]) and hist["hi"].iloc[1] > 0
    frame, tols, (lo, hi) = cc.effect_frame(hist)
    assert len(frame) == 2  # the analysis without an estimate is not drawn
    assert tols == [10.0]  # +10% (increase metric), on the display scale
    assert frame["hi_d"].iloc[0] == hi  # the open bound reaches the edge
    assert frame["hi_text"].iloc[0] == "open (+inf)"
    assert lo <= -90.0 and hi >= 40.0  # the finite bounds and the tolerance are in view


def test_tolerance_lines_follow_the_direction() -> None:
    assert cc.tolerance_lines(0.1, "increase") == [0.1]
    assert cc.tolerance_lines(0.1, "decrease") == [-0.1]
    assert cc.tolerance_lines(0.1, "either") == [0.1, -0.1]


def test_outcomes_have_their_own_colour_and_shape() -> None:
    hist = cc.metric_history(
        [
            (T0, [_metric("pass", 0.0, [-0.05, 0.05])]),
            (T0 + timedelta(minutes=1), [_metric("inconclusive", 0.05, [-0.1, 0.2])]),
        ]
    )
    spec = json.dumps(cc.effect_chart(hist, "latency").to_dict())
    assert '"range": ["circle", "triangle-up", "cross"]' in spec
    assert '"range": ["#3e8635", "#f0ab00", "#c9190b"]' in spec
    assert "analysis time (UTC)" in spec and "effect (%)" in spec

    verdicts = pd.DataFrame(
        {
            "ts": [T0, T0 + timedelta(minutes=1), T0 + timedelta(minutes=2)],
            "phase": ["progressing"] * 3,
            "canary_weight": [10, 10, 25],
            "verdict": [None, "inconclusive", "pass"],
            "score": [None, 0.0, 100.0],
            "action": ["start", "hold", "advance"],
        }
    )
    weight = cc.weight_chart(verdicts).to_dict()
    text = json.dumps(weight)
    assert '"field": "verdict"' in text and "triangle-up" in text
    # The inconclusive analysis is a verdict point on the weight line, not a score of 0.
    assert {layer["encoding"]["y"]["field"] for layer in weight["layer"]} == {"canary_weight"}


def test_wilson_interval() -> None:
    lo, hi = cc.wilson(0, 100)
    assert lo == 0.0 and 0.03 < hi < 0.04
    lo, hi = cc.wilson(9, 130)
    assert lo < 9 / 130 < hi
