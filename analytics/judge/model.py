"""Values of the canary judge: per-metric results and the verdict (frozen, JSON-ready).

Classifications follow Kayenta's labels in lower case: "pass", "high" (canary worse upward),
"low" (canary worse downward), "nodata" (not enough data: never a failure by itself), plus
"inconclusive" (sequential mode: judged, but the interval still allows a regression beyond the
metric's tolerance; see analytics/judge/decision.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Final, Literal

Classification = Literal["pass", "high", "low", "nodata", "inconclusive"]
VerdictLabel = Literal["pass", "fail", "inconclusive"]
Direction = Literal["increase", "decrease", "either"]
Mode = Literal["sequential", "kayenta", "flagger"]

CLASSIFICATIONS: Final = ("pass", "high", "low", "nodata", "inconclusive")
VERDICTS: Final = ("pass", "fail", "inconclusive")
DIRECTIONS: Final = ("increase", "decrease", "either")
MODES: Final = ("sequential", "kayenta", "flagger")

# Exit codes of `meshlens canary analyze` (2 is bad usage/config).
EXIT_CODES: Final = {"pass": 0, "fail": 1, "inconclusive": 3}


def _num(x: float | None) -> float | None:
    """JSON has no NaN/Infinity: non-finite numbers become null."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


@dataclass(frozen=True, slots=True)
class MetricResult:
    """One metric's judgement.

    `baseline`/`canary` are the metric's values on each side in the metric's unit (error ratio,
    ms, ...). `effect` is the canary-vs-baseline effect the test is about (see `effect_unit`),
    `ci` its confidence interval (anytime-valid in sequential mode), `statistic` names the test.
    """

    name: str
    classification: Classification
    baseline: float | None
    canary: float | None
    effect: float | None
    ci: tuple[float | None, float | None] | None
    statistic: str
    p_value: float | None
    e_value: float | None
    n_baseline: int
    n_canary: int
    reason: str
    critical: bool
    weight: float
    direction: Direction
    kind: str = ""
    unit: str = ""
    effect_unit: str = ""
    groups: tuple[str, ...] = ()
    muted: bool = False
    # Kayenta's raw label (Pass/High/Low/Nodata/NodataFailMetric/Error) in kayenta mode.
    label: str = ""
    extra: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)

    @property
    def failed(self) -> bool:
        return self.classification in ("high", "low")

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "classification": self.classification,
            "baseline": _num(self.baseline),
            "canary": _num(self.canary),
            "unit": self.unit,
            "effect": _num(self.effect),
            "effect_unit": self.effect_unit,
            "ci": None if self.ci is None else [_num(self.ci[0]), _num(self.ci[1])],
            "statistic": self.statistic,
            "p_value": _num(self.p_value),
            "e_value": _num(self.e_value),
            "n_baseline": int(self.n_baseline),
            "n_canary": int(self.n_canary),
            "reason": self.reason,
            "critical": self.critical,
            "weight": self.weight,
            "direction": self.direction,
            "groups": list(self.groups),
            "muted": self.muted,
            **({"label": self.label} if self.label else {}),
            **({"details": _jsonable(self.extra)} if self.extra else {}),
        }


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, float):
        return _num(obj)
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    return obj


@dataclass(frozen=True, slots=True)
class Verdict:
    """The judgement of one canary analysis. `score` is 0-100 (Kayenta style)."""

    verdict: VerdictLabel
    score: float
    reason: str
    metrics: tuple[MetricResult, ...]
    mode: str
    service: str = ""
    baseline: str = ""
    canary: str = ""
    window: dict[str, Any] | None = None
    group_scores: dict[str, float] = field(default_factory=dict, hash=False, compare=False)
    warnings: tuple[str, ...] = ()

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.verdict]

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "verdict": self.verdict,
            "score": round(float(self.score), 2),
            "reason": self.reason,
            "mode": self.mode,
            "service": self.service,
            "baseline": self.baseline,
            "canary": self.canary,
            "metrics": [m.to_json() for m in self.metrics],
        }
        if self.window is not None:
            out["window"] = self.window
        if self.group_scores:
            out["group_scores"] = {k: round(v, 2) for k, v in self.group_scores.items()}
        if self.warnings:
            out["warnings"] = list(self.warnings)
        return out


