"""Who must sign in to the app, and how: the rules without Streamlit.

`meshlens ui` decides the sign-in mode from the address it binds and what is configured
(`launch`), and hands the result to the Streamlit process in its environment (`app_env`), never
on the command line, where `ps` would show the token. The app reads it back (`app_config`).

- Bound beyond loopback, sign-in is required: with a shared token (MESHLENS_UI_TOKEN or a token
  file), OIDC (a Streamlit secrets file with an `[auth]` section), or both. With neither, the
  launcher refuses to start; `--no-auth` is the explicit way to run open behind a proxy that
  authenticates.
- On loopback, sign-in is optional (the pages are open to the local user); a random token is
  made when none is configured, so the printed sign-in URL gives the person who started the app
  a name for the actions that need one (the Canary page).
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets
import tomllib
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal
from urllib.parse import quote, urlsplit

Mode = Literal["required", "optional", "off"]
MODES: Final[tuple[Mode, ...]] = ("required", "optional", "off")

TOKEN_ENV: Final = "MESHLENS_UI_TOKEN"
TOKEN_FILE_ENV: Final = "MESHLENS_UI_TOKEN_FILE"
OIDC_ENV: Final = "MESHLENS_UI_OIDC_SECRETS"
USER_HEADER_ENV: Final = "MESHLENS_UI_USER_HEADER"
ALLOW_ENV: Final = "MESHLENS_UI_OIDC_ALLOW"
# Set by `meshlens ui` for the app only (not a user setting): the mode it decided.
MODE_ENV: Final = "MESHLENS_UI_SIGN_IN"

# A token typed into a form reachable from a network must not be guessable.
MIN_TOKEN_LENGTH: Final = 16
TOKEN_USER: Final = "token-user"
MAX_NAME_LENGTH: Final = 64
OIDC_KEYS: Final = ("client_id", "client_secret", "server_metadata_url")
OIDC_SHARED_KEYS: Final = ("redirect_uri", "cookie_secret")


class AuthConfigError(ValueError):
    """Sign-in configuration that cannot work; the message says what to set."""


@dataclass(frozen=True, slots=True)
class Provider:
    """One OIDC provider of the secrets file: `key` is what `st.login(key)` takes (None for the
    unnamed `[auth]` provider), `label` what the sign-in button says."""

    key: str | None
    label: str


@dataclass(frozen=True, slots=True)
class SignIn:
    mode: Mode
    token: str = ""
    providers: tuple[Provider, ...] = ()
    oidc_secrets: str = ""
    # OIDC accounts admitted: emails and "@domain"s (empty: anyone the provider signs in).
    allow: tuple[str, ...] = ()
    user_header: str = ""
    generated: bool = False  # the token was made at start (loopback, nothing configured)
    problem: str = ""  # the app cannot sign anyone in: say so instead of opening up

    @property
    def required(self) -> bool:
        return self.mode == "required"


def is_loopback(host: str) -> bool:
    """Only addresses that cannot be reached from another host. A name other than localhost may
    resolve to anything, and '' or 0.0.0.0 / :: bind every interface."""
    h = host.strip().strip("[]").lower()
    if h == "localhost":
        return True
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        return False


def check_token(expected: str, given: str) -> bool:
    """Constant-time comparison; no configured token never matches."""
    if not expected or not given:
        return False
    return hmac.compare_digest(expected.encode(), given.strip().encode())


def new_token() -> str:
    return secrets.token_urlsafe(32)


def token_problem(token: str) -> str:
    if token and len(token) < MIN_TOKEN_LENGTH:
        return (
            f"the UI token is {len(token)} characters long; use at least {MIN_TOKEN_LENGTH} "
            "random ones, e.g. $(openssl rand -hex 32)"
        )
    return ""


def read_token_file(path: str) -> str:
    try:
        token = Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise AuthConfigError(f"cannot read the UI token file {path}: {exc.strerror}") from None
    if not token:
        raise AuthConfigError(f"the UI token file {path} is empty")
    return token


def display_name(typed: str) -> str:
    """The name a token user typed, made safe to show and log (or TOKEN_USER)."""
    kept = "".join(c for c in typed if unicodedata.category(c)[0] not in ("C", "Z") or c == " ")
    name = " ".join(kept.split())[:MAX_NAME_LENGTH]
    return name or TOKEN_USER


def oidc_user(info: Mapping[str, Any]) -> str | None:
    """The name of an OIDC user from st.user's claims: email, else name, else subject."""
    if not info.get("is_logged_in"):
        return None
    for claim in ("email", "name", "preferred_username", "sub"):
        value = info.get(claim)
        if value:
            return str(value)
    return "oidc-user"


