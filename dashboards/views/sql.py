"""SQL: read-only queries over the store (the analytics SQL sandbox), downloads, a quick chart."""

from __future__ import annotations

import streamlit as st

from meshlens.dashboards import controls, data

st.title("🧮 SQL")
st.caption(
    "Tables: `requests`, `spans`, `metrics`, `logs`, `verdicts`; views: `traffic` "
    "(reporters de-duplicated), `edges`, `signals`. Read-only, 30 s and row limits."
)

names = list(data.EXAMPLES)


def _load_example() -> None:
    st.session_state["sql_text"] = data.EXAMPLES[st.session_state["sql_example"]]


if "sql_text" not in st.session_state:
    st.session_state["sql_text"] = data.EXAMPLES[names[0]]
c1, c2 = st.columns([3, 1])
c1.selectbox("Example queries", names, key="sql_example", on_change=_load_example)
max_rows = c2.number_input(
    "Max rows", min_value=1, max_value=100_000, value=1000, step=100, key="sql_max_rows"
)
sql = st.text_area("Query", key="sql_text", height=160)
b1, b2 = st.columns([1, 5])
run = b1.button("Run", type="primary", key="sql_run")
scoped = b2.checkbox(
    "Only the time window of the sidebar",
    value=True,
    key="sql_scoped",
    help="Reads only the partitions of the window (fast on big stores); untick for all data",
)

if run or st.session_state.get("sql_last"):
    if run:
        st.session_state["sql_last"] = sql
    query = str(st.session_state["sql_last"])
    window = controls.current_window() if scoped else None
    out = data.run_sql(controls.ddir(), query, int(max_rows), window)
    if out.error:
        st.error(out.error)
        st.stop()
    df = out.frame
    assert df is not None
    st.caption(
        f"{len(df)} rows in {out.elapsed_s * 1000:.0f} ms"
        + (" · truncated: raise Max rows or add LIMIT" if out.truncated else "")
    )
    st.dataframe(df, hide_index=True, key="sql_result")
    d1, d2 = st.columns(2)
    d1.download_button(
        "Download CSV",
        df.to_csv(index=False).encode(),
        "meshlens-query.csv",
        "text/csv",
        key="sql_csv",
    )
    d2.download_button(
        "Download Parquet",
        data.to_parquet_bytes(df),
        "meshlens-query.parquet",
        "application/vnd.apache.parquet",
        key="sql_parquet",
    )
    numeric = [c for c in df.columns if df[c].dtype.kind in "iuf"]
    if numeric and len(df.columns) > 1:
        with st.expander("Quick chart", expanded=True):
            q1, q2, q3 = st.columns(3)
            x = q1.selectbox("x", list(df.columns), index=0, key="sql_x")
            ys = [c for c in numeric if c != x] or numeric
            y = q2.selectbox("y", ys, index=0, key="sql_y")
            kind = q3.radio("chart", ["bar", "line"], horizontal=True, key="sql_chart")
            plot = df[[x, y]].dropna()
            if kind == "line":
                st.line_chart(plot, x=x, y=y)
            else:
                st.bar_chart(plot, x=x, y=y)
