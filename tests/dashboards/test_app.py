"""Every page of the Streamlit app through streamlit.testing (AppTest) on a seeded store."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from tests.dashboards.conftest import TRACE_IDS

APP = str(Path(__file__).resolve().parents[2] / "dashboards" / "app.py")


def _app(page: str | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    if page:
        at.switch_page(page)
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    return at


def _texts(at: AppTest) -> str:
    parts = [m.value for m in at.markdown] + [c.value for c in at.caption]
    parts += [str(m.value) for m in at.metric] + [t.value for t in at.title]
    return "\n".join(str(p) for p in parts)


def _frame(at: AppTest, *columns: str, index: int = 0) -> pd.DataFrame:
    """The index-th dataframe on the page that has all `columns` (column names or index name)."""
    hits = []
    for el in at.dataframe:
        df = el.value
        names = set(map(str, df.columns)) | {str(df.index.name)}
        if set(columns) <= names:
            hits.append(df)
    assert len(hits) > index, f"no dataframe with columns {columns}"
    return hits[index]


def test_mesh_time_travel_moves_the_window(data_env: Path) -> None:
    at = _app()
    live_caption = next(c.value for c in at.caption if "→" in c.value)
    at.toggle(key="mesh_travel").set_value(True).run()
    assert not at.exception
    slider = at.slider(key="mesh_end")
    # AppTest reports datetime sliders in epoch microseconds; set a datetime.
    slider.set_value(datetime.fromtimestamp(slider.min / 1e6, tz=UTC)).run()
    assert not at.exception
    past_caption = next(c.value for c in at.caption if "→" in c.value)
    assert past_caption != live_caption


def test_service_page_signals_tables_and_codes(data_env: Path) -> None:
    at = _app("views/service.py")
    assert at.selectbox(key="service_name").value in ("productpage", "reviews", "details")
    at.selectbox(key="service_name").set_value("reviews").run()
    assert not at.exception
    text = _texts(at)
    assert "versions: v1, v2, v3" in text
    inbound = _frame(at, "source_workload", "mtls_pct")
    assert set(inbound["source_workload"]) == {"productpage-v1"}
    assert {"success_pct", "p99_ms", "mtls_pct"} <= set(inbound.columns)
    codes = _frame(at, "response_code")
    assert 503 in [int(c) for c in codes.index] or "503" in [str(c) for c in codes.index]
    assert len(at.get("vega_lite_chart")) >= 5

    at.selectbox(key="service_name").set_value("ratings").run()
    assert not at.exception
    inbound2 = _frame(at, "source_workload", "mtls_pct")
    assert set(inbound2["source_workload"]) == {"reviews-v2", "reviews-v3"}


def test_canary_page_shows_phase_weights_metrics_and_history(data_env: Path) -> None:
    at = _app("views/canary.py")
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Phase"] == "failed"  # the live gate state file wins over the last row
    assert metrics["Last verdict"] == "fail"
    per_metric = _frame(at, "metric", "ci_low")
    assert list(per_metric["metric"]) == ["error_rate", "latency_p99"]
    assert {"ci_low", "ci_high", "baseline", "canary"} <= set(per_metric.columns)
    history = _frame(at, "canary_weight", "action")
    assert len(history) == 4
    assert len(at.get("vega_lite_chart")) >= 3  # weights, CI, both distributions

    at.selectbox(key="canary_rollout").set_value("details-v2").run()
    assert not at.exception
    assert {m.label: m.value for m in at.metric}["Phase"] == "succeeded"
    assert len(_frame(at, "canary_weight", "action")) == 1


def test_sql_page_runs_examples_and_offers_downloads(data_env: Path) -> None:
    at = _app("views/sql.py")
    at.button(key="sql_run").click().run()
    assert not at.exception
    first = at.dataframe[0].value
    assert len(first) > 0 and "source_workload" in first.columns
    assert len(at.get("download_button")) == 2

    at.selectbox(key="sql_example").set_value("Requests per minute").run()
    at.button(key="sql_run").click().run()
    assert not at.exception
    per_minute = at.dataframe[0].value
    assert list(per_minute.columns) == ["minute", "requests"]

    at.text_area(key="sql_text").set_value("DROP TABLE requests").run()
    at.button(key="sql_run").click().run()
    assert at.error and "rejected" in at.error[0].value


def test_requests_and_traces_search_and_waterfall(data_env: Path) -> None:
    at = _app("views/traces.py")
    all_rows = _frame(at, "request_id")
    assert len(all_rows) == 200
    at.selectbox(key="tr_status").set_value("5xx").run()
    assert not at.exception
    errors = _frame(at, "request_id")
    assert len(errors) > 0 and (errors["response_code"] >= 500).all()

    at.selectbox(key="tr_status").set_value("any")
    at.text_input(key="tr_trace").set_value(TRACE_IDS[3]).run()
    assert not at.exception
    found = _frame(at, "request_id")
    assert set(found["trace_id"]) == {TRACE_IDS[3]}
    spans = _frame(at, "depth")
    assert len(spans) == 5
    assert list(spans["depth"]) == [0, 1, 2, 3, 4]
    assert "error" in set(spans["status_code"])
    assert any("5 spans" in c.value for c in at.caption)


@pytest.mark.parametrize(
    "page",
    ["views/mesh.py", "views/service.py", "views/traces.py", "views/canary.py", "views/sql.py"],
)
def test_pages_on_an_empty_store_explain_instead_of_failing(
    page: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MESHLENS_DATA_DIR", str(tmp_path))
    at = _app(page)
    assert not at.exception
