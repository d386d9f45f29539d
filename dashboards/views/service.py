"""Service: health, golden signals by version, inbound/outbound tables, response codes x flags.
The service comes from the URL (`?service=reviews`, as the Mesh page links) and is written back,
so the address bar always names what is shown."""

from __future__ import annotations

from typing import Final

import altair as alt
import pandas as pd
import streamlit as st

from meshlens.dashboards import controls, data, time_range
from meshlens.dashboards.prefetch import prefetch

st.title(":material/monitoring: Service")

# Envoy's response flags (the ones a service page meets), for the heat map's legend.
FLAGS: Final = {
    "-": "none",
    "DC": "downstream connection terminated",
    "UH": "no healthy upstream",
    "UF": "upstream connection failure",
    "UO": "upstream overflow (circuit breaker)",
    "NR": "no route",
    "URX": "upstream retry limit exceeded",
    "UT": "upstream request timeout",
    "UC": "upstream connection termination",
    "UR": "upstream remote reset",
    "LR": "local reset",
    "DI": "delayed by fault injection",
    "FI": "aborted by fault injection",
    "RL": "rate limited",
    "UAEX": "denied by external authorization",
    "RLSE": "rate limit service error",
    "DPE": "downstream protocol error",
    "UPE": "upstream protocol error",
    "SI": "stream idle timeout",
}
HEALTH_BADGE: Final = {
    "Healthy": ("green", ":material/check_circle:", "Healthy"),
    "Degraded": ("orange", ":material/warning:", "Degraded"),
    "Failure": ("red", ":material/error:", "Failure"),
    "NA": ("gray", ":material/help:", "No traffic"),
}
_URL_SEEN: Final = "_service_url_seen"

ddir = controls.ddir()
window0 = controls.current_window()
prefetch(lambda: data.services(ddir, window0), lambda: data.warm_window(ddir, window0))
names = data.services(ddir, window0)  # errors: app.py shows a short message, logs the rest

# The URL wins when it changed (a link from the Mesh page, an edited address); else the
# selectbox keeps what the user picked.
url_service = st.query_params.get("service")
if url_service and url_service != st.session_state.get(_URL_SEEN):
    st.session_state["service_name"] = url_service
elif "service_name" not in st.session_state and st.session_state.get(_URL_SEEN):
    # Back from another page (which dropped the widget and the URL's service): the last one.
    st.session_state["service_name"] = st.session_state[_URL_SEEN]
picked = st.session_state.get("service_name")
options = list(names)
for extra in (url_service, picked):
    if extra and extra not in options:
        options.insert(0, str(extra))  # named in the URL but idle in this range: say so below
if not options:
    st.info(
        "No service has traffic in this time range. Pick a longer range in the sidebar, "
        "or see the sidebar for when data last arrived.",
        icon=":material/info:",
    )
    st.stop()
service = str(st.selectbox("Service (canonical name)", options, key="service_name"))
st.session_state[_URL_SEEN] = service
if st.query_params.get("service") != service:
    st.query_params["service"] = service
if service not in names:
    st.warning(f"`{service}` has no requests in this time range.", icon=":material/warning:")


def time_format(step_s: int, span_s: float) -> str:
    """Tick labels that tell neighbouring ticks apart at this step and span."""
    if step_s < 60:
        return "%H:%M:%S"
    return "%m-%d %H:%M" if span_s > 86400 else "%H:%M"


def _chart(
    df: pd.DataFrame, value: str, title: str, axis_title: str, fmt: str, time_fmt: str
) -> alt.Chart:
    return (
        alt.Chart(df, title=title)
        .mark_line(point=len(df) < 60)
        .encode(
            x=alt.X(
                "bucket:T",
                title="time (UTC)",
                scale=alt.Scale(type="utc"),
                axis=alt.Axis(format=time_fmt, labelOverlap=True),
            ),
            y=alt.Y(f"{value}:Q", title=axis_title, axis=alt.Axis(format=fmt)),
            color=alt.Color("version:N", title="version"),
            tooltip=[
                alt.Tooltip("bucket:T", title="bucket start (UTC)", format="%Y-%m-%d %H:%M:%S"),
                alt.Tooltip("version:N"),
                alt.Tooltip(f"{value}:Q", title=axis_title, format=fmt),
            ],
        )
        .properties(height=220)
    )


def heat_map(codes: pd.DataFrame) -> alt.LayerChart:
    """Requests per response code (rows) x response flags (columns), counts in the cells and
    the tooltips."""
    codes = codes.assign(
        response_code=codes["response_code"].astype(str),
        response_flags=codes["response_flags"].astype(str),
        meaning=[flag_meaning(f) for f in codes["response_flags"].astype(str)],
    )
    order = sorted(codes["response_code"].unique(), key=lambda c: (len(c), c))
    top = int(codes["requests"].max())
    base = alt.Chart(codes).encode(
        x=alt.X(
            "response_flags:N",
            title="response flags",
            sort="ascending",
            axis=alt.Axis(labelAngle=0, orient="top"),
        ),
        y=alt.Y("response_code:N", title="response code", sort=order),
        tooltip=[
            alt.Tooltip("response_code:N", title="response code"),
            alt.Tooltip("response_flags:N", title="response flags"),
            alt.Tooltip("meaning:N", title="flags mean"),
            alt.Tooltip("requests:Q", title="requests", format=","),
        ],
    )
    cells = base.mark_rect(stroke="white").encode(
        color=alt.Color(
            "requests:Q",
            title="requests",
            scale=alt.Scale(type="symlog", domain=[0, max(top, 1)], scheme="blues"),
            legend=None,  # the counts are in the cells and the tooltips
        )
    )
    labels = base.mark_text(baseline="middle", fontSize=13).encode(
        text=alt.Text("requests:Q", format=","),
        color=alt.condition(alt.datum.requests > top / 8, alt.value("white"), alt.value("black")),
    )
    # One band of 44 px per code. A pixel height here (the old 40 + 28 px per row) is squeezed
    # by Streamlit's "fit" autosize on the nominal axes: the rows collapsed to a few pixels
    # and their labels overlapped, so the map showed nothing readable.
    return (cells + labels).properties(height=alt.Step(44))


