"""The SQL page's quick chart: which columns of a query result to plot, and the chart.

Pure (pandas and altair). The columns are chosen by type, not position: x is the first time
column, else the first text-like column, else (an all-numeric result) the first numeric one; y
are the numeric columns other than x. `SELECT count(*) AS n, destination_workload ... GROUP BY
2` puts the number first, which used to make x == y and crash the chart. A result with nothing
to plot gives a reason instead of a chart.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Final, Literal

import altair as alt
import pandas as pd

MAX_POINTS: Final = 5000
XKind = Literal["temporal", "nominal", "quantitative"]


@dataclass(frozen=True, slots=True)
class ChartPlan:
    """Columns to offer: `xs` (first is the default) and `ys` (numeric), or `reason` why none."""

    xs: tuple[str, ...] = ()
    ys: tuple[str, ...] = ()
    reason: str = ""

    @property
    def ok(self) -> bool:
        return bool(self.xs and self.ys)


def _is_numeric(s: pd.Series) -> bool:
    return s.dtype.kind in "iuf"


def _is_time(s: pd.Series) -> bool:
    if s.dtype.kind == "M" or isinstance(s.dtype, pd.DatetimeTZDtype):
        return True
    if s.dtype == object:
        sample = s.dropna().head(20)
        return len(sample) > 0 and all(isinstance(v, dt.date | dt.datetime) for v in sample)
    return False


def _is_label(s: pd.Series) -> bool:
    """Text, categories or booleans: values an axis can show (not lists, dicts or bytes)."""
    if s.dtype.kind == "b" or isinstance(s.dtype, pd.CategoricalDtype):
        return True
    if s.dtype.kind in "OSU" or pd.api.types.is_string_dtype(s.dtype):
        sample = s.dropna().head(50)
        return all(isinstance(v, str | bool) for v in sample)
    return False


def x_kind(s: pd.Series) -> XKind:
    if _is_time(s):
        return "temporal"
    if _is_numeric(s):
        return "quantitative"
    return "nominal"


def plan_chart(df: pd.DataFrame) -> ChartPlan:
    """The x and y columns a result offers, whatever their order."""
    names = [str(c) for c in df.columns]
    if len(set(names)) != len(names):
        return ChartPlan(reason="the result has duplicate column names: alias them (AS name)")
    if df.empty:
        return ChartPlan(reason="the result has no rows")
    cols = {str(c): df[c] for c in df.columns}
    numeric = [c for c, s in cols.items() if _is_numeric(s) and not _is_time(s)]
    times = [c for c, s in cols.items() if _is_time(s)]
    labels = [c for c, s in cols.items() if c not in times and c not in numeric and _is_label(s)]
    if not numeric:
        return ChartPlan(reason="no numeric column to plot")
    xs = times + labels
    if xs:
        return ChartPlan(tuple(xs + [c for c in numeric]), tuple(numeric))
    if len(numeric) >= 2:
        return ChartPlan(tuple(numeric), tuple(numeric[1:]))
    return ChartPlan(reason="one numeric column and nothing to plot it against")


def chart_data(df: pd.DataFrame, x: str, ys: list[str]) -> pd.DataFrame:
    """Long form (x, series, value) of the chosen columns, at most MAX_POINTS rows of `df`."""
    ys = [y for y in dict.fromkeys(ys) if y != x] or [y for y in ys]
    part = df[[x]].copy()
    part.columns = ["x"]
    out = []
    for y in ys:
        one = part.copy()
        one["series"] = y
        one["value"] = pd.to_numeric(df[y], errors="coerce")
        out.append(one)
    long = pd.concat(out, ignore_index=True) if out else part.assign(series="", value=0.0)
    long = long.dropna(subset=["value"]).head(MAX_POINTS)
    if long["x"].dtype.kind == "b":
        long["x"] = long["x"].astype(str)
    return long


def build_chart(df: pd.DataFrame, x: str, ys: list[str], kind: str = "bar") -> alt.Chart:
    """A bar or line chart of `ys` against `x` (one colour per y column)."""
    data = chart_data(df, x, ys)
    xk = x_kind(df[x])
    if xk == "nominal" and kind == "bar":
        xenc = alt.X("x:N", title=x, sort="-y" if data["series"].nunique() == 1 else None)
    else:
        xenc = alt.X(f"x:{xk[0].upper()}", title=x)
    base = alt.Chart(data)
    mark = base.mark_line(point=len(data) < 60) if kind == "line" else base.mark_bar()
    return mark.encode(
        x=xenc,
        y=alt.Y("value:Q", title=ys[0] if len(ys) == 1 else "value"),
        color=alt.Color("series:N", title=None, legend=alt.Legend(orient="top")),
        xOffset="series:N" if kind == "bar" and len(ys) > 1 and xk == "nominal" else alt.Undefined,
        tooltip=[alt.Tooltip("x", title=x), alt.Tooltip("series:N"), alt.Tooltip("value:Q")],
    ).properties(height=320)