# --- configuration ------------------------------------------------------------------------

MetricKind = Literal["error_rate", "latency", "request_share", "metric", "sql", "promql"]
METRIC_KINDS: Final = ("error_rate", "latency", "request_share", "metric", "sql", "promql")
SOURCES: Final = ("requests", "spans", "metrics", "sql", "prometheus")
SELECTORS: Final = ("version", "subset", "workload", "revision")


@dataclass(frozen=True, slots=True)
class KayentaOptions:
    """NetflixACAJudge per-metric options (`analysisConfigurations.canary.*`), Kayenta defaults.

    `None` effect-size bounds mean "the default of the measure" (1.0 meanRatio, 0.5 cles)."""

    nan_strategy: str = "remove"  # remove | replace
    outlier_strategy: str = "keep"  # keep | remove
    outlier_factor: float = 3.0
    effect_measure: str = "meanRatio"  # meanRatio | cles
    allowed_increase: float | None = None
    allowed_decrease: float | None = None
    critical_increase: float | None = None
    critical_decrease: float | None = None
    must_have_data: bool = False


@dataclass(frozen=True, slots=True)
class MetricSpec:
    """One metric to judge.

    kind           error_rate | latency | request_share | metric | sql | promql
    source         requests | spans | metrics | sql | prometheus (default from kind/config)
    direction      which way is worse: increase | decrease | either
    quantile       latency: 0.5, 0.9, 0.99 ...; None = the whole distribution
    error_codes    error_rate: classes counted as errors: "5xx", "4xx", "no_response", "grpc"
                   (any non-OK gRPC status), or exact HTTP codes like "503"
    grpc_codes     error_rate: gRPC statuses counted as errors (e.g. "14", "UNAVAILABLE")
    tolerance      how much worse the canary may be and still pass (None: the kind's default,
                   analytics/judge/decision.py): error_rate absolute (0.005 = +0.5 pp of
                   requests), latency relative (0.1 = 10% slower), series relative to the
                   baseline's mean, request_share relative to the expected share
    query          sql: a SELECT returning (side, ts, value); promql: a query with ${version}
    metric_name    metric: the OTLP metric name in the `metrics` table
    expected_share request_share: the canary's expected share of the two sides' requests
    threshold_min/threshold_max   flagger mode: absolute bounds on the canary's value
    """

    name: str
    kind: MetricKind
    direction: Direction = "increase"
    critical: bool = False
    weight: float = 1.0
    groups: tuple[str, ...] = ()
    muted: bool = False
    source: str = ""
    quantile: float | None = None
    error_codes: tuple[str, ...] = ("5xx",)
    grpc_codes: tuple[str, ...] = ()
    tolerance: float | None = None
    query: str = ""
    metric_name: str = ""
    expected_share: float | None = None
    min_samples: int | None = None
    threshold_min: float | None = None
    threshold_max: float | None = None
    kayenta: KayentaOptions = field(default_factory=KayentaOptions)


@dataclass(frozen=True, slots=True)
class Thresholds:
    """Score thresholds (Kayenta's scoreThresholds): score >= pass -> pass; >= marginal ->
    marginal (inconclusive); below -> fail."""

    pass_: float = 95.0
    marginal: float = 75.0


@dataclass(frozen=True, slots=True)
class CanaryConfig:
    """How to judge. See analytics/judge/config.py for the YAML form and defaults.

    alpha        sequential mode: the false-fail budget of one whole analysis (split over the
                 metrics that can fail), valid however often the analysis is repeated
    min_requests the minimum-sample guard: fewer requests on either side -> nodata (inconclusive)
    block_s      length of the time blocks the sequential tests treat as one observation;
                 None = from the data (analytics/judge/blocks.py)
    step_s       kayenta mode: step of the per-step series built from request-level data
    """

    metrics: tuple[MetricSpec, ...]
    mode: Mode = "sequential"
    thresholds: Thresholds = field(default_factory=Thresholds)
    alpha: float = 0.01
    min_requests: int = 200
    block_s: float | None = None
    step_s: float = 60.0
    source: str = "requests"
    prometheus_url: str = ""
    group_weights: dict[str, float] = field(default_factory=dict, hash=False, compare=False)
    kayenta_tolerance: float = 0.25
    kayenta_conf_level: float = 0.98
    name: str = "default"
