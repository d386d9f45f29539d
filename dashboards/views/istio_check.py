"""Shared layout of the Security and Routing pages: an Istio YAML editor, the check's findings
and tables (the same report as `meshlens check ... --format json`)."""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from meshlens.dashboards import controls, data

SEVERITY_ICON = {"problem": "🔴", "warning": "🟠", "info": "🔵"}


def config_editor(key: str, example: str) -> str:
    if key not in st.session_state:
        st.session_state[key] = data.istio_config_text() or example
    return str(st.text_area("Istio resources (YAML, several documents)", key=key, height=220))


def show_report(check: str, config_yaml: str) -> dict[str, Any] | None:
    out = data.istio_check(controls.ddir(), controls.current_window(), check, config_yaml)
    if out.error:
        st.error(out.error)
        return None
    report = out.report
    assert report is not None
    if report["ok"]:
        st.success(f"{check}: no problem in this window")
    else:
        st.error(f"{check}: {report['problems']} problem(s)")
    findings = report["findings"]
    if findings:
        st.dataframe(
            pd.DataFrame(
                [
                    {
                        "": SEVERITY_ICON.get(f["severity"], ""),
                        "severity": f["severity"],
                        "resource": f["resource"],
                        "finding": f["message"],
                    }
                    for f in findings
                ]
            ),
            hide_index=True,
            key=f"{check}_findings",
        )
    if report["skipped"]:
        st.caption("not checked: " + "; ".join(report["skipped"]))
    return report
