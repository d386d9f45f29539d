"""A trace as a waterfall: spans ordered parent before children, and the Altair chart of it.

Pure (pandas and altair, no Streamlit). Each span is one row: its label (service and operation,
indented by depth) is drawn as a text mark in a column of its own, so every span keeps its
label however many there are (axis labels get thinned out when they would overlap: the "every
second span has no label" bug). Bars go from the start to the end offset in ms since the
trace's first span, coloured by status; error spans also get a marker.
"""

from __future__ import annotations

import json
import math
from typing import Any, Final

import altair as alt
import pandas as pd

STATUS_COLOURS: Final = {"error": "#c9190b", "ok": "#3e8635", "unset": "#4c78a8"}
ROW_PX: Final = 24
LABEL_PX: Final = 360
TIMELINE_PX: Final = 640
INDENT_PX: Final = 14
MAX_CHART_SPANS: Final = 500
LOG_ERROR_SEVERITY: Final = 17  # OTLP: 17-20 ERROR, 21-24 FATAL


def _text(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    return str(v)


def span_label(service: Any, name: Any) -> str:
    """'service: operation', never empty (a span without either still gets a label)."""
    s, n = _text(service).strip(), _text(name).strip()
    if s and n:
        return f"{s}: {n}"
    return s or n or "(unnamed span)"


def is_error_span(status_code: Any, http_status_code: Any = None) -> bool:
    if _text(status_code).lower() == "error":
        return True
    try:
        return int(http_status_code) >= 500
    except (TypeError, ValueError):
        return False


def order_spans(spans: pd.DataFrame) -> pd.DataFrame:
    """Spans depth first (siblings by start time), with `depth`, `start_ms`, `end_ms` since the
    trace start, `label`, `status` (error|ok|unset) and `order`. Spans whose parent is not stored
    become roots; a repeated span id or a parent loop cannot make a span appear twice."""
    if spans.empty:
        out = spans.copy()
        for col in ("order", "depth", "start_ms", "end_ms", "label", "status"):
            out[col] = pd.Series(dtype="object")
        return out
    df = spans.reset_index(drop=True).copy()
    start = pd.to_datetime(df["start_ts"], utc=True)
    t0 = start.min()
    df["start_ms"] = (start - t0).dt.total_seconds() * 1000.0
    if "end_ts" in df:
        end_ms = (pd.to_datetime(df["end_ts"], utc=True) - t0).dt.total_seconds() * 1000.0
    else:
        end_ms = pd.Series(float("nan"), index=df.index)
    dur = pd.to_numeric(df.get("duration_ms"), errors="coerce")
    df["end_ms"] = end_ms.where(end_ms.notna(), df["start_ms"] + dur.fillna(0.0))
    df["end_ms"] = df[["start_ms", "end_ms"]].max(axis=1)

    span_ids = df["span_id"].map(_text).tolist()
    parents = df["parent_span_id"].map(_text).tolist() if "parent_span_id" in df else []
    first_row: dict[str, int] = {}
    for i, sid in enumerate(span_ids):
        if sid:
            first_row.setdefault(sid, i)
    children: dict[int, list[int]] = {}
    roots: list[int] = []
    for i in range(len(df)):
        parent = parents[i] if parents else ""
        p = first_row.get(parent) if parent else None
        if p is None or p == i:
            roots.append(i)
        else:
            children.setdefault(p, []).append(i)

    def by_start(rows: list[int]) -> list[int]:
        return sorted(rows, key=lambda r: (float(df.at[r, "start_ms"]), r))

    order: list[tuple[int, int]] = []
    seen: set[int] = set()
    stack = [(r, 0) for r in reversed(by_start(roots))]
    while stack:
        i, depth = stack.pop()
        if i in seen:
            continue
        seen.add(i)
        order.append((i, depth))
        stack.extend((c, depth + 1) for c in reversed(by_start(children.get(i, []))))
    # Spans caught in a parent loop are reachable from no root: list them as roots at the end.
    for i in by_start([i for i in range(len(df)) if i not in seen]):
        order.append((i, 0))

    out = df.iloc[[i for i, _ in order]].reset_index(drop=True)
    out["depth"] = [d for _, d in order]
    out["order"] = range(len(out))
    services = out["service_name"] if "service_name" in out else pd.Series([""] * len(out))
    names = out["name"] if "name" in out else pd.Series([""] * len(out))
    out["label"] = [span_label(s, n) for s, n in zip(services, names, strict=True)]
    codes = out["status_code"] if "status_code" in out else pd.Series([""] * len(out))
    http = out["http_status_code"] if "http_status_code" in out else pd.Series([None] * len(out))
    out["status"] = [
        "error" if is_error_span(c, h) else ("ok" if _text(c).lower() == "ok" else "unset")
        for c, h in zip(codes, http, strict=True)
    ]
    return out


def chart_frame(wf: pd.DataFrame, max_spans: int = MAX_CHART_SPANS) -> pd.DataFrame:
    """The columns the chart draws (plain types, so the spec is small and JSON-safe)."""
    keep = wf.head(max_spans)
    return pd.DataFrame(
        {
            "order": keep["order"].astype(int),
            "depth": keep["depth"].astype(int),
            "indent": keep["depth"].astype(int) * INDENT_PX,
            "label": keep["label"].astype(str),
            "service": keep.get("service_name", pd.Series([""] * len(keep))).map(_text),
            "operation": keep.get("name", pd.Series([""] * len(keep))).map(_text),
            "kind": keep.get("kind", pd.Series([""] * len(keep))).map(_text),
            "status": keep["status"].astype(str),
            "start_ms": keep["start_ms"].astype(float).round(3),
            "end_ms": keep["end_ms"].astype(float).round(3),
            "duration_ms": (keep["end_ms"] - keep["start_ms"]).astype(float).round(3),
            "span_id": keep.get("span_id", pd.Series([""] * len(keep))).map(_text),
        }
    )


def waterfall_chart(wf: pd.DataFrame, max_spans: int = MAX_CHART_SPANS) -> alt.HConcatChart:
    """Labels (indented by depth) beside bars from start to end offset (ms), one row per span."""
    data = chart_frame(wf, max_spans)
    height = max(ROW_PX * 2, ROW_PX * len(data))
    y = alt.Y("order:O", axis=None, scale=alt.Scale(paddingInner=0.25))
    tooltip = [
        alt.Tooltip("service:N"),
        alt.Tooltip("operation:N"),
        alt.Tooltip("kind:N"),
        alt.Tooltip("status:N"),
        alt.Tooltip("start_ms:Q", title="start (ms)", format=".2f"),
        alt.Tooltip("duration_ms:Q", title="duration (ms)", format=".2f"),
        alt.Tooltip("span_id:N"),
    ]
    base = alt.Chart(data)
    labels = (
        base.mark_text(align="left", baseline="middle", fontSize=12, limit=LABEL_PX - 8)
        .encode(
            y=y,
            x=alt.X("indent:Q", axis=None, scale=alt.Scale(domain=[0, LABEL_PX], nice=False)),
            text=alt.Text("label:N"),
            color=alt.condition(
                "datum.status == 'error'", alt.value(STATUS_COLOURS["error"]), alt.value("#333333")
            ),
            tooltip=tooltip,
        )
        .properties(width=LABEL_PX, height=height)
    )
    colour = alt.Color(
        "status:N",
        title="status",
        scale=alt.Scale(domain=list(STATUS_COLOURS), range=list(STATUS_COLOURS.values())),
        legend=alt.Legend(orient="top"),
    )
    x = alt.X("start_ms:Q", title="ms since trace start", axis=alt.Axis(grid=True))
    bars = base.mark_bar(minBandSize=0, cornerRadius=2).encode(
        y=y, x=x, x2="end_ms:Q", color=colour, tooltip=tooltip
    )
    ticks = base.mark_tick(thickness=2, opacity=0.8).encode(y=y, x=x, color=colour)
    durations = base.mark_text(align="left", dx=4, fontSize=10, color="#555555").encode(
        y=y, x="end_ms:Q", text=alt.Text("duration_ms:Q", format=".1f")
    )
    errors = (
        base.transform_filter("datum.status == 'error'")
        .mark_point(shape="triangle-down", size=110, filled=True, color=STATUS_COLOURS["error"])
        .encode(y=y, x=alt.X("start_ms:Q"), tooltip=tooltip)
    )
    timeline = alt.layer(bars, ticks, durations, errors).properties(
        height=height, width=TIMELINE_PX
    )
    return alt.hconcat(labels, timeline, spacing=4).resolve_scale(y="shared")


def is_error_log(severity_text: Any, severity_number: Any) -> bool:
    text = _text(severity_text).upper()
    if text.startswith(("ERROR", "FATAL", "CRITICAL")):
        return True
    try:
        return int(severity_number) >= LOG_ERROR_SEVERITY
    except (TypeError, ValueError):
        return False


def pretty_attributes(text: Any, limit: int = 400) -> str:
    """A JSON object column as 'k=v, k=v' (the raw text when it is not JSON), cut at `limit`."""
    raw = _text(text)
    try:
        obj = json.loads(raw) if raw else {}
    except ValueError:
        obj = None
    if isinstance(obj, dict):
        raw = ", ".join(f"{k}={v}" for k, v in obj.items())
    return raw if len(raw) <= limit else raw[: limit - 1] + "…"
