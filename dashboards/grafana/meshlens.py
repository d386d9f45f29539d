"""meshlens' own dashboards: traffic from the exported service-graph and span metrics, the
canary gate, and the collector itself.

Metric names: analytics/exporter.py (service graph, span metrics, meshlens_gate_*) and
collector/selfmetrics.py (meshlens_* ingest, rejects, WAL) — `SELF` below lists what is used.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from grafana_foundation_sdk.builders import dashboard as db

from meshlens.dashboards.grafana.builder import (
    RATE,
    PanelBuilder,
    Q,
    new_dashboard,
    query_var,
    stat_panel,
    table_panel,
    ts_panel,
)

# Self-metrics the collector exports (collector/selfmetrics.py: receivers + Store.stats()).
SELF: Final = {
    "requests": "meshlens_receiver_requests_total",  # {receiver, signal, outcome}
    "received": "meshlens_receiver_received_items_total",  # {receiver, signal}
    "accepted": "meshlens_receiver_accepted_items_total",  # {receiver, signal}
    "rejected": "meshlens_receiver_rejected_items_total",  # {receiver, signal, reason}
    "bytes": "meshlens_receiver_received_bytes_total",  # {receiver, signal}
    "append": "meshlens_receiver_append_duration_seconds",  # histogram {receiver}
    "als_streams": "meshlens_envoy_als_streams",
    "wal_lag": "meshlens_store_wal_lag_seconds",
    "wal_pending": "meshlens_store_wal_bytes_pending",
    "rows": "meshlens_store_rows_written_total",
    "decode_errors": "meshlens_store_decode_errors_total",
    "overloaded": "meshlens_store_overloaded_rejections_total",
    "flush": "meshlens_store_last_flush_seconds",
}


def _add_row(d: db.Dashboard, title: str, panels: Sequence[PanelBuilder]) -> db.Dashboard:
    d = d.with_row(db.Row(title))
    for p in panels:
        d = d.with_panel(p)
    return d


def traffic_dashboard() -> db.Dashboard:
    """Service graph and RED metrics derived by meshlens (OTel connector names)."""
    d = new_dashboard(
        "meshlens-traffic",
        "meshlens Traffic (service graph & span metrics)",
        "Edges and services as meshlens derives them from access logs and spans, exported as the "
        "OpenTelemetry service-graph and spanmetrics connectors name them.",
        ["service-graph", "spanmetrics"],
    )
    d = d.with_variable(
        query_var(
            "server",
            "Server",
            "label_values(traces_service_graph_request_total, server)",
            multi=True,
        )
    )
    d = d.with_variable(
        query_var(
            "service_name",
            "Span service",
            "label_values(traces_span_metrics_calls_total, service_name)",
            multi=True,
        )
    )
    sel = 'server=~"$server"'
    total = f"sum(rate(traces_service_graph_request_total{{{sel}}}[{RATE}])) by (client, server)"
    failed = (
        f"sum(rate(traces_service_graph_request_failed_total{{{sel}}}[{RATE}])) by (client, server)"
    )
    d = _add_row(
        d,
        "Service graph edges",
        [
            ts_panel("Requests per edge", [Q(total, "{{client}} → {{server}}")], "reqps"),
            ts_panel(
                "Failed ratio per edge",
                [Q(f"({failed} or {total} * 0) / {total}", "{{client}} → {{server}}")],
                "percentunit",
            ),
            ts_panel(
                "Server p95 latency per edge",
                [
                    Q(
                        "histogram_quantile(0.95, sum(rate("
                        "traces_service_graph_request_server_seconds_bucket"
                        f"{{{sel}}}[{RATE}])) by (client, server, le))",
                        "{{client}} → {{server}}",
                    )
                ],
                "s",
            ),
            ts_panel(
                "Client p95 latency per edge",
                [
                    Q(
                        "histogram_quantile(0.95, sum(rate("
                        "traces_service_graph_request_client_seconds_bucket"
                        f"{{{sel}}}[{RATE}])) by (client, server, le))",
                        "{{client}} → {{server}}",
                    )
                ],
                "s",
            ),
            table_panel(
                "Edges",
                [
                    Q(total, "Requests/s"),
                    Q(f"({failed} or {total} * 0) / {total}", "Failed ratio"),
                    Q(
                        "sum(rate(traces_service_graph_request_server_seconds_sum"
                        f"{{{sel}}}[{RATE}])) by (client, server) / sum(rate("
                        f"traces_service_graph_request_server_seconds_count{{{sel}}}[{RATE}])) "
                        "by (client, server)",
                        "Mean server seconds",
                    ),
                ],
            ),
        ],
    )
    ssel = 'service_name=~"$service_name",span_kind="SPAN_KIND_SERVER"'
    calls = f"sum(rate(traces_span_metrics_calls_total{{{ssel}}}[{RATE}])) by (service_name)"
    errors = (
        f'sum(rate(traces_span_metrics_calls_total{{{ssel},status_code="STATUS_CODE_ERROR"}}'
        f"[{RATE}])) by (service_name)"
    )
    d = _add_row(
        d,
        "Span metrics (RED per service)",
        [
            ts_panel("Rate", [Q(calls, "{{service_name}}")], "reqps", w=8),
            ts_panel(
                "Error ratio",
                [Q(f"({errors} or {calls} * 0) / {calls}", "{{service_name}}")],
                "percentunit",
                w=8,
            ),
            ts_panel(
                "Duration p95",
                [
                    Q(
                        "histogram_quantile(0.95, sum(rate("
                        "traces_span_metrics_duration_seconds_bucket"
                        f"{{{ssel}}}[{RATE}])) by (service_name, le))",
                        "{{service_name}}",
                    )
                ],
                "s",
                w=8,
            ),
            ts_panel(
                "Operations by rate",
                [
                    Q(
                        f"topk(10, sum(rate(traces_span_metrics_calls_total{{{ssel}}}[{RATE}])) "
                        "by (service_name, span_name))",
                        "{{service_name}} {{span_name}}",
                    )
                ],
                "reqps",
                w=24,
            ),
        ],
    )
    return d


def canary_dashboard() -> db.Dashboard:
    d = new_dashboard(
        "meshlens-canary",
        "meshlens Canary",
        "Rollouts driven by the meshlens gate: canary weight, verdict score, phase, verdicts; "
        "and the canary vs baseline golden signals from Istio metrics (Flagger's queries).",
        ["canary", "gate"],
    )
    d = d.with_variable(
        query_var(
            "rollout", "Rollout", "label_values(meshlens_gate_canary_weight, rollout)", multi=True
        )
    )
    d = d.with_variable(
        query_var(
            "service",
            "Service (canonical)",
            'label_values(istio_requests_total{reporter="destination"}, '
            "destination_canonical_service)",
            include_all=False,
        )
    )
    rsel = 'rollout=~"$rollout"'
    d = _add_row(
        d,
        "Gate",
        [
            ts_panel(
                "Canary weight",
                [Q(f"max(meshlens_gate_canary_weight{{{rsel}}}) by (rollout)", "{{rollout}}")],
                "percent",
            ),
            ts_panel(
                "Verdict score",
                [Q(f"max(meshlens_gate_score{{{rsel}}}) by (rollout)", "{{rollout}}")],
                "none",
            ),
            ts_panel(
                "Phase",
                [
                    Q(
                        f"max(meshlens_gate_phase{{{rsel}}} == 1) by (rollout, phase)",
                        "{{rollout}}: {{phase}}",
                    )
                ],
                "none",
                w=12,
            ),
            ts_panel(
                "Verdicts",
                [
                    Q(
                        f"sum(increase(meshlens_gate_verdicts_total{{{rsel}}}[{RATE}]))"
                        " by (rollout, verdict)",
                        "{{rollout}} {{verdict}}",
                    )
                ],
                "short",
                w=12,
                stack=True,
            ),
            table_panel(
                "Current rollouts",
                [
                    Q(
                        f"max(meshlens_gate_canary_weight{{{rsel}}}) by (rollout, service)",
                        "Weight %",
                    ),
                    Q(f"max(meshlens_gate_score{{{rsel}}}) by (rollout, service)", "Score"),
                ],
            ),
        ],
    )
    svc = 'reporter="destination",destination_canonical_service="$service"'
    by = "destination_canonical_revision"
    d = _add_row(
        d,
        "Canary vs baseline (Istio metrics)",
        [
            ts_panel(
                "Success rate by revision",
                [
                    Q(
                        f'sum(rate(istio_requests_total{{{svc},response_code!~"5.*"}}[{RATE}]))'
                        f" by ({by}) / "
                        f"sum(rate(istio_requests_total{{{svc}}}[{RATE}])) by ({by})",
                        "{{destination_canonical_revision}}",
                    )
                ],
                "percentunit",
            ),
            ts_panel(
                "P99 latency by revision",
                [
                    Q(
                        "histogram_quantile(0.99, sum(rate("
                        "istio_request_duration_milliseconds_bucket"
                        f"{{{svc}}}[{RATE}])) by ({by}, le))",
                        "{{destination_canonical_revision}}",
                    )
                ],
                "ms",
            ),
            ts_panel(
                "Requests by revision",
                [
                    Q(
                        f"sum(rate(istio_requests_total{{{svc}}}[{RATE}])) by ({by})",
                        "{{destination_canonical_revision}}",
                    )
                ],
                "reqps",
                w=24,
                stack=True,
            ),
        ],
    )
    return d


def self_dashboard() -> db.Dashboard:
    d = new_dashboard(
        "meshlens-self",
        "meshlens Collector",
        "The collector itself: what it receives per receiver and signal, what it rejects and "
        "why, how far the WAL is behind, and what lands in the store.",
        ["self"],
    )
    d = _add_row(
        d,
        "Ingest",
        [
            stat_panel("Items accepted /s", [Q(f"sum(rate({SELF['accepted']}[{RATE}]))")], "short"),
            stat_panel(
                "Items rejected /s",
                [Q(f"sum(rate({SELF['rejected']}[{RATE}])) or vector(0)")],
                "short",
            ),
            stat_panel("WAL lag", [Q(f"max({SELF['wal_lag']})")], "s"),
            stat_panel("Open Envoy ALS streams", [Q(f"sum({SELF['als_streams']})")], "short"),
            ts_panel(
                "Items received by receiver and signal",
                [
                    Q(
                        f"sum(rate({SELF['received']}[{RATE}])) by (receiver, signal)",
                        "{{receiver}} {{signal}}",
                    )
                ],
                "short",
            ),
            ts_panel(
                "Requests by receiver and outcome",
                [
                    Q(
                        f"sum(rate({SELF['requests']}[{RATE}])) by (receiver, outcome)",
                        "{{receiver}} {{outcome}}",
                    )
                ],
                "reqps",
            ),
            ts_panel(
                "Rejected items by reason",
                [
                    Q(
                        f"sum(rate({SELF['rejected']}[{RATE}])) by (receiver, signal, reason)",
                        "{{receiver}} {{signal}} {{reason}}",
                    )
                ],
                "short",
            ),
            ts_panel(
                "Bytes received",
                [Q(f"sum(rate({SELF['bytes']}[{RATE}])) by (receiver)", "{{receiver}}")],
                "Bps",
            ),
            ts_panel(
                "Receipt to durable p99 (WAL append)",
                [
                    Q(
                        f"histogram_quantile(0.99, sum(rate({SELF['append']}_bucket[{RATE}])) "
                        "by (receiver, le))",
                        "{{receiver}}",
                    )
                ],
                "s",
                w=24,
            ),
        ],
    )
    d = _add_row(
        d,
        "Store",
        [
            ts_panel("WAL lag", [Q(f"max({SELF['wal_lag']})", "lag")], "s"),
            ts_panel(
                "WAL bytes pending", [Q(f"max({SELF['wal_pending']})", "pending")], "decbytes"
            ),
            ts_panel(
                "Rows written to Parquet /s",
                [Q(f"sum(rate({SELF['rows']}[{RATE}]))", "rows")],
                "short",
            ),
            ts_panel(
                "Decode errors and overload rejections /s",
                [
                    Q(f"sum(rate({SELF['decode_errors']}[{RATE}]))", "decode errors"),
                    Q(f"sum(rate({SELF['overloaded']}[{RATE}]))", "overloaded"),
                ],
                "short",
            ),
            ts_panel(
                "Last flush (WAL segment -> Parquet)",
                [Q(f"max({SELF['flush']})", "flush")],
                "s",
                w=24,
            ),
        ],
    )
    return d
