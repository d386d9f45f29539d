"""Istio's three standard dashboards (Mesh, Service, Workload), regenerated from code.

Panel sets follow istio/istio `manifests/addons/dashboards/` (istio-mesh, istio-service,
istio-workload): the same Istio standard metrics (`istio_requests_total`,
`istio_request_duration_milliseconds_bucket`, `istio_request_bytes_bucket`,
`istio_response_bytes_bucket`, `istio_tcp_sent_bytes_total`, `istio_tcp_received_bytes_total`),
and every "by source / by destination" panel split into mTLS and plaintext series
(`connection_security_policy="mutual_tls"` vs `!="mutual_tls"`). Rates use `$__rate_interval`.
"""

from __future__ import annotations

from collections.abc import Sequence

from grafana_foundation_sdk.builders import dashboard as db

from meshlens.dashboards.grafana.builder import (
    RATE,
    SEC,
    PanelBuilder,
    Q,
    custom_var,
    mtls_split,
    new_dashboard,
    query_var,
    stat_panel,
    table_panel,
    ts_panel,
)

QUANTILES: tuple[tuple[str, str], ...] = (("0.50", "P50"), ("0.90", "P90"), ("0.99", "P99"))


def _sum_rate(metric: str, selector: str, by: str = "") -> str:
    group = f" by ({by})" if by else ""
    return f"sum(rate({metric}{{{selector}}}[{RATE}])){group}"


def _success_rate(selector: str, by: str = "") -> str:
    ok = _sum_rate("istio_requests_total", f'{selector},response_code!~"5.*"', by)
    return f"{ok} / {_sum_rate('istio_requests_total', selector, by)}"


def _quantile(q: str, metric: str, selector: str, by: str = "") -> str:
    group = f"{by}, le" if by else "le"
    return f"histogram_quantile({q}, sum(rate({metric}_bucket{{{selector}}}[{RATE}])) by ({group}))"


def _rounded(selector: str) -> str:
    return f"round({_sum_rate('istio_requests_total', selector)}, 0.01) or vector(0)"


def _duration_queries(selector: str, by: str = "", legend: str = "") -> list[Q]:
    out: list[Q] = []
    for q, name in QUANTILES:
        out.append(
            Q(
                _quantile(q, "istio_request_duration_milliseconds", selector, by),
                f"{legend}{name}" if legend else name,
            )
        )
    return out


def _split_by(template_selector: str, by: str, legend: str, kind: str) -> list[Q]:
    """The mTLS/plaintext pair for one `by` panel; kind: requests|success|duration|reqsize|
    respsize|tcprecv|tcpsent."""
    sel = template_selector + "," + SEC
    if kind == "requests":
        tmpl = _sum_rate("istio_requests_total", sel, f"{by}, response_code")
        return mtls_split(tmpl, legend + " : {{response_code}}")
    if kind == "success":
        return mtls_split(_success_rate(sel, by), legend)
    if kind in ("duration", "reqsize", "respsize"):
        metric = {
            "duration": "istio_request_duration_milliseconds",
            "reqsize": "istio_request_bytes",
            "respsize": "istio_response_bytes",
        }[kind]
        out: list[Q] = []
        for q, name in (("0.50", "P50"), ("0.95", "P95"), ("0.99", "P99")):
            out.extend(mtls_split(_quantile(q, metric, sel, by), f"{legend} {name}"))
        return out
    metric = "istio_tcp_received_bytes_total" if kind == "tcprecv" else "istio_tcp_sent_bytes_total"
    return mtls_split(_sum_rate(metric, sel, by), legend)


def _detail_panels(
    selector: str, by: str, legend: str, who: str, direction: str
) -> Sequence[PanelBuilder]:
    """The seven 'By Source' / 'By Destination' panels of Istio's service and workload boards."""
    sel = selector
    return [
        ts_panel(
            f"{direction} Requests By {who} And Response Code",
            _split_by(sel, by, legend, "requests"),
            "reqps",
        ),
        ts_panel(
            f"{direction} Success Rate (non-5xx responses) By {who}",
            _split_by(sel, by, legend, "success"),
            "percentunit",
        ),
        ts_panel(
            f"{direction} Request Duration By {who}", _split_by(sel, by, legend, "duration"), "ms"
        ),
        ts_panel(
            f"{direction} Request Size By {who}", _split_by(sel, by, legend, "reqsize"), "decbytes"
        ),
        ts_panel(f"Response Size By {who}", _split_by(sel, by, legend, "respsize"), "decbytes"),
        ts_panel(
            f"Bytes Received from {direction} TCP Connection By {who}",
            _split_by(sel, by, legend, "tcprecv"),
            "Bps",
        ),
        ts_panel(
            f"Bytes Sent to {direction} TCP Connection By {who}",
            _split_by(sel, by, legend, "tcpsent"),
            "Bps",
        ),
    ]


def _add_row(d: db.Dashboard, title: str, panels: Sequence[PanelBuilder]) -> db.Dashboard:
    d = d.with_row(db.Row(title))
    for p in panels:
        d = d.with_panel(p)
    return d


