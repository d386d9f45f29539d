"""The graph and golden signals from Istio's standard Prometheus metrics.

For clusters whose sidecars already feed Istio's Prometheus: `istio_requests_total`,
`istio_request_duration_milliseconds_bucket|_sum|_count`, `istio_request_bytes_sum`,
`istio_response_bytes_sum`, `istio_tcp_connections_opened_total`, `istio_tcp_sent_bytes_total`,
`istio_tcp_received_bytes_total`, read through prometheus-api-client with instant queries at
the window's end over a range of the window's length (`increase(...[<window>s])`), so the
window is explicit here too.

Counts are Prometheus' `increase()` (extrapolated, so not always integers: rounded). The
reporters are de-duplicated like Kiali (per series the destination's report when there is one,
else the source's) and latency quantiles come from the merged histogram buckets of the
destination's reports (source's when an edge has none), interpolated like histogram_quantile.
TCP: requests = connections opened, request bytes = bytes the destination received
(istio_tcp_received_bytes_total), response bytes = bytes it sent.
Signals use destination-reported series only (Istio's "server" dashboards do the same).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import polars as pl

from meshlens.analytics.errors import AnalyticsError, PrometheusError
from meshlens.analytics.graph import (
    LEVELS,
    UNKNOWN,
    EdgeStats,
    Graph,
    NodeRef,
    Series,
    build_graph,
)
from meshlens.analytics.health import HealthConfig, annotate_graph, default_health_config
from meshlens.analytics.signals import DIMENSIONS, QUANTILES
from meshlens.analytics.window import TimeWindow

SERIES_LABELS: Final = (
    "reporter",
    "source_workload_namespace",
    "source_workload",
    "source_canonical_service",
    "source_canonical_revision",
    "source_principal",
    "destination_service_namespace",
    "destination_service",
    "destination_service_name",
    "destination_workload_namespace",
    "destination_workload",
    "destination_canonical_service",
    "destination_canonical_revision",
    "destination_principal",
    "request_protocol",
    "response_code",
    "grpc_response_status",
    "response_flags",
    "connection_security_policy",
)
TCP_LABELS: Final = tuple(
    x
    for x in SERIES_LABELS
    if x not in ("request_protocol", "response_code", "grpc_response_status")
)
PROM_DIMENSIONS: Final[dict[str, str]] = {
    "service": "destination_service_name",
    "workload": "destination_workload",
    "version": "destination_canonical_revision",
    "namespace": "destination_service_namespace",
    "app": "destination_canonical_service",
    "source": "source_workload",
}
assert set(PROM_DIMENSIONS) == set(DIMENSIONS)


class PromClient:
    """prometheus-api-client with errors mapped to PrometheusError."""

    def __init__(self, url: str, timeout_s: float = 30.0) -> None:
        from prometheus_api_client import PrometheusConnect

        self.url = url
        self._prom = PrometheusConnect(url=url, disable_ssl=True, timeout=int(timeout_s))

    def instant(self, query: str, at: datetime) -> list[dict[str, Any]]:
        try:
            result = self._prom.custom_query(query, params={"time": at.timestamp()})
        except Exception as exc:  # requests/HTTP errors of any kind: say which URL and query
            raise PrometheusError(
                self.url, f"{type(exc).__name__}: {exc} (query {query})"
            ) from None
        return list(result)

    def range(
        self, query: str, start: datetime, end: datetime, step_s: float
    ) -> list[dict[str, Any]]:
        try:
            result = self._prom.custom_query_range(
                query, start_time=start, end_time=end, step=f"{step_s:g}s"
            )
        except Exception as exc:
            raise PrometheusError(
                self.url, f"{type(exc).__name__}: {exc} (query {query})"
            ) from None
        return list(result)


def _val(sample: Mapping[str, Any]) -> float:
    v = float(sample["value"][1])
    return 0.0 if math.isnan(v) else v


def _l(m: Mapping[str, str], name: str) -> str:
    return m.get(name) or UNKNOWN


def _row(m: Mapping[str, str], protocol: str | None = None) -> dict[str, Any]:
    """A Prometheus series' labels in the requests table's vocabulary."""
    dst_ns = _l(m, "destination_service_namespace")
    if dst_ns == UNKNOWN:
        dst_ns = _l(m, "destination_workload_namespace")
    return {
        "reporter": _l(m, "reporter"),
        "source_namespace": _l(m, "source_workload_namespace"),
        "source_workload": _l(m, "source_workload"),
        "source_canonical_service": _l(m, "source_canonical_service"),
        "source_version": _l(m, "source_canonical_revision"),
        "source_principal": _l(m, "source_principal"),
        "destination_namespace": dst_ns,
        "destination_service": _l(m, "destination_service"),
        "destination_service_name": _l(m, "destination_service_name"),
        "destination_workload": _l(m, "destination_workload"),
        "destination_canonical_service": _l(m, "destination_canonical_service"),
        "destination_version": _l(m, "destination_canonical_revision"),
        "destination_principal": _l(m, "destination_principal"),
        "protocol": protocol or _l(m, "request_protocol"),
        "code": int(m.get("response_code") or 0)
        if (m.get("response_code") or "0").isdigit()
        else 0,
        "grpc": ""
        if (protocol or m.get("request_protocol")) != "grpc"
        else (m.get("grpc_response_status") or ""),
        "flags": m.get("response_flags") or "-",
        "mtls": m.get("connection_security_policy") == "mutual_tls",
    }


def _keys(level: str, r: Mapping[str, Any]) -> tuple[Any, ...]:
    """(s_unknown, s_ns, s_key, d_known, d_ns, d_key, protocol): graph._projection in Python."""
    s_unknown = r["source_workload"] == UNKNOWN
    svc = (
        r["destination_service_name"]
        if r["destination_service_name"] != UNKNOWN
        else r["destination_service"]
    )
    if level == "workload":
        s_key, d_key = r["source_workload"], r["destination_workload"]
        d_known = d_key != UNKNOWN
    elif level == "app":
        s_key, d_key = r["source_canonical_service"], r["destination_canonical_service"]
        d_known = d_key != UNKNOWN
    elif level == "versioned-app":
        s_key = f"{r['source_canonical_service']}/{r['source_version']}"
        d_key = f"{r['destination_canonical_service']}/{r['destination_version']}"
        d_known = r["destination_canonical_service"] != UNKNOWN
    else:
        s_key, d_key, d_known = r["source_canonical_service"], svc, False
    return (
        s_unknown,
        UNKNOWN if s_unknown else r["source_namespace"],
        UNKNOWN if s_unknown else s_key,
        d_known,
        r["destination_namespace"],
        d_key if d_known else svc,
        r["protocol"],
    )


def histogram_quantile(q: float, buckets: Mapping[float, float]) -> float | None:
    """Prometheus' histogram_quantile over cumulative bucket counts {le: count}."""
    if not buckets:
        return None
    bounds = sorted(buckets)
    total = buckets[bounds[-1]]
    if total <= 0 or not math.isinf(bounds[-1]):
        return None
    rank = q * total
    prev_le, prev_count = 0.0, 0.0
    for le in bounds:
        count = buckets[le]
        if count >= rank:
            if math.isinf(le):
                return prev_le  # the highest finite bound, as Prometheus does
            if count == prev_count:
                return le
            return prev_le + (le - prev_le) * (rank - prev_count) / (count - prev_count)
        prev_le, prev_count = le, count
    return bounds[-2] if len(bounds) > 1 else None


