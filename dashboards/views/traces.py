"""Requests & traces: search proxy requests and traces, open one trace (waterfall, span logs,
the proxy requests that carry it). The open trace lives in the URL (`?trace=` / `?request=`,
the Mesh page links with them), so a view can be shared."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import urlencode

import pandas as pd
import streamlit as st

from meshlens.dashboards import controls, data, waterfall

T = TypeVar("T")
state = st.session_state

st.title(":material/manage_search: Requests & traces")
ddir = controls.ddir()
window = controls.current_window()


def _safe(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T | None:
    """A loader's result, or None after an `st.error` with the message (no traceback)."""
    try:
        return fn(*args, **kwargs)
    except Exception as exc:
        st.error(data.safe_message(f"{type(exc).__name__}: {exc}", ddir), icon=":material/error:")
        return None


def _link(**params: str) -> str:
    """A link to this page (relative: works under any base path) keeping the time range."""
    return "traces?" + urlencode(
        {**controls.range_query(), **{k: v for k, v in params.items() if v}}
    )


# -- a link (?trace= / ?request=) opens what it names --------------------------------------
url_ids = (str(st.query_params.get("trace", "")), str(st.query_params.get("request", "")))
if any(url_ids) and url_ids != state.get("tr_url"):
    state["tr_trace"] = url_ids[1] or url_ids[0]  # before the text box is drawn
    state["tr_pinned"] = ""
    state["tr_url"] = url_ids

# -- search --------------------------------------------------------------------------------
services = _safe(data.services, ddir, window) or []
service_options = ["All", *services]
url_service = str(st.query_params.get("service", ""))  # the Mesh page's "Requests" link
if url_service and url_service != state.get("tr_url_service"):
    state["tr_service"] = url_service
    state["tr_url_service"] = url_service
if state.get("tr_service") not in service_options:
    if state.get("tr_service") == url_service and url_service:
        service_options.append(url_service)  # no traffic in this window: keep the filter
    else:
        state["tr_service"] = "All"
c1, c2, c3, c4, c5 = st.columns([3, 2, 1, 2, 1])
text = c1.text_input(
    "Request id or trace id",
    key="tr_trace",
    placeholder="x-request-id, trace id or traceparent",
).strip()
service = c2.selectbox("Service", service_options, key="tr_service")
status = c3.selectbox("Status", list(data.STATUSES), key="tr_status")
path = c4.text_input("Path contains", key="tr_path").strip()
min_ms = float(
    c5.number_input("Min duration (ms)", min_value=0.0, value=0.0, step=10.0, key="tr_min")
)
svc = "" if service == "All" else str(service)
if st.query_params.get("service", "") != svc:  # the filter goes back into the URL
    if svc:
        st.query_params["service"] = svc
    elif "service" in st.query_params:
        del st.query_params["service"]
state["tr_url_service"] = svc

# New filters: the trace shown follows them again, and the tables start with no selection
# (their keys change, or a kept row index would point at another row of the new result).
sig = (text, svc, str(status), path, min_ms)
if state.get("tr_sig") != sig:
    state["tr_sig"] = sig
    state["tr_pinned"] = ""
    state["tr_gen"] = int(state.get("tr_gen", 0)) + 1
gen = int(state["tr_gen"])
filters = {"service": svc, "status": str(status), "path": path, "min_ms": min_ms}

found = _safe(data.search_requests, ddir, window, query=text, **filters)
found = found if found is not None else pd.DataFrame()
roots = _safe(
    data.recent_traces,
    ddir,
    window,
    svc,
    query=text,
    **{k: v for k, v in filters.items() if k != "service"},
)
roots = roots if roots is not None else pd.DataFrame()


def _clicked(name: str, event: Any) -> list[int] | None:
    """The rows of a table's selection when the user changed it this run, else None."""
    rows = [int(r) for r in event.selection.rows] if event is not None else []
    seen = state.setdefault("tr_seen", {})
    before = seen.get(name)
    seen[name] = (gen, rows)
    if before is None or before[0] != gen:
        return rows or None
    return rows if rows != before[1] else None


tab_req, tab_tr = st.tabs(
    [
        f":material/swap_horiz: Requests ({len(found)})",
        f":material/account_tree: Traces ({len(roots)})",
    ]
)
with tab_req:
    st.caption("Newest matching proxy requests (max 200). Click a row to open its trace.")
    ev_req = st.dataframe(
        found,
        hide_index=True,
        on_select="rerun",
        selection_mode="single-row",
        key=f"tr_requests_{gen}",
        column_config={
            "ts": st.column_config.DatetimeColumn("time", format="HH:mm:ss.SSS"),
            "spans": st.column_config.NumberColumn("spans", help="spans stored for its trace"),
        },
    )
with tab_tr:
    st.caption("Root spans of the window (traces sent over OTLP). Click a row to open it.")
    ev_tr = st.dataframe(
        roots,
        hide_index=True,
        on_select="rerun",
        selection_mode="single-row",
        key=f"tr_traces_{gen}",
    )

