"""Security: mTLS coverage and the identity graph, and an AuthorizationPolicy what-if over the
requests of the window (who would be denied before the policy is applied)."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from meshlens.dashboards.views.istio_check import config_editor, show_report

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

st.title("🛡️ Security")
config = config_editor("security_yaml", EXAMPLE)
tab_mtls, tab_authz = st.tabs(["mTLS coverage", "AuthorizationPolicy what-if"])
with tab_mtls:
    report = show_report("mtls", config)
    if report:
        tables = report.get("tables", {})
        c1, c2 = st.columns(2)
        c1.subheader("Namespaces")
        c1.dataframe(pd.DataFrame(tables.get("namespaces", [])), hide_index=True, key="sec_ns")
        c2.subheader("Workloads")
        c2.dataframe(pd.DataFrame(tables.get("workloads", [])), hide_index=True, key="sec_wl")
        st.subheader("Edges")
        st.dataframe(pd.DataFrame(report["rows"]), hide_index=True, key="sec_edges")
        st.subheader("Identities seen per workload")
        st.dataframe(pd.DataFrame(tables.get("identities", [])), hide_index=True, key="sec_ids")
with tab_authz:
    report = show_report("authz", config)
    if report and report["rows"]:
        st.subheader("Callers by decision")
        st.dataframe(pd.DataFrame(report["rows"]), hide_index=True, key="sec_callers")
