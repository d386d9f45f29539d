"""Prometheus collectors for `/metrics`: what the analytics derive, in names Grafana already knows.

Exported families (all computed from the store, never from live traffic):

  traces_service_graph_request_total{client,server,connection_type,failed}           counter
  traces_service_graph_request_failed_total{client,server,connection_type}           counter
  traces_service_graph_request_server_seconds{client,server,connection_type,failed}  histogram
  traces_service_graph_request_client_seconds{client,server,connection_type,failed}  histogram
      as the OpenTelemetry Collector's service-graph connector names them (default latency
      buckets 2 ms ... 15 s), so Grafana's service-graph view and Tempo-style queries work.
  traces_span_metrics_calls_total{service_name,span_name,span_kind,status_code}       counter
  traces_span_metrics_duration_seconds{service_name,span_name,span_kind,status_code}  histogram
      as the spanmetrics connector names them with its default namespace `traces.span.metrics`
      (what Jaeger's Monitor tab queries). Values: span_kind="SPAN_KIND_SERVER", status_code=
      "STATUS_CODE_ERROR" ...
  meshlens_gate_verdicts_total{rollout,service,verdict}   counter, from the `verdicts` table
  meshlens_gate_canary_weight{rollout,service}, meshlens_gate_score{rollout,service},
  meshlens_gate_phase{rollout,service,phase} (1 for the current phase), ...
      the rollout gate's own collectors (analytics.gate.metrics, live state files); when that
      module is absent, the same three from each rollout's newest `verdicts` row.

Counters are cumulative like the connectors' (temporality cumulative): each refresh (at most every
`min_interval_s`) reads only rows with time in [watermark, now - lag_s) and adds them, so a scrape
costs one small incremental scan whatever the store's size. Rows arriving later than `lag_s`
after their own timestamp are not counted. At start the first scan covers the last `backfill_s`.

Edges come from the `traffic` view (Envoy access logs, one row per request:
analytics/pairing.py; server histogram from the server's measurement, client histogram from the
client's) when the increment has request rows, else from client/server span pairs. failed =
analytics/error_rule.IS_ERROR (requests) / span status ERROR (spans). An unknown client is
`user` with connection_type="virtual_node", as the connector names uninstrumented callers.

Cardinality is bounded: at most `max_edges` client/server pairs and `max_span_series`
service/span-name pairs are tracked (first come, biggest first within a scan); the rest are
counted in one series with client="__overflow__"/server="__overflow__" (service graph) or
otel_metric_overflow="true" and the other labels empty (span metrics, as the connector's
`aggregation_cardinality_limit` does).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.metrics_core import Metric

from meshlens.analytics.error_rule import IS_ERROR
from meshlens.analytics.gate.metrics import metric_collectors as gate_metric_collectors
from meshlens.analytics.graph.spans import SpanGraphOptions, spans_pairs_sql

log = logging.getLogger(__name__)

# The service-graph and spanmetrics connectors' default explicit bounds, in seconds.
LATENCY_BOUNDS_S: Final = (
    0.002,
    0.004,
    0.006,
    0.008,
    0.01,
    0.05,
    0.1,
    0.2,
    0.4,
    0.8,
    1.0,
    1.4,
    2.0,
    5.0,
    10.0,
    15.0,
)
OVERFLOW: Final = "__overflow__"
_SG_LABELS: Final = ("client", "server", "connection_type", "failed")
_SM_LABELS: Final = (
    "service_name",
    "span_name",
    "span_kind",
    "status_code",
    "otel_metric_overflow",
)
_KINDS: Final = {
    "server": "SPAN_KIND_SERVER",
    "client": "SPAN_KIND_CLIENT",
    "internal": "SPAN_KIND_INTERNAL",
    "producer": "SPAN_KIND_PRODUCER",
    "consumer": "SPAN_KIND_CONSUMER",
}
_STATUS: Final = {"ok": "STATUS_CODE_OK", "error": "STATUS_CODE_ERROR"}
_BOUNDS_SQL: Final = "[" + ", ".join(f"{b * 1000:g}" for b in LATENCY_BOUNDS_S) + "]"
# Bucket index = number of bounds strictly below the value (value <= bound[i] -> bucket i).
_BIDX_SQL: Final = "len(list_filter({bounds}::DOUBLE[], lambda b: b < {col}))"


@dataclass(slots=True)
class _Hist:
    buckets: list[int]
    total_s: float = 0.0

    @classmethod
    def empty(cls) -> _Hist:
        return cls([0] * (len(LATENCY_BOUNDS_S) + 1))

    def add(self, bidx: int, n: int, sum_s: float) -> None:
        self.buckets[min(max(bidx, 0), len(LATENCY_BOUNDS_S))] += n
        self.total_s += sum_s

    def cumulative(self) -> list[tuple[str, float]]:
        out: list[tuple[str, float]] = []
        acc = 0
        for bound, n in zip((*LATENCY_BOUNDS_S, float("inf")), self.buckets, strict=True):
            acc += n
            out.append(("+Inf" if bound == float("inf") else f"{bound:g}", float(acc)))
        return out


@dataclass(slots=True)
class _State:
    """Cumulative values since the exporter started."""

    requests: dict[tuple[str, str, str, str], int]
    failed: dict[tuple[str, str, str], int]
    server: dict[tuple[str, str, str, str], _Hist]
    client: dict[tuple[str, str, str, str], _Hist]
    calls: dict[tuple[str, str, str, str, str], int]
    duration: dict[tuple[str, str, str, str, str], _Hist]
    edges: set[tuple[str, str]]
    span_keys: set[tuple[str, str]]

    @classmethod
    def empty(cls) -> _State:
        return cls({}, {}, {}, {}, {}, {}, set(), set())


def _connect(data_dir: Path, start: datetime, end: datetime) -> Any:
    from meshlens.analytics.catalog import connect
    from meshlens.analytics.window import TimeWindow

    return connect(data_dir, TimeWindow(start, end))


class DerivedMetricsCollector:
    """Service-graph and span-metrics families, refreshed incrementally from the store."""

    def __init__(
        self,
        data_dir: Path,
        *,
        max_edges: int = 200,
        max_span_series: int = 500,
        lag_s: float = 10.0,
        backfill_s: float = 900.0,
        min_interval_s: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.max_edges = max_edges
        self.max_span_series = max_span_series
        self.lag_s = lag_s
        self.min_interval_s = min_interval_s
        self._clock = clock
        self._lock = threading.Lock()
        self._state = _State.empty()
        self._watermark = clock() - backfill_s
        self._refreshed = 0.0

    # -- refresh -------------------------------------------------------------------------
    def refresh(self, *, force: bool = False) -> None:
        """Fold rows with time in [watermark, now - lag) into the cumulative state."""
        now = self._clock()
        if not force and now - self._refreshed < self.min_interval_s:
            return
        self._refreshed = now
        lo, hi = self._watermark, now - self.lag_s
        if hi <= lo:
            return
        start = datetime.fromtimestamp(lo, tz=UTC)
        end = datetime.fromtimestamp(hi, tz=UTC)
        # Client spans may start a little before their server child's window.
        conn = _connect(self.data_dir, start - timedelta(seconds=120), end)
        try:
            if not self._edges_from_requests(conn, start, end):
                self._edges_from_spans(conn, start, end)
            self._span_metrics(conn, start, end)
        finally:
            conn.close()
        self._watermark = hi

    def _edge_key(self, client: str, server: str) -> tuple[str, str]:
        key = (client, server)
        if key in self._state.edges:
            return key
        if len(self._state.edges) < self.max_edges:
            self._state.edges.add(key)
            return key
        return (OVERFLOW, OVERFLOW)

    def _add_edge_rows(self, rows: Iterable[tuple[Any, ...]]) -> None:
        """rows: (client, server, conn_type, failed, role, counted, bidx, n, sum_s), where role is
        'server'|'client' (which histogram) and counted says whether n adds to request_total."""
        st = self._state
        for client, server, ctype, failed, role, counted, bidx, n, sum_s in rows:
            c, s = self._edge_key(str(client), str(server))
            f = "true" if failed else "false"
            key = (c, s, str(ctype), f)
            if counted:
                st.requests[key] = st.requests.get(key, 0) + int(n)
                if failed:
                    fk = (c, s, str(ctype))
                    st.failed[fk] = st.failed.get(fk, 0) + int(n)
            if role in ("server", "client"):
                hists = st.server if role == "server" else st.client
                hists.setdefault(key, _Hist.empty()).add(int(bidx), int(n), float(sum_s or 0.0))

    def _edges_from_requests(self, conn: Any, start: datetime, end: datetime) -> bool:
        # One row per request from the `traffic` view (analytics/pairing.py): the server
        # histogram from server-measured rows, the client histogram from the client's duration
        # (a paired request keeps it), each request counted once.
        bidx_s = _BIDX_SQL.format(bounds=_BOUNDS_SQL, col="duration_ms")
        bidx_c = _BIDX_SQL.format(bounds=_BOUNDS_SQL, col="client_duration_ms")
        sql = f"""
            WITH r AS (
              SELECT
                CASE WHEN source_canonical_service NOT IN ('', 'unknown')
                       THEN source_canonical_service
                     WHEN source_workload NOT IN ('', 'unknown') THEN source_workload
                     ELSE 'user' END AS client,
                CASE WHEN destination_canonical_service NOT IN ('', 'unknown')
                       THEN destination_canonical_service
                     WHEN destination_service_name NOT IN ('', 'unknown')
                       THEN destination_service_name
                     ELSE 'unknown' END AS server,
                CASE WHEN source_canonical_service IN ('', 'unknown')
                      AND source_workload IN ('', 'unknown') THEN 'virtual_node'
                     ELSE '' END AS ctype,
                coalesce({IS_ERROR}, false) AS failed,
                reporter = 'source' AS unpaired_client,
                duration_ms, client_duration_ms
              FROM traffic
              WHERE ts >= $start AND ts < $end AND protocol <> 'tcp'
            )
            SELECT client, server, ctype, failed, 'server' AS role, true AS counted,
                   {bidx_s} AS bidx, count(*) AS n, sum(duration_ms) / 1000.0 AS sum_s
            FROM r WHERE NOT unpaired_client GROUP BY ALL
            UNION ALL
            SELECT client, server, ctype, failed, 'client' AS role, unpaired_client AS counted,
                   {bidx_c} AS bidx, count(*) AS n, sum(client_duration_ms) / 1000.0 AS sum_s
            FROM r WHERE client_duration_ms IS NOT NULL GROUP BY ALL
            ORDER BY n DESC
        """
        rows = conn.execute(sql, {"start": start, "end": end}).fetchall()
        self._add_edge_rows(rows)
        return bool(rows)

    def _edges_from_spans(self, conn: Any, start: datetime, end: datetime) -> None:
        # The graph's span pairing in the connector's naming (analytics/graph/spans.py): the
        # server histogram from paired server spans, the client histogram from client spans.
        pairs = spans_pairs_sql(SpanGraphOptions(mode="connector", root_client_edges=False))
        bidx_s = _BIDX_SQL.format(bounds=_BOUNDS_SQL, col="server_ms")
        bidx_c = _BIDX_SQL.format(bounds=_BOUNDS_SQL, col="client_ms")
        sql = f"""
            WITH p AS ({pairs}),
            e AS (SELECT client, server, connection_type AS ctype, failed, server_ms, client_ms
                  FROM p WHERE start_ts >= $start AND start_ts < $end)
            SELECT client, server, ctype, failed, 'server', true, {bidx_s}, count(*) AS n,
                   sum(server_ms) / 1000.0
            FROM e WHERE server_ms IS NOT NULL GROUP BY ALL
            UNION ALL
            SELECT client, server, ctype, failed, 'client', server_ms IS NULL, {bidx_c},
                   count(*), sum(client_ms) / 1000.0
            FROM e WHERE client_ms IS NOT NULL GROUP BY ALL
            ORDER BY n DESC
        """
        self._add_edge_rows(conn.execute(sql, {"start": start, "end": end}).fetchall())

    def _span_metrics(self, conn: Any, start: datetime, end: datetime) -> None:
        bidx = _BIDX_SQL.format(bounds=_BOUNDS_SQL, col="duration_ms")
        sql = f"""
            SELECT service_name, name, kind, status_code, {bidx} AS bidx, count(*) AS n,
                   sum(duration_ms) / 1000.0 AS sum_s
            FROM spans WHERE start_ts >= $start AND start_ts < $end
            GROUP BY ALL ORDER BY n DESC
        """
        st = self._state
        for svc, name, kind, status, bidx, n, sum_s in conn.execute(
            sql, {"start": start, "end": end}
        ).fetchall():
            pair = (str(svc), str(name))
            if pair not in st.span_keys and len(st.span_keys) < self.max_span_series:
                st.span_keys.add(pair)
            if pair in st.span_keys:
                key = (
                    pair[0],
                    pair[1],
                    _KINDS.get(str(kind), "SPAN_KIND_UNSPECIFIED"),
                    _STATUS.get(str(status), "STATUS_CODE_UNSET"),
                    "",
                )
            else:
                key = ("", "", "", "", "true")
            st.calls[key] = st.calls.get(key, 0) + int(n)
            st.duration.setdefault(key, _Hist.empty()).add(int(bidx), int(n), float(sum_s or 0))

    # -- exposition ------------------------------------------------------------------------
    def describe(self) -> Iterator[Metric]:
        return iter(())  # collect() reads the store; do not run it at registration time.

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            try:
                self.refresh()
            except Exception:  # /metrics must keep answering with the last good values
                log.exception("derived metrics refresh failed; serving the previous values")
            yield from self._families()

    def _families(self) -> Iterator[Metric]:
        st = self._state
        total = CounterMetricFamily(
            "traces_service_graph_request",
            "Requests between two nodes (meshlens, from the store)",
            labels=_SG_LABELS,
        )
        for key, n in sorted(st.requests.items()):
            total.add_metric(key, n)
        failed = CounterMetricFamily(
            "traces_service_graph_request_failed",
            "Failed requests between two nodes",
            labels=_SG_LABELS[:3],
        )
        for fkey, n in sorted(st.failed.items()):
            failed.add_metric(fkey, n)
        yield total
        yield failed
        for name, hists, what in (
            ("traces_service_graph_request_server_seconds", st.server, "server"),
            ("traces_service_graph_request_client_seconds", st.client, "client"),
        ):
            fam = HistogramMetricFamily(
                name, f"Request duration as seen by the {what} (seconds)", labels=_SG_LABELS
            )
            for key, h in sorted(hists.items()):
                fam.add_metric(key, h.cumulative(), h.total_s)
            yield fam
        calls = CounterMetricFamily(
            "traces_span_metrics_calls",
            "Spans per service, name, kind and status",
            labels=_SM_LABELS,
        )
        for skey, n in sorted(st.calls.items()):
            calls.add_metric(skey, n)
        yield calls
        dur = HistogramMetricFamily(
            "traces_span_metrics_duration_seconds", "Span duration (seconds)", labels=_SM_LABELS
        )
        for skey, h in sorted(st.duration.items()):
            dur.add_metric(skey, h.cumulative(), h.total_s)
        yield dur


class GateMetricsCollector:
    """meshlens_gate_verdicts_total from the `verdicts` table and, when `latest` (the gate's own
    collectors from its state files are absent), weight/score/phase of each rollout's newest row.

    Cached for `min_interval_s`; the verdicts table is small (one row per judgement)."""

    def __init__(
        self,
        data_dir: Path,
        *,
        latest: bool = True,
        min_interval_s: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.latest = latest
        self.min_interval_s = min_interval_s
        self._clock = clock
        self._lock = threading.Lock()
        self._cache: list[Metric] = []
        self._at = -1e18

    def describe(self) -> Iterator[Metric]:
        return iter(())

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            now = self._clock()
            if now - self._at >= self.min_interval_s:
                try:
                    self._cache = self._build()
                    self._at = now
                except Exception:
                    log.exception("gate metrics failed; serving the previous values")
            yield from self._cache

    def _build(self) -> list[Metric]:
        labels = ["rollout", "service"]
        weight = GaugeMetricFamily(
            "meshlens_gate_canary_weight",
            "Traffic weight (%) the gate last gave the canary",
            labels=labels,
        )
        score = GaugeMetricFamily(
            "meshlens_gate_score", "Score (0-100) of the last canary verdict", labels=labels
        )
        phase = GaugeMetricFamily(
            "meshlens_gate_phase", "1 for the rollout's current phase", labels=[*labels, "phase"]
        )
        verdicts = CounterMetricFamily(
            "meshlens_gate_verdicts", "Canary verdicts by outcome", labels=[*labels, "verdict"]
        )
        end = datetime.fromtimestamp(self._clock() + 60, tz=UTC)
        conn = _connect(self.data_dir, datetime(2000, 1, 1, tzinfo=UTC), end)
        try:
            latest = conn.execute(
                """SELECT rollout, service, canary_weight, score, phase FROM verdicts
                   QUALIFY row_number() OVER (PARTITION BY rollout ORDER BY ts DESC) = 1"""
            ).fetchall()
            counts = conn.execute(
                "SELECT rollout, service, verdict, count(*) FROM verdicts GROUP BY ALL"
            ).fetchall()
        finally:
            conn.close()
        for rollout, service, w, s, ph in latest:
            key = [str(rollout), str(service)]
            weight.add_metric(key, float(w or 0))
            score.add_metric(key, float(s if s is not None else float("nan")))
            phase.add_metric([*key, str(ph)], 1.0)
        for rollout, service, verdict, n in counts:
            verdicts.add_metric([str(rollout), str(service), str(verdict)], int(n))
        return [weight, score, phase, verdicts] if self.latest else [verdicts]


def _gate_collectors(data_dir: Path) -> list[Any]:
    """The gate's own collectors (live state files), plus the verdict counter."""
    return [*gate_metric_collectors(data_dir), GateMetricsCollector(data_dir, latest=False)]


def metric_collectors(data_dir: Path) -> list[Any]:
    """Collectors to register on the collector's /metrics registry."""
    return [DerivedMetricsCollector(Path(data_dir)), *_gate_collectors(Path(data_dir))]
