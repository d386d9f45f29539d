"""Mesh: the interactive service graph of the selected window (Kiali-like), with time travel.

Click a node or an edge (or pick it in "Selected") to see its traffic by version, health and
the rule that set it, mTLS and principals, recent errors with links to their traces, and the
Istio config that applies. The view (selection, level, namespace, edge labels, hidden nodes)
lives in the URL, so a copied link reopens it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Final
from urllib.parse import urlencode

import pandas as pd
import streamlit as st

from meshlens.dashboards import controls, data
from meshlens.dashboards import graph_figure as gf
from meshlens.dashboards.graph_layout import Layout, layered_layout
from meshlens.dashboards.prefetch import prefetch

NONE: Final = ""
K_LEVEL, K_NS, K_LABELS = "mesh_level", "mesh_namespace", "mesh_labels"
K_HIDE, K_FIND, K_SEL, K_CHART = "mesh_hide", "mesh_find", "mesh_selected", "mesh_graph"
# URL key -> (session key, default): what a copied link carries.
_DEFAULTS: Final = {"level": "workload", "ns": "All", "labels": "none"}
HEALTH_BADGE: Final = {
    "healthy": ":green-badge[:material/check_circle: healthy]",
    "degraded": ":orange-badge[:material/warning: degraded]",
    "failure": ":red-badge[:material/error: failure]",
    "nodata": ":gray-badge[:material/remove: no data]",
}


# -- URL state -----------------------------------------------------------------------------
def _seed_from_url() -> None:
    """Widgets not drawn yet in this session take their value from the URL."""
    qp = st.query_params
    state = st.session_state
    if K_LEVEL not in state and qp.get("level") in data.LEVELS:
        state[K_LEVEL] = qp["level"]
    if K_NS not in state and qp.get("ns"):
        state[K_NS] = qp["ns"]
    if K_LABELS not in state and qp.get("labels") in gf.EDGE_LABELS:
        state[K_LABELS] = qp["labels"]
    if K_HIDE not in state and qp.get_all("hide"):
        state[K_HIDE] = [h for v in qp.get_all("hide") for h in v.split(",") if h]
    if K_SEL not in state:
        if qp.get("edge") and gf.parse_edge_key(qp["edge"]):
            state[K_SEL] = qp["edge"]
        elif qp.get("node"):
            state[K_SEL] = qp["node"]


def _set_query(key: str, value: str | list[str] | None) -> None:
    """Write one URL key only when it changed (each write is a browser history update)."""
    if value in (None, "", []):
        if key in st.query_params:
            del st.query_params[key]
        return
    if isinstance(value, list):
        if st.query_params.get_all(key) != value:
            st.query_params[key] = value
    elif st.query_params.get(key) != value:
        st.query_params[key] = value


def _write_url(level: str, ns: str, labels: str, hidden: list[str], selected: str) -> None:
    _set_query("level", None if level == _DEFAULTS["level"] else level)
    _set_query("ns", None if ns == _DEFAULTS["ns"] else ns)
    _set_query("labels", None if labels == _DEFAULTS["labels"] else labels)
    _set_query("hide", hidden)
    is_edge = gf.parse_edge_key(selected) is not None
    _set_query("edge", selected if is_edge else None)
    _set_query("node", selected if selected and not is_edge else None)


def _on_click() -> None:
    """A click on the chart selects the node or edge under it (customdata = [kind, id])."""
    event = st.session_state.get(K_CHART) or {}
    points = (event.get("selection") or {}).get("points") or []
    for p in points:
        cd = p.get("customdata")
        if isinstance(cd, list | tuple) and len(cd) == 2 and cd[0] in ("node", "edge"):
            st.session_state[K_SEL] = str(cd[1])
            return


# -- cached pure work ----------------------------------------------------------------------
@st.cache_data(show_spinner=False, max_entries=64)
def _layout(nodes: tuple[str, ...], edges: tuple[tuple[str, str], ...]) -> Layout:
    return layered_layout(nodes, edges)


def _link(page: str, params: Mapping[str, str]) -> str:
    """A URL relative to the app root (st.navigation names pages by their file name)."""
    return f"{page}?{urlencode({**controls.range_query(), **params})}"


# -- page ----------------------------------------------------------------------------------


def _fail(what: str, exc: Exception) -> None:
    """A data-layer failure as a message without server paths (never a traceback)."""
    st.error(f"{what}: {data.safe_message(str(exc), controls.ddir())}", icon=":material/error:")


st.title(":material/hub: Mesh")

# The live window's pairing (most of a cold page) beside the store's extent.
prefetch(
    lambda: data.time_extent(controls.ddir()),
    lambda: data.warm_window(controls.ddir(), controls.current_window()),
)
try:
    extent = data.time_extent(controls.ddir())
except Exception as exc:
    _fail("Cannot read the store", exc)
    st.stop()
if extent is None:
    st.info(
        "No traffic in the store yet: point Envoy's access log service at `meshlens serve`, "
        "or import access logs with `meshlens import`.",
        icon=":material/hourglass_empty:",
    )
    st.stop()

_seed_from_url()
c1, c2 = st.columns(2)
if st.session_state.get(K_LEVEL) not in data.LEVELS:
    st.session_state[K_LEVEL] = _DEFAULTS["level"]
level = str(c1.selectbox("Graph level", data.LEVELS, key=K_LEVEL))
# Namespaces come from the latest window so the list does not change while time-travelling.
latest = controls.current_window(extent[1] + timedelta(seconds=1))
ns_options = ["All", *data.namespaces(controls.ddir(), latest)]
if st.session_state.get(K_NS) not in ns_options:
    st.session_state[K_NS] = "All"
namespace = str(c2.selectbox("Namespace", ns_options, key=K_NS))

first, last = extent
span_s = controls.window_seconds()
lo = min(first + timedelta(seconds=span_s), last)
travel = st.toggle(
    "Time travel",
    value=False,
    key="mesh_travel",
    help="Pick the end of the window instead of following live traffic",
)
end: datetime | None = None
if travel and last > lo:
    end = st.slider(
        "Window end",
        min_value=lo.replace(microsecond=0),
        max_value=last.replace(microsecond=0) + timedelta(seconds=1),
        value=last.replace(microsecond=0) + timedelta(seconds=1),
        step=timedelta(minutes=1),
        format="YYYY-MM-DD HH:mm",
        key="mesh_end",
    )
elif travel:
    st.info(
        f"Nothing to travel through: the store holds {first:%Y-%m-%d %H:%M} → {last:%H:%M} UTC, "
        "which fits in one window. Pick a shorter range to move through it."
    )


def _names(graph: Mapping[str, Any]) -> dict[str, str]:
    home = gf.home_namespace(graph.get("nodes", []), None if namespace == "All" else namespace)
    out = {}
    for n in graph.get("nodes", []):
        name = gf.node_name(n, level)
        ns = str(n.get("namespace") or "")
        out[str(n["id"])] = name if ns in ("", "unknown", home) else f"{name} ({ns})"
    return out


def _option_label(key: str, names: Mapping[str, str]) -> str:
    if key == NONE:
        return "(nothing)"
    pair = gf.parse_edge_key(key)
    if pair:
        return f"edge: {names.get(pair[0], pair[0])} → {names.get(pair[1], pair[1])}"
    return f"node: {names.get(key, key)}"


@st.fragment(run_every=None if travel else controls.refresh_every())
def graph_view() -> None:
    window = controls.current_window(end)
    ns_arg = None if namespace == "All" else namespace
    prefetch(
        lambda: data.service_graph(controls.ddir(), window, level, ns_arg),
        lambda: data.node_latencies(controls.ddir(), window, level, ns_arg),
        lambda: data.effective_seconds(controls.ddir(), window),
    )
    try:
        graph = data.service_graph(controls.ddir(), window, level, ns_arg)
        secs = data.effective_seconds(controls.ddir(), window)
    except Exception as exc:
        _fail("Cannot build the graph", exc)
        return
    nodes, edges = graph.get("nodes", []), graph.get("edges", [])
    lo_t, hi_t = window.tw.start, window.tw.end
    hi_fmt = "%H:%M:%S" if lo_t.date() == hi_t.date() else "%Y-%m-%d %H:%M:%S"
    st.caption(
        f"{lo_t:%Y-%m-%d %H:%M:%S} → {hi_t.strftime(hi_fmt)} UTC · "
        f"{len(nodes)} nodes · {len(edges)} edges · rates over {secs:,.0f} s with data"
    )
    if not nodes:
        where = "" if namespace == "All" else f" in namespace `{namespace}`"
        st.warning(
            f"No traffic in this window{where}. Pick a longer time range or another "
            "namespace, or send traffic: point Envoy's access log service at `meshlens serve`.",
            icon=":material/search_off:",
        )
        return

    tot = gf.totals(graph, secs)
    m1, m2, m3, m4 = st.columns(4)
    m1.metric(
        "Requests/s",
        f"{tot.entry_rps:.2f}",
        help="Requests entering the mesh: edges out of the graph's roots (nodes nothing calls, "
        "e.g. the ingress gateway or unknown callers), over the part of the window with data.",
    )
    m2.metric(
        "Hops/s",
        f"{tot.hop_rps:.2f}",
        help="Every hop between two nodes: one entering request makes several hops.",
    )
    err = tot.entry_error_rate
    m3.metric("Error %", "-" if err is None else f"{100 * err:.2f}", help="Of entering requests.")
    m4.metric("Edges with plaintext", tot.plaintext_edges)

    names = _names(graph)
    ids = sorted(names)
    if st.session_state.get(K_HIDE):
        st.session_state[K_HIDE] = [h for h in st.session_state[K_HIDE] if h in names]
    opts = gf.label_options(graph)
    if st.session_state.get(K_LABELS) not in opts:
        st.session_state[K_LABELS] = "none"
    f1, f2, f3 = st.columns([1, 1, 2])
    labels = str(f1.selectbox("Edge labels", opts, key=K_LABELS))
    find = str(f2.text_input("Find", key=K_FIND, placeholder="name, namespace, version"))
    hidden = [
        str(h)
        for h in f3.multiselect(
            "Hide", ids, key=K_HIDE, format_func=lambda i: names.get(i, i), placeholder="nodes"
        )
    ]
    shown = gf.without(graph, hidden)
    pairs = gf.pair_stats(shown, secs)
    options = [NONE, *sorted(n["id"] for n in shown["nodes"]), *sorted(pairs)]
    missing = st.session_state.get(K_SEL)
    if missing not in options:
        if missing:
            st.info(
                f"`{missing}` is not in this graph (no traffic in this window, namespace or "
                "level, or hidden).",
                icon=":material/info:",
            )
        st.session_state[K_SEL] = NONE

    left, right = st.columns([3, 2], gap="medium")
    with right:
        selected = str(
            st.selectbox(
                "Selected",
                options,
                key=K_SEL,
                format_func=lambda k: _option_label(k, names),
                help="Click a node or an edge's midpoint in the graph, or pick it here.",
            )
        )
    with left:
        try:
            latency = data.node_latencies(controls.ddir(), window, level, ns_arg)
        except Exception:
            latency = {}
        layout = _layout(
            tuple(sorted(str(n["id"]) for n in shown["nodes"])),
            tuple((p.source, p.target) for p in pairs.values()),
        )
        sel_edge = selected if gf.parse_edge_key(selected) else None
        fig = gf.build_figure(
            shown,
            layout,
            gf.FigureOptions(
                level=level,
                namespace=ns_arg,
                edge_label=labels,
                find=find,
                selected_node=selected if selected and not sel_edge else None,
                selected_edge=sel_edge,
                seconds=secs,
                latency=latency,
            ),
        )
        st.plotly_chart(
            fig,
            key=K_CHART,
            on_select=_on_click,
            selection_mode="points",
            config={"scrollZoom": True, "displaylogo": False},
        )
        if find.strip():
            hits = [n for n in shown["nodes"] if gf.matches(n, find, level)]
            st.caption(f"Find: {len(hits)} matching node(s) ringed; others dimmed.")
        st.caption(
            "Shapes: ● workload · ■ app · ▲ service · ◆ external host · ⬢ unknown. "
            "Health: colour and glyph (dot healthy, triangle degraded, cross failure, "
            "dash no data). Edges: solid with a square mid-point = all mTLS (the lock), "
            "dashed with an open circle = some plaintext. Scroll to zoom, drag to pan."
        )
    with right:
        if selected:
            try:
                _details(graph, window, ns_arg, selected, secs)
            except Exception as exc:
                _fail("Cannot load the details", exc)
        else:
            st.caption("Select a node or an edge to see its traffic, health, security and config.")
    with st.expander("Edges", expanded=False):
        st.dataframe(_edge_table(shown, secs, names), hide_index=True)
    _write_url(level, namespace, labels, hidden, selected)


# -- details panel -------------------------------------------------------------------------
def _service_of(node: Mapping[str, Any]) -> str:
    """The Service page's name for a node: its canonical service, else its service."""
    for key in ("app", "service"):
        v = str(node.get(key) or "")
        if v and v != "unknown":
            return v.split("/")[0]
    return ""