def mesh_dashboard() -> db.Dashboard:
    src = 'reporter=~"source|waypoint"'
    dst = 'reporter=~"destination|waypoint"'
    d = new_dashboard(
        "meshlens-istio-mesh",
        "Istio Mesh (meshlens)",
        "Global traffic, success rate and error counts of the whole mesh, per-workload HTTP/gRPC "
        "and TCP tables, and how much traffic is mutual TLS (Istio standard metrics).",
        ["istio", "mesh"],
    )
    by_wl = "destination_workload, destination_workload_namespace, destination_service"
    d = _add_row(
        d,
        "Global Traffic",
        [
            stat_panel(
                "Traffic Volume",
                [Q(f"round({_sum_rate('istio_requests_total', src)}, 0.01)")],
                "reqps",
            ),
            stat_panel("Success Rate", [Q(_success_rate(src))], "percentunit"),
            stat_panel("4xxs", [Q(_rounded(src + ',response_code=~"4.*"'))], "reqps"),
            stat_panel("5xxs", [Q(_rounded(src + ',response_code=~"5.*"'))], "reqps"),
            ts_panel(
                "Requests by connection security policy",
                [
                    Q(
                        _sum_rate("istio_requests_total", dst, "connection_security_policy"),
                        "{{connection_security_policy}}",
                    )
                ],
                "reqps",
                w=12,
                desc="Destination-reported requests split by mutual TLS vs plaintext.",
            ),
            ts_panel(
                "TCP bytes by connection security policy",
                [
                    Q(
                        _sum_rate("istio_tcp_sent_bytes_total", dst, "connection_security_policy"),
                        "sent {{connection_security_policy}}",
                    ),
                    Q(
                        _sum_rate(
                            "istio_tcp_received_bytes_total", dst, "connection_security_policy"
                        ),
                        "received {{connection_security_policy}}",
                    ),
                ],
                "Bps",
                w=12,
            ),
        ],
    )
    d = _add_row(
        d,
        "Workloads",
        [
            table_panel(
                "HTTP/gRPC Workloads",
                [
                    Q(_sum_rate("istio_requests_total", dst, by_wl), "Requests"),
                    *[
                        Q(
                            _quantile(q, "istio_request_duration_milliseconds", dst, by_wl),
                            f"{name} Latency",
                        )
                        for q, name in QUANTILES
                    ],
                    Q(_success_rate(dst, by_wl), "Success Rate"),
                ],
            ),
            table_panel(
                "TCP Workloads",
                [
                    Q(_sum_rate("istio_tcp_received_bytes_total", dst, by_wl), "Bytes Received"),
                    Q(_sum_rate("istio_tcp_sent_bytes_total", dst, by_wl), "Bytes Sent"),
                ],
            ),
            ts_panel(
                "Istio Components",
                [Q("sum(istio_build) by (component, tag)", "{{component}} {{tag}}")],
                "none",
                w=24,
                h=6,
            ),
        ],
    )
    return d


def service_dashboard() -> db.Dashboard:
    d = new_dashboard(
        "meshlens-istio-service",
        "Istio Service (meshlens)",
        "One service as its clients see it and as its workloads serve it, with the mTLS / "
        "plaintext split on every per-source and per-workload panel.",
        ["istio", "service"],
    )
    for v in (
        query_var(
            "service",
            "Service",
            'label_values(istio_requests_total{destination_service=~".+"}, destination_service)',
            include_all=False,
        ),
        custom_var("qrep", "Reporter", ["destination", "source"]),
        query_var(
            "srcns",
            "Client Workload Namespace",
            'label_values(istio_requests_total{destination_service=~"$service"}, '
            "source_workload_namespace)",
            multi=True,
        ),
        query_var(
            "srcwl",
            "Client Workload",
            'label_values(istio_requests_total{destination_service=~"$service",'
            'source_workload_namespace=~"$srcns"}, source_workload)',
            multi=True,
        ),
        query_var(
            "dstns",
            "Service Workload Namespace",
            'label_values(istio_requests_total{destination_service=~"$service"}, '
            "destination_workload_namespace)",
            multi=True,
        ),
        query_var(
            "dstwl",
            "Service Workload",
            'label_values(istio_requests_total{destination_service=~"$service",'
            'destination_workload_namespace=~"$dstns"}, destination_workload)',
            multi=True,
        ),
    ):
        d = d.with_variable(v)
    svc = 'destination_service=~"$service"'
    client = f'reporter="source",{svc}'
    server = f'reporter="destination",{svc}'
    d = _add_row(
        d,
        "General",
        [
            stat_panel(
                "Client Request Volume", [Q(_sum_rate("istio_requests_total", client))], "reqps"
            ),
            stat_panel(
                "Client Success Rate (non-5xx responses)", [Q(_success_rate(client))], "percentunit"
            ),
            ts_panel("Client Request Duration", _duration_queries(client), "ms", w=6, h=4),
            stat_panel(
                "TCP Received Bytes",
                [Q(_sum_rate("istio_tcp_received_bytes_total", client))],
                "Bps",
            ),
            stat_panel(
                "Server Request Volume", [Q(_sum_rate("istio_requests_total", server))], "reqps"
            ),
            stat_panel(
                "Server Success Rate (non-5xx responses)", [Q(_success_rate(server))], "percentunit"
            ),
            ts_panel("Server Request Duration", _duration_queries(server), "ms", w=6, h=4),
            stat_panel(
                "TCP Sent Bytes", [Q(_sum_rate("istio_tcp_sent_bytes_total", server))], "Bps"
            ),
        ],
    )
    src_sel = (
        f'reporter=~"$qrep",{svc},source_workload=~"$srcwl",source_workload_namespace=~"$srcns"'
    )
    d = _add_row(
        d,
        "Client Workloads",
        _detail_panels(
            src_sel,
            "source_workload, source_workload_namespace",
            "{{source_workload}}.{{source_workload_namespace}}",
            "Source",
            "Incoming",
        ),
    )
    dst_sel = (
        f'reporter=~"$qrep",{svc},destination_workload=~"$dstwl",'
        'destination_workload_namespace=~"$dstns"'
    )
    d = _add_row(
        d,
        "Service Workloads",
        _detail_panels(
            dst_sel,
            "destination_workload, destination_workload_namespace",
            "{{destination_workload}}.{{destination_workload_namespace}}",
            "Destination Workload",
            "Incoming",
        ),
    )
    return d


