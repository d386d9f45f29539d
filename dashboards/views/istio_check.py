"""Shared layout of the Security and Routing pages: an Istio YAML editor, the check's findings
and tables (the same report as `meshlens check ... --format json`), over the sidebar's time
range. Nothing here may look green when there was nothing to check."""

from __future__ import annotations

import logging
from typing import Any, Final

import pandas as pd
import streamlit as st

from meshlens.dashboards import controls, data

_LOG = logging.getLogger("meshlens.ui")
SEVERITY_ORDER: Final = {"problem": 0, "warning": 1, "info": 2}


def as_frame(rows: Any) -> pd.DataFrame:
    """A report table as a DataFrame; a column mixing numbers and text (a port that is '' when
    unknown) becomes text, which Arrow (and so st.dataframe) can show."""
    df = pd.DataFrame(list(rows))
    for col in df.columns:
        if df[col].dtype == object and len({type(v) for v in df[col] if v is not None}) > 1:
            df[col] = df[col].map(lambda v: "" if v is None else str(v))
    return df


def config_editor(key: str, example: str) -> str:
    """The YAML the check runs on: MESHLENS_ISTIO_CONFIG's files, else an example (put in the
    namespace the traffic is in) that the user is told to replace."""
    try:
        given, problem = data.istio_config_text(), data.istio_config_problem()
    except OSError as exc:  # no path in the message: it is the server's
        given, problem = "", exc.strerror or type(exc).__name__
    problem = f"`{data.ISTIO_CONFIG_ENV}` is set but {problem}." if problem else ""
    if not given:
        namespace = example_namespace()
        where = f" (in namespace `{namespace}`, where the traffic is)" if namespace else ""
        head = problem or "No Istio config given."  # set but unusable: an error, not a hint
        (st.error if problem else st.info)(
            f"{head} The page starts from an **example**{where}. Give yours: start the app "
            f"with `{data.ISTIO_CONFIG_ENV}` set to a YAML file or a directory of them (e.g. "
            "`kubectl get virtualservice,destinationrule,peerauthentication,"
            "authorizationpolicy -A -o yaml`), or paste the YAML below.",
            icon=":material/error:" if problem else ":material/description:",
        )
        if namespace and namespace != "default":
            example = example.replace("namespace: default", f"namespace: {namespace}")
    if key not in st.session_state:
        st.session_state[key] = given or example
    return str(st.text_area("Istio resources (YAML, several documents)", key=key, height=220))


def example_namespace() -> str | None:
    try:
        return data.busiest_namespace(controls.ddir(), controls.current_window())
    except Exception:  # only picks the example's namespace: the check reports store errors
        _LOG.exception("finding the busiest namespace failed")
        return None


def _verified(check: str, report: dict[str, Any]) -> bool:
    """True when some request of the range met the config (else an ok is not a verdict)."""
    rows = report.get("rows") or []
    if check == "routing":
        return any(int(r.get("route_requests") or r.get("requests") or 0) > 0 for r in rows)
    return bool(rows)


def show_report(check: str, config_yaml: str) -> dict[str, Any] | None:
    """Run `check` over the current time range; the verdict line, the findings table; the
    report for the page's own tables, or None when there is nothing to show."""
    window = controls.current_window()
    if not config_yaml.strip():
        st.info("Paste Istio resources (YAML) above to check them.", icon=":material/edit_note:")
        return None
    try:
        out = data.istio_check(controls.ddir(), window, check, config_yaml)
        traffic = bool(data.services(controls.ddir(), window))
    except Exception as exc:  # a short message here, the traceback in the server log only
        _LOG.exception("check %s failed", check)
        st.error(
            f"{check}: the check failed ({type(exc).__name__}); the details are in the server log.",
            icon=":material/error:",
        )
        return None
    if out.error:
        st.error(out.error, icon=":material/error:")
        return None
    report = out.report
    if report is None:
        return None
    st.caption(f"checked over {controls.current_range().label()}")
    if not traffic:
        st.warning(
            f"{check}: no requests in this time range, so the config was not checked against "
            "traffic. Pick another range in the sidebar (it says when data last arrived).",
            icon=":material/visibility_off:",
        )
    elif check == "routing" and not report["rows"]:
        st.warning(
            "routing: the config has no VirtualService route, so there is no split to check.",
            icon=":material/visibility_off:",
        )
    elif report["ok"] and not _verified(check, report):
        st.warning(
            f"{check}: no request in this time range met these resources (check their hosts, "
            "namespaces and selectors), so nothing was verified.",
            icon=":material/visibility_off:",
        )
    elif report["ok"]:
        st.success(f"{check}: no problem in this time range", icon=":material/check_circle:")
    else:
        st.error(f"{check}: {report['problems']} problem(s)", icon=":material/error:")
    findings = sorted(report["findings"], key=lambda f: SEVERITY_ORDER.get(str(f["severity"]), 9))
    if findings:
        st.dataframe(
            pd.DataFrame(
                [
                    {
                        "severity": f["severity"],
                        "resource": f["resource"],
                        "finding": f["message"],
                    }
                    for f in findings
                ]
            ),
            hide_index=True,
            key=f"{check}_findings",
            column_config={
                "severity": st.column_config.TextColumn("severity", pinned=True),
            },
        )
    if report["skipped"]:
        st.caption("not checked: " + "; ".join(report["skipped"]))
    return report
