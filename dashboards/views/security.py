"""Security: mTLS coverage and the identity graph, and an AuthorizationPolicy what-if over the
requests of the window (who would be denied before the policy is applied)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import streamlit as st

from meshlens.dashboards import controls, data
from meshlens.dashboards.prefetch import prefetch
from meshlens.dashboards.views.istio_check import as_frame, config_editor, show_report

EXAMPLE = """apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: istio-system}
spec:
  mtls: {mode: STRICT}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: productpage-viewer, namespace: default}
spec:
  selector: {matchLabels: {app: productpage}}
  action: ALLOW
  rules:
    - from:
        - source: {principals: ["cluster.local/ns/default/sa/istio-ingressgateway"]}
"""


def _mentions(row: Mapping[str, Any], name: str) -> bool:
    """Whether a report row is about `name` (a workload, app or service on either side)."""
    for k, v in row.items():
        if any(part in k for part in ("workload", "service", "app", "source", "destination")):
            text = str(v or "")
            if text == name or text.startswith((f"{name}.", f"{name}-")):
                return True
    return False


# The Mesh page links here with ?service=NAME: the tables then show that service's rows.
focus = str(st.query_params.get("service", "") or "")


def table(where: Any, rows: Sequence[Mapping[str, Any]], key: str, empty: str) -> None:
    if focus and st.session_state.get("sec_focus", True):
        rows = [r for r in rows if _mentions(r, focus)]
    if rows:
        where.dataframe(as_frame(rows), hide_index=True, key=key)
    else:
        where.caption(empty)


st.title(":material/shield_lock: Security")
# What both checks read, started now beside the store's extent and the example's namespace:
# the window's pairing (most of a cold page) and its identities.
prefetch(
    lambda: data.warm_window(controls.ddir(), controls.current_window()),
    lambda: data.istio_context(controls.ddir(), controls.current_window()),
)
if focus:
    st.toggle(f"Only rows about **{focus}**", value=True, key="sec_focus")
config = config_editor("security_yaml", EXAMPLE)
if config.strip():  # both tabs' checks at once (each is one scan of the range)
    _window = controls.current_window()
    prefetch(
        *(
            lambda check=check: data.istio_check(controls.ddir(), _window, check, config)
            for check in ("mtls", "authz")
        )
    )
tab_mtls, tab_authz = st.tabs(
    [":material/lock: mTLS coverage", ":material/policy: AuthorizationPolicy what-if"]
)
with tab_mtls:
    report = show_report("mtls", config)
    if report:
        tables = report.get("tables", {})
        c1, c2 = st.columns(2)
        c1.subheader("Namespaces")
        table(c1, tables.get("namespaces", []), "sec_ns", "no namespace with traffic")
        c2.subheader("Workloads")
        table(c2, tables.get("workloads", []), "sec_wl", "no workload with traffic")
        st.subheader("Edges")
        table(st, report["rows"], "sec_edges", "no edge with traffic in this time range")
        st.subheader("Identities seen per workload")
        table(st, tables.get("identities", []), "sec_ids", "no identity seen")
with tab_authz:
    report = show_report("authz", config)
    if report:
        st.subheader("Callers by decision")
        table(
            st,
            report["rows"],
            "sec_callers",
            "no caller in this time range, or no AuthorizationPolicy in the config",
        )
