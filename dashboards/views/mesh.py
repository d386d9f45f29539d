"""Mesh: the service graph of the selected window, with time travel."""

from __future__ import annotations

from datetime import datetime, timedelta

import pandas as pd
import streamlit as st

from meshlens.dashboards import controls, data
from meshlens.dashboards.dot import HEALTH_COLOURS, LOCK, to_dot

st.title("🕸️ Mesh")

extent = data.time_extent(controls.ddir())
if extent is None:
    st.info(
        "No traffic in the store yet: point Envoy's access log service at `meshlens serve`, "
        "or import access logs with `meshlens import`."
    )
    st.stop()

c1, c2 = st.columns(2)
level = c1.selectbox("Graph level", data.LEVELS, index=0, key="mesh_level")
# Namespaces come from the latest window so the list does not change while time-travelling.
latest = controls.current_window(extent[1] + timedelta(seconds=1))
ns_options = ["All", *data.namespaces(controls.ddir(), latest)]
namespace = c2.selectbox("Namespace", ns_options, index=0, key="mesh_namespace")

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


@st.fragment(run_every=None if travel else controls.refresh_every())
def graph_view() -> None:
    window = controls.current_window(end)
    graph = data.service_graph(
        controls.ddir(), window, str(level), None if namespace == "All" else str(namespace)
    )
    nodes, edges = graph.get("nodes", []), graph.get("edges", [])
    st.caption(
        f"{window.tw.start:%Y-%m-%d %H:%M:%S} → {window.tw.end:%H:%M:%S} UTC · "
        f"{len(nodes)} nodes · {len(edges)} edges"
    )
    if not nodes:
        st.warning("No traffic in this window and namespace.")
        return
    m1, m2, m3 = st.columns(3)
    http = [e for e in edges if e.get("protocol") != "tcp"]
    total_rps = sum(float(e.get("rps") or 0) for e in http)
    errs = sum(float(e.get("rps") or 0) * float(e.get("error_rate") or 0) for e in http)
    m1.metric("Requests/s", f"{total_rps:.2f}")
    m2.metric("Error %", f"{100 * errs / total_rps:.2f}" if total_rps else "-")
    plain = [e for e in edges if float(e.get("mtls_ratio") or 0) < 0.999]
    m3.metric("Edges with plaintext", len(plain))
    st.graphviz_chart(to_dot(graph, level=str(level)), width="stretch")
    legend = " ".join(
        f":{'green' if k == 'healthy' else 'orange' if k == 'degraded' else 'red'}[■] {k}"
        for k in ("healthy", "degraded", "failure")
    )
    st.caption(
        f"{legend} · grey: no health · {LOCK} all mTLS · dashed: some plaintext · "
        f"colours {HEALTH_COLOURS['healthy']}/{HEALTH_COLOURS['failure']}"
    )
    with st.expander("Edges", expanded=False):
        cols = [
            "source",
            "target",
            "protocol",
            "requests",
            "rps",
            "error_rate",
            "p50_ms",
            "p95_ms",
            "p99_ms",
            "mtls_ratio",
        ]
        df = pd.DataFrame(edges)
        st.dataframe(df[[c for c in cols if c in df.columns]], hide_index=True)


graph_view()
