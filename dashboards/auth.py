"""Who is signed in to the app, and the sign-in form.

app.py calls `gate()` before any page runs: when sign-in is required and nobody is signed in it
draws the sign-in form (the shared token and/or one "Sign in with ..." button per OIDC provider)
and stops the script, so no page, no navigation and no data reach an anonymous visitor.
`sidebar()` shows who is signed in with a sign-out button (or, where sign-in is optional, a way
to sign in). Pages ask `current_user()` before actions that need a name (the Canary page).

The rules (which mode, token comparison, OIDC configuration) live in auth_rules, tested without
Streamlit. A token sign-in lasts for the browser session (a reload asks again); an OIDC one
lasts as long as Streamlit's identity cookie.
"""

from __future__ import annotations

import importlib.util
import os
import time
from dataclasses import replace
from typing import Final

import streamlit as st
from streamlit.delta_generator import DeltaGenerator

from meshlens.dashboards.auth_rules import (
    SignIn,
    app_config,
    check_token,
    display_name,
    oidc_allowed,
    oidc_user,
)

_USER_KEY: Final = "meshlens_user"
_URL_TOKEN: Final = "token"
_NOTICE_KEY: Final = "meshlens_sign_in_notice"
_WRONG_TOKEN_DELAY_S: Final = 1.0  # slows guessing from one session
_MARKDOWN_SPECIAL: Final = frozenset("\\`*_{}[]()<>#+-.!|~:$")


def _escaped(text: str) -> str:
    """A typed name shown as plain text inside Markdown."""
    return "".join("\\" + c if c in _MARKDOWN_SPECIAL else c for c in text)


def authlib_installed() -> bool:
    return importlib.util.find_spec("authlib") is not None


def config() -> SignIn:
    cfg = app_config(os.environ)
    if cfg.providers and not authlib_installed():
        # `meshlens ui` checks this; a bare `streamlit run` may not have.
        return replace(cfg, mode="required", problem="OIDC sign-in needs Authlib>=1.3.2")
    return cfg


def current_user() -> str | None:
    """The signed-in user's name, or None when nobody is signed in."""
    user = st.session_state.get(_USER_KEY)
    if user:
        return str(user)
    cfg = config()
    if cfg.problem:
        return None
    if cfg.providers and oidc_allowed(st.user, cfg.allow):
        return oidc_user(st.user)
    if cfg.mode == "off" and cfg.user_header:
        value = st.context.headers.get(cfg.user_header)
        return display_name(value) if value else None
    return None


def _sign_in_with_url_token(cfg: SignIn) -> None:
    """`?token=...` (the URL `meshlens ui` prints): sign in once, then drop it from the URL so it
    does not stay in the address bar, history or a shared link."""
    if _URL_TOKEN not in st.query_params:
        return
    given = st.query_params.get(_URL_TOKEN, "")
    del st.query_params[_URL_TOKEN]
    if current_user() is not None:
        return
    if check_token(cfg.token, given):
        st.session_state[_USER_KEY] = display_name("")
    else:
        time.sleep(_WRONG_TOKEN_DELAY_S)
        st.session_state[_NOTICE_KEY] = "The sign-in link's token is wrong or out of date."


def _form(cfg: SignIn, where: DeltaGenerator) -> None:
    """The token form and the OIDC buttons, in the main area or the sidebar."""
    for p in cfg.providers:
        if where.button(
            f"Sign in with {p.label}",
            icon=":material/login:",
            key=f"signin_oidc_{p.key or 'default'}",
            type="primary",
        ):
            if p.key is None:
                st.login()
            else:
                st.login(p.key)
    if not cfg.token:
        return
    with where.form("meshlens_sign_in", clear_on_submit=True, border=bool(cfg.required)):
        name = st.text_input(
            "Your name",
            key="signin_name",
            max_chars=64,
            help="Shown with the actions you take (e.g. on the Canary page)",
        )
        token = st.text_input("Token", type="password", key="signin_token")
        submitted = st.form_submit_button("Sign in", icon=":material/login:", type="primary")
    if not submitted:
        return
    if check_token(cfg.token, token):
        st.session_state[_USER_KEY] = display_name(name)
        st.session_state.pop(_NOTICE_KEY, None)
        st.rerun()
    time.sleep(_WRONG_TOKEN_DELAY_S)
    where.error("Wrong token.", icon=":material/error:")


def admitted() -> bool:
    """Whether this visitor may see the pages (signs in with `?token=` first). app.py hides the
    navigation of a visitor who may not, but still resolves the page, so that a deep link
    (/sql) survives the sign-in."""
    cfg = config()
    if cfg.problem:
        return False
    if cfg.mode == "off":
        return True
    _sign_in_with_url_token(cfg)
    return cfg.mode != "required" or current_user() is not None


def gate() -> None:
    """Called by app.py before any page runs: stops the script at the sign-in form when sign-in
    is required and nobody is signed in."""
    if admitted():
        return
    cfg = config()
    if cfg.problem:  # fail closed: a broken configuration opens nothing
        st.title(":material/lock: meshlens")
        st.error(f"Sign-in is not available: {cfg.problem}", icon=":material/error:")
        st.stop()
    st.title(":material/lock: Sign in to meshlens")
    refused = oidc_user(st.user) if cfg.providers else None
    if refused is not None:  # signed in with the provider, not on the allow list
        st.error(
            f"{_escaped(refused)} is not allowed to use this app. Sign out and use another "
            "account, or ask its operator to add yours.",
            icon=":material/block:",
        )
        if st.button("Sign out", icon=":material/logout:", key="signout_refused"):
            st.logout()
    notice = st.session_state.get(_NOTICE_KEY)
    if notice:
        st.error(str(notice), icon=":material/error:")
    if cfg.token:
        st.caption(
            "Enter the token the app was started with (MESHLENS_UI_TOKEN, or the sign-in URL "
            "`meshlens ui` printed)."
        )
    _form(cfg, st.container())
    st.stop()


def sidebar() -> None:
    """Who is signed in, with a sign-out button; where sign-in is optional, a way to sign in."""
    cfg = config()
    if cfg.mode == "off" and not cfg.user_header:
        return
    user = current_user()
    box = st.sidebar.container(border=True)
    if user is None:
        if cfg.mode == "optional":
            notice = st.session_state.get(_NOTICE_KEY)
            if notice:
                box.error(str(notice), icon=":material/error:")
            with box.expander("Sign in", icon=":material/login:"):
                _form(cfg, st.container())
        return
    box.caption(f":material/person: Signed in as **{_escaped(user)}**")
    if cfg.mode == "off":
        return  # the proxy signs users in and out
    if box.button("Sign out", icon=":material/logout:", key="signout"):
        was_token_user = st.session_state.pop(_USER_KEY, None) is not None
        if cfg.providers and not was_token_user:
            st.logout()
        st.rerun()
