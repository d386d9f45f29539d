"""analyze(): read both sides, judge every metric in the configured mode, roll up the verdict.

The only I/O is reading (DuckDB views, Prometheus, custom SQL); the statistics are in
sequential.py / netflix.py / evaluate.py / scoring.py and take numpy arrays.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import duckdb
import numpy as np

from meshlens.analytics.errors import JudgeInputError
from meshlens.analytics.judge import data as jdata
from meshlens.analytics.judge import evaluate as ev
from meshlens.analytics.judge import seq_metrics as seq
from meshlens.analytics.judge.model import CanaryConfig, MetricResult, MetricSpec, Verdict
from meshlens.analytics.judge.scoring import roll_up
from meshlens.analytics.window import TimeWindow

T = TypeVar("T")
PROMETHEUS_STEP_S = 10.0  # range-query step (= block) for Prometheus series without a block


class _Inputs:
    """Lazy, cached loading of each side's data for one analysis."""

    def __init__(
        self,
        conn: duckdb.DuckDBPyConnection,
        service: str,
        baseline: str,
        canary: str,
        window: TimeWindow,
        selector: str,
        config: CanaryConfig,
        data_dir: Path | None,
    ) -> None:
        self.conn, self.service, self.window, self.selector = conn, service, window, selector
        self.sides = {"baseline": baseline, "canary": canary}
        self.config = config
        self.data_dir = data_dir
        self._requests: dict[tuple[str, str], jdata.RequestData] = {}
        self._prom: object | None = None

    def requests(self, source: str, side: str) -> jdata.RequestData:
        key = (source, side)
        if key not in self._requests:
            if source == "spans":
                self._requests[key] = jdata.load_spans(
                    self.conn, service=self.service, side=self.sides[side], window=self.window
                )
            else:
                self._requests[key] = jdata.load_requests(
                    self.conn,
                    service=self.service,
                    side=self.sides[side],
                    window=self.window,
                    selector=self.selector,
                )
        return self._requests[key]

    def series(self, spec: MetricSpec) -> tuple[jdata.Series, jdata.Series]:
        if spec.source == "sql" or spec.kind == "sql":
            return jdata.load_sql_series(
                self.conn,
                query=spec.query,
                service=self.service,
                baseline=self.sides["baseline"],
                canary=self.sides["canary"],
                window=self.window,
                data_dir=self.data_dir,
            )
        if spec.source == "prometheus" or spec.kind == "promql":
            from meshlens.analytics.judge import prometheus

            b, c = self._per_side(spec, prometheus.side_series)
            return b, c
        return tuple(  # type: ignore[return-value]
            jdata.load_metric_series(
                self.conn,
                service=self.service,
                side=v,
                window=self.window,
                metric_name=spec.metric_name,
            )
            for v in self.sides.values()
        )

    def _prometheus(self, spec: MetricSpec) -> tuple[Any, float]:
        """The Prometheus connection and the caller's step (the query step is
        prometheus.query_step of it: at least a minute, so rate() has two samples)."""
        from meshlens.analytics.judge import prometheus

        if not self.config.prometheus_url:
            raise JudgeInputError(f"metric {spec.name} needs prometheus_url in the config")
        if self._prom is None:
            self._prom = prometheus.PrometheusSource(self.config.prometheus_url)
        step = (
            self.config.step_s
            if self.config.mode == "kayenta"
            else (self.config.block_s or PROMETHEUS_STEP_S)
        )
        return self._prom, step

    def _per_side(self, spec: MetricSpec, query: Callable[..., T]) -> list[T]:
        """`query` (prometheus.side_series / side_counts) for the baseline, then the canary."""
        src, step = self._prometheus(spec)
        return [
            query(
                src,
                spec,
                service=self.service,
                version=v,
                start=self.window.start,
                end=self.window.end,
                step_s=step,
            )
            for v in self.sides.values()
        ]

    def prometheus_error_counts(self, spec: MetricSpec, fr: ev.Frame) -> MetricResult:
        """A Prometheus error-rate metric judged on request and error counts per aligned step
        (each step one block), not on a ratio series: steps weigh by their traffic, and a side
        without any 5xx series has 0 errors, not no data."""
        from meshlens.analytics.judge import blocks, prometheus

        src, step = self._prometheus(spec)
        sides = self._per_side(spec, prometheus.side_counts)
        if sides[0].n == 0 or sides[1].n == 0:
            empty = sides[0] if sides[0].n == 0 else sides[1]
            side = "baseline" if empty is sides[0] else "canary"
            reason = prometheus.side_no_data_reason(
                src,
                spec,
                service=self.service,
                version=self.sides[side],
                start=self.window.start,
                end=self.window.end,
                step_s=step,
            )
            return ev.base_result(
                spec,
                reason=f"{side}: {reason}",
                n_baseline=round(float(sides[0].total.sum())),
                n_canary=round(float(sides[1].total.sum())),
            )
        ts, e_b, n_b, e_c, n_c = prometheus.paired_counts(sides[0], sides[1])
        q_step = prometheus.query_step(step)
        span = float(ts[-1] - ts[0] + q_step) if ts.size else 0.0
        choice = blocks.BlockChoice(
            q_step,
            span,
            float(n_b.sum()) / span if span else 0.0,
            float(n_c.sum()) / span if span else 0.0,
            f"{q_step:g}s Prometheus steps",
        )
        guard = ev.min_guard(spec, round(float(n_b.sum())), round(float(n_c.sum())), fr)
        if guard:
            return ev.base_result(spec, reason=guard)
        counts = blocks.BlockCounts(ts, n_b, e_b, n_c, e_c)
        return seq.error_counts_result(spec, counts, fr, choice)


