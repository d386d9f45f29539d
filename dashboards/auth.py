"""Who is signed in to the app. (Interface placeholder: the sign-in work replaces the body and
keeps these signatures.)"""

from __future__ import annotations

import streamlit as st


def current_user() -> str | None:
    """The signed-in user's name, or None when nobody is signed in."""
    user = st.session_state.get("meshlens_user")
    return str(user) if user else None
