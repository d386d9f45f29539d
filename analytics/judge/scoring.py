"""Metric results -> score (0-100) and verdict. Pure.

sequential: score = weighted share of passing metrics among those judged (pass, fail or
inconclusive; or Kayenta's group scheme when group_weights are set). The verdict:
  fail          a critical metric failed (whatever the others show, data or not), or the
                failed metrics alone keep the score below marginal even if every
                inconclusive metric were to pass
  pass          every critical metric passed, less than half the weight has no data, and
                score >= pass
  inconclusive  otherwise: the reason names what holds it (an unsettled or data-less critical
                metric first) and, from the metric, what more traffic would settle it.
Inconclusive and no data never fail a verdict by themselves.

flagger: a critical metric that fails -> fail (score 0); any failing metric is a failed
check -> fail. A critical metric without data, or half the weight without data ->
inconclusive. Otherwise score >= pass -> pass, < marginal -> fail, else inconclusive.

kayenta: Kayenta's WeightedSumScorer and ThresholdScoreClassifier exactly (Pass / Marginal /
Fail -> pass / inconclusive / fail), except that a score zeroed only for missing data is
reported as inconclusive, never fail.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from meshlens.analytics.judge import netflix
from meshlens.analytics.judge.model import CanaryConfig, MetricResult, VerdictLabel


@dataclass(frozen=True, slots=True)
class RollUp:
    verdict: VerdictLabel
    score: float
    reason: str
    group_scores: dict[str, float]


def _names(ms: Sequence[MetricResult]) -> str:
    return ", ".join(m.name for m in ms)


def roll_up(results: Sequence[MetricResult], config: CanaryConfig) -> RollUp:
    if config.mode == "kayenta":
        return _kayenta(results, config)
    if config.mode == "sequential":
        return _sequential(results, config)
    active = [m for m in results if not m.muted]
    if not active:
        return RollUp("inconclusive", 0.0, "no metrics to judge (all muted)", {})
    failed = [m for m in active if m.failed]
    critical_failed = [m for m in failed if m.critical]
    nodata = [m for m in active if m.classification == "nodata"]
    judged = [m for m in active if m.classification != "nodata"]
    group_scores: dict[str, float] = {}
    if config.group_weights:
        ks = netflix.weighted_sum_score(
            [netflix.ScoredMetric(_label(m), m.groups, False) for m in active], config.group_weights
        )
        score, group_scores = ks.score, ks.group_scores
    else:
        wsum = sum(m.weight for m in judged)
        score = (
            100.0 * sum(m.weight for m in judged if m.classification == "pass") / wsum
            if wsum > 0
            else 0.0
        )
    score = round(score, 2)
    if critical_failed:
        first = critical_failed[0]
        return RollUp(
            "fail", 0.0, f"critical metric {first.name} failed: {first.reason}", group_scores
        )
    if config.mode == "flagger" and failed:
        return RollUp(
            "fail",
            score,
            f"{len(failed)} check(s) failed: " + "; ".join(m.reason for m in failed),
            group_scores,
        )
    total_w = sum(m.weight for m in active) or 1.0
    nodata_critical = [m for m in nodata if m.critical]
    if nodata_critical or sum(m.weight for m in nodata) / total_w >= 0.5 or not judged:
        which = nodata_critical[0] if nodata_critical else (nodata[0] if nodata else active[0])
        return RollUp(
            "inconclusive",
            score,
            f"not enough data to judge {which.name}: {which.reason}",
            group_scores,
        )
    th = config.thresholds
    if score >= th.pass_:
        extra = f"; no data for {_names(nodata)}" if nodata else ""
        return RollUp(
            "pass",
            score,
            f"score {score:g} >= {th.pass_:g}: {len(judged)} metric(s) "
            f"judged, {len(failed)} failed{extra}",
            group_scores,
        )
    if score < th.marginal:
        return RollUp(
            "fail",
            score,
            f"score {score:g} < marginal {th.marginal:g}: failed {_names(failed)}",
            group_scores,
        )
    return RollUp(
        "inconclusive",
        score,
        f"marginal score {score:g} (pass at {th.pass_:g}): failed {_names(failed)}",
        group_scores,
    )


_LABEL = {"pass": "Pass", "high": "High", "low": "Low", "nodata": "Nodata", "inconclusive": "High"}


def _label(m: MetricResult, inconclusive: str = "High") -> str:
    """Kayenta's label of a result; an inconclusive metric scores as not passing (or as
    `inconclusive`, to ask what the score could become)."""
    if m.label:
        return m.label
    return inconclusive if m.classification == "inconclusive" else _LABEL[m.classification]


def _score(
    judged: Sequence[MetricResult],
    active: Sequence[MetricResult],
    config: CanaryConfig,
    ok: set[str],
) -> tuple[float, dict[str, float]]:
    """Weighted share of `judged` metrics whose classification is in `ok` (0-100)."""
    if config.group_weights:
        label = "Pass" if "inconclusive" in ok else "High"
        ks = netflix.weighted_sum_score(
            [netflix.ScoredMetric(_label(m, label), m.groups, False) for m in active],
            config.group_weights,
        )
        return ks.score, ks.group_scores
    wsum = sum(m.weight for m in judged)
    if wsum <= 0:
        return 0.0, {}
    return 100.0 * sum(m.weight for m in judged if m.classification in ok) / wsum, {}


def _sequential(results: Sequence[MetricResult], config: CanaryConfig) -> RollUp:
    active = [m for m in results if not m.muted]
    if not active:
        return RollUp("inconclusive", 0.0, "no metrics to judge (all muted)", {})
    failed = [m for m in active if m.failed]
    nodata = [m for m in active if m.classification == "nodata"]
    judged = [m for m in active if m.classification != "nodata"]
    score, group_scores = _score(judged, active, config, {"pass"})
    score = round(score, 2)
    critical_failed = [m for m in failed if m.critical]
    if critical_failed:
        first = critical_failed[0]
        return RollUp(
            "fail", 0.0, f"critical metric {first.name} failed: {first.reason}", group_scores
        )
    th = config.thresholds
    best, _ = _score(judged, active, config, {"pass", "inconclusive"})
    if failed and best < th.marginal:
        return RollUp(
            "fail",
            score,
            f"failed {_names(failed)}: the score cannot reach marginal {th.marginal:g} "
            f"(at most {best:.4g}): {failed[0].reason}",
            group_scores,
        )
    total_w = sum(m.weight for m in active) or 1.0
    holding = [m for m in active if m.critical and m.classification != "pass"]
    if holding:
        first = holding[0]
        what = "has no data" if first.classification == "nodata" else "is not settled"
        return RollUp(
            "inconclusive",
            score,
            f"critical metric {first.name} {what}: {first.reason}",
            group_scores,
        )
    if not judged or sum(m.weight for m in nodata) / total_w >= 0.5:
        which = nodata[0] if nodata else active[0]
        return RollUp(
            "inconclusive",
            score,
            f"not enough data to judge {which.name}: {which.reason}",
            group_scores,
        )
    if score >= th.pass_:
        extra = f"; no data for {_names(nodata)}" if nodata else ""
        return RollUp(
            "pass",
            score,
            f"score {score:g} >= {th.pass_:g}: every critical metric passed, "
            f"{len(judged)} metric(s) judged{extra}",
            group_scores,
        )
    open_ = [m for m in judged if m.classification != "pass"]
    return RollUp(
        "inconclusive",
        score,
        f"score {score:g} < pass {th.pass_:g}: not passed yet {_names(open_)}: {open_[0].reason}",
        group_scores,
    )


def _kayenta(results: Sequence[MetricResult], config: CanaryConfig) -> RollUp:
    scored = [
        netflix.ScoredMetric(
            _label(m), m.groups, bool(m.extra.get("kayenta_critical", False)), m.muted
        )
        for m in results
    ]
    ks = netflix.weighted_sum_score(scored, config.group_weights)
    th = config.thresholds
    label = netflix.classify_score(ks.score, th.pass_, th.marginal)
    active = [m for m in results if not m.muted]
    failed = [m for m in active if m.label in ("High", "Low", "NodataFailMetric")]
    nodata = [m for m in active if m.label in ("Nodata", "Error")]
    real_fail = [m for m in failed if bool(m.extra.get("kayenta_critical"))]
    if (
        ks.reason
        and not real_fail
        and nodata
        and (any(m.critical for m in nodata) or len(nodata) * 2 >= len(active))
    ):
        return RollUp(
            "inconclusive",
            ks.score,
            f"Kayenta score {ks.score:g} ({ks.reason}); "
            f"no data is inconclusive, never a failure: {nodata[0].reason}",
            ks.group_scores,
        )
    text = f"Kayenta score {ks.score:g} ({label}; pass {th.pass_:g}, marginal {th.marginal:g})"
    if ks.reason:
        text += f": {ks.reason}"
    if failed:
        text += f"; High/Low: {_names(failed)}"
    verdict: VerdictLabel = {"Pass": "pass", "Marginal": "inconclusive", "Fail": "fail"}[label]  # type: ignore[assignment]
    return RollUp(verdict, ks.score, text, ks.group_scores)
