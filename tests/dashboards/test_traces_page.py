"""The Requests & traces page through AppTest on a store of its own: proxy requests whose trace
ids match stored spans (as the demo's Envoys write them: 32 lower-case hex, request ids as
UUIDs), an ERROR log on a span, a traced request whose spans were never sent, and an untraced
request."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pytest
from streamlit.testing.v1 import AppTest

from meshlens.collector.store.parquet_write import write_table
from meshlens.collector.store.schema import LOGS, REQUESTS, SPANS
from meshlens.synth import synthetic_requests

APP = str(Path(__file__).resolve().parents[2] / "dashboards" / "app.py")

TRACED = "7adbca156fc66ed216982a30073e68df"
TRACED_REQ = "e1f26f82-3167-97ff-a887-5df400a49069"
NO_SPANS = "96e4660b360179d3dc2e65a0248d8139"
NO_SPANS_REQ = "01f28974-d413-9d58-92a1-c052cd6f85a6"
UNTRACED_REQ = "c50b7b71-8931-9de8-9e6c-8c6f445d149a"
ERROR_BODY = "injected failure serving /reviews/0"
# (span id, parent, service, operation, start ms, duration ms, status)
SPANS_OF_TRACED = [
    ("c20b10b3e7cd1b73", "", "istio-ingressgateway.default", "productpage:9080/*", 0, 90, "unset"),
    ("f21b5270e72ab10a", "c20b10b3e7cd1b73", "productpage.default", "productpage:9080/*", 4, 85,
     "unset"),
    ("799c66737603a528", "f21b5270e72ab10a", "productpage", "GET /productpage", 6, 82, "unset"),
    ("aafc214fb01fd22f", "799c66737603a528", "productpage", "GET /details/0", 8, 20, "unset"),
    ("13c15a1fd1f9d764", "aafc214fb01fd22f", "details.default", "details:9080/*", 10, 15, "unset"),
    ("e0bffc02dadea28e", "799c66737603a528", "productpage", "GET /reviews/0", 30, 50, "error"),
    ("5e5ac42b5fceffa1", "e0bffc02dadea28e", "reviews", "GET /reviews/0", 35, 40, "error"),
    ("3e68ffb4d0ed60f7", "5e5ac42b5fceffa1", "reviews", "GET /ratings/0", 40, 10, "unset"),
]  # fmt: skip


def _app_of(workload: str) -> str:
    return workload.rsplit("-", 1)[0] if workload[-3:-1] == "-v" else workload


def _requests(now: datetime) -> pa.Table:
    base = synthetic_requests(600, start=now - timedelta(minutes=9), duration_s=480, seed=3)
    rows = base.to_pylist()
    for r in rows:
        r["trace_id"], r["request_id"] = "", f"bg-{id(r)}"
    t = now - timedelta(minutes=2)

    def hop(i: int, rid: str, tid: str, src: str, dst: str, path: str, code: int) -> None:
        for rep, dt_ms in (("source", 0), ("destination", 1)):
            r = dict(rows[i * 2 + (rep == "destination")])
            r.update(
                ts=t + timedelta(milliseconds=dt_ms + i), reporter=rep, request_id=rid,
                trace_id=tid, source_workload=src, destination_workload=dst,
                destination_canonical_service=_app_of(dst), source_canonical_service=_app_of(src),
                path=path,
                response_code=code, protocol="http", duration_ms=12.5,
                node_id=f"sidecar~{src if rep == 'source' else dst}",
            )  # fmt: skip
            rows.append(r)

    hop(0, TRACED_REQ, TRACED, "istio-ingressgateway", "productpage-v1", "/productpage", 200)
    hop(1, TRACED_REQ, TRACED, "productpage-v1", "reviews-v3", "/reviews/0", 503)
    hop(2, NO_SPANS_REQ, NO_SPANS, "istio-ingressgateway", "productpage-v1", "/productpage", 200)
    hop(3, NO_SPANS_REQ, NO_SPANS, "productpage-v1", "details-v1", "/details/0", 200)
    hop(4, UNTRACED_REQ, "", "productpage-v1", "ratings-v1", "/ratings/0", 200)
    rows.sort(key=lambda r: r["ts"])
    return pa.Table.from_pylist(rows, schema=REQUESTS)


def _spans(now: datetime) -> pa.Table:
    t = now - timedelta(minutes=2) - timedelta(milliseconds=1)
    rows = []
    for sid, parent, svc, op, start, dur, status in SPANS_OF_TRACED:
        st = t + timedelta(milliseconds=start)
        rows.append(
            {
                "trace_id": TRACED, "span_id": sid, "parent_span_id": parent, "name": op,
                "kind": "server", "start_ts": st, "end_ts": st + timedelta(milliseconds=dur),
                "duration_ms": float(dur), "service_name": svc, "status_code": status,
                "http_status_code": 503 if status == "error" else 200,
                "attributes": json.dumps({"upstream_cluster": "outbound|9080||x"}),
            }
        )  # fmt: skip
    return pa.Table.from_pylist(rows, schema=SPANS)


def _logs(now: datetime) -> pa.Table:
    t = now - timedelta(minutes=2) + timedelta(milliseconds=50)
    rows = [
        {"ts": t, "severity_text": "ERROR", "severity_number": 17, "body": ERROR_BODY,
         "service_name": "reviews", "trace_id": TRACED, "span_id": "5e5ac42b5fceffa1",
         "attributes": json.dumps({"code.function.name": "serve"})},
        {"ts": t, "severity_text": "INFO", "severity_number": 9, "body": "fetched details",
         "service_name": "details", "trace_id": TRACED, "span_id": "13c15a1fd1f9d764",
         "attributes": "{}"},
    ]  # fmt: skip
    return pa.Table.from_pylist(rows, schema=LOGS)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("traces-store")
    now = datetime.now(UTC)
    write_table(d, "requests", _requests(now), node="test", lo=1, fsync=False)
    write_table(d, "spans", _spans(now), node="test", lo=1, fsync=False)
    write_table(d, "logs", _logs(now), node="test", lo=1, fsync=False)
    return d


@pytest.fixture
def env(store: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MESHLENS_DATA_DIR", str(store))
    return store


def _app(**query: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=90)
    at.switch_page("views/traces.py")
    for k, v in query.items():
        at.query_params[k] = v
    at.run()
    _ok(at)
    return at


def _ok(at: AppTest) -> None:
    assert not at.exception, [e.message for e in at.exception]


def _texts(at: AppTest, *kinds: str) -> str:
    kinds = kinds or ("markdown", "caption", "subheader", "info", "warning", "error", "title")
    return "\n".join(str(getattr(el, "value", "")) for kind in kinds for el in at.get(kind))


def _frame_with(at: AppTest, *columns: str) -> pd.DataFrame:
    for el in at.dataframe:
        if set(columns) <= set(map(str, el.value.columns)):
            return el.value
    raise AssertionError(f"no table with columns {columns}")


def _waterfall_data(at: AppTest) -> list[dict[str, Any]]:
    charts = at.get("vega_lite_chart")
    assert charts, "no chart drawn"
    for chart in charts:
        spec = json.loads(chart.proto.spec)
        if "hconcat" in spec:
            datasets = spec.get("datasets") or {}
            if datasets:
                return list(next(iter(datasets.values())))
            # Streamlit may move the data out of the spec into the element's datasets.
            rows = []
            for ds in chart.proto.datasets:
                from streamlit import dataframe_util

                rows += dataframe_util.convert_arrow_bytes_to_pandas_df(ds.data.data).to_dict(
                    "records"
                )
            return rows
    raise AssertionError("no waterfall chart")


def _key(at: AppTest, prefix: str) -> str:
    keys = [el.key for el in at.dataframe if el.key and el.key.startswith(prefix)]
    assert keys, f"no table keyed {prefix}*"
    return keys[0]


def _opened(at: AppTest) -> str:
    return "\n".join(
        str(s.value) for s in at.subheader if "Trace" in s.value or "Request" in s.value
    )


def test_a_request_id_opens_its_waterfall_with_a_label_on_every_span(env: Path) -> None:
    at = _app()
    at.text_input(key="tr_trace").set_value(TRACED_REQ.upper()).run()
    _ok(at)
    assert TRACED in _opened(at)
    assert "no spans stored" not in _texts(at)
    data = _waterfall_data(at)
    assert len(data) == len(SPANS_OF_TRACED)
    expected = {f"{svc}: {op}" for _, _, svc, op, *_ in SPANS_OF_TRACED}
    assert {d["label"] for d in data} == expected
    assert all(d["label"] for d in data)
    spans = _frame_with(at, "depth", "label")
    assert list(spans["depth"])[:3] == [0, 1, 2]
    assert (spans.loc[spans["status"] == "error", "label"].str.contains("reviews")).all()
    # The trace's requests from both reporting proxies, with links.
    reqs = _frame_with(at, "reporter", "open")
    assert len(reqs) == 4 and set(reqs["reporter"]) == {"source", "destination"}
    assert all(u.startswith("traces?") and "request=" in u for u in reqs["open"])
    # The URL names what is open, so the view can be shared.
    assert at.query_params["trace"] == [TRACED] or at.query_params["trace"] == TRACED


def test_the_error_log_of_the_trace_is_shown_and_highlighted(env: Path) -> None:
    at = _app(trace=TRACED)
    assert any(ERROR_BODY in e.value for e in at.error)
    logs = _frame_with(at, "severity", "body")
    assert ERROR_BODY in set(logs["body"]) and "fetched details" in set(logs["body"])
    assert set(logs["severity"]) == {"ERROR", "INFO"}
    spans = _frame_with(at, "depth", "logs")
    assert spans.loc[spans["span_id"] == "5e5ac42b5fceffa1", "logs"].item() == 1

    # Selecting that span shows its logs under it.
    key = _key(at, "tr_spans_")
    row = int(spans.index[spans["span_id"] == "5e5ac42b5fceffa1"][0])
    at.session_state[key] = {"selection": {"rows": [row], "columns": []}}
    at.run()
    _ok(at)
    assert sum(ERROR_BODY in e.value for e in at.error) >= 2


def test_a_trace_id_from_the_url_opens_it_in_any_case(env: Path) -> None:
    at = _app(trace=TRACED.upper())
    assert TRACED in _opened(at)
    assert len(_waterfall_data(at)) == len(SPANS_OF_TRACED)
    assert at.text_input(key="tr_trace").value == TRACED.upper()


def test_selecting_a_result_row_opens_that_trace(env: Path) -> None:
    at = _app()
    # Nothing searched: the newest request with spans is open.
    assert TRACED in _opened(at)
    found = _frame_with(at, "request_id", "spans")
    row = int(found.index[found["trace_id"] == NO_SPANS][0])
    at.session_state[_key(at, "tr_requests_")] = {"selection": {"rows": [row], "columns": []}}
    at.run()
    _ok(at)
    assert NO_SPANS in _opened(at) and TRACED not in _opened(at)
    assert at.query_params["trace"] in (NO_SPANS, [NO_SPANS])

    # New filters: the trace shown follows them (the first result with spans).
    at.selectbox(key="tr_status").set_value("5xx").run()
    _ok(at)
    assert TRACED in _opened(at)


def test_a_request_without_spans_shows_its_requests_and_why(env: Path) -> None:
    at = _app(request=NO_SPANS_REQ)
    assert NO_SPANS in _opened(at)
    info = _texts(at, "info")
    assert "No spans were sent" in info and "meshlens-tracing" in info
    assert "no spans stored" not in _texts(at)
    reqs = _frame_with(at, "reporter", "open")
    assert len(reqs) == 4
    assert set(reqs["destination_workload"]) == {"productpage-v1", "details-v1"}
    assert not at.get("vega_lite_chart") or not any(
        "hconcat" in c.proto.spec for c in at.get("vega_lite_chart")
    )


def test_an_untraced_request_is_explained_too(env: Path) -> None:
    at = _app()
    at.text_input(key="tr_trace").set_value(UNTRACED_REQ).run()
    _ok(at)
    assert UNTRACED_REQ in _opened(at)
    assert "carry no trace id" in _texts(at, "info")
    assert len(_frame_with(at, "reporter", "open")) == 2


def test_an_unknown_id_says_so(env: Path) -> None:
    at = _app()
    at.text_input(key="tr_trace").set_value("no-such-request").run()
    _ok(at)
    assert "No request and no span" in _texts(at, "warning")


def test_the_mesh_pages_service_link_filters_the_requests(env: Path) -> None:
    at = _app(service="reviews")
    assert at.selectbox(key="tr_service").value == "reviews"
    found = _frame_with(at, "request_id", "destination_workload", "source_workload")
    assert len(found) > 0
    assert all(
        "reviews" in f"{s} {d}"
        for s, d in zip(found["source_workload"], found["destination_workload"], strict=True)
    )
    at.selectbox(key="tr_service").set_value("All").run()
    _ok(at)
    assert "service" not in at.query_params