class _Given:
    """Inputs handed in as arrays (tests, simulations, callers with their own data)."""

    def __init__(
        self,
        baseline: jdata.RequestData,
        canary: jdata.RequestData,
        series: dict[str, tuple[jdata.Series, jdata.Series]],
    ) -> None:
        self._sides = {"baseline": baseline, "canary": canary}
        self._series = series

    def requests(self, source: str, side: str) -> jdata.RequestData:
        return self._sides[side]

    def series(self, spec: MetricSpec) -> tuple[jdata.Series, jdata.Series]:
        if spec.name not in self._series:
            empty = jdata.Series(np.zeros(0), np.zeros(0))
            return empty, empty
        return self._series[spec.name]


def _is_series(spec: MetricSpec) -> bool:
    return spec.kind in ("metric", "sql", "promql") or spec.source in (
        "metrics",
        "sql",
        "prometheus",
    )


def _judge_metric(
    spec: MetricSpec, inputs: _Inputs | _Given, fr: ev.Frame, config: CanaryConfig, seed: int
) -> MetricResult:
    mode = config.mode
    if (
        mode == "sequential"
        and spec.kind == "error_rate"
        and spec.source == "prometheus"
        and not spec.query
        and isinstance(inputs, _Inputs)
    ):
        return inputs.prometheus_error_counts(spec, fr)
    if _is_series(spec):
        sb, sc = inputs.series(spec)
        if mode == "kayenta":
            return ev.kayenta_metric(
                spec,
                ev.series_steps(sc, fr),
                ev.series_steps(sb, fr),
                fr,
                n_baseline=sb.n,
                n_canary=sc.n,
                seed=seed,
            )
        if mode == "flagger":
            return ev.flagger_series(spec, sc, sb.n)
        return seq.seq_series(spec, sb, sc, fr)
    source = spec.source if spec.source in ("requests", "spans") else "requests"
    b = inputs.requests(source, "baseline")
    c = inputs.requests(source, "canary")
    if mode == "flagger":
        return ev.flagger_requests(spec, b, c, fr)
    if mode == "kayenta":
        guard = ev.min_guard(spec, b.n, c.n, fr)
        if spec.kind == "request_share":
            if spec.expected_share is None:
                return ev.kayenta_metric(
                    spec,
                    np.zeros(0),
                    np.zeros(0),
                    fr,
                    n_baseline=b.n,
                    n_canary=c.n,
                    guard="no expected_share configured",
                )
            e = ev.step_series(spec, c, fr) / spec.expected_share
            k = ev.step_series(spec, b, fr) / (1 - spec.expected_share)
        else:
            e, k = ev.step_series(spec, c, fr), ev.step_series(spec, b, fr)
        return ev.kayenta_metric(
            spec, e, k, fr, n_baseline=b.n, n_canary=c.n, guard=guard, seed=seed
        )
    if spec.kind == "error_rate":
        return seq.seq_error_rate(spec, b, c, fr)
    if spec.kind == "latency":
        return seq.seq_latency(spec, b, c, fr)
    if spec.kind == "request_share":
        return seq.seq_request_share(spec, b, c, fr)
    raise JudgeInputError(f"metric {spec.name}: kind {spec.kind} needs a series source")


CRITICAL_ALPHA_SHARE = 0.8


