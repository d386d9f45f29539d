"""Small typed helpers over grafana-foundation-sdk shared by every generated dashboard.

Dashboards are code: `build_all()` returns {file name: dashboard JSON}; `meshlens grafana build`
writes them to dashboards/grafana/*.json and a test checks that the committed files equal a fresh
build. Every panel queries the Prometheus data source picked by the `$datasource` variable.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from grafana_foundation_sdk.builders import common as cb
from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.builders import prometheus as prom
from grafana_foundation_sdk.builders import stat, table, timeseries
from grafana_foundation_sdk.cog.builder import Builder
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.common import LegendDisplayMode, LegendPlacement
from grafana_foundation_sdk.models.dashboard import (
    DashboardCursorSync,
    DataSourceRef,
    DataTransformerConfig,
    Panel,
    VariableHide,
    VariableOption,
    VariableRefresh,
    VariableSort,
)
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

DS: Final = DataSourceRef(type_val="prometheus", uid="${datasource}")
MTLS_LEGEND: Final = " (mTLS)"  # Istio writes a lock emoji here; boxes without an emoji font
RATE: Final = "$__rate_interval"
SEC: Final = "@SEC@"
PanelBuilder = Builder[Panel]


@dataclass(frozen=True, slots=True)
class Q:
    """One PromQL target."""

    expr: str
    legend: str = ""
    instant: bool = False
    table: bool = False


def mtls_split(template: str, legend: str) -> list[Q]:
    """Istio's pattern: the same query for mTLS and for plaintext traffic. `template` contains
    SEC where the connection_security_policy matcher goes (inside a label selector)."""
    return [
        Q(template.replace(SEC, 'connection_security_policy="mutual_tls"'), legend + MTLS_LEGEND),
        Q(template.replace(SEC, 'connection_security_policy!="mutual_tls"'), legend),
    ]


def _target(q: Q, ref: str) -> prom.Dataquery:
    t = prom.Dataquery().expr(q.expr).ref_id(ref).datasource(DS)
    if q.legend:
        t = t.legend_format(q.legend)
    if q.instant:
        t = t.instant()
    if q.table:
        t = t.format(PromQueryFormat.TABLE)
    return t


def _refs(queries: Sequence[Q]) -> Iterable[tuple[Q, str]]:
    for i, q in enumerate(queries):
        yield q, chr(ord("A") + i)


def ts_panel(
    title: str,
    queries: Sequence[Q],
    unit: str,
    *,
    w: int = 12,
    h: int = 8,
    desc: str = "",
    stack: bool = False,
) -> timeseries.Panel:
    p = (
        timeseries.Panel()
        .title(title)
        .datasource(DS)
        .unit(unit)
        .span(w)
        .height(h)
        .fill_opacity(10)
        .line_width(1)
        .legend(
            cb.VizLegendOptions()
            .display_mode(LegendDisplayMode.TABLE)
            .placement(LegendPlacement.BOTTOM)
            .show_legend(True)
        )
    )
    if stack:
        p = p.stacking(cb.StackingConfig().mode(_stacking_normal()))
    if desc:
        p = p.description(desc)
    for q, ref in _refs(queries):
        p = p.with_target(_target(q, ref))
    return p


def _stacking_normal() -> Any:
    from grafana_foundation_sdk.models.common import StackingMode

    return StackingMode.NORMAL


def stat_panel(
    title: str, queries: Sequence[Q], unit: str, *, w: int = 6, h: int = 4, desc: str = ""
) -> stat.Panel:
    p = stat.Panel().title(title).datasource(DS).unit(unit).span(w).height(h)
    if desc:
        p = p.description(desc)
    for q, ref in _refs(queries):
        p = p.with_target(_target(q, ref))
    return p


def table_panel(
    title: str,
    queries: Sequence[Q],
    *,
    w: int = 24,
    h: int = 9,
    desc: str = "",
    hide: Sequence[str] = ("Time",),
) -> table.Panel:
    """Instant table queries merged on their shared labels (Istio's workload tables)."""
    p = table.Panel().title(title).datasource(DS).span(w).height(h)
    if desc:
        p = p.description(desc)
    for q, ref in _refs(queries):
        p = p.with_target(_target(Q(q.expr, q.legend, instant=True, table=True), ref))
    p = p.with_transformation(DataTransformerConfig(id_val="merge", options={}))
    p = p.with_transformation(
        DataTransformerConfig(
            id_val="organize",
            options={
                "excludeByName": {name: True for name in hide},
                "renameByName": {f"Value #{ref}": q.legend or ref for q, ref in _refs(queries)},
            },
        )
    )
    return p


def datasource_var() -> db.DatasourceVariable:
    return db.DatasourceVariable("datasource").label("Data source").type("prometheus")


def query_var(
    name: str, label: str, query: str, *, include_all: bool = True, multi: bool = False
) -> db.QueryVariable:
    v = (
        db.QueryVariable(name)
        .label(label)
        .datasource(DS)
        .query(query)
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(VariableSort.ALPHABETICAL_ASC)
        .include_all(include_all)
        .multi(multi)
    )
    if include_all:
        v = v.all_value(".*").current(VariableOption(selected=True, text="All", value="$__all"))
    return v


def custom_var(
    name: str, label: str, values: Sequence[str], *, hide: bool = False
) -> db.CustomVariable:
    v = (
        db.CustomVariable(name)
        .label(label)
        .values(",".join(values))
        .current(VariableOption(selected=True, text=values[0], value=values[0]))
    )
    if hide:
        v = v.hide(VariableHide.HIDE_VARIABLE)
    return v


def new_dashboard(uid: str, title: str, description: str, tags: Sequence[str]) -> db.Dashboard:
    return (
        db.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(["meshlens", *tags])
        .time("now-30m", "now")
        .refresh("30s")
        .timezone("browser")
        .editable()
        .tooltip(DashboardCursorSync.CROSSHAIR)
        .with_variable(datasource_var())
    )


def render(dashboard: db.Dashboard) -> dict[str, Any]:
    """The dashboard as plain JSON data, with stable panel ids (1, 2, ...) in layout order."""
    data: dict[str, Any] = json.loads(json.dumps(dashboard.build(), cls=JSONEncoder))
    next_id = 1

    def number(panels: list[dict[str, Any]]) -> None:
        nonlocal next_id
        for panel in panels:
            panel["id"] = next_id
            next_id += 1
            number(panel.get("panels", []))

    number(data.get("panels", []))
    for var in data.get("templating", {}).get("list", []):
        var.pop("id", None)  # the SDK writes a zero UUID; Grafana keys variables by name
    return data


def dumps(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def expressions(data: dict[str, Any]) -> list[str]:
    """Every PromQL expression of a rendered dashboard (panels, rows and variables)."""
    out: list[str] = []

    def walk(panels: list[dict[str, Any]]) -> None:
        for panel in panels:
            out.extend(t["expr"] for t in panel.get("targets", []) if t.get("expr"))
            walk(panel.get("panels", []))

    walk(data.get("panels", []))
    return out
