"""The pure parts of the Requests & traces page: id parsing, span ordering, the waterfall chart."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd

from meshlens.dashboards import waterfall
from meshlens.dashboards.trace_ids import normalize_trace_id, parse_lookup

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def _span(sid: str, parent: str, start_ms: float, dur: float, **kw: Any) -> dict[str, Any]:
    start = T0 + timedelta(milliseconds=start_ms)
    return {
        "span_id": sid,
        "parent_span_id": parent,
        "name": kw.get("name", f"op-{sid}"),
        "kind": "server",
        "service_name": kw.get("service", f"svc-{sid}"),
        "start_ts": start,
        "end_ts": start + timedelta(milliseconds=dur),
        "duration_ms": dur,
        "status_code": kw.get("status", "unset"),
        "http_status_code": kw.get("http", 200),
    }


def test_trace_ids_in_any_spelling_become_the_stored_one() -> None:
    tid = "4342a6dbad27c5b29400a6fbbeeaf2fe"
    assert normalize_trace_id(tid.upper()) == tid
    assert normalize_trace_id(f"00-{tid}-c20b10b3e7cd1b73-01") == tid
    assert normalize_trace_id("C20B10B3E7CD1B73") == "0" * 16 + "c20b10b3e7cd1b73"  # 64-bit B3
    assert normalize_trace_id("d90e7735-c964-97b6-a712-ef0a1751eb03") == ""  # a request id
    lookup = parse_lookup(" D90E7735-c964-97b6-a712-ef0a1751eb03 ")
    assert lookup.trace_ids == ()
    assert lookup.request_ids == (
        "D90E7735-c964-97b6-a712-ef0a1751eb03",
        "d90e7735-c964-97b6-a712-ef0a1751eb03",
    )
    assert parse_lookup("").empty


def test_spans_are_ordered_parent_first_with_depth_and_offsets() -> None:
    rows = [
        _span("c", "b", 5, 2),  # grandchild listed first
        _span("b2", "a", 20, 5),
        _span("a", "", 0, 30),
        _span("b", "a", 2, 10),
        _span("orphan", "missing", 1, 1),
    ]
    wf = waterfall.order_spans(pd.DataFrame(rows))
    assert list(wf["span_id"]) == ["a", "b", "c", "b2", "orphan"]
    depth = dict(zip(wf["span_id"], wf["depth"], strict=True))
    assert depth == {"a": 0, "b": 1, "c": 2, "b2": 1, "orphan": 0}
    row = wf.set_index("span_id")
    assert row.loc["b", "start_ms"] == 2.0 and row.loc["b", "end_ms"] == 12.0
    assert list(wf["order"]) == list(range(5))


def test_a_parent_loop_or_repeated_id_never_duplicates_or_drops_a_span() -> None:
    rows = [_span("x", "y", 0, 1), _span("y", "x", 1, 1), _span("z", "", 2, 1)]
    rows.append(_span("z", "", 3, 1))  # the same id twice (a broken exporter)
    wf = waterfall.order_spans(pd.DataFrame(rows))
    assert len(wf) == 4
    assert sorted(wf["span_id"]) == ["x", "y", "z", "z"]


def test_every_span_gets_a_label_even_without_service_or_name() -> None:
    rows = [_span(f"s{i}", "" if i == 0 else "s0", i, 1) for i in range(40)]
    rows[7]["service_name"] = None
    rows[8]["name"] = ""
    rows[9]["service_name"], rows[9]["name"] = "", None
    wf = waterfall.order_spans(pd.DataFrame(rows))
    assert all(isinstance(label, str) and label for label in wf["label"])
    assert "svc-s3: op-s3" in set(wf["label"])
    assert "(unnamed span)" in set(wf["label"])


def _layers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for part in spec.get("hconcat", []):
        out.extend(part.get("layer", [part]))
    return out


def test_the_chart_labels_every_span_and_marks_errors() -> None:
    rows = [_span(f"s{i}", "" if i == 0 else f"s{i - 1}", i * 2, 10, service=f"svc{i % 3}")
            for i in range(30)]  # fmt: skip
    rows[5]["status_code"] = "error"
    rows[6]["http_status_code"] = 503
    wf = waterfall.order_spans(pd.DataFrame(rows))
    spec = waterfall.waterfall_chart(wf).to_dict()
    data = next(iter(spec["datasets"].values()))
    assert len(data) == 30
    assert [d["label"] for d in data] == [f"svc{i % 3}: op-s{i}" for i in range(30)]
    marks = _layers(spec)
    texts = [m for m in marks if m["mark"]["type"] == "text"]
    assert any(m["encoding"]["text"]["field"] == "label" for m in texts)
    # The labels are marks, not axis labels (which Vega-Lite drops when they would overlap).
    assert all(m["encoding"]["y"].get("axis", "x") is None for m in marks if "y" in m["encoding"])
    bars = next(m for m in marks if m["mark"]["type"] == "bar")
    assert bars["encoding"]["x"]["field"] == "start_ms" and bars["encoding"]["x2"]["field"] == (
        "end_ms"
    )
    assert bars["encoding"]["color"]["field"] == "status"
    points = [m for m in marks if m["mark"]["type"] == "point"]
    assert points and points[0]["mark"]["shape"] == "triangle-down"
    assert {d["status"] for d in data if d["label"] in ("svc2: op-s5", "svc0: op-s6")} == {"error"}
    json.dumps(spec)  # JSON-safe


def test_error_logs_and_attributes() -> None:
    assert waterfall.is_error_log("ERROR", None)
    assert waterfall.is_error_log("", 17)
    assert not waterfall.is_error_log("INFO", 9)
    assert waterfall.pretty_attributes('{"a": 1, "b": "x"}') == "a=1, b=x"
    assert waterfall.pretty_attributes("not json") == "not json"
