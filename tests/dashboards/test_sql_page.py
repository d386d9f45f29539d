"""The SQL page through AppTest on the seeded store: schema browser, quick chart whatever the
column order, errors as messages only; and the pure chart planner."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from meshlens.dashboards import quick_chart
from meshlens.dashboards.data.sql import safe_message

APP = str(Path(__file__).resolve().parents[2] / "dashboards" / "app.py")
GROUP_BY_2 = "SELECT count(*) AS n, destination_workload FROM requests GROUP BY 2"


def _app() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=90)
    at.switch_page("views/sql.py")
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    return at


def _run(at: AppTest, sql: str) -> AppTest:
    at.text_area(key="sql_text").set_value(sql)
    at.button(key="sql_run").click().run()
    return at


def _everything(at: AppTest) -> str:
    """Every text the page shows (messages, captions, code, exceptions)."""
    parts: list[str] = []
    for kind in ("markdown", "caption", "error", "warning", "info", "code", "text", "exception"):
        for el in at.get(kind):
            parts.append(str(getattr(el, "value", "") or getattr(el, "message", "")))
            parts += [str(x) for x in getattr(el, "stack_trace", [])]
    return "\n".join(parts)


def test_group_by_2_with_the_number_first_draws_a_chart(data_env: Path) -> None:
    at = _run(_app(), GROUP_BY_2)
    assert not at.exception, [e.message for e in at.exception]
    result = at.dataframe[0].value
    assert list(result.columns) == ["n", "destination_workload"] and len(result) > 3
    charts = at.get("vega_lite_chart")
    assert len(charts) == 1
    assert "destination_workload" in charts[0].proto.spec
    x = next(s for s in at.selectbox if s.label == "x")
    assert x.value == "destination_workload"
    assert any("rows" in c.value and "ms" in c.value for c in at.caption)


def test_a_syntax_error_is_a_message_not_a_traceback(data_env: Path) -> None:
    at = _run(_app(), "SELEC count(*) FROM requests")
    assert not at.exception
    assert at.error and "syntax error" in at.error[0].value
    shown = _everything(at)
    assert "Traceback" not in shown and "/work/" not in shown
    assert str(data_env) not in shown
    assert not at.get("vega_lite_chart")


def test_hostile_sql_and_odd_results_never_crash(data_env: Path) -> None:
    at = _app()
    for sql in (
        "SELECT * FROM read_parquet('/etc/passwd')",
        "COPY requests TO '/tmp/x.csv'",
        "SELECT 1 AS a, 2 AS a",
        "SELECT [1, 2] AS l, {'k': 1} AS s",
        "SELECT count(*) FROM requests",
        "SELECT * FROM requests WHERE false",
    ):
        _run(at, sql)
        assert not at.exception, (sql, [e.message for e in at.exception])
        shown = _everything(at)
        assert "Traceback" not in shown and str(data_env) not in shown, sql
    _run(at, "SELECT * FROM read_parquet('/etc/passwd')")
    assert "rejected" in at.error[0].value


def test_the_row_cap_is_flagged(data_env: Path) -> None:
    at = _app()
    at.number_input(key="sql_max_rows").set_value(5)
    _run(at, "SELECT ts, duration_ms FROM requests")
    assert len(at.dataframe[0].value) == 5
    assert any("truncated" in c.value for c in at.caption)
    assert at.warning


def test_the_schema_browser_lists_tables_with_their_columns(data_env: Path) -> None:
    at = _app()
    tables = at.selectbox(key="sql_table")
    listed = {str(o).split(" (")[0] for o in tables.options}  # "requests (35 columns)"
    assert {"requests", "spans", "logs", "metrics", "verdicts", "traffic", "edges"} <= listed
    tables.set_value("requests").run()
    columns = next(el.value for el in at.dataframe if "column" in el.value.columns)
    assert "destination_workload" in set(columns["column"])
    assert set(columns.columns) == {"column", "type"}
    at.button(key="sql_use_table").click().run()
    assert at.text_area(key="sql_text").value == "SELECT * FROM requests LIMIT 100"


# -- the chart planner (pure) --------------------------------------------------------------
def test_the_planner_picks_columns_by_type_not_position() -> None:
    df = pd.DataFrame({"n": [3, 2], "destination_workload": ["a", "b"]})
    plan = quick_chart.plan_chart(df)
    assert plan.ok and plan.xs[0] == "destination_workload" and plan.ys == ("n",)
    chart = quick_chart.build_chart(df, plan.xs[0], list(plan.ys)).to_dict()
    assert chart["encoding"]["x"]["title"] == "destination_workload"

    times = pd.DataFrame(
        {"requests": [1, 2], "minute": pd.to_datetime(["2026-01-01", "2026-01-02"], utc=True)}
    )
    assert quick_chart.plan_chart(times).xs[0] == "minute"
    assert quick_chart.x_kind(times["minute"]) == "temporal"
    dates = pd.DataFrame({"d": [dt.date(2026, 1, 1)], "v": [1.0]})
    assert quick_chart.plan_chart(dates).xs[0] == "d"


@pytest.mark.parametrize(
    ("frame", "why"),
    [
        (pd.DataFrame({"a": ["x"], "b": ["y"]}), "no numeric"),
        (pd.DataFrame({"n": [1]}), "one numeric"),
        (pd.DataFrame({"n": pd.Series([], dtype=int), "s": pd.Series([], dtype=str)}), "no rows"),
        (pd.DataFrame([[1, 2]], columns=["a", "a"]), "duplicate"),
        (pd.DataFrame({"l": [[1, 2]], "n": [1]}), "one numeric"),
    ],
)
def test_the_planner_skips_what_it_cannot_plot(frame: pd.DataFrame, why: str) -> None:
    plan = quick_chart.plan_chart(frame)
    assert not plan.ok and why in plan.reason


def test_all_numeric_results_plot_against_the_first_column() -> None:
    plan = quick_chart.plan_chart(pd.DataFrame({"a": [1, 2], "b": [3.0, 4.0]}))
    assert plan.xs[0] == "a" and plan.ys == ("b",)


def test_messages_hide_server_paths_but_keep_the_users_own() -> None:
    msg = 'IO Error: No files found that match "/srv/data/requests/x.parquet" or "/etc/passwd"'
    out = safe_message(msg, "/srv/data", sql="SELECT * FROM read_csv('/etc/passwd')")
    assert "/srv/data" not in out and "<data>/requests/x.parquet" in out
    assert "/etc/passwd" in out
    assert "/opt/app" not in safe_message("failed at /opt/app/lib/x.py line 3")


def test_a_timeout_comes_back_as_a_message(seeded_dir: Path) -> None:
    from meshlens.dashboards.data.sql import run_sql

    out = run_sql(
        str(seeded_dir),
        "SELECT count(*) FROM range(2000000000) a, range(1000) b WHERE a.range % 7 = b.range",
        10,
        None,
        0.5,
    )
    assert out.frame is None and "time limit" in out.error
    assert str(seeded_dir) not in out.error