def flag_meaning(flags: str) -> str:
    """'UF,URX' -> 'upstream connection failure; upstream retry limit exceeded'."""
    return "; ".join(FLAGS.get(f.strip(), f.strip()) for f in flags.split(","))


def _table(df: pd.DataFrame, key_col: str, label: str, key: str) -> None:
    """A traffic table with its key column first and pinned (it stays visible while the wide
    table scrolls sideways)."""
    if df.empty:
        st.caption("none in this time range")
        return
    order = [key_col, *[c for c in df.columns if c != key_col]]
    st.dataframe(
        df,
        hide_index=True,
        key=key,
        column_order=order,
        column_config={
            key_col: st.column_config.TextColumn(label, pinned=True),
            "requests": st.column_config.NumberColumn("requests", format="localized"),
            "rps": st.column_config.NumberColumn(
                "req/s", format="%.3f", help="requests / seconds of data in the time range"
            ),
            "success_pct": st.column_config.NumberColumn("success", format="%.2f%%"),
            "p50_ms": st.column_config.NumberColumn("p50 (ms)", format="%.1f"),
            "p90_ms": st.column_config.NumberColumn("p90 (ms)", format="%.1f"),
            "p99_ms": st.column_config.NumberColumn("p99 (ms)", format="%.1f"),
            "mtls_pct": st.column_config.NumberColumn("mTLS", format="%.1f%%"),
            "request_bytes": st.column_config.NumberColumn("request bytes", format="localized"),
            "response_bytes": st.column_config.NumberColumn("response bytes", format="localized"),
        },
    )


@st.fragment(run_every=controls.refresh_every())
def body() -> None:
    show(controls.current_window())


def show(window: data.Window) -> None:
    span = data.effective_span(ddir, window)
    seconds = time_range.span_seconds(span)
    # About 60 buckets over the data's span (not the range: "last 7d" over an hour of data
    # would otherwise have no whole bucket at all).
    step_s = time_range.step_for(seconds if span else window.seconds)
    prefetch(
        lambda: data.service_health(ddir, window, service),
        lambda: data.golden_signals(ddir, window, service, step_s),
        lambda: data.inbound(ddir, window, service),
        lambda: data.outbound(ddir, window, service),
        lambda: data.codes_by_flags(ddir, window, service),
    )
    health = data.service_health(ddir, window, service)
    colour, icon, text = HEALTH_BADGE.get(health.status, HEALTH_BADGE["NA"])
    c1, c2 = st.columns([1, 4], vertical_alignment="center")
    with c1:
        st.badge(text, icon=icon, color=colour)  # type: ignore[arg-type]
    c2.caption(
        f"health of {health.requests:,} inbound requests (Kiali's default tolerances): "
        f"{health.detail}"
    )
    tfmt = time_format(step_s, seconds)

    st.subheader("Golden signals by version")
    sig = data.golden_signals(ddir, window, service, step_s)
    if sig.empty:
        st.warning(
            "No whole time bucket of HTTP/gRPC requests to this service in this range.",
            icon=":material/warning:",
        )
    else:
        versions = sorted(sig["version"].astype(str).unique())
        st.caption(
            f"versions: {', '.join(versions)} · step {step_s}s · whole buckets only (a bucket "
            "the data starts or ends inside of is left out, so lines do not dip at the ends)"
        )
        c1, c2 = st.columns(2)
        c1.altair_chart(_chart(sig, "rps", "Requests/s", "req/s", ".2f", tfmt), width="stretch")
        c2.altair_chart(
            _chart(sig, "error_ratio", "Error ratio", "errors / requests", ".1%", tfmt),
            width="stretch",
        )
        c3, c4 = st.columns(2)
        c3.altair_chart(_chart(sig, "p95_ms", "p95 latency", "ms", ".0f", tfmt), width="stretch")
        c4.altair_chart(_chart(sig, "p99_ms", "p99 latency", "ms", ".0f", tfmt), width="stretch")

    st.subheader("Inbound: client workloads")
    if span is not None:
        st.caption(
            f"req/s over the {time_range.human_seconds(seconds)} of data in this range "
            f"({span[0]:%H:%M:%S} → {span[1]:%H:%M:%S} UTC)"
        )
    _table(data.inbound(ddir, window, service), "source_workload", "source workload", "inbound")
    st.subheader("Outbound: services it calls")
    _table(data.outbound(ddir, window, service), "destination_service", "destination", "outbound")

    st.subheader("Response code × response flags")
    codes = data.codes_by_flags(ddir, window, service)
    if codes.empty:
        st.caption("no requests in this time range")
        return
    st.altair_chart(heat_map(codes), width="stretch", key="codes_heat")
    seen = sorted(set(codes["response_flags"].astype(str)))
    st.caption("flags: " + " · ".join(f"`{f}` {flag_meaning(f)}" for f in seen))
    pivot = codes.pivot_table(
        index="response_code",
        columns="response_flags",
        values="requests",
        aggfunc="sum",
        fill_value=0,
    )
    st.dataframe(pivot, key="codes_flags")


body()
