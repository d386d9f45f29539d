"""SQL: read-only queries over the store (the analytics SQL sandbox), a schema browser,
downloads and a quick chart that picks its columns by type."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import pandas as pd
import streamlit as st

from meshlens.dashboards import controls, data, quick_chart

st.title(":material/database: SQL")
st.caption(
    "Read-only SELECT over the store's tables and views (the sidebar lists their columns); "
    "30 s and row limits."
)
ddir = controls.ddir()
names = list(data.EXAMPLES)


def _load_example() -> None:
    st.session_state["sql_text"] = data.EXAMPLES[st.session_state["sql_example"]]


def _use_table() -> None:
    st.session_state["sql_text"] = data.example_for(str(st.session_state["sql_table"]))


# -- schema browser (sidebar) --------------------------------------------------------------
catalog = data.schema_catalog(ddir)
with st.sidebar:
    st.markdown("#### :material/table_view: Tables")
    if catalog.error:
        st.error(catalog.error)
    elif catalog.tables:
        table = st.selectbox(
            "Table or view",
            catalog.tables,
            key="sql_table",
            format_func=lambda t: f"{t} ({len(catalog.of(t))} columns)",
        )
        st.caption(data.TABLE_NOTES.get(str(table), ""))
        st.dataframe(catalog.of(str(table)), hide_index=True, key="sql_columns", height=260)
        st.button(
            f"Query {table}",
            key="sql_use_table",
            icon=":material/input:",
            on_click=_use_table,
            help=f"Puts `{data.example_for(str(table))}` in the query box",
        )

# -- query ---------------------------------------------------------------------------------
if "sql_text" not in st.session_state:
    st.session_state["sql_text"] = data.EXAMPLES[names[0]]
c1, c2 = st.columns([3, 1])
c1.selectbox("Example queries", names, key="sql_example", on_change=_load_example)
max_rows = c2.number_input(
    "Max rows", min_value=1, max_value=100_000, value=1000, step=100, key="sql_max_rows"
)
sql = st.text_area("Query", key="sql_text", height=160)
b1, b2 = st.columns([1, 5])
run = b1.button("Run", type="primary", key="sql_run", icon=":material/play_arrow:")
scoped = b2.checkbox(
    "Only the time window of the sidebar",
    value=True,
    key="sql_scoped",
    help="Reads only the partitions of the window (fast on big stores); untick for all data",
)

if not (run or st.session_state.get("sql_last")):
    st.stop()
if run:
    st.session_state["sql_last"] = sql
query = str(st.session_state["sql_last"])
window = controls.current_window() if scoped else None
out = data.run_sql(ddir, query, int(max_rows), window)
if out.error or out.frame is None:
    # The first line as the message; DuckDB's "LINE 1: ... ^^^" pointer kept aligned below.
    head, _, rest = (out.error or "the query returned nothing").partition("\n")
    st.error(head, icon=":material/error:")
    if rest.strip():
        st.code(rest.strip("\n"), language=None)
    st.stop()


def show_result(df: pd.DataFrame) -> None:
    """Row count, time, truncation, the table and the downloads."""
    st.caption(
        f":material/table_rows: {len(df)} rows · :material/timer: {out.elapsed_s * 1000:.0f} ms"
        + (" · truncated" if out.truncated else "")
    )
    if out.truncated:
        st.warning(
            f"Only the first {len(df)} rows are shown: raise Max rows or add a LIMIT.",
            icon=":material/content_cut:",
        )
    if out.renamed:
        st.caption("Duplicate column names renamed: " + ", ".join(out.renamed))
    st.dataframe(df, hide_index=True, key="sql_result")
    d1, d2 = st.columns(2)
    d1.download_button(
        "Download CSV",
        data.to_csv_bytes(df),
        "meshlens-query.csv",
        "text/csv",
        key="sql_csv",
        icon=":material/download:",
    )
    try:
        parquet = data.to_parquet_bytes(df)
    except Exception as exc:  # e.g. mixed types in one column
        d2.caption(f"No Parquet download for these column types ({type(exc).__name__})")
    else:
        d2.download_button(
            "Download Parquet",
            parquet,
            "meshlens-query.parquet",
            "application/vnd.apache.parquet",
            key="sql_parquet",
            icon=":material/download:",
        )


def show_chart(df: pd.DataFrame) -> None:
    """x and y chosen by column type; a note instead of a chart when nothing fits."""
    plan = quick_chart.plan_chart(df)
    if not plan.ok:
        st.caption(f"No chart: {plan.reason}.")
        return
    # Widget keys per column set: a new result never inherits a choice it does not have.
    sig = hashlib.sha1("\x1f".join(map(str, df.columns)).encode()).hexdigest()[:10]
    q1, q2, q3 = st.columns([2, 3, 1])
    x = str(q1.selectbox("x", plan.xs, index=0, key=f"sql_x_{sig}"))
    y_options = [c for c in plan.ys if c != x]
    if not y_options:
        st.caption("No chart: no numeric column besides x.")
        return
    ys = q2.multiselect("y", y_options, default=y_options[:1], key=f"sql_y_{sig}")
    kind = q3.radio("chart", ["bar", "line"], horizontal=True, key="sql_chart")
    if not ys:
        st.caption("Pick at least one y column.")
        return
    st.altair_chart(quick_chart.build_chart(df, x, list(ys), str(kind)), width="stretch")


def _guarded(fn: Callable[[pd.DataFrame], None], df: pd.DataFrame, what: str) -> None:
    try:
        fn(df)
    except Exception as exc:  # whatever a result holds, the page shows a message, not a trace
        st.error(f"Cannot show the {what}: {data.safe_message(str(exc), ddir)}")


_guarded(show_result, out.frame, "result")
with st.expander("Quick chart", expanded=True, icon=":material/bar_chart:"):
    _guarded(show_chart, out.frame, "chart")