def parse_allow(text: str) -> tuple[str, ...]:
    """'alice@example.com, *@example.org' -> ('alice@example.com', '@example.org')."""
    out: list[str] = []
    for raw in text.split(","):
        item = raw.strip().lower()
        if not item:
            continue
        if item.startswith("*@"):
            item = item[1:]
        local, at, domain = item.rpartition("@")
        if not at or not domain or "." not in domain or " " in item or "@" in local:
            raise AuthConfigError(
                f"not an email or @domain in the OIDC allow list: {raw.strip()!r} "
                "(e.g. alice@example.com,@example.org)"
            )
        out.append(item)
    return tuple(out)


def oidc_allowed(info: Mapping[str, Any], allow: tuple[str, ...]) -> bool:
    """Whether the allow list admits this OIDC account: by its email, which the provider must
    not say is unverified (anyone can put any address on some accounts)."""
    if not allow:
        return True
    email = str(info.get("email") or "").strip().lower()
    if not email or info.get("email_verified") in (False, "false"):
        return False
    return any(email == a or (a.startswith("@") and email.endswith(a)) for a in allow)


def _label(key: str | None, section: Mapping[str, Any]) -> str:
    if key:
        return key.replace("-", " ").title()
    host = urlsplit(str(section.get("server_metadata_url", ""))).hostname
    return host or "your identity provider"


def oidc_providers(secrets_doc: Mapping[str, Any]) -> tuple[Provider, ...]:
    """The providers of a Streamlit secrets document (`[auth]` and `[auth.NAME]`), checked for
    the keys st.login needs."""
    auth = secrets_doc.get("auth")
    if not isinstance(auth, Mapping):
        raise AuthConfigError("the OIDC secrets file has no [auth] section")
    missing = [k for k in OIDC_SHARED_KEYS if not auth.get(k)]
    if missing:
        raise AuthConfigError(f"[auth] in the OIDC secrets file lacks {', '.join(missing)}")
    found: list[Provider] = []
    if any(k in auth for k in OIDC_KEYS):
        lacking = [k for k in OIDC_KEYS if not auth.get(k)]
        if lacking:
            raise AuthConfigError(f"[auth] in the OIDC secrets file lacks {', '.join(lacking)}")
        found.append(Provider(None, _label(None, auth)))
    for name, section in auth.items():
        if not isinstance(section, Mapping):
            continue
        if "_" in name:  # st.login() cannot take it
            raise AuthConfigError(f"[auth.{name}]: provider names cannot contain '_'")
        lacking = [k for k in OIDC_KEYS if not section.get(k)]
        if lacking:
            raise AuthConfigError(f"[auth.{name}] in the OIDC secrets file lacks {lacking}")
        found.append(Provider(name, _label(name, section)))
    if not found:
        raise AuthConfigError(
            "the OIDC secrets file names no provider: set client_id, client_secret and "
            "server_metadata_url in [auth] (or in [auth.NAME] sections)"
        )
    return tuple(found)