def workload_dashboard() -> db.Dashboard:
    d = new_dashboard(
        "meshlens-istio-workload",
        "Istio Workload (meshlens)",
        "One workload: inbound traffic by source workload and outbound traffic by destination "
        "service, each split into mTLS and plaintext.",
        ["istio", "workload"],
    )
    for v in (
        query_var(
            "namespace",
            "Namespace",
            "label_values(istio_requests_total, destination_workload_namespace)",
            include_all=False,
        ),
        query_var(
            "workload",
            "Workload",
            "label_values(istio_requests_total{destination_workload_namespace=~"
            '"$namespace"}, destination_workload)',
            include_all=False,
        ),
        custom_var("qrep", "Reporter", ["destination", "source"]),
        query_var(
            "srcns",
            "Inbound Workload Namespace",
            'label_values(istio_requests_total{destination_workload="$workload",'
            'destination_workload_namespace=~"$namespace"}, source_workload_namespace)',
            multi=True,
        ),
        query_var(
            "srcwl",
            "Inbound Workload",
            'label_values(istio_requests_total{destination_workload="$workload",'
            'destination_workload_namespace=~"$namespace",source_workload_namespace=~'
            '"$srcns"}, source_workload)',
            multi=True,
        ),
        query_var(
            "dstsvc",
            "Destination Service",
            'label_values(istio_requests_total{source_workload="$workload",'
            'source_workload_namespace=~"$namespace"}, destination_service)',
            multi=True,
        ),
    ):
        d = d.with_variable(v)
    inbound = (
        'reporter=~"$qrep",destination_workload_namespace=~"$namespace",'
        'destination_workload=~"$workload"'
    )
    outbound = (
        'reporter="source",source_workload_namespace=~"$namespace",source_workload=~"$workload"'
    )
    d = _add_row(
        d,
        "General",
        [
            stat_panel(
                "Incoming Request Volume", [Q(_sum_rate("istio_requests_total", inbound))], "reqps"
            ),
            stat_panel(
                "Incoming Success Rate (non-5xx responses)",
                [Q(_success_rate(inbound))],
                "percentunit",
            ),
            ts_panel("Request Duration", _duration_queries(inbound), "ms", w=6, h=4),
            ts_panel(
                "TCP Server Traffic",
                [
                    Q(_sum_rate("istio_tcp_sent_bytes_total", inbound), "sent"),
                    Q(_sum_rate("istio_tcp_received_bytes_total", inbound), "received"),
                ],
                "Bps",
                w=6,
                h=4,
            ),
            ts_panel(
                "TCP Client Traffic",
                [
                    Q(_sum_rate("istio_tcp_sent_bytes_total", outbound), "sent"),
                    Q(_sum_rate("istio_tcp_received_bytes_total", outbound), "received"),
                ],
                "Bps",
                w=24,
                h=5,
            ),
        ],
    )
    in_sel = inbound + ',source_workload=~"$srcwl",source_workload_namespace=~"$srcns"'
    d = _add_row(
        d,
        "Inbound Workloads",
        _detail_panels(
            in_sel,
            "source_workload, source_workload_namespace",
            "{{source_workload}}.{{source_workload_namespace}}",
            "Source",
            "Incoming",
        ),
    )
    out_sel = (
        'reporter=~"$qrep",source_workload_namespace=~"$namespace",'
        'source_workload=~"$workload",destination_service=~"$dstsvc"'
    )
    d = _add_row(
        d,
        "Outbound Services",
        _detail_panels(
            out_sel, "destination_service", "{{destination_service}}", "Destination", "Outgoing"
        ),
    )
    return d