def metric_alphas(config: CanaryConfig) -> list[float]:
    """Each metric's level: the analysis's alpha split (Bonferroni) so that the verdict's
    false-fail rate stays <= alpha. A verdict fails through a critical metric or through
    several non-critical ones together, so critical metrics share 80% of alpha and the others
    20% (an equal split when all metrics are of one kind)."""
    metrics = config.metrics
    crit = [m for m in metrics if m.critical and not m.muted]
    rest = [m for m in metrics if not (m.critical and not m.muted)]
    if not crit or not rest:
        return [config.alpha / max(1, len(metrics))] * len(metrics)
    a_crit = config.alpha * CRITICAL_ALPHA_SHARE / len(crit)
    a_rest = config.alpha * (1 - CRITICAL_ALPHA_SHARE) / len(rest)
    return [a_crit if (m.critical and not m.muted) else a_rest for m in metrics]


def frame_for(config: CanaryConfig, start: float, end: float) -> ev.Frame:
    return ev.Frame(
        start=start,
        end=end,
        block_s=config.block_s,
        step_s=config.step_s,
        alpha=config.alpha,
        min_requests=config.min_requests,
        kayenta_tolerance=config.kayenta_tolerance,
        kayenta_conf_level=config.kayenta_conf_level,
    )


def _with_share(config: CanaryConfig, expected_share: float | None) -> CanaryConfig:
    if expected_share is None:
        return config
    return replace(
        config,
        metrics=tuple(
            replace(m, expected_share=expected_share)
            if m.kind == "request_share" and m.expected_share is None
            else m
            for m in config.metrics
        ),
    )


def _run(
    inputs: _Inputs | _Given, config: CanaryConfig, fr: ev.Frame
) -> tuple[tuple[MetricResult, ...], tuple[str, ...]]:
    alphas = metric_alphas(config)
    results = tuple(
        _judge_metric(spec, inputs, replace(fr, alpha=a), config, seed=i)
        for i, (spec, a) in enumerate(zip(config.metrics, alphas, strict=True))
    )
    warnings: tuple[str, ...] = ()
    if config.mode == "kayenta" and fr.n_steps < 50:
        warnings = (
            f"fewer than 50 data points ({fr.n_steps} steps of {fr.step_s:g}s), "
            "which can reduce confidence",
        )
    return results, warnings


def analyze_data(
    baseline: jdata.RequestData,
    canary: jdata.RequestData,
    *,
    config: CanaryConfig,
    start: float,
    end: float,
    series: dict[str, tuple[jdata.Series, jdata.Series]] | None = None,
    expected_share: float | None = None,
) -> Verdict:
    """analyze() on arrays: both sides' requests (epoch-second times in [start, end)) and,
    for series metrics, (baseline, canary) Series by metric name. No I/O."""
    config = _with_share(config, expected_share)
    fr = frame_for(config, start, end)
    results, warnings = _run(_Given(baseline, canary, series or {}), config, fr)
    r = roll_up(results, config)
    return Verdict(
        verdict=r.verdict,
        score=r.score,
        reason=r.reason,
        metrics=results,
        mode=config.mode,
        group_scores=r.group_scores,
        warnings=warnings,
    )


def analyze(
    conn: duckdb.DuckDBPyConnection,
    *,
    service: str,
    baseline: str,
    canary: str,
    window: TimeWindow,
    config: CanaryConfig,
    selector: str = "version",
    data_dir: Path | None = None,
    expected_share: float | None = None,
) -> Verdict:
    """Judge `canary` against `baseline` for `service` over `window`.

    `expected_share` (e.g. the gate's current canary weight / 100) fills request_share metrics
    that have none. `data_dir` lets custom SQL metrics run in the analytics.sql sandbox.
    Raises JudgeInputError on bad inputs; metrics without data are 'nodata', never errors."""
    if not service.strip():
        raise JudgeInputError("a service is required")
    if not baseline.strip() or not canary.strip():
        raise JudgeInputError("both --baseline and --canary are required")
    if baseline == canary:
        raise JudgeInputError(f"baseline and canary are the same ({baseline!r})")
    jdata._check_selector(selector)
    config = _with_share(config, expected_share)
    fr = frame_for(config, window.start.timestamp(), window.end.timestamp())
    inputs = _Inputs(conn, service, baseline, canary, window, selector, config, data_dir)
    results, warnings = _run(inputs, config, fr)
    r = roll_up(results, config)
    return Verdict(
        verdict=r.verdict,
        score=r.score,
        reason=r.reason,
        metrics=results,
        mode=config.mode,
        service=service,
        baseline=baseline,
        canary=canary,
        window=window.to_json(),
        group_scores=r.group_scores,
        warnings=warnings,
    )
