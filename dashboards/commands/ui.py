"""`meshlens ui`: the Streamlit app on http://HOST:PORT (default 127.0.0.1:8501), headless.

Replaces this process with `python -m streamlit run dashboards/app.py` (exec: signals reach
Streamlit directly, no orphan), the store passed in MESHLENS_DATA_DIR (the app reads it through
dashboards.data) and the sign-in decided here (dashboards/auth_rules.py) in the environment too:
a token on the command line would show in `ps`.

Bound beyond loopback the app requires sign-in (a shared token, OIDC, or both) and this command
refuses to start without one, unless --no-auth says a proxy in front authenticates. On loopback
sign-in is optional; with nothing configured a random token is made and the sign-in URL printed.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import sys
from pathlib import Path
from typing import Final

from meshlens.collector.store.location import StoreLocation
from meshlens.dashboards.auth_rules import (
    AuthConfigError,
    SignIn,
    app_env,
    is_loopback,
    launch,
    sign_in_url,
)
from meshlens.settings import Setting, add_settings

APP: Final = Path(__file__).resolve().parents[1] / "app.py"
_LOG = logging.getLogger("meshlens.ui")

UI: Final = (
    Setting("port", 8501, "port of the Streamlit app (0 is not supported by Streamlit)", int),
    Setting("host", "127.0.0.1", "address the app binds to (0.0.0.0 in containers)", str),
    Setting(
        "ui_token",
        "",
        "shared sign-in token of the app (at least 16 characters); required beyond loopback "
        "unless OIDC is configured; on loopback a random one is made when unset",
        str,
        secret=True,
    ),
    Setting(
        "ui_token_file",
        "",
        "file holding the sign-in token (e.g. a mounted Kubernetes Secret), instead of --ui-token",
        str,
    ),
    Setting(
        "ui_oidc_secrets",
        "",
        "Streamlit secrets file whose [auth] section configures OIDC sign-in (redirect_uri, "
        "cookie_secret, client_id, client_secret, server_metadata_url); needs Authlib>=1.3.2",
        str,
    ),
    Setting(
        "ui_oidc_allow",
        "",
        "OIDC accounts admitted, comma-separated emails and @domains (e.g. @example.com); "
        "'' admits anyone the provider signs in (with Google: any Google account)",
        str,
    ),
    Setting(
        "ui_user_header",
        "",
        "with --no-auth behind an authenticating proxy: the request header naming the user "
        "(e.g. X-Forwarded-Email); only if the proxy sets it and nothing else reaches the app",
        str,
    ),
)


def configure(parser: argparse.ArgumentParser) -> None:
    add_settings(parser, UI)
    parser.add_argument(
        "--no-auth",
        action="store_true",
        help="serve the app with no sign-in even beyond loopback: only behind a proxy that "
        "authenticates every request (anyone who reaches the port sees all telemetry)",
    )


def _authlib() -> bool:
    return importlib.util.find_spec("authlib") is not None


def sign_in(args: argparse.Namespace) -> SignIn:
    return launch(
        str(args.host),
        token=str(getattr(args, "ui_token", "") or ""),
        token_file=str(getattr(args, "ui_token_file", "") or ""),
        oidc_secrets=str(getattr(args, "ui_oidc_secrets", "") or ""),
        no_auth=bool(getattr(args, "no_auth", False)),
        user_header=str(getattr(args, "ui_user_header", "") or ""),
        oidc_allow=str(getattr(args, "ui_oidc_allow", "") or ""),
        authlib=_authlib(),
    )


def command(args: argparse.Namespace) -> list[str]:
    """The streamlit command line (tests start the same thing). No secret on it: the token goes
    in the environment, OIDC secrets stay in their file."""
    cmd = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(APP),
        "--server.port",
        str(args.port),
        "--server.address",
        str(args.host),
        "--server.headless",
        "true",
        "--browser.gatherUsageStats",
        "false",
        "--server.fileWatcherType",
        "none",
        # Viewers, not developers: no Deploy button, rerun or clear-cache menu entries; errors
        # show a generic message (details in the server log); no links to search engines.
        "--client.toolbarMode",
        "viewer",
        "--client.showErrorDetails",
        "none",
        "--client.showErrorLinks",
        "false",
        "--server.enableXsrfProtection",
        "true",
        "--server.enableCORS",
        "true",
        "--server.enableAgentApi",
        "false",
    ]
    oidc = str(getattr(args, "ui_oidc_secrets", "") or "")
    if oidc:  # a path; Streamlit reads [auth] from it
        cmd += ["--secrets.files", str(Path(oidc).resolve())]
    return cmd


def _announce(args: argparse.Namespace, s: SignIn) -> None:
    host, port = str(args.host), int(args.port)
    print(f"meshlens ui: http://{host}:{port}/ (store {args.data_dir})", file=sys.stderr)
    if s.mode == "off":
        _LOG.warning(
            "SIGN-IN IS OFF (--no-auth): anyone who reaches %s:%d can read all telemetry and "
            "run SQL over it; only run this way behind a proxy that authenticates every request",
            host,
            port,
        )
        return
    if s.providers and not s.allow:
        _LOG.warning(
            "OIDC sign-in admits ANY account %s signs in; restrict it with --ui-oidc-allow "
            "(emails, @domains) unless the provider only knows your users",
            ", ".join(p.label for p in s.providers),
        )
    how = []
    if s.token:
        how.append("the token")
    how += [f"OIDC ({p.label})" for p in s.providers]
    print(
        f"meshlens ui: sign-in {s.mode} ({', '.join(how)})",
        file=sys.stderr,
    )
    if s.generated and is_loopback(host):
        # Like Jupyter: the URL signs the local user in once, then drops the token. A token
        # the user configured is theirs already: it stays out of logs.
        print(f"meshlens ui: sign in at {sign_in_url(host, port, s.token)}", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    try:
        s = sign_in(args)
    except AuthConfigError as exc:
        print(f"meshlens ui: {exc}", file=sys.stderr)
        return 2
    location = StoreLocation.parse(args.data_dir)
    ddir = str(location) if location.local is None else str(location.local.resolve())
    env = {**os.environ, "MESHLENS_DATA_DIR": ddir}
    for name, value in app_env(s).items():
        if value:
            env[name] = value
        else:
            env.pop(name, None)
    _announce(args, s)
    sys.stderr.flush()
    cmd = command(args)
    os.execve(cmd[0], cmd, env)
    return 0  # not reached
