"""Canary configs: YAML (ours) or a Kayenta canary-config JSON, parsed into CanaryConfig.

YAML form (every key optional except metrics[].name/kind; defaults shown):

    mode: sequential          # sequential | kayenta | flagger
    alpha: 0.01               # sequential: false-fail budget of the whole analysis
    min_requests: 200         # fewer requests on a side -> nodata -> inconclusive
    block: auto               # time block = one observation of the block tests; auto: from
                              # the span and rate of the data (analytics/judge/blocks.py)
    step: 60s                 # kayenta mode: step of the per-step series
    source: requests          # requests | spans | prometheus (default data of the metrics)
    prometheus_url: ""        # for source prometheus / kind promql
    thresholds: {pass: 95, marginal: 75}
    group_weights: {}         # kayenta-style group weights (sum <= 100)
    metrics:
      - name: error-rate
        kind: error_rate      # error_rate | latency | request_share | metric | sql | promql
        error_codes: [5xx]    # 5xx, 4xx, no_response, grpc, or exact codes
        grpc_codes: []        # e.g. [UNAVAILABLE, "4"]
        direction: increase   # increase | decrease | either
        critical: true
        weight: 1
        groups: [errors]
        tolerance: 0.5pp      # how much worse still passes (default per kind, decision.py):
                              # error_rate absolute ("0.5pp" or 0.005), latency relative
                              # ("10%" or 0.1), series relative to the baseline mean
      - {name: p99, kind: latency, quantile: 0.99, critical: true, tolerance: 20%}
      - {name: latency, kind: latency}                   # whole distribution
      - {name: share, kind: request_share, expected_share: 0.1}
      - {name: cpu, kind: metric, metric_name: process.cpu.utilization, tolerance: 0.2}
      - {name: slow, kind: sql, query: "SELECT ..."}     # (side, ts, value) rows
      - {name: q, kind: promql, query: 'sum(rate(x{version="${version}"}[1m]))'}
        # flagger mode: threshold_min / threshold_max; kayenta mode: a `kayenta:` mapping
        # {nan_strategy, outlier_strategy, outlier_factor, effect_measure, allowed_increase,
        #  allowed_decrease, critical_increase, critical_decrease, must_have_data}

Errors are CanaryConfigError(path, field, reason) naming the file and the field.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping
from dataclasses import fields, replace
from pathlib import Path
from typing import Any, Final, cast

import yaml

from meshlens.analytics import yaml_input
from meshlens.analytics.errors import CanaryConfigError
from meshlens.analytics.judge.model import (
    DIRECTIONS,
    METRIC_KINDS,
    MODES,
    SOURCES,
    CanaryConfig,
    Direction,
    KayentaOptions,
    MetricSpec,
    Thresholds,
)
from meshlens.settings import parse_duration

_TOP_KEYS: Final = {
    "mode",
    "alpha",
    "min_requests",
    "block",
    "step",
    "source",
    "prometheus_url",
    "thresholds",
    "group_weights",
    "metrics",
    "name",
    "kayenta_tolerance",
    "kayenta_conf_level",
}
_METRIC_KEYS: Final = {
    "name",
    "kind",
    "direction",
    "critical",
    "weight",
    "groups",
    "muted",
    "source",
    "quantile",
    "error_codes",
    "grpc_codes",
    "tolerance",
    "query",
    "metric_name",
    "expected_share",
    "min_samples",
    "threshold_min",
    "threshold_max",
    "kayenta",
}
_KAYENTA_KEYS: Final = {f.name for f in fields(KayentaOptions)}

# Default direction per kind: errors and latency hurt when they rise, traffic share when it
# falls; a generic metric is judged both ways unless told.
_DEFAULT_DIRECTION: Final = {
    "error_rate": "increase",
    "latency": "increase",
    "request_share": "decrease",
    "metric": "increase",
    "sql": "increase",
    "promql": "increase",
}


def default_config() -> CanaryConfig:
    """The judge's defaults: 5xx error rate and p99 latency (both critical), the latency
    distribution and p50 (not critical)."""
    return CanaryConfig(
        metrics=(
            MetricSpec(
                "error-rate",
                "error_rate",
                critical=True,
                error_codes=("5xx", "no_response", "grpc"),
                groups=("errors",),
            ),
            MetricSpec("latency-p99", "latency", quantile=0.99, critical=True, groups=("latency",)),
            MetricSpec("latency-p50", "latency", quantile=0.5, groups=("latency",)),
            MetricSpec("latency-distribution", "latency", groups=("latency",)),
        )
    )


class _Ctx:
    def __init__(self, path: str) -> None:
        self.path = path

    def fail(self, field: str, reason: str) -> CanaryConfigError:
        return CanaryConfigError(self.path, field, reason)

    def number(
        self,
        raw: Any,
        field: str,
        *,
        lo: float | None = None,
        hi: float | None = None,
        lo_open: bool = False,
    ) -> float:
        if isinstance(raw, bool) or not isinstance(raw, int | float | str):
            raise self.fail(field, f"expected a number, got {raw!r}")
        try:
            v = float(raw)
        except ValueError:
            raise self.fail(field, f"expected a number, got {raw!r}") from None
        if not math.isfinite(v):
            raise self.fail(field, f"expected a finite number, got {raw!r}")
        if lo is not None and (v < lo or (lo_open and v == lo)):
            raise self.fail(field, f"must be {'>' if lo_open else '>='} {lo:g}, got {v:g}")
        if hi is not None and v > hi:
            raise self.fail(field, f"must be <= {hi:g}, got {v:g}")
        return v

    def duration(self, raw: Any, field: str) -> float:
        try:
            v = parse_duration(str(raw))
        except ValueError as exc:
            raise self.fail(field, str(exc)) from None
        if v <= 0:
            raise self.fail(field, f"must be positive, got {raw!r}")
        return v

    def choice(self, raw: Any, field: str, options: tuple[str, ...]) -> str:
        if raw not in options:
            raise self.fail(field, f"{raw!r} is not one of {', '.join(options)}")
        return str(raw)

    def boolean(self, raw: Any, field: str) -> bool:
        if not isinstance(raw, bool):
            raise self.fail(field, f"expected true or false, got {raw!r}")
        return raw

    def strings(self, raw: Any, field: str) -> tuple[str, ...]:
        if isinstance(raw, str | int):
            return (str(raw),)
        if not isinstance(raw, list) or not all(isinstance(x, str | int) for x in raw):
            raise self.fail(field, f"expected a list of strings, got {raw!r}")
        return tuple(str(x) for x in raw)

    def mapping(self, raw: Any, field: str) -> Mapping[str, Any]:
        if not isinstance(raw, Mapping):
            raise self.fail(field, f"expected a mapping, got {type(raw).__name__}")
        return raw

    def unknown(self, data: Mapping[str, Any], allowed: set[str], field: str) -> None:
        extra = sorted(set(data) - allowed)
        if extra:
            where = f"{field}.{extra[0]}" if field else str(extra[0])
            raise self.fail(where, f"unknown key (known: {', '.join(sorted(allowed))})")


def _kayenta_options(ctx: _Ctx, raw: Any, field: str) -> KayentaOptions:
    data = ctx.mapping(raw, field)
    ctx.unknown(data, _KAYENTA_KEYS, field)
    opts = KayentaOptions()
    kw: dict[str, Any] = {}
    for key, value in data.items():
        f = f"{field}.{key}"
        if key == "nan_strategy":
            kw[key] = ctx.choice(value, f, ("remove", "replace"))
        elif key == "outlier_strategy":
            kw[key] = ctx.choice(value, f, ("keep", "remove"))
        elif key == "effect_measure":
            kw[key] = ctx.choice(value, f, ("meanRatio", "cles"))
        elif key == "must_have_data":
            kw[key] = ctx.boolean(value, f)
        elif key == "outlier_factor":
            kw[key] = ctx.number(value, f, lo=0.0, lo_open=True)
        else:
            kw[key] = None if value is None else ctx.number(value, f, lo=0.0)
    return replace(opts, **kw)


def _metric(ctx: _Ctx, raw: Any, i: int, default_source: str) -> MetricSpec:
    field = f"metrics[{i}]"
    data = ctx.mapping(raw, field)
    ctx.unknown(data, _METRIC_KEYS, field)
    if "name" not in data or not str(data["name"]).strip():
        raise ctx.fail(f"{field}.name", "every metric needs a name")
    if "kind" not in data:
        raise ctx.fail(f"{field}.kind", f"missing; choose one of {', '.join(METRIC_KINDS)}")
    kind = ctx.choice(data["kind"], f"{field}.kind", METRIC_KINDS)
    kw: dict[str, Any] = {
        "name": str(data["name"]),
        "kind": kind,
        "direction": _DEFAULT_DIRECTION[kind],
    }
    for key, value in data.items():
        f = f"{field}.{key}"
        if key in ("name", "kind"):
            continue
        if key == "direction":
            kw[key] = ctx.choice(value, f, DIRECTIONS)
        elif key in ("critical", "muted"):
            kw[key] = ctx.boolean(value, f)
        elif key == "weight":
            kw[key] = ctx.number(value, f, lo=0.0)
        elif key in ("groups", "error_codes", "grpc_codes"):
            kw[key] = ctx.strings(value, f)
        elif key == "source":
            kw[key] = ctx.choice(value, f, SOURCES)
        elif key == "quantile":
            kw[key] = None if value is None else ctx.number(value, f, lo=0.0, hi=1.0, lo_open=True)
            if kw[key] == 1.0:
                raise ctx.fail(f, "must be below 1 (use 0.99 or 0.999)")
        elif key == "tolerance":
            kw[key] = _tolerance(ctx, value, f, kind)
        elif key in ("query", "metric_name"):
            kw[key] = str(value)
        elif key == "expected_share":
            kw[key] = ctx.number(value, f, lo=0.0, hi=1.0, lo_open=True)
        elif key == "min_samples":
            kw[key] = int(ctx.number(value, f, lo=0.0))
        elif key in ("threshold_min", "threshold_max"):
            kw[key] = None if value is None else ctx.number(value, f)
        elif key == "kayenta":
            kw[key] = _kayenta_options(ctx, value, f)
    if kind in ("sql", "promql") and not kw.get("query"):
        raise ctx.fail(f"{field}.query", f"a {kind} metric needs a query")
    if kind == "metric" and not kw.get("metric_name"):
        raise ctx.fail(f"{field}.metric_name", "a metric-kind metric needs metric_name")
    for code in kw.get("error_codes", ()):
        c = code.lower()
        if c not in ("5xx", "4xx", "no_response", "grpc", "0") and not (
            len(c) == 3 and (c.isdigit() or (c[0].isdigit() and c.endswith("xx")))
        ):
            raise ctx.fail(
                f"{field}.error_codes",
                f"{code!r} is not 5xx, 4xx, no_response, grpc, NXX or a 3-digit code",
            )
    if "source" not in kw:
        kw["source"] = {"metric": "metrics", "sql": "sql", "promql": "prometheus"}.get(
            kind, default_source
        )
    return MetricSpec(**kw)


def _tolerance(ctx: _Ctx, raw: Any, field: str, kind: str) -> float:
    """A tolerance: a number (a fraction: 0.005, 0.1), "N%" (relative kinds) or "Npp"
    (percentage points: error rates)."""
    text = str(raw).strip().lower() if isinstance(raw, str) else None
    if text is None:
        return ctx.number(raw, field, lo=0.0)
    for suffix in ("pp", "%"):
        if text.endswith(suffix):
            if suffix == "pp" and kind != "error_rate":
                raise ctx.fail(field, f"{raw!r}: percentage points are for error_rate metrics")
            if suffix == "%" and kind == "error_rate":
                raise ctx.fail(
                    field, f"{raw!r}: an error-rate tolerance is absolute: write e.g. 0.5pp"
                )
            return ctx.number(text[: -len(suffix)].strip(), field, lo=0.0) / 100.0
    return ctx.number(raw, field, lo=0.0)


def parse_config(data: Any, path: str = "<config>") -> CanaryConfig:
    """A YAML/JSON document (already parsed) -> CanaryConfig. Detects Kayenta canary configs."""
    ctx = _Ctx(path)
    if data is None:
        return default_config()
    data = ctx.mapping(data, "")
    if is_kayenta_config(data):
        return from_kayenta(data, path)
    ctx.unknown(data, _TOP_KEYS, "")
    kw: dict[str, Any] = {}
    if "mode" in data:
        kw["mode"] = ctx.choice(data["mode"], "mode", MODES)
    if "alpha" in data:
        kw["alpha"] = ctx.number(data["alpha"], "alpha", lo=0.0, hi=0.5, lo_open=True)
    if "min_requests" in data:
        kw["min_requests"] = int(ctx.number(data["min_requests"], "min_requests", lo=1))
    if "block" in data and str(data["block"]).strip().lower() not in ("auto", "none"):
        kw["block_s"] = ctx.duration(data["block"], "block")
    if "step" in data:
        kw["step_s"] = ctx.duration(data["step"], "step")
    if "source" in data:
        kw["source"] = ctx.choice(data["source"], "source", ("requests", "spans", "prometheus"))
    if "prometheus_url" in data:
        kw["prometheus_url"] = str(data["prometheus_url"])
    if "name" in data:
        kw["name"] = str(data["name"])
    for key in ("kayenta_tolerance",):
        if key in data:
            kw[key] = ctx.number(data[key], key, lo=0.0)
    if "kayenta_conf_level" in data:
        kw["kayenta_conf_level"] = ctx.number(
            data["kayenta_conf_level"], "kayenta_conf_level", lo=0.0, hi=1.0, lo_open=True
        )
    if "thresholds" in data:
        th = ctx.mapping(data["thresholds"], "thresholds")
        ctx.unknown(th, {"pass", "marginal"}, "thresholds")
        p = ctx.number(th.get("pass", 95.0), "thresholds.pass", lo=0.0, hi=100.0)
        m = ctx.number(th.get("marginal", 75.0), "thresholds.marginal", lo=0.0, hi=100.0)
        if m > p:
            raise ctx.fail("thresholds.marginal", f"{m:g} is above thresholds.pass {p:g}")
        kw["thresholds"] = Thresholds(p, m)
    if "group_weights" in data:
        kw["group_weights"] = _group_weights(ctx, data["group_weights"], "group_weights")
    source = kw.get("source", "requests")
    if "metrics" in data:
        raw = data["metrics"]
        if not isinstance(raw, list) or not raw:
            raise ctx.fail("metrics", "expected a non-empty list of metrics")
        metrics = tuple(_metric(ctx, m, i, source) for i, m in enumerate(raw))
    else:
        metrics = tuple(replace(m, source=m.source or source) for m in default_config().metrics)
    names = [m.name for m in metrics]
    dup = next((n for n in names if names.count(n) > 1), None)
    if dup is not None:
        raise ctx.fail("metrics", f"metric name {dup!r} is used twice")
    if (
        kw.get("mode") != "kayenta"
        and any(m.kind == "promql" for m in metrics)
        and not kw.get("prometheus_url")
    ) or (source == "prometheus" and not kw.get("prometheus_url")):
        raise ctx.fail("prometheus_url", "needed by promql metrics / source prometheus")
    return CanaryConfig(metrics=metrics, **kw)


def _group_weights(ctx: _Ctx, raw: Any, field: str) -> dict[str, float]:
    gw = ctx.mapping(raw, field)
    out = {str(k): ctx.number(v, f"{field}.{k}", lo=0.0) for k, v in gw.items()}
    if sum(out.values()) > 100.0 + 1e-9:
        raise ctx.fail(field, f"weights sum to {sum(out.values()):g}, more than 100")
    return out


def _url_fields(data: Any, path: str = "") -> Iterator[tuple[str, str]]:
    """(field path, value) of every URL-like field (a key mentioning url or endpoint)."""
    if isinstance(data, Mapping):
        for k, v in data.items():
            sub = f"{path}.{k}" if path else str(k)
            low = str(k).lower()
            if ("url" in low or "endpoint" in low) and not isinstance(v, Mapping | list):
                yield sub, str(v)
            else:
                yield from _url_fields(v, sub)
    elif isinstance(data, list):
        for i, v in enumerate(data):
            yield from _url_fields(v, f"{path}[{i}]")


def parse_request_config(data: Any, prometheus_url: str, path: str) -> CanaryConfig:
    """A config sent over the API: it may not make the collector contact a URL the operator
    did not configure. A URL-like field must equal the operator's Prometheus URL (`prometheus_url`,
    '' when none); without one, the config uses the operator's."""
    allowed = prometheus_url.rstrip("/")
    for field, value in _url_fields(data):
        if not allowed or value.rstrip("/") != allowed:
            raise CanaryConfigError(
                path,
                field,
                "an API request cannot choose a URL; leave it out to use the Prometheus the "
                "operator configured (--canary-prometheus-url)"
                + ("" if allowed else ", which is not set"),
            )
    if allowed and isinstance(data, Mapping) and not is_kayenta_config(data):
        data = {**data, "prometheus_url": allowed}
    config = parse_config(data, path)
    return replace(config, prometheus_url=allowed) if allowed else config