def _traffic_table(df: pd.DataFrame, names: Mapping[str, str], secs: float) -> pd.DataFrame:
    if df.empty:
        return df
    out = pd.DataFrame(
        {
            "source": [names.get(s, s) for s in df["source"]],
            "destination": [names.get(d, d) for d in df["destination"]],
            "source_version": df["source_version"],
            "destination_version": df["destination_version"],
            "protocol": df["protocol"],
            "requests": df["requests"],
            "rps": (df["requests"] / secs).round(3),
            "error_pct": (100 * df["errors"] / df["requests"]).round(2),
            "p50_ms": pd.to_numeric(df["p50_ms"]).round(1),
            "p95_ms": pd.to_numeric(df["p95_ms"]).round(1),
            "p99_ms": pd.to_numeric(df["p99_ms"]).round(1),
        }
    )
    return out


def _health_section(graph: Mapping[str, Any], node: str | None, edge: Any, status: str) -> None:
    rules = data.health_rules(graph, node=node, edge=edge)
    st.markdown(HEALTH_BADGE[status])
    deciding = [r for r in rules if str(r["status"]).lower() == status]
    if status in ("degraded", "failure") and deciding:
        r = deciding[0]
        st.markdown(
            f"Set by **{r['rule']}** on {r['direction']} {r['protocol']} traffic: "
            f"{r['error_pct']:.2f} % of {r['requests']} requests "
            f"(degraded {r['degraded_at']}, failure {r['failure_at']})."
        )
    elif status == "healthy":
        st.caption("Every tolerance below is under its degraded threshold.")
    else:
        st.caption("No request traffic to judge (TCP only, or none in the window).")
    if rules:
        st.dataframe(pd.DataFrame(rules), hide_index=True)
    st.caption(
        "Kiali's default tolerances (analytics/health.py): HTTP 5xx degraded above 0 %, "
        "failure at 10 %; 4xx degraded at 10 %, failure at 20 %; gRPC errors and no response "
        "degraded above 0 %, failure at 10 %. The worst status wins."
    )