def prometheus_edge_stats(
    client: PromClient, window: TimeWindow, *, level: str, namespaces: Sequence[str] = ()
) -> list[EdgeStats]:
    if level not in LEVELS:
        raise AnalyticsError(f"unknown graph level {level!r}; choose from {', '.join(LEVELS)}")
    rng = f"{max(1, round(window.seconds))}s"
    at = window.end
    by = ", ".join(SERIES_LABELS)
    tcp_by = ", ".join(TCP_LABELS)
    ns = set(namespaces)

    def keep(r: Mapping[str, Any]) -> bool:
        return not ns or r["source_namespace"] in ns or r["destination_namespace"] in ns

    # series key -> reporter -> measures
    series: dict[tuple[Any, ...], dict[str, dict[str, float]]] = defaultdict(
        lambda: defaultdict(lambda: defaultdict(float))
    )
    attrs: dict[tuple[Any, ...], dict[str, Any]] = {}

    def add(samples: list[dict[str, Any]], measure: str, protocol: str | None = None) -> None:
        for s in samples:
            r = _row(s["metric"], protocol)
            if not keep(r):
                continue
            k = _keys(level, r)
            attrs.setdefault(k, r)
            skey = (k, r["code"], r["grpc"], r["flags"], r["destination_service"])
            m = series[skey][r["reporter"]]
            v = _val(s)
            m[measure] += v
            if measure == "n" and r["mtls"]:
                m["mtls"] += v

    add(client.instant(f"sum by ({by}) (increase(istio_requests_total[{rng}]))", at), "n")
    add(
        client.instant(f"sum by ({by}) (increase(istio_request_bytes_sum[{rng}]))", at),
        "request_bytes",
    )
    add(
        client.instant(f"sum by ({by}) (increase(istio_response_bytes_sum[{rng}]))", at),
        "response_bytes",
    )
    add(
        client.instant(
            f"sum by ({tcp_by}) (increase(istio_tcp_connections_opened_total[{rng}]))", at
        ),
        "n",
        "tcp",
    )
    add(
        client.instant(f"sum by ({tcp_by}) (increase(istio_tcp_received_bytes_total[{rng}]))", at),
        "request_bytes",
        "tcp",
    )
    add(
        client.instant(f"sum by ({tcp_by}) (increase(istio_tcp_sent_bytes_total[{rng}]))", at),
        "response_bytes",
        "tcp",
    )

    # Latency: merged buckets per edge and reporter.
    hist: dict[tuple[Any, ...], dict[str, dict[float, float]]] = defaultdict(
        lambda: defaultdict(lambda: defaultdict(float))
    )
    sums: dict[tuple[Any, ...], dict[str, list[float]]] = defaultdict(
        lambda: defaultdict(lambda: [0.0, 0.0])
    )
    lat_by = by + ", le"
    for s in client.instant(
        f"sum by ({lat_by}) (increase(istio_request_duration_milliseconds_bucket[{rng}]))", at
    ):
        r = _row(s["metric"])
        if keep(r):
            hist[_keys(level, r)][r["reporter"]][float(s["metric"].get("le", "+Inf"))] += _val(s)
    for name, idx in (("sum", 0), ("count", 1)):
        for s in client.instant(
            f"sum by ({by}) (increase(istio_request_duration_milliseconds_{name}[{rng}]))", at
        ):
            r = _row(s["metric"])
            if keep(r):
                sums[_keys(level, r)][r["reporter"]][idx] += _val(s)

    edges: dict[tuple[Any, ...], list[Series]] = defaultdict(list)
    source_reported: dict[tuple[Any, ...], float] = defaultdict(float)
    for (k, code, grpc, flags, host), reps in series.items():
        rep = "destination" if reps.get("destination", {}).get("n", 0) > 0 else "source"
        m = reps.get(rep, {})
        if m.get("n", 0) <= 0:
            continue
        if rep == "source":
            source_reported[k] += m["n"]
        edges[k].append(
            Series(
                code,
                grpc,
                flags,
                host,
                m["n"],
                m.get("mtls", 0.0),
                m.get("request_bytes", 0.0),
                m.get("response_bytes", 0.0),
            )
        )
    out = []
    for k, ser in edges.items():
        h = hist.get(k, {})
        rep = "destination" if "destination" in h else "source"
        buckets = h.get(rep, {})
        total, count = sums.get(k, {}).get(rep, [0.0, 0.0])
        src, dst = _refs(level, k, attrs[k])
        out.append(
            EdgeStats(
                src,
                dst,
                k[-1],
                tuple(sorted(ser, key=lambda x: (x.code, x.grpc, x.flags))),
                p50_ms=histogram_quantile(0.5, buckets),
                p95_ms=histogram_quantile(0.95, buckets),
                p99_ms=histogram_quantile(0.99, buckets),
                avg_ms=total / count if count else None,
                source_principal=attrs[k]["source_principal"],
                destination_principal=attrs[k]["destination_principal"],
                source_reported=source_reported[k],
            )
        )
    return out