for name, event, frame in (("requests", ev_req, found), ("traces", ev_tr, roots)):
    rows = _clicked(name, event)
    if rows is None:
        continue
    if rows and rows[0] < len(frame):
        row = frame.iloc[rows[0]]
        tid = str(row.get("trace_id") or "")
        state["tr_pinned"] = tid or str(row.get("request_id") or "")
    else:  # the row was unselected
        state["tr_pinned"] = ""

# What to open: a clicked row, else the id searched, else the first result (with spans).
target = str(state.get("tr_pinned") or "") or text
if not target and len(found):
    with_spans = found[found["spans"] > 0] if "spans" in found else found.head(0)
    first = with_spans.iloc[0] if len(with_spans) else found.iloc[0]
    target = str(first["trace_id"] or "") or str(first["request_id"] or "")
if not target and len(roots):
    target = str(roots.iloc[0]["trace_id"])


def _write_url(trace_id: str, request_id: str) -> None:
    wanted = {"trace": trace_id, "request": request_id}
    for key, value in wanted.items():
        if value and st.query_params.get(key) != value:
            st.query_params[key] = value
        elif not value and key in st.query_params:
            del st.query_params[key]
    state["tr_url"] = (trace_id, request_id)


st.divider()
if not target:
    _write_url("", "")
    st.info(
        "No request or trace matches these filters in this window. Widen the time range in "
        "the sidebar, or paste a request id or trace id.",
        icon=":material/search_off:",
    )
    st.stop()

ref = _safe(data.resolve_trace, ddir, window, target)
if ref is None:
    _write_url("", "")
    st.warning(
        f"No request and no span with the id `{target}` in this window or the day before it. "
        "Request ids are x-request-id values, trace ids 32 hex digits; to search by path, use "
        "Path contains.",
        icon=":material/search_off:",
    )
    st.stop()
_write_url(ref.trace_id, ref.request_id)
tid = ref.trace_id
around = ref.around

spans = _safe(data.trace_spans, ddir, around, tid) if tid else None
spans = spans if spans is not None else pd.DataFrame()
logs = _safe(data.trace_logs, ddir, around, tid) if tid else None
logs = logs if logs is not None else pd.DataFrame()
requests = _safe(data.trace_requests, ddir, around, tid, ref.request_id)
requests = requests if requests is not None else pd.DataFrame()

if tid:
    st.subheader(f":material/timeline: Trace `{tid}`")
else:
    st.subheader(f":material/swap_horiz: Request `{ref.request_id}`")
share = _link(trace=tid, request=ref.request_id)
st.caption(f"Link to this view: [{share}]({share})")


# -- waterfall -----------------------------------------------------------------------------
NO_SPANS_HELP = (
    "To get a waterfall, turn tracing on: declare the `meshlens-tracing` OpenTelemetry "
    "provider (`deploy/istio/meshconfig.yaml`) and enable it with a Telemetry resource "
    "(`deploy/istio/telemetry.yaml`; raise `randomSamplingPercentage` to trace more requests). "
    "Applications can also send their own spans over OTLP to port 4317."
)


def show_waterfall(tid: str, spans: pd.DataFrame, logs: pd.DataFrame, n_requests: int) -> None:
    """The waterfall and the span table (with the selected span's attributes and logs), or why
    there is none. Fills `labels` (span id -> label) for the logs table."""
    if spans.empty:
        reason = (
            "These requests carry no trace id: the proxies saw no tracing headers "
            "(traceparent or x-b3-traceid), so no trace was started."
            if not tid
            else f"No spans were sent for trace `{tid}`: {n_requests} proxy requests carry its "
            "trace id, but no proxy or application exported spans of it (tracing is off for "
            "these proxies, or the trace was not sampled)."
        )
        st.info(f"{reason}\n\n{NO_SPANS_HELP}", icon=":material/info:")
        return
    wf = waterfall.order_spans(spans)
    labels.update(zip(wf["span_id"].astype(str), wf["label"], strict=False))
    n_err = int((wf["status"] == "error").sum())
    total = float(wf["end_ms"].max())
    st.caption(
        f"{len(wf)} spans · {wf['service_name'].nunique()} services · {total:.1f} ms"
        + (f" · :red[{n_err} error spans]" if n_err else "")
        + (
            f" · only the first {data.MAX_SPANS} spans are read"
            if len(wf) >= data.MAX_SPANS
            else ""
        )
    )
    if len(wf) > waterfall.MAX_CHART_SPANS:
        st.caption(f"The chart shows the first {waterfall.MAX_CHART_SPANS} spans; all are listed.")
    st.altair_chart(waterfall.waterfall_chart(wf), width="stretch")

    log_counts = logs.groupby("span_id").size().to_dict() if len(logs) else {}
    table = wf.assign(
        logs=[int(log_counts.get(str(s), 0)) for s in wf["span_id"]],
        start_ms=wf["start_ms"].round(2),
        duration_ms=(wf["end_ms"] - wf["start_ms"]).round(2),
    )
    cols = [
        "depth", "label", "kind", "status", "status_code", "http_status_code", "start_ms",
        "duration_ms", "logs", "service_name", "name", "span_id", "parent_span_id",
    ]  # fmt: skip
    st.caption("Spans (click one for its attributes and logs)")
    ev_span = st.dataframe(
        table[[c for c in cols if c in table]],
        hide_index=True,
        on_select="rerun",
        selection_mode="single-row",
        key="tr_spans_" + hashlib.sha1(tid.encode()).hexdigest()[:8],  # per trace: no stale row
        column_config={"label": st.column_config.TextColumn("span", width="medium")},
    )
    picked = [int(r) for r in ev_span.selection.rows] if ev_span is not None else []
    if picked and picked[0] < len(wf):
        show_span(wf.iloc[picked[0]], logs)


