"""Routing: each VirtualService route's configured split against where requests went, subsets
without traffic, traffic to versions no route names, DestinationRule subsets with no workload."""

from __future__ import annotations

import streamlit as st

from meshlens.dashboards.views.istio_check import as_frame, config_editor, show_report

EXAMPLE = """apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http:
    - name: primary
      route:
        - destination: {host: reviews, subset: v2}
          weight: 90
        - destination: {host: reviews, subset: v3}
          weight: 10
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: default}
spec:
  host: reviews
  subsets:
    - {name: v1, labels: {version: v1}}
    - {name: v2, labels: {version: v2}}
    - {name: v3, labels: {version: v3}}
"""

st.title(":material/route: Routing")
config = config_editor("routing_yaml", EXAMPLE)
report = show_report("routing", config)
if report:
    st.subheader("Configured vs observed split")
    if report["rows"]:
        st.dataframe(as_frame(report["rows"]), hide_index=True, key="routing_rows")
    else:
        st.caption(
            "no VirtualService route in the config: paste VirtualService and DestinationRule "
            "resources above"
        )
