"""Per-side time series from Prometheus (Istio's standard metrics or custom PromQL).

Queries are templates: ${service}, ${version} (the side), ${namespace}, ${interval} are
substituted. Built-ins for source=prometheus follow Istio's metric names (and Flagger's
definitions), one side at a time:

  error_rate  sum(rate(istio_requests_total{reporter="destination",
                destination_service_name="${service}",destination_version="${version}",
                response_code=~"5.."}[${interval}])) / sum(rate(istio_requests_total{...}[...]))
  latency     histogram_quantile(q, sum(rate(istio_request_duration_milliseconds_bucket{...}
                [${interval}])) by (le))
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final

import numpy as np

from analytics.errors import PrometheusError
from analytics.judge.data import Series
from analytics.judge.model import MetricSpec

_SEL: Final = (
    'reporter="destination",destination_service_name="${service}",destination_version="${version}"'
)
ERROR_RATE_QUERY: Final = (
    f'sum(rate(istio_requests_total{{{_SEL},response_code=~"5.."}}[${{interval}}])) / '
    f"sum(rate(istio_requests_total{{{_SEL}}}[${{interval}}]))"
)
LATENCY_QUERY: Final = (
    "histogram_quantile(${quantile}, sum(rate(istio_request_duration_milliseconds_bucket"
    f"{{{_SEL}}}[${{interval}}])) by (le))"
)


def render(template: str, values: dict[str, str]) -> str:
    out = template
    for k, v in values.items():
        out = out.replace("${" + k + "}", v)
    return out


def query_for(spec: MetricSpec) -> str:
    if spec.kind == "promql" or spec.query:
        return spec.query
    if spec.kind == "error_rate":
        return ERROR_RATE_QUERY
    if spec.kind == "latency":
        return LATENCY_QUERY
    raise PrometheusError("-", f"no built-in Prometheus query for a {spec.kind} metric")


class PrometheusSource:
    """A prometheus-api-client connection answering range queries as Series."""

    def __init__(self, url: str, *, timeout_s: float = 30.0) -> None:
        from prometheus_api_client import PrometheusConnect

        self.url = url
        self._prom = PrometheusConnect(url=url, disable_ssl=True)
        self._timeout = timeout_s

    def series(self, query: str, start: datetime, end: datetime, step_s: float) -> Series:
        try:
            result: list[dict[str, Any]] = self._prom.custom_query_range(
                query,
                start_time=start,
                end_time=end,
                step=f"{max(step_s, 1.0):g}s",
                params={"timeout": f"{self._timeout:g}s"},
            )
        except Exception as exc:  # the client raises several unrelated types
            raise PrometheusError(self.url, f"range query failed: {exc}") from None
        points: dict[float, float] = {}
        for item in result or []:
            for ts, value in item.get("values", []):
                v = float(value)
                if np.isfinite(v):  # several series (e.g. per pod) are summed per timestamp
                    points[float(ts)] = points.get(float(ts), 0.0) + v
        ts_sorted = sorted(points)
        return Series(np.array(ts_sorted, float), np.array([points[t] for t in ts_sorted]))


def side_series(
    source: PrometheusSource,
    spec: MetricSpec,
    *,
    service: str,
    version: str,
    start: datetime,
    end: datetime,
    step_s: float,
) -> Series:
    interval = f"{max(int(step_s), 15)}s"
    q = render(
        query_for(spec),
        {
            "service": service,
            "version": version,
            "interval": interval,
            "quantile": f"{spec.quantile if spec.quantile is not None else 0.99:g}",
        },
    )
    return source.series(q, start, end, step_s)