def _security_section(df: pd.DataFrame) -> None:
    if df.empty:
        st.caption("No requests.")
        return
    total, mtls = int(df["requests"].sum()), int(df["mtls_requests"].sum())
    st.metric("mTLS", f"{100 * mtls / total:.1f} %" if total else "-")
    st.dataframe(df, hide_index=True)


def _errors_section(df: pd.DataFrame, names: Mapping[str, str]) -> None:
    if df.empty:
        st.caption("No errors in the window.")
        return
    view = df.copy()
    view["source"] = [names.get(s, s) for s in view["source"]]
    view["destination"] = [names.get(d, d) for d in view["destination"]]
    view["trace"] = [
        _link("traces", {"trace": t}) if t else _link("traces", {"request": r}) if r else None
        for t, r in zip(view["trace_id"], view["request_id"], strict=True)
    ]
    cols = [
        "ts",
        "source",
        "destination",
        "response_code",
        "grpc_status",
        "response_flags",
        "method",
        "path",
        "duration_ms",
        "trace_id",
        "trace",
    ]
    st.dataframe(
        view[cols],
        hide_index=True,
        column_config={
            "trace": st.column_config.LinkColumn("open", display_text="trace"),
            "ts": st.column_config.DatetimeColumn("time", format="HH:mm:ss.SSS"),
        },
    )
    newest = df.iloc[0]
    if newest["trace_id"]:
        st.page_link(
            "views/traces.py",
            label=f"Newest error's trace {str(newest['trace_id'])[:12]}…",
            icon=":material/timeline:",
            query_params={**controls.range_query(), "trace": str(newest["trace_id"])},
        )
    elif newest["request_id"]:
        st.page_link(
            "views/traces.py",
            label="Newest error's request",
            icon=":material/timeline:",
            query_params={**controls.range_query(), "request": str(newest["request_id"])},
        )