def _refs(level: str, k: tuple[Any, ...], r: Mapping[str, Any]) -> tuple[NodeRef, NodeRef]:
    s_unknown, s_ns, s_key, d_known, d_ns, d_key, _proto = k
    kind = {"workload": "workload", "app": "app", "versioned-app": "app", "service": "service"}[
        level
    ]
    with_version = level in ("workload", "versioned-app")
    if s_unknown:
        src = NodeRef("unknown", UNKNOWN, UNKNOWN)
    else:
        src = NodeRef(
            kind,
            s_ns,
            s_key,
            workload=r["source_workload"] if level == "workload" else UNKNOWN,
            app=r["source_canonical_service"],
            version=r["source_version"] if with_version else UNKNOWN,
            service=r["source_canonical_service"] if level == "service" else UNKNOWN,
        )
    if not d_known:
        dst = NodeRef("service", d_ns, d_key, service=d_key)
    else:
        dst = NodeRef(
            kind,
            d_ns,
            d_key,
            workload=r["destination_workload"] if level == "workload" else UNKNOWN,
            app=r["destination_canonical_service"],
            version=r["destination_version"] if with_version else UNKNOWN,
            service=r["destination_service_name"],
        )
    return src, dst


def prometheus_graph(
    url: str,
    window: TimeWindow,
    *,
    level: str = "workload",
    namespaces: Sequence[str] = (),
    health_config: HealthConfig | None = None,
) -> Graph:
    """The graph from Istio's metrics, with health (Kiali's tolerances unless given)."""
    stats = prometheus_edge_stats(PromClient(url), window, level=level, namespaces=namespaces)
    graph = build_graph(stats, window, level=level, source="prometheus", namespaces=namespaces)
    return annotate_graph(graph, health_config or default_health_config())


