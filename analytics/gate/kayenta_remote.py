"""Kayenta's RemoteJudge contract: POST {baseUrl}/judge with {canaryConfig, metricSetPairList,
scoreThresholds} -> a CanaryJudgeResult (kayenta-judge RemoteJudge.java, RemoteJudgeRequest.java).

When the judge package ships `analytics.judge.kayenta.remote_judge`, that is used. Otherwise this
module answers with the NetflixACAJudge port in analytics.judge.netflix (per-metric Mann-Whitney
classification, weighted-sum group scores, pass/marginal thresholds).
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Mapping, Sequence
from typing import Any

from analytics.judge.netflix import (
    KayentaParams,
    ScoredMetric,
    classify_metric,
    classify_score,
    summary,
    weighted_sum_score,
)

JUDGE_NAME = "meshlens-NetflixACAJudge-v1.0"


def _floats(values: Sequence[Any]) -> list[float]:
    # Jackson writes NaN as the string "NaN"; null is a missing step.
    out = []
    for v in values or []:
        try:
            out.append(float(v) if v is not None else math.nan)
        except (TypeError, ValueError):
            out.append(math.nan)
    return out


def _num(x: float) -> float | str:
    return x if math.isfinite(x) else "NaN"


def _params(metric_cfg: Mapping[str, Any]) -> KayentaParams:
    c = (metric_cfg.get("analysisConfigurations") or {}).get("canary") or {}
    outliers = c.get("outliers") or {}
    effect = c.get("effectSize") or {}
    return KayentaParams(
        direction=str(c.get("direction", "either")),
        nan_strategy=str(c.get("nanStrategy", "remove"))
        if c.get("nanStrategy") in ("remove", "replace")
        else "remove",
        outlier_strategy="remove" if outliers.get("strategy") == "remove" else "keep",
        outlier_factor=float(outliers.get("outlierFactor", 3.0)),
        effect_measure=str(effect.get("measure", "meanRatio")),
        allowed_increase=effect.get("allowedIncrease"),
        allowed_decrease=effect.get("allowedDecrease"),
        critical_increase=effect.get("criticalIncrease"),
        critical_decrease=effect.get("criticalDecrease"),
        critical=bool(c.get("critical", False)),
        must_have_data=bool(c.get("mustHaveData", False)),
    )


def _builtin(body: Mapping[str, Any]) -> dict[str, Any]:
    config = body.get("canaryConfig") or {}
    by_name = {m.get("name"): m for m in config.get("metrics") or []}
    classifier = config.get("classifier") or {}
    thresholds = body.get("scoreThresholds") or classifier.get("scoreThresholds") or {}
    pass_t, marginal_t = float(thresholds.get("pass", 95)), float(thresholds.get("marginal", 75))
    results, scored = [], []
    for pair in body["metricSetPairList"]:
        name = pair["name"]
        mcfg = by_name.get(name, {})
        muted = bool(
            ((mcfg.get("analysisConfigurations") or {}).get("canary") or {}).get("muted", False)
        )
        values = pair.get("values") or {}
        r = classify_metric(
            _floats(values.get("experiment", [])), _floats(values.get("control", [])), _params(mcfg)
        )
        groups = tuple(mcfg.get("groups") or ())
        scored.append(ScoredMetric(r.label, groups, r.critical, muted))
        results.append(
            {
                "name": name,
                "id": pair.get("id", ""),
                "tags": pair.get("tags", {}),
                "classification": r.label,
                "classificationReason": r.reason,
                "groups": list(groups),
                "experimentMetadata": {
                    "stats": {k: _num(v) for k, v in summary(r.experiment).items()}
                    if r.experiment.size
                    else {"count": 0}
                },
                "controlMetadata": {
                    "stats": {k: _num(v) for k, v in summary(r.control).items()}
                    if r.control.size
                    else {"count": 0}
                },
                "resultMetadata": {"ratio": _num(r.deviation)},
                "critical": r.critical,
                "muted": muted,
            }
        )
    score = weighted_sum_score(
        scored, {str(k): float(v) for k, v in (classifier.get("groupWeights") or {}).items()}
    )
    label = classify_score(score.score, pass_t, marginal_t)
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
    """A RemoteJudgeRequest -> CanaryJudgeResult (raises KeyError/TypeError/ValueError)."""
    try:
        mod = importlib.import_module("analytics.judge.kayenta")
    except ImportError:
        mod = None
    fn = getattr(mod, "remote_judge", None) if mod is not None else None
    if callable(fn):
        out = fn(dict(body))
        return dict(out)
    return _builtin(body)