def _config_section(node: Mapping[str, Any]) -> None:
    text = data.istio_config_text()
    if not text.strip():
        st.caption(f"No Istio config given: set {data.ISTIO_CONFIG_ENV} to a YAML file or folder.")
        return
    rows, error = data.istio_resources_for(
        text,
        str(node.get("namespace") or ""),
        str(node.get("app") or ""),
        str(node.get("version") or ""),
        str(node.get("service") or ""),
    )
    if error:
        st.error(f"The Istio config cannot be read: {error}", icon=":material/error:")
        return
    if not rows:
        st.caption("No resource of the config selects this workload or its host.")
    for r in rows:
        with st.expander(f"{r['kind']} {r['namespace']}/{r['name']} · {r['why']}"):
            st.code(r["yaml"], language="yaml")


def _links(service: str, ddir: str) -> None:
    if not service:
        return
    q = controls.range_query()
    cols = st.columns(4)
    cols[0].page_link(
        "views/service.py",
        label="Service",
        icon=":material/monitoring:",
        query_params={**q, "service": service},
    )
    cols[1].page_link(
        "views/security.py",
        label="Security",
        icon=":material/shield_lock:",
        query_params={**q, "service": service},
    )
    cols[2].page_link(
        "views/traces.py",
        label="Requests",
        icon=":material/timeline:",
        query_params={**q, "service": service},
    )
    try:
        ro = data.rollouts(ddir)
    except Exception:
        ro = pd.DataFrame()
    if not ro.empty and "service" in ro.columns:
        hit = ro[[str(s).split(".")[0] == service for s in ro["service"]]]
        if not hit.empty:
            cols[3].page_link(
                "views/canary.py",
                label="Canary",
                icon=":material/alt_route:",
                query_params={**q, "rollout": str(hit.iloc[0]["rollout"])},
            )


