"""The meshlens Streamlit app: `meshlens ui` (or `streamlit run dashboards/app.py`).

Reads the store named by MESHLENS_DATA_DIR through dashboards.data (the only module that touches
analytics). One page per question an on-call engineer asks: what talks to what (Mesh), how is
this service doing (Service), is the canary good (Canary), anything else (SQL), and what happened
to this request (Requests & traces).
"""

from __future__ import annotations

import sys
from pathlib import Path

# `streamlit run dashboards/app.py` puts dashboards/ (not the repo) on sys.path.
_ROOT = str(Path(__file__).resolve().parents[1])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

import streamlit as st  # noqa: E402

from meshlens.dashboards import controls  # noqa: E402

st.set_page_config(page_title="meshlens", page_icon="🕸️", layout="wide")

PAGES = [
    st.Page("views/mesh.py", title="Mesh", icon="🕸️", default=True),
    st.Page("views/service.py", title="Service", icon="📈"),
    st.Page("views/canary.py", title="Canary", icon="🐤"),
    st.Page("views/sql.py", title="SQL", icon="🧮"),
    st.Page("views/traces.py", title="Requests & traces", icon="🔎"),
    st.Page("views/security.py", title="Security", icon="🛡️"),
    st.Page("views/routing.py", title="Routing", icon="🔀"),
]

page = st.navigation(PAGES)
controls.sidebar()
page.run()
