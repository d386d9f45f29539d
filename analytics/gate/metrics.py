"""Prometheus metrics of every rollout, from the persisted gate states (<data_dir>/gate/*.json).

    meshlens_gate_canary_weight{rollout,service}         weight (%) applied to the canary
    meshlens_gate_score{rollout,service}                 score (0-100) of the last verdict
    meshlens_gate_phase{rollout,service,phase}           1 for the current phase, 0 for others
    meshlens_gate_failed_checks{rollout,service}         failed analyses so far
    meshlens_gate_analyses{rollout,service}              analyses so far

`analytics.exporter` registers `metric_collectors(data_dir)` on the collector's /metrics.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from meshlens.analytics.gate.state import PHASES, list_states

LABELS = ["rollout", "service"]


def gate_metric_families(data_dir: Path) -> list[Metric]:
    weight = GaugeMetricFamily(
        "meshlens_gate_canary_weight",
        "Traffic weight (%) the gate applied to the canary",
        labels=LABELS,
    )
    score = GaugeMetricFamily(
        "meshlens_gate_score", "Score (0-100) of the last canary verdict", labels=LABELS
    )
    phase = GaugeMetricFamily(
        "meshlens_gate_phase", "1 for the rollout's current phase", labels=[*LABELS, "phase"]
    )
    failed = GaugeMetricFamily(
        "meshlens_gate_failed_checks", "Failed analyses of the rollout", labels=LABELS
    )
    analyses = GaugeMetricFamily(
        "meshlens_gate_analyses", "Analyses of the rollout so far", labels=LABELS
    )
    for st in list_states(Path(data_dir)):
        key = [st.rollout, st.service]
        weight.add_metric(key, float(st.canary_weight))
        score.add_metric(key, float("nan") if st.last_score is None else float(st.last_score))
        for p in PHASES:
            phase.add_metric([*key, p], 1.0 if p == st.phase else 0.0)
        failed.add_metric(key, float(st.failed_checks))
        analyses.add_metric(key, float(st.analyses))
    return [weight, score, phase, failed, analyses]


class GateCollector:
    """A prometheus_client custom collector (reads the small state files on each scrape)."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir)

    def describe(self) -> Iterator[Metric]:
        return iter(())

    def collect(self) -> Iterator[Metric]:
        yield from gate_metric_families(self.data_dir)


def metric_collectors(data_dir: Path) -> list[Any]:
    """Hook for analytics.exporter.metric_collectors."""
    return [GateCollector(Path(data_dir))]