def load_oidc(path: str) -> tuple[Provider, ...]:
    try:
        doc = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise AuthConfigError(f"cannot read the OIDC secrets file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise AuthConfigError(f"the OIDC secrets file {path} is not TOML: {exc}") from None
    return oidc_providers(doc)


def launch(
    host: str,
    *,
    token: str = "",
    token_file: str = "",
    oidc_secrets: str = "",
    no_auth: bool = False,
    user_header: str = "",
    oidc_allow: str = "",
    authlib: bool = True,
) -> SignIn:
    """What `meshlens ui` runs with, or AuthConfigError (it exits 2 with the message)."""
    if token and token_file:
        raise AuthConfigError("set the UI token or a token file, not both")
    if token_file:
        token = read_token_file(token_file)
    problem = token_problem(token)
    if problem:
        raise AuthConfigError(problem)
    providers: tuple[Provider, ...] = ()
    if oidc_secrets:
        if not authlib:
            raise AuthConfigError(
                "OIDC sign-in needs Authlib>=1.3.2, which is not installed: "
                "pip install 'Authlib>=1.3.2' (or streamlit[auth]), or use MESHLENS_UI_TOKEN"
            )
        providers = load_oidc(oidc_secrets)
        oidc_secrets = str(Path(oidc_secrets).resolve())
    allow = parse_allow(oidc_allow)
    if allow and not providers:
        raise AuthConfigError("--ui-oidc-allow needs OIDC (--ui-oidc-secrets)")
    if user_header and not no_auth:
        raise AuthConfigError(
            "--ui-user-header is only for --no-auth behind an authenticating proxy "
            "(anyone else could send the header)"
        )
    if no_auth:
        return SignIn("off", user_header=user_header)
    if not is_loopback(host):
        if not token and not providers:
            raise AuthConfigError(
                f"refusing to serve the UI on {host or 'every address'} with no sign-in: set "
                "MESHLENS_UI_TOKEN (or --ui-token-file FILE, e.g. a mounted Kubernetes Secret) "
                "to a random token ($(openssl rand -hex 32)), or --ui-oidc-secrets FILE for OIDC "
                "sign-in; --no-auth serves it to anyone who reaches the port (only behind a "
                "proxy that authenticates)"
            )
        return SignIn("required", token, providers, oidc_secrets, allow)
    if not token and not providers:
        return SignIn("optional", new_token(), generated=True)
    return SignIn("optional", token, providers, oidc_secrets, allow)


def app_env(sign_in: SignIn) -> dict[str, str]:
    """The environment `meshlens ui` gives the Streamlit process ('' = unset it)."""
    return {
        MODE_ENV: sign_in.mode,
        TOKEN_ENV: sign_in.token,
        TOKEN_FILE_ENV: "",
        OIDC_ENV: sign_in.oidc_secrets,
        ALLOW_ENV: ",".join(sign_in.allow),
        USER_HEADER_ENV: sign_in.user_header,
    }


def app_config(environ: Mapping[str, str]) -> SignIn:
    """Inside the app: the mode `meshlens ui` decided, or, under a bare `streamlit run` (and
    AppTest), required as soon as a token or OIDC is configured. A configuration the app cannot
    use yields a `problem` (the app then signs nobody in) instead of an exception."""
    token = environ.get(TOKEN_ENV, "").strip()
    providers: tuple[Provider, ...] = ()
    oidc = environ.get(OIDC_ENV, "")
    try:
        if not token and environ.get(TOKEN_FILE_ENV):
            token = read_token_file(environ[TOKEN_FILE_ENV])
        if oidc:
            providers = load_oidc(oidc)
        allow = parse_allow(environ.get(ALLOW_ENV, ""))
    except AuthConfigError as exc:
        return SignIn("required", problem=str(exc))
    raw = environ.get(MODE_ENV, "")
    mode: Mode
    if raw in MODES:
        mode = raw
    elif raw:
        return SignIn("required", problem=f"{MODE_ENV}={raw!r} is not one of {MODES}")
    else:
        mode = "required" if token or providers else "off"
    problem = ""
    if mode == "required" and not token and not providers:
        problem = "sign-in is required but neither a token nor OIDC is configured"
    user_header = environ.get(USER_HEADER_ENV, "") if mode == "off" else ""
    return SignIn(mode, token, providers, oidc, allow, user_header, problem=problem)


def url_host(host: str) -> str:
    """The host part of a URL that reaches an app bound to `host`."""
    h = host.strip()
    if h in ("", "0.0.0.0", "::"):
        return "localhost"
    return f"[{h}]" if ":" in h else h


def sign_in_url(host: str, port: int, token: str = "") -> str:
    base = f"http://{url_host(host)}:{port}/"
    return f"{base}?token={quote(token, safe='')}" if token else base
