"""Kayenta RemoteJudge helpers: parse a RemoteJudgeRequest, judge it with the NetflixACAJudge
port, answer a CanaryJudgeResult (kayenta-judge RemoteJudge.java / RemoteJudgeRequest.java).

Stock Kayenta with `kayenta.remote-judge.enabled` POSTs {canaryConfig, metricSetPairList,
scoreThresholds} to {baseUrl}/judge; the gate's POST /judge endpoint calls `remote_judge`.
Values arrive as numbers, null (a missing step) or "NaN" (Jackson's NaN).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np

from meshlens.analytics.errors import CanaryConfigError, JudgeInputError
from meshlens.analytics.judge import netflix
from meshlens.analytics.judge.config import from_kayenta
from meshlens.analytics.judge.model import KayentaOptions, MetricSpec, Thresholds

JUDGE_NAME: Final = "NetflixACAJudge-v1.0"


@dataclass(frozen=True, slots=True)
class MetricSetPair:
    name: str
    id: str
    tags: dict[str, Any]
    control: np.ndarray
    experiment: np.ndarray


@dataclass(frozen=True, slots=True)
class RemoteJudgeRequest:
    metrics: dict[str, MetricSpec]
    group_weights: dict[str, float]
    thresholds: Thresholds
    pairs: tuple[MetricSetPair, ...]


def _floats(values: Any, where: str) -> np.ndarray:
    if values is None:
        return np.zeros(0)
    if not isinstance(values, Sequence) or isinstance(values, str | bytes):
        raise JudgeInputError(f"{where}: expected a list of numbers")
    out = []
    for v in values:
        if v is None:
            out.append(math.nan)
            continue
        try:
            out.append(float(v))
        except (TypeError, ValueError):
            raise JudgeInputError(f"{where}: {v!r} is not a number") from None
    return np.asarray(out, float)


def parse_remote_judge_request(body: Mapping[str, Any]) -> RemoteJudgeRequest:
    """Validate a RemoteJudgeRequest body (raises JudgeInputError, also a ValueError)."""
    if not isinstance(body, Mapping):
        raise JudgeInputError("the body must be a JSON object")
    pairs_raw = body.get("metricSetPairList")
    if not isinstance(pairs_raw, list):
        raise JudgeInputError("metricSetPairList: expected a list")
    config_raw = body.get("canaryConfig") or {}
    metrics: dict[str, MetricSpec] = {}
    group_weights: dict[str, float] = {}
    thresholds = Thresholds()
    if config_raw:
        if not isinstance(config_raw, Mapping):
            raise JudgeInputError("canaryConfig: expected an object")
        try:
            cfg = from_kayenta(config_raw, "canaryConfig") if config_raw.get("metrics") else None
        except CanaryConfigError as exc:
            raise JudgeInputError(str(exc)) from None
        if cfg is not None:
            metrics = {m.name: m for m in cfg.metrics}
            group_weights = dict(cfg.group_weights)
            thresholds = cfg.thresholds
    th = body.get("scoreThresholds")
    if th:
        if not isinstance(th, Mapping):
            raise JudgeInputError("scoreThresholds: expected an object")
        try:
            thresholds = Thresholds(
                float(th.get("pass", thresholds.pass_)),
                float(th.get("marginal", thresholds.marginal)),
            )
        except (TypeError, ValueError):
            raise JudgeInputError(f"scoreThresholds: bad numbers {dict(th)!r}") from None
    pairs = []
    for i, p in enumerate(pairs_raw):
        where = f"metricSetPairList[{i}]"
        if not isinstance(p, Mapping) or not p.get("name"):
            raise JudgeInputError(f"{where}: expected an object with a name")
        values = p.get("values") or {}
        if not isinstance(values, Mapping):
            raise JudgeInputError(f"{where}.values: expected an object")
        pairs.append(
            MetricSetPair(
                str(p["name"]),
                str(p.get("id", "")),
                dict(p.get("tags") or {}),
                _floats(values.get("control"), f"{where}.values.control"),
                _floats(values.get("experiment"), f"{where}.values.experiment"),
            )
        )
    return RemoteJudgeRequest(metrics, group_weights, thresholds, tuple(pairs))


def _params(spec: MetricSpec | None) -> netflix.KayentaParams:
    k = spec.kayenta if spec is not None else KayentaOptions()
    return netflix.KayentaParams(
        direction=spec.direction if spec is not None else "either",
        nan_strategy=k.nan_strategy,
        outlier_strategy=k.outlier_strategy,
        outlier_factor=k.outlier_factor,
        effect_measure=k.effect_measure,
        allowed_increase=k.allowed_increase,
        allowed_decrease=k.allowed_decrease,
        critical_increase=k.critical_increase,
        critical_decrease=k.critical_decrease,
        critical=spec.critical if spec is not None else False,
        must_have_data=k.must_have_data,
    )


def _stats(a: np.ndarray) -> dict[str, Any]:
    return {
        k: (v if not isinstance(v, float) or math.isfinite(v) else "NaN")
        for k, v in netflix.summary(a).items()
    }


def judge_request(req: RemoteJudgeRequest) -> dict[str, Any]:
    """The CanaryJudgeResult JSON for a parsed request."""
    results: list[dict[str, Any]] = []
    scored: list[netflix.ScoredMetric] = []
    for i, pair in enumerate(req.pairs):
        spec = req.metrics.get(pair.name)
        r = netflix.classify_metric(pair.experiment, pair.control, _params(spec), seed=i)
        groups = spec.groups if spec is not None else ()
        muted = spec.muted if spec is not None else False
        scored.append(netflix.ScoredMetric(r.label, groups, r.critical, muted))
        results.append(
            {
                "name": pair.name,
                "id": pair.id,
                "tags": pair.tags,
                "classification": r.label,
                "classificationReason": r.reason,
                "groups": list(groups),
                "experimentMetadata": {"stats": _stats(r.experiment)},
                "controlMetadata": {"stats": _stats(r.control)},
                "resultMetadata": {
                    "ratio": r.deviation if math.isfinite(r.deviation) else "NaN",
                    **(
                        {"ciLow": r.ci.ci_low, "ciHigh": r.ci.ci_high, "estimate": r.ci.estimate}
                        if r.ci
                        else {}
                    ),
                },
                "critical": r.critical,
                "muted": muted,
            }
        )
    score = netflix.weighted_sum_score(scored, req.group_weights)
    label = netflix.classify_score(score.score, req.thresholds.pass_, req.thresholds.marginal)
    return {
        "judgeName": JUDGE_NAME,
        "results": results,
        "groupScores": [
            {
                "name": g,
                "score": s,
                "noData": g in score.no_data_groups,
                "classification": "",
                "classificationReason": "",
            }
            for g, s in score.group_scores.items()
        ],
        "score": {
            "score": score.score,
            "classification": label,
            "classificationReason": score.reason,
        },
    }


def remote_judge(body: Mapping[str, Any]) -> dict[str, Any]:
    """RemoteJudgeRequest JSON -> CanaryJudgeResult JSON (raises JudgeInputError/ValueError)."""
    return judge_request(parse_remote_judge_request(body))