def load_config(path: str | Path) -> CanaryConfig:
    """Read a YAML canary config or a Kayenta canary-config JSON file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise CanaryConfigError(str(p), "", f"cannot read: {exc.strerror or exc}") from None
    try:
        data = json.loads(text) if p.suffix == ".json" else yaml_input.load(text)
    except (yaml.YAMLError, ValueError) as exc:
        raise CanaryConfigError(
            str(p), "", f"not valid {'JSON' if p.suffix == '.json' else 'YAML'}: {exc}"
        ) from None
    return parse_config(data, str(p))


# --- Kayenta canary-config import ---------------------------------------------------------


def is_kayenta_config(data: Mapping[str, Any]) -> bool:
    if "judge" in data or "classifier" in data:
        return True
    metrics = data.get("metrics")
    return isinstance(metrics, list) and any(
        isinstance(m, Mapping) and "analysisConfigurations" in m for m in metrics
    )


def _guess_kind(name: str, query: Mapping[str, Any]) -> dict[str, Any]:
    """Map a Kayenta metric onto request-level data: `query.type: meshlens` says it exactly;
    otherwise the name decides (error/5xx/success -> error_rate, latency/duration -> latency,
    pNN -> that quantile); a Prometheus query stays PromQL."""
    if query.get("type") == "meshlens":
        kw: dict[str, Any] = {"kind": query.get("kind", "error_rate")}
        if "quantile" in query:
            kw["quantile"] = float(query["quantile"])
        for key in ("metric_name", "query"):
            if key in query:
                kw[key] = str(query[key])
        if "error_codes" in query:
            kw["error_codes"] = tuple(str(c) for c in query["error_codes"])
        return kw
    low = (name + " " + str(query.get("metricName", ""))).lower()
    if any(w in low for w in ("error", "5xx", "success", "fail")):
        return {"kind": "error_rate", "error_codes": ("5xx", "no_response", "grpc")}
    if any(w in low for w in ("latency", "duration", "response_time", "response time")):
        for q, tag in ((0.999, "p999"), (0.99, "p99"), (0.95, "p95"), (0.9, "p90"), (0.5, "p50")):
            if tag in low.replace(".", ""):
                return {"kind": "latency", "quantile": q}
        return {"kind": "latency", "quantile": None}
    if query.get("type") == "prometheus":
        promql = query.get("customInlineTemplate") or query.get("metricName") or ""
        return {"kind": "promql", "query": str(promql).removeprefix("PromQL:")}
    return {"kind": "sql", "query": str(query.get("query", ""))}


def from_kayenta(data: Mapping[str, Any], path: str = "<kayenta>") -> CanaryConfig:
    """A Kayenta canary config (docs/canary-config.md) -> CanaryConfig in kayenta mode."""
    ctx = _Ctx(path)
    raw_metrics = data.get("metrics")
    if not isinstance(raw_metrics, list) or not raw_metrics:
        raise ctx.fail("metrics", "a Kayenta canary config needs a non-empty metrics list")
    classifier = ctx.mapping(data.get("classifier") or {}, "classifier")
    metrics = []
    for i, m in enumerate(raw_metrics):
        field = f"metrics[{i}]"
        m = ctx.mapping(m, field)
        name = str(m.get("name") or "").strip()
        if not name:
            raise ctx.fail(f"{field}.name", "every metric needs a name")
        query = ctx.mapping(m.get("query") or {}, f"{field}.query")
        canary = ctx.mapping(
            (m.get("analysisConfigurations") or {}).get("canary") or {},
            f"{field}.analysisConfigurations.canary",
        )
        af = f"{field}.analysisConfigurations.canary"
        direction = ctx.choice(canary.get("direction", "either"), f"{af}.direction", DIRECTIONS)
        nan = str(canary.get("nanStrategy", "remove"))
        nan = "remove" if nan in ("none", "") else nan
        nan = ctx.choice(nan, f"{af}.nanStrategy", ("remove", "replace"))
        outliers = ctx.mapping(canary.get("outliers") or {}, f"{af}.outliers")
        strategy = str(outliers.get("strategy", "keep"))
        strategy = "keep" if strategy in ("none", "") else strategy
        strategy = ctx.choice(strategy, f"{af}.outliers.strategy", ("keep", "remove"))
        factor = ctx.number(
            outliers.get("outlierFactor", 3.0), f"{af}.outliers.outlierFactor", lo=0.0, lo_open=True
        )
        eff = ctx.mapping(canary.get("effectSize") or {}, f"{af}.effectSize")
        measure = ctx.choice(
            eff.get("measure", "meanRatio"), f"{af}.effectSize.measure", ("meanRatio", "cles")
        )

        def opt(key: str, eff: Mapping[str, Any] = eff, af: str = af) -> float | None:
            return None if eff.get(key) is None else ctx.number(eff[key], f"{af}.effectSize.{key}")

        options = KayentaOptions(
            nan_strategy=nan,
            outlier_strategy=strategy,
            outlier_factor=factor,
            effect_measure=measure,
            allowed_increase=opt("allowedIncrease"),
            allowed_decrease=opt("allowedDecrease"),
            critical_increase=opt("criticalIncrease"),
            critical_decrease=opt("criticalDecrease"),
            must_have_data=bool(canary.get("mustHaveData", False)),
        )
        kind_kw = _guess_kind(name, query)
        if kind_kw["kind"] not in METRIC_KINDS:
            raise ctx.fail(
                f"{field}.query.kind",
                f"{kind_kw['kind']!r} is not one of {', '.join(METRIC_KINDS)}",
            )
        groups = tuple(str(g) for g in (m.get("groups") or ()))
        metrics.append(
            MetricSpec(
                name=name,
                direction=cast(Direction, direction),
                critical=bool(canary.get("critical", False)),
                muted=bool(canary.get("muted", False)),
                groups=groups,
                kayenta=options,
                source={"promql": "prometheus", "sql": "sql", "metric": "metrics"}.get(
                    kind_kw["kind"], "requests"
                ),
                **kind_kw,
            )
        )
    kw: dict[str, Any] = {"mode": "kayenta", "name": str(data.get("name") or "kayenta")}
    if classifier.get("groupWeights"):
        kw["group_weights"] = _group_weights(
            ctx, classifier["groupWeights"], "classifier.groupWeights"
        )
    th = classifier.get("scoreThresholds")
    if th:
        th = ctx.mapping(th, "classifier.scoreThresholds")
        kw["thresholds"] = Thresholds(
            ctx.number(th.get("pass", 95.0), "classifier.scoreThresholds.pass", lo=0, hi=100),
            ctx.number(
                th.get("marginal", 75.0), "classifier.scoreThresholds.marginal", lo=0, hi=100
            ),
        )
    return CanaryConfig(metrics=tuple(metrics), **kw)
