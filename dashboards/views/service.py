"""Service: golden signals by version, inbound/outbound tables, response codes x flags."""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from meshlens.dashboards import controls, data

st.title("📈 Service")

window0 = controls.current_window()
names = data.services(controls.ddir(), window0)
if not names:
    st.info("No services with traffic in this window.")
    st.stop()
service = st.selectbox("Service (canonical name)", names, index=0, key="service_name")
step_s = max(10, int(controls.window_seconds() // 60))


def _chart(df: pd.DataFrame, value: str, title: str, fmt: str) -> alt.Chart:
    return (
        alt.Chart(df, title=title)
        .mark_line(point=len(df) < 60)
        .encode(
            x=alt.X("bucket:T", title=None),
            y=alt.Y(f"{value}:Q", title=None, axis=alt.Axis(format=fmt)),
            color=alt.Color("version:N"),
            tooltip=["bucket:T", "version:N", f"{value}:Q"],
        )
        .properties(height=220)
    )


@st.fragment(run_every=controls.refresh_every())
def body() -> None:
    window = controls.current_window()
    ddir = controls.ddir()
    st.subheader("Golden signals by version")
    sig = data.golden_signals(ddir, window, str(service), step_s)
    if sig.empty:
        st.warning("No HTTP/gRPC requests to this service in the window.")
    else:
        versions = sorted(sig["version"].astype(str).unique())
        st.caption(f"versions: {', '.join(versions)} · step {step_s}s")
        c1, c2 = st.columns(2)
        c1.altair_chart(_chart(sig, "rps", "Requests/s", ".2f"), width="stretch")
        c2.altair_chart(_chart(sig, "error_ratio", "Error ratio", ".1%"), width="stretch")
        c3, c4 = st.columns(2)
        c3.altair_chart(_chart(sig, "p95_ms", "p95 latency (ms)", ".0f"), width="stretch")
        c4.altair_chart(_chart(sig, "p99_ms", "p99 latency (ms)", ".0f"), width="stretch")

    st.subheader("Inbound: client workloads")
    st.dataframe(data.inbound(ddir, window, str(service)), hide_index=True, key="inbound")
    st.subheader("Outbound: services it calls")
    st.dataframe(data.outbound(ddir, window, str(service)), hide_index=True, key="outbound")

    st.subheader("Response code × response flags")
    codes = data.codes_by_flags(ddir, window, str(service))
    if codes.empty:
        st.caption("no requests")
        return
    heat = (
        alt.Chart(codes)
        .mark_rect()
        .encode(
            x=alt.X("response_flags:N", title="response flags"),
            y=alt.Y("response_code:N", title="response code"),
            color=alt.Color("requests:Q", scale=alt.Scale(type="log")),
            tooltip=["response_code", "response_flags", "requests"],
        )
        .properties(height=40 + 28 * codes["response_code"].nunique())
    )
    text = heat.mark_text(baseline="middle").encode(text="requests:Q", color=alt.value("black"))
    st.altair_chart(heat + text, width="stretch")
    pivot = codes.pivot_table(
        index="response_code",
        columns="response_flags",
        values="requests",
        aggfunc="sum",
        fill_value=0,
    )
    st.dataframe(pivot, key="codes_flags")


body()
