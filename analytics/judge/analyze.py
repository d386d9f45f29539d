"""analyze(): read both sides from the store, judge every metric, roll up the verdict."""

from __future__ import annotations

import duckdb

from analytics.judge.model import CanaryConfig, Verdict
from analytics.window import TimeWindow


def analyze(
    conn: duckdb.DuckDBPyConnection,
    *,
    service: str,
    baseline: str,
    canary: str,
    window: TimeWindow,
    config: CanaryConfig,
    selector: str = "version",
) -> Verdict:
    """Judge `canary` against `baseline` for `service` over `window`."""
    raise NotImplementedError("judge under construction")
