"""Requests & traces: search proxy requests, list recent traces, draw a trace waterfall."""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from meshlens.dashboards import controls, data

st.title("🔎 Requests & traces")

ddir = controls.ddir()
window = controls.current_window()
c1, c2, c3, c4 = st.columns([3, 2, 1, 1])
trace_id = c1.text_input("Trace id or request id", key="tr_trace").strip()
service = c2.selectbox("Service", ["All", *data.services(ddir, window)], key="tr_service")
status = c3.selectbox("Status", ["any", "ok", "error", "4xx", "5xx"], key="tr_status")
min_ms = c4.number_input("Min latency (ms)", min_value=0.0, value=0.0, step=10.0, key="tr_min")
svc = "" if service == "All" else str(service)

st.subheader("Requests")
found = data.search_requests(
    ddir, window, trace_id=trace_id, service=svc, status=str(status), min_ms=float(min_ms)
)
st.caption(f"{len(found)} newest matching requests (max 200)")
st.dataframe(found, hide_index=True, key="tr_requests")

st.subheader("Traces")
recent = data.recent_traces(ddir, window, svc)
st.dataframe(recent, hide_index=True, key="tr_recent")
if trace_id:
    chosen = trace_id  # a typed id wins over the list
else:
    choices = [t for t in found["trace_id"].astype(str).tolist() if t]
    choices += recent["trace_id"].astype(str).tolist() if "trace_id" in recent else []
    choices = list(dict.fromkeys(c for c in choices if c))
    if not choices:
        st.caption("no traces in this window (spans arrive over OTLP)")
        st.stop()
    chosen = st.selectbox("Trace", choices, index=0, key="tr_chosen")
spans = data.trace_spans(ddir, window, str(chosen))
if spans.empty:
    st.warning(f"no spans stored for trace {chosen}")
    st.stop()


def waterfall(df: pd.DataFrame) -> pd.DataFrame:
    """Spans in depth-first order with their depth and offsets (ms) from the trace start."""
    children: dict[str, list[int]] = {}
    ids = set(df["span_id"])
    roots = []
    for i, parent in enumerate(df["parent_span_id"].fillna("")):
        if parent and parent in ids:
            children.setdefault(parent, []).append(i)
        else:
            roots.append(i)
    order: list[tuple[int, int]] = []
    stack = [(i, 0) for i in reversed(roots)]
    while stack:
        i, depth = stack.pop()
        order.append((i, depth))
        stack.extend((c, depth + 1) for c in reversed(children.get(df["span_id"].iloc[i], [])))
    out = df.iloc[[i for i, _ in order]].copy()
    out["depth"] = [d for _, d in order]
    t0 = pd.to_datetime(df["start_ts"]).min()
    out["start_ms"] = (pd.to_datetime(out["start_ts"]) - t0).dt.total_seconds() * 1000
    out["end_ms"] = out["start_ms"] + out["duration_ms"].fillna(0)
    out["row"] = [
        f"{i:03d} " + "· " * d + f"{s}: {n}"
        for i, (s, n, d) in enumerate(
            zip(out["service_name"], out["name"], out["depth"], strict=True)
        )
    ]
    return out


wf = waterfall(spans)
total = float(wf["end_ms"].max())
st.caption(f"{len(wf)} spans · {wf['service_name'].nunique()} services · {total:.1f} ms")
chart = (
    alt.Chart(wf)
    .mark_bar(height=14)
    .encode(
        y=alt.Y("row:N", sort=None, title=None, axis=alt.Axis(labelLimit=400)),
        x=alt.X("start_ms:Q", title="ms since trace start"),
        x2="end_ms:Q",
        color=alt.Color("service_name:N", title="service"),
        stroke=alt.condition("datum.status_code == 'error'", alt.value("#c9190b"), alt.value(None)),
        strokeWidth=alt.value(2),
        tooltip=[
            "service_name",
            "name",
            "kind",
            "duration_ms",
            "status_code",
            "http_status_code",
            "span_id",
            "parent_span_id",
        ],
    )
    .properties(height=max(120, 22 * len(wf)))
)
st.altair_chart(chart, width="stretch")
st.dataframe(wf.drop(columns=["row"]), hide_index=True, key="tr_spans")