def prometheus_signals(
    url: str,
    window: TimeWindow,
    *,
    by: Sequence[str] = ("service",),
    step_s: float = 60,
    service: str | None = None,
) -> pl.DataFrame:
    """The golden_signals columns from Istio metrics; bucket b holds (b, b + step]."""
    from meshlens.analytics.signals import _check, _empty

    by = tuple(by)
    _check(by, step_s)
    client = PromClient(url)
    labels = ", ".join(PROM_DIMENSIONS[b] for b in by)
    sel = 'reporter="destination", request_protocol!="tcp"'
    if service:
        svc = service.replace('"', '\\"')
        sel += f', destination_service_name="{svc}"'
    step = f"{step_s:g}s"
    start = window.start + timedelta(seconds=step_s)
    if start > window.end:
        return _empty(by)

    def series(query: str) -> dict[tuple[Any, ...], float]:
        out: dict[tuple[Any, ...], float] = {}
        for s in client.range(query, start, window.end, step_s):
            key_labels = tuple(s["metric"].get(PROM_DIMENSIONS[b]) or UNKNOWN for b in by)
            for ts, v in s["values"]:
                f = float(v)
                if math.isnan(f):
                    continue
                bucket = datetime.fromtimestamp(float(ts) - step_s, tz=UTC)
                out[(bucket, *key_labels)] = out.get((bucket, *key_labels), 0.0) + f
        return out

    requests = series(f"sum by ({labels}) (increase(istio_requests_total{{{sel}}}[{step}]))")
    err_http = series(
        f'sum by ({labels}) (increase(istio_requests_total{{{sel}, response_code=~"5..|0"}}'
        f"[{step}]))"
    )
    err_grpc = series(
        f'sum by ({labels}) (increase(istio_requests_total{{{sel}, request_protocol="grpc", '
        f'response_code!~"5..|0", grpc_response_status!~"0|"}}[{step}]))'
    )
    quant = {
        q: series(
            f"histogram_quantile({q}, sum by (le, {labels}) "
            f"(increase(istio_request_duration_milliseconds_bucket{{{sel}}}[{step}])))"
        )
        for q in QUANTILES
    }
    rows = []
    for key, n in sorted(requests.items()):
        if n <= 0:
            continue
        errors = err_http.get(key, 0.0) + err_grpc.get(key, 0.0)
        row: dict[str, Any] = {"bucket": key[0]}
        row.update(dict(zip(by, key[1:], strict=True)))
        row.update(
            requests=round(n),
            rps=n / step_s,
            errors=round(errors),
            error_ratio=errors / n,
            **{f"p{int(q * 100)}_ms": quant[q].get(key) for q in QUANTILES},
        )
        rows.append(row)
    if not rows:
        return _empty(by)
    return pl.DataFrame(rows, schema=_empty(by).schema)
