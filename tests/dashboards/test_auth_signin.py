"""Sign-in of the Streamlit app: the rules (dashboards/auth_rules.py, no Streamlit), what
`meshlens ui` refuses and hands to Streamlit, and what a visitor sees (AppTest)."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from meshlens.dashboards import auth, auth_rules
from meshlens.dashboards.auth_rules import (
    AuthConfigError,
    Provider,
    app_config,
    app_env,
    check_token,
    display_name,
    is_loopback,
    launch,
    oidc_allowed,
    parse_allow,
    sign_in_url,
)
from meshlens.dashboards.commands import ui

REPO = Path(__file__).resolve().parents[2]
APP = str(REPO / "dashboards" / "app.py")
TOKEN = "tok-3f9a1c7e5b2d-ui-secret"

OIDC_TOML = """
[auth]
redirect_uri = "https://meshlens.example.com/oauth2callback"
cookie_secret = "0123456789abcdef0123456789abcdef"

[auth.google]
client_id = "cid.apps.googleusercontent.com"
client_secret = "not-a-real-secret"
server_metadata_url = "https://accounts.google.com/.well-known/openid-configuration"
"""


# -- the rules -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("localhost", True),
        ("LOCALHOST", True),
        ("::1", True),
        ("[::1]", True),
        ("0.0.0.0", False),
        ("::", False),
        ("", False),
        ("10.0.0.5", False),
        ("meshlens.example.com", False),
        ("localhost.example.com", False),
    ],
)
def test_loopback_rule(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_token_check() -> None:
    assert check_token(TOKEN, TOKEN)
    assert check_token(TOKEN, f" {TOKEN}\n")  # pasted with whitespace
    assert not check_token(TOKEN, TOKEN[:-1])
    assert not check_token(TOKEN, TOKEN + "x")
    assert not check_token(TOKEN, "")
    assert not check_token("", "")  # no configured token never matches
    assert not check_token(TOKEN, TOKEN.upper())


def test_display_name() -> None:
    assert display_name("") == "token-user"
    assert display_name("   ") == "token-user"
    assert display_name("  alice   smith ") == "alice smith"
    assert display_name("bob\x1b[31m\n") == "bob[31m"
    assert len(display_name("x" * 500)) == auth_rules.MAX_NAME_LENGTH


def test_beyond_loopback_without_sign_in_is_refused() -> None:
    for host in ("0.0.0.0", "10.1.2.3", "::", "meshlens.example.com"):
        with pytest.raises(AuthConfigError, match=r"MESHLENS_UI_TOKEN.*--no-auth"):
            launch(host)


def test_beyond_loopback_with_a_token_requires_it() -> None:
    s = launch("0.0.0.0", token=TOKEN)
    assert (s.mode, s.token, s.generated) == ("required", TOKEN, False)


def test_a_short_token_is_refused() -> None:
    with pytest.raises(AuthConfigError, match="at least 16"):
        launch("0.0.0.0", token="hunter2")


def test_token_file(tmp_path: Path) -> None:
    f = tmp_path / "token"
    f.write_text(TOKEN + "\n")
    assert launch("0.0.0.0", token_file=str(f)).token == TOKEN
    with pytest.raises(AuthConfigError, match="cannot read"):
        launch("0.0.0.0", token_file=str(tmp_path / "missing"))
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(AuthConfigError, match="empty"):
        launch("0.0.0.0", token_file=str(tmp_path / "empty"))
    with pytest.raises(AuthConfigError, match="not both"):
        launch("0.0.0.0", token=TOKEN, token_file=str(f))


def test_no_auth_is_explicit_and_off() -> None:
    s = launch("0.0.0.0", no_auth=True)
    assert (s.mode, s.token) == ("off", "")
    assert launch("0.0.0.0", no_auth=True, user_header="X-Forwarded-Email").user_header
    with pytest.raises(AuthConfigError, match="--no-auth"):
        launch("0.0.0.0", token=TOKEN, user_header="X-Forwarded-Email")


def test_loopback_makes_a_token_when_none_is_configured() -> None:
    a, b = launch("127.0.0.1"), launch("127.0.0.1")
    assert a.mode == "optional" and a.generated
    assert len(a.token) >= 40 and a.token != b.token
    mine = launch("localhost", token=TOKEN)
    assert (mine.mode, mine.token, mine.generated) == ("optional", TOKEN, False)
    assert launch("127.0.0.1", no_auth=True).mode == "off"


def test_oidc_secrets(tmp_path: Path) -> None:
    f = tmp_path / "secrets.toml"
    f.write_text(OIDC_TOML)
    s = launch("0.0.0.0", oidc_secrets=str(f))
    assert s.mode == "required" and s.token == ""
    assert s.providers == (Provider("google", "Google"),)
    assert Path(s.oidc_secrets).is_absolute()
    with pytest.raises(AuthConfigError, match="Authlib"):
        launch("0.0.0.0", oidc_secrets=str(f), authlib=False)
    # The unnamed provider is labelled by its issuer's host.
    f.write_text(OIDC_TOML.replace("[auth.google]\n", ""))
    assert launch("0.0.0.0", oidc_secrets=str(f)).providers == (
        Provider(None, "accounts.google.com"),
    )


def test_oidc_allow_list(tmp_path: Path) -> None:
    assert parse_allow(" Alice@Example.com, *@example.org,,@corp.example ") == (
        "alice@example.com",
        "@example.org",
        "@corp.example",
    )
    for bad in ("alice", "@localhost", "a b@example.com", "a@b@example.com"):
        with pytest.raises(AuthConfigError, match="allow list"):
            parse_allow(bad)
    allow = parse_allow("alice@example.com,@example.org")
    assert oidc_allowed({"email": "ALICE@example.com"}, allow)
    assert oidc_allowed({"email": "bob@example.org", "email_verified": True}, allow)
    assert not oidc_allowed({"email": "bob@example.org", "email_verified": False}, allow)
    assert not oidc_allowed({"email": "bob@evil-example.org"}, allow)  # suffix, not domain
    assert not oidc_allowed({"email": "mallory@example.com"}, allow)
    assert not oidc_allowed({"name": "no email"}, allow)
    assert oidc_allowed({"name": "anyone"}, ())  # no list: the provider decides
    f = tmp_path / "secrets.toml"
    f.write_text(OIDC_TOML)
    s = launch("0.0.0.0", oidc_secrets=str(f), oidc_allow="@example.com")
    assert s.allow == ("@example.com",)
    assert app_config({k: v for k, v in app_env(s).items() if v}).allow == ("@example.com",)
    with pytest.raises(AuthConfigError, match="needs OIDC"):
        launch("0.0.0.0", token=TOKEN, oidc_allow="@example.com")


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("x = 1\n", "no \\[auth\\] section"),
        ('[auth]\nclient_id = "a"\n', "redirect_uri, cookie_secret"),
        (
            '[auth]\nredirect_uri = "u"\ncookie_secret = "c"\nclient_id = "a"\n',
            "client_secret, server_metadata_url",
        ),
        ('[auth]\nredirect_uri = "u"\ncookie_secret = "c"\n', "names no provider"),
        (
            '[auth]\nredirect_uri = "u"\ncookie_secret = "c"\n[auth.my_idp]\nclient_id = "a"\n',
            "cannot contain '_'",
        ),
        ("[auth\n", "not TOML"),
    ],
)
def test_bad_oidc_secrets_are_refused(tmp_path: Path, toml: str, message: str) -> None:
    f = tmp_path / "secrets.toml"
    f.write_text(toml)
    with pytest.raises(AuthConfigError, match=message):
        launch("0.0.0.0", oidc_secrets=str(f))


def test_app_config_round_trip() -> None:
    s = launch("0.0.0.0", token=TOKEN)
    env = {k: v for k, v in app_env(s).items() if v}
    assert app_config(env) == s
    # A bare `streamlit run` (and AppTest): required as soon as a token is configured.
    assert app_config({"MESHLENS_UI_TOKEN": TOKEN}).mode == "required"
    assert app_config({}).mode == "off"
    # Fail closed: a mode the launcher decided but cannot be honoured signs nobody in.
    broken = app_config({"MESHLENS_UI_SIGN_IN": "required"})
    assert broken.required and broken.problem
    assert app_config({"MESHLENS_UI_SIGN_IN": "bogus"}).problem
    assert app_config({"MESHLENS_UI_OIDC_SECRETS": "/nonexistent/secrets.toml"}).problem
    # A trusted header only counts with sign-in off (behind the proxy).
    hdr = {"MESHLENS_UI_TOKEN": TOKEN, "MESHLENS_UI_USER_HEADER": "X-Forwarded-Email"}
    assert app_config(hdr).user_header == ""


def test_sign_in_url() -> None:
    assert sign_in_url("127.0.0.1", 8501, "a/b+c") == "http://127.0.0.1:8501/?token=a%2Fb%2Bc"
    assert sign_in_url("::1", 9000, "t") == "http://[::1]:9000/?token=t"
    assert sign_in_url("0.0.0.0", 8501) == "http://localhost:8501/"


# -- meshlens ui -----------------------------------------------------------------------------


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MESHLENS_")}
    env["PYTHONPATH"] = str(REPO)
    env.update(extra)
    return env


def test_meshlens_ui_beyond_loopback_without_sign_in_exits_2(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "meshlens", "ui", "--host", "0.0.0.0", "--data-dir", str(tmp_path)],
        cwd=REPO,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2, out.stderr
    assert "refusing to serve the UI on 0.0.0.0" in out.stderr
    assert "MESHLENS_UI_TOKEN" in out.stderr and "--no-auth" in out.stderr
    assert "Uvicorn" not in out.stderr and "Streamlit" not in out.stdout  # no server started


def test_meshlens_ui_refuses_a_short_token(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "meshlens", "ui", "--host", "0.0.0.0", "--data-dir", str(tmp_path)],
        cwd=REPO,
        env=_env(MESHLENS_UI_TOKEN="hunter2"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2 and "at least 16" in out.stderr
    assert "hunter2" not in out.stderr


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data-dir", default="d")
    ui.configure(parser)
    return parser.parse_args(list(argv))


def test_streamlit_command_line_hides_the_token_and_the_developer_menu(tmp_path: Path) -> None:
    args = _args("--host", "0.0.0.0", "--ui-token", TOKEN)
    cmd = ui.command(args)
    assert TOKEN not in " ".join(cmd)
    opts = dict(zip(cmd[5::2], cmd[6::2], strict=True))
    assert opts["--client.toolbarMode"] in ("viewer", "minimal")
    assert opts["--client.showErrorDetails"] == "none"
    assert opts["--server.enableXsrfProtection"] == "true"
    assert opts["--server.address"] == "0.0.0.0"
    assert "--secrets.files" not in opts
    assert ui.sign_in(args).token == TOKEN
    f = tmp_path / "secrets.toml"
    f.write_text(OIDC_TOML)
    with_oidc = ui.command(_args("--host", "0.0.0.0", "--ui-oidc-secrets", str(f)))
    assert with_oidc[-2:] == ["--secrets.files", str(f.resolve())]
    assert "not-a-real-secret" not in " ".join(with_oidc)


# -- the app ---------------------------------------------------------------------------------


def _texts(at: AppTest) -> str:
    parts = [m.value for m in at.markdown] + [c.value for c in at.caption]
    parts += [t.value for t in at.title] + [str(e.value) for e in at.error]
    return "\n".join(str(p) for p in parts)


@pytest.fixture
def token_env(data_env: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("MESHLENS_UI_TOKEN", TOKEN)
    for name in ("MESHLENS_UI_SIGN_IN", "MESHLENS_UI_OIDC_SECRETS", "MESHLENS_UI_TOKEN_FILE"):
        monkeypatch.delenv(name, raising=False)
    return TOKEN


def _sign_in_form(at: AppTest) -> None:
    """Only the sign-in form: no page, no navigation, no sidebar controls."""
    assert [t.value for t in at.title] == [":material/lock: Sign in to meshlens"]
    assert [t.label for t in at.text_input] == ["Your name", "Token"]
    assert not at.get("plotly_chart") and not at.dataframe and not at.selectbox
    assert "Mesh" not in _texts(at)
    assert not at.sidebar.children or not any(at.sidebar.selectbox)


def _submit(at: AppTest, token: str, name: str = "") -> AppTest:
    at.text_input(key="signin_name").input(name)
    at.text_input(key="signin_token").input(token)
    return next(b for b in at.button if b.label == "Sign in").click().run()


def test_with_a_token_only_the_sign_in_form_shows(token_env: str) -> None:
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception, [e.message for e in at.exception]
    _sign_in_form(at)
    assert "meshlens_user" not in at.session_state


def test_the_wrong_token_shows_an_error_and_no_page(token_env: str) -> None:
    at = AppTest.from_file(APP, default_timeout=60).run()
    for wrong in ("nope", token_env[:-1], token_env.upper()):
        _submit(at, wrong, "mallory")
        assert not at.exception
        assert [e.value for e in at.error] == ["Wrong token."]
        _sign_in_form(at)
        assert "meshlens_user" not in at.session_state


def test_the_right_token_shows_the_mesh_page_and_sets_the_user(token_env: str) -> None:
    at = AppTest.from_file(APP, default_timeout=60).run()
    _submit(at, token_env, "alice")
    assert not at.exception, [e.message for e in at.exception]
    assert at.title[0].value.endswith("Mesh")
    assert "Token" not in [t.label for t in at.text_input]
    assert not at.error, [e.value for e in at.error]
    assert at.session_state["meshlens_user"] == "alice"
    assert any("Signed in as **alice**" in c.value for c in at.sidebar.caption)
    # The token is not kept in the session once used.
    assert "signin_token" not in at.session_state or not at.session_state["signin_token"]
    # Sign out: back to the form.
    next(b for b in at.sidebar.button if b.label == "Sign out").click().run()
    _sign_in_form(at)


def test_a_deep_link_survives_the_sign_in(token_env: str) -> None:
    at = AppTest.from_file(APP, default_timeout=60)
    at.switch_page("views/sql.py")
    at.run()
    _sign_in_form(at)
    _submit(at, token_env)
    assert not at.exception, [e.message for e in at.exception]
    assert at.title[0].value.endswith("SQL")


def test_a_nameless_token_user_is_token_user(token_env: str) -> None:
    at = AppTest.from_file(APP, default_timeout=60).run()
    _submit(at, token_env)
    assert at.session_state["meshlens_user"] == "token-user"


def test_the_token_in_the_url_signs_in_once_and_leaves_the_url(token_env: str) -> None:
    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params["token"] = token_env
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    assert at.title[0].value.endswith("Mesh")
    assert at.session_state["meshlens_user"] == "token-user"
    assert "token" not in at.query_params


def test_a_wrong_token_in_the_url_shows_the_form(token_env: str) -> None:
    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params["token"] = "stale-token-from-yesterday"
    at.run()
    assert "token" not in at.query_params
    _sign_in_form(at)
    assert any("token is wrong" in str(e.value) for e in at.error)


def test_on_loopback_sign_in_is_optional(data_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What `meshlens ui` on 127.0.0.1 hands the app: pages open, sign-in in the sidebar."""
    monkeypatch.setenv("MESHLENS_UI_SIGN_IN", "optional")
    monkeypatch.setenv("MESHLENS_UI_TOKEN", TOKEN)
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception, [e.message for e in at.exception]
    assert at.title[0].value.endswith("Mesh")
    assert "meshlens_user" not in at.session_state
    assert [t.label for t in at.sidebar.text_input] == ["Your name", "Token"]
    at.sidebar.text_input(key="signin_token").input(TOKEN)
    next(b for b in at.sidebar.button if b.label == "Sign in").click().run()
    assert at.session_state["meshlens_user"] == "token-user"
    assert at.title[0].value.endswith("Mesh")


