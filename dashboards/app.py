"""The meshlens Streamlit app: `meshlens ui` (or `streamlit run dashboards/app.py`).

Reads the store named by MESHLENS_DATA_DIR through dashboards.data (the only module that touches
analytics). One page per question an on-call engineer asks: what talks to what (Mesh), how is
this service doing (Service), is the canary good (Canary), anything else (SQL), and what happened
to this request (Requests & traces).

Nobody gets past `auth.gate()` without signing in where sign-in is required (dashboards/auth.py);
a page that fails shows a short error, never a traceback or a server path (those go to the log).
Icons are Material Symbols (a font Streamlit ships), not emoji, which need a system font.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

# `streamlit run dashboards/app.py` puts dashboards/ (not the repo) on sys.path.
_ROOT = str(Path(__file__).resolve().parents[1])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

import streamlit as st  # noqa: E402
from streamlit.runtime.scriptrunner_utils.exceptions import ScriptControlException  # noqa: E402

from meshlens.dashboards import auth, controls  # noqa: E402

_LOG = logging.getLogger("meshlens.ui")

st.set_page_config(page_title="meshlens", page_icon=":material/hub:", layout="wide")

PAGES = [
    st.Page("views/mesh.py", title="Mesh", icon=":material/hub:", default=True),
    st.Page("views/service.py", title="Service", icon=":material/monitoring:"),
    st.Page("views/canary.py", title="Canary", icon=":material/alt_route:"),
    st.Page("views/sql.py", title="SQL", icon=":material/database:"),
    st.Page("views/traces.py", title="Requests & traces", icon=":material/manage_search:"),
    st.Page("views/security.py", title="Security", icon=":material/shield_lock:"),
    st.Page("views/routing.py", title="Routing", icon=":material/route:"),
]


# Resolved before the gate (hidden until sign-in) so that a deep link survives the sign-in.
page = st.navigation(PAGES, position="sidebar" if auth.admitted() else "hidden")
auth.gate()
try:
    controls.sidebar()
    auth.sidebar()
    page.run()
except ScriptControlException:
    raise  # st.stop(), st.rerun(), st.switch_page(): Streamlit's control flow, not errors
except Exception as exc:
    # The details (traceback, paths) go to the server log only.
    _LOG.exception("page %r failed", page.title)
    st.error(
        f"This page failed ({type(exc).__name__}). The details are in the server log.",
        icon=":material/error:",
    )