def _details(
    graph: Mapping[str, Any], window: data.Window, ns: str | None, selected: str, secs: float
) -> None:
    names = _names(graph)
    nodes = {str(n["id"]): n for n in graph.get("nodes", [])}
    pair = gf.parse_edge_key(selected)
    if pair is not None:
        node = None
        target = nodes.get(pair[1], {})
        stats = gf.pair_stats(graph, secs).get(selected)
        status = stats.health if stats else "nodata"
        st.subheader(f"{names.get(pair[0], pair[0])} → {names.get(pair[1], pair[1])}")
        det = data.selection_details(controls.ddir(), window, level, ns, edge=pair)
        if stats is not None:
            a, b, c, d = st.columns(4)
            a.metric("rps", f"{stats.rps:.2f}")
            b.metric(
                "Error %", "-" if stats.error_rate is None else f"{100 * stats.error_rate:.2f}"
            )
            c.metric("p95", "-" if stats.p95_ms is None else f"{stats.p95_ms:.0f} ms")
            d.metric("mTLS", "-" if stats.mtls_ratio is None else f"{100 * stats.mtls_ratio:.0f} %")
        _links(_service_of(target), controls.ddir())
        tabs = st.tabs(["Traffic", "Health", "Security", "Errors", "Istio config"])
        with tabs[0]:
            st.markdown("**By version**")
            st.dataframe(_traffic_table(det.traffic, names, secs), hide_index=True)
        with tabs[1]:
            _health_section(graph, None, pair, status)
        with tabs[2]:
            _security_section(det.security)
        with tabs[3]:
            _errors_section(det.errors, names)
        with tabs[4]:
            st.caption(f"Resources that apply to the destination, {names.get(pair[1], pair[1])}.")
            _config_section(target)
        return

    node = nodes.get(selected, {})
    status = gf.health_of(node)
    st.subheader(names.get(selected, selected))
    st.caption(
        f"{gf.node_kind(node)} · namespace {node.get('namespace') or '-'} · "
        f"version {node.get('version') or '-'} · id `{selected}`"
    )
    ns_stats = gf.node_stats(graph, secs).get(selected)
    det = data.selection_details(controls.ddir(), window, level, ns, node=selected)
    if ns_stats is not None:
        a, b, c = st.columns(3)
        a.metric("In rps", f"{ns_stats.rps_in:.2f}")
        b.metric("Out rps", f"{ns_stats.rps_out:.2f}")
        e = ns_stats.error_rate_in
        c.metric("Error % in", "-" if e is None else f"{100 * e:.2f}")
    _links(_service_of(node), controls.ddir())
    tabs = st.tabs(["Traffic", "Health", "Security", "Errors", "Istio config"])
    with tabs[0]:
        tr = det.traffic
        for direction, title in (("in", "Inbound"), ("out", "Outbound")):
            part = tr[tr["direction"] == direction] if not tr.empty else tr
            st.markdown(f"**{title}** · {int(part['requests'].sum()) if len(part) else 0} requests")
            if len(part):
                st.dataframe(_traffic_table(part, names, secs), hide_index=True)
    with tabs[1]:
        _health_section(graph, selected, None, status)
    with tabs[2]:
        _security_section(det.security)
    with tabs[3]:
        _errors_section(det.errors, names)
    with tabs[4]:
        _config_section(node)


def _edge_table(graph: Mapping[str, Any], secs: float, names: Mapping[str, str]) -> pd.DataFrame:
    rows: Sequence[dict[str, Any]] = [
        {
            "source": names.get(p.source, p.source),
            "target": names.get(p.target, p.target),
            "protocol": ", ".join(p.protocols),
            "requests": p.requests,
            "rps": round(p.rps, 3),
            "error_pct": None if p.error_rate is None else round(100 * p.error_rate, 2),
            "p50_ms": p.p50_ms,
            "p95_ms": p.p95_ms,
            "p99_ms": p.p99_ms,
            "mtls_pct": None if p.mtls_ratio is None else round(100 * p.mtls_ratio, 1),
            "health": p.health,
        }
        for p in gf.pair_stats(graph, secs).values()
    ]
    return pd.DataFrame(rows)


graph_view()