def test_without_sign_in_configured_the_app_is_open(
    data_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bare `streamlit run` (and --no-auth): no form, nobody signed in."""
    for name in ("MESHLENS_UI_TOKEN", "MESHLENS_UI_SIGN_IN", "MESHLENS_UI_OIDC_SECRETS"):
        monkeypatch.delenv(name, raising=False)
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert at.title[0].value.endswith("Mesh")
    assert not at.text_input or "Token" not in [t.label for t in at.text_input]
    assert "meshlens_user" not in at.session_state


def test_oidc_shows_a_provider_button(
    data_env: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    f = tmp_path / "secrets.toml"
    f.write_text(OIDC_TOML)
    monkeypatch.delenv("MESHLENS_UI_TOKEN", raising=False)
    monkeypatch.delenv("MESHLENS_UI_SIGN_IN", raising=False)
    monkeypatch.setenv("MESHLENS_UI_OIDC_SECRETS", str(f))
    monkeypatch.setattr(auth, "authlib_installed", lambda: True)
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception, [e.message for e in at.exception]
    assert [b.label for b in at.button] == ["Sign in with Google"]
    assert not at.text_input  # no token configured: no token form
    assert not at.selectbox and not at.dataframe


def test_oidc_without_authlib_says_so(
    data_env: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    f = tmp_path / "secrets.toml"
    f.write_text(OIDC_TOML)
    monkeypatch.delenv("MESHLENS_UI_TOKEN", raising=False)
    monkeypatch.setenv("MESHLENS_UI_OIDC_SECRETS", str(f))
    monkeypatch.setattr(auth, "authlib_installed", lambda: False)
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception, [e.message for e in at.exception]
    assert any("Authlib" in str(e.value) for e in at.error)
    assert not at.button and not at.selectbox


def _oidc_app(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, email: str) -> AppTest:
    f = tmp_path / "secrets.toml"
    f.write_text(OIDC_TOML)
    monkeypatch.delenv("MESHLENS_UI_TOKEN", raising=False)
    monkeypatch.setenv("MESHLENS_UI_SIGN_IN", "required")
    monkeypatch.setenv("MESHLENS_UI_OIDC_SECRETS", str(f))
    monkeypatch.setenv("MESHLENS_UI_OIDC_ALLOW", "@example.com")
    monkeypatch.setattr(auth, "authlib_installed", lambda: True)
    at = AppTest.from_file(APP, default_timeout=60)
    # What st.user holds after the provider signed this account in.
    at.user = {"is_logged_in": True, "email": email, "email_verified": True, "name": "X"}
    return at.run()


def test_an_admitted_oidc_account_sees_the_pages(
    data_env: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    at = _oidc_app(monkeypatch, tmp_path, "alice@example.com")
    assert not at.exception, [e.message for e in at.exception]
    assert at.title[0].value.endswith("Mesh")
    assert any("alice@example.com" in c.value.replace("\\", "") for c in at.sidebar.caption)
    assert [b.label for b in at.sidebar.button] == ["Sign out"]


def test_an_oidc_account_off_the_allow_list_is_refused(
    data_env: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    at = _oidc_app(monkeypatch, tmp_path, "mallory@gmail.com")
    assert not at.exception, [e.message for e in at.exception]
    assert at.title[0].value == ":material/lock: Sign in to meshlens"
    assert any("is not allowed" in str(e.value) for e in at.error)
    assert "Sign out" in [b.label for b in at.button]
    assert not at.selectbox and not at.dataframe


def test_a_broken_configuration_fails_closed(
    data_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MESHLENS_UI_TOKEN", raising=False)
    monkeypatch.setenv("MESHLENS_UI_SIGN_IN", "required")
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception
    assert any("Sign-in is not available" in str(e.value) for e in at.error)
    assert not at.get("plotly_chart") and not at.text_input


# -- deployment ------------------------------------------------------------------------------


def _ui_containers(docs: list[dict[str, object]]) -> list[tuple[str, dict[str, object]]]:
    found = []
    for doc in docs:
        spec = doc.get("spec")
        if not isinstance(spec, dict) or "template" not in spec:
            continue
        for c in spec["template"]["spec"]["containers"]:
            if list(c.get("args", []))[:1] == ["ui"]:
                found.append((f"{doc['kind']}/{doc['metadata']['name']}", c))  # type: ignore[index]
    return found


def test_every_k8s_overlay_serving_the_ui_configures_sign_in() -> None:
    from tests.deploy.test_manifests import DEPLOY, _build

    checked = []
    for kdir in sorted(p.parent for p in (DEPLOY / "k8s").rglob("kustomization.yaml")):
        for name, c in _ui_containers(_build(kdir)):  # type: ignore[arg-type]
            args = [str(a) for a in c["args"]]  # type: ignore[union-attr]
            host = args[args.index("--host") + 1] if "--host" in args else "0.0.0.0"  # image
            env = {e["name"]: e for e in c.get("env", [])}  # type: ignore[attr-defined, union-attr]
            where = f"{kdir.relative_to(DEPLOY)} {name}"
            assert "--no-auth" not in args, where
            if is_loopback(host):
                continue
            token = env.get("MESHLENS_UI_TOKEN", {}).get("valueFrom", {}).get("secretKeyRef")
            assert token or "MESHLENS_UI_OIDC_SECRETS" in env, f"{where}: no sign-in"
            if token:  # from a Secret, never a literal; required, so a missing Secret is loud
                assert token["name"] == "meshlens-ui" and not token.get("optional"), where
            checked.append(where)
    assert {c.split()[0] for c in checked} >= {
        "k8s/base",
        "k8s/overlays/dev",
        "k8s/overlays/production",
        "k8s/overlays/scale-out",
    }, checked


def test_only_a_generated_token_is_printed(capsys: pytest.CaptureFixture[str]) -> None:
    args = _args("--port", "8599")
    made = ui.sign_in(args)
    ui._announce(args, made)
    err = capsys.readouterr().err
    assert f"sign in at http://127.0.0.1:8599/?token={made.token}" in err
    mine = _args("--port", "8599", "--ui-token", TOKEN)
    ui._announce(mine, ui.sign_in(mine))
    err = capsys.readouterr().err
    assert TOKEN not in err and "sign-in optional" in err
    remote = _args("--host", "0.0.0.0", "--ui-token", TOKEN)
    ui._announce(remote, ui.sign_in(remote))
    err = capsys.readouterr().err
    assert TOKEN not in err and "sign-in required" in err


def test_no_auth_warns_loudly(caplog: pytest.LogCaptureFixture) -> None:
    args = _args("--host", "0.0.0.0", "--no-auth")
    with caplog.at_level("WARNING"):
        ui._announce(args, ui.sign_in(args))
    assert "SIGN-IN IS OFF (--no-auth)" in caplog.text