def show_span(span: pd.Series, logs: pd.DataFrame) -> None:
    with st.container(border=True):
        st.markdown(f"**:material/label: {span['label']}** · `{span['span_id']}`")
        if str(span.get("status_message") or ""):
            st.error(str(span["status_message"]), icon=":material/error:")
        attrs = waterfall.pretty_attributes(span.get("attributes"))
        st.caption(f"attributes: {attrs or 'none'}")
        mine = logs[logs["span_id"] == span["span_id"]] if len(logs) else logs
        if not len(mine):
            st.caption("no log records of this span")
            return
        st.caption(f"{len(mine)} log records of this span")
        for _, rec in mine.iterrows():
            line = f"`{rec['ts']}` **{rec['severity_text'] or '-'}** {rec['body']}"
            if waterfall.is_error_log(rec["severity_text"], rec["severity_number"]):
                st.error(line, icon=":material/error:")
            else:
                st.markdown(line)


# -- logs ----------------------------------------------------------------------------------
def show_logs(logs: pd.DataFrame) -> None:
    """The trace's log records, ERROR (and worse) ones called out and highlighted."""
    st.subheader(":material/notes: Logs of this trace")
    if logs.empty:
        st.caption("No log records carry this trace id (OTLP logs with trace context).")
        return
    logs = logs.reset_index(drop=True)
    errs = [
        waterfall.is_error_log(s, n)
        for s, n in zip(logs["severity_text"], logs["severity_number"], strict=True)
    ]
    if any(errs):
        first = logs[pd.Series(errs)].iloc[0]
        st.error(
            f"{sum(errs)} ERROR log records. First: {first['service_name']}: {first['body']}",
            icon=":material/error:",
        )
    shown = pd.DataFrame(
        {
            "time": logs["ts"],
            "severity": logs["severity_text"].fillna("").astype(str),
            "service": logs["service_name"],
            "span": [labels.get(str(s), str(s) or "-") for s in logs["span_id"]],
            "body": logs["body"],
            "attributes": [waterfall.pretty_attributes(a) for a in logs["attributes"]],
        }
    )

    def _highlight(row: pd.Series) -> list[str]:
        bad = errs[int(row.name)]
        return ["background-color: #fde8e8; color: #9b1c1c" if bad else ""] * len(row)

    st.dataframe(shown.style.apply(_highlight, axis=1), hide_index=True, key="tr_logs")


# -- requests of the same trace ------------------------------------------------------------
def show_requests(requests: pd.DataFrame) -> None:
    """The access-log requests of the trace from every reporting proxy, with links."""
    st.subheader(":material/swap_horiz: Requests of this trace")
    if requests.empty:
        st.caption("No proxy request (access log) carries this trace id.")
        return
    st.caption(
        f"{len(requests)} reports from {requests['node_id'].nunique()} proxies "
        "(a hop is reported by its client and its server proxy)"
    )
    shown = requests.assign(
        open=[_link(request=str(r)) for r in requests["request_id"]],
        service=[
            "service?" + urlencode({**controls.range_query(), "service": str(s)})
            for s in requests["destination_canonical_service"]
        ],
    )
    first_cols = ["open", "ts", "reporter", "source_workload", "destination_workload", "service"]
    st.dataframe(
        shown[first_cols + [c for c in shown.columns if c not in first_cols]],
        hide_index=True,
        key="tr_trace_requests",
        column_config={
            "open": st.column_config.LinkColumn("request", display_text="open"),
            "service": st.column_config.LinkColumn("service page", display_text=r"service=([^&]*)"),
            "ts": st.column_config.DatetimeColumn("time", format="HH:mm:ss.SSS"),
        },
    )


labels: dict[str, str] = {}
_safe(show_waterfall, tid, spans, logs, len(requests))
if tid:
    _safe(show_logs, logs)
_safe(show_requests, requests)
