"""The app shell (dashboards/app.py, `meshlens ui`'s Streamlit options): Material icons and no
emoji, no developer menu, and a page that fails shows a short error, never a traceback or a
server path."""

from __future__ import annotations

import argparse
import ast
import re
from pathlib import Path

import pytest
import streamlit as st
from streamlit import config as st_config
from streamlit.string_util import validate_material_icon
from streamlit.testing.v1 import AppTest

from meshlens.dashboards import controls
from meshlens.dashboards.commands import ui

REPO = Path(__file__).resolve().parents[2]
DASHBOARDS = REPO / "dashboards"
APP = DASHBOARDS / "app.py"
# Emoji need a colour-emoji font on the viewer's machine (empty boxes without one).
EMOJI = re.compile("[\U0001f300-\U0001faff\u2600-\u27bf]")


def _calls(tree: ast.AST, name: str) -> list[ast.Call]:
    return [
        n
        for n in ast.walk(tree)
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr == name
    ]


def _keyword(call: ast.Call, name: str) -> object:
    for kw in call.keywords:
        if kw.arg == name:
            assert isinstance(kw.value, ast.Constant), ast.dump(kw.value)
            return kw.value.value
    return None


def test_every_page_and_the_app_have_a_material_icon() -> None:
    tree = ast.parse(APP.read_text())
    pages = _calls(tree, "Page")
    assert len(pages) >= 7
    icons = {}
    for call in pages:
        first = call.args[0]
        assert isinstance(first, ast.Constant)
        assert (DASHBOARDS / str(first.value)).is_file(), first.value
        icon = _keyword(call, "icon")
        assert isinstance(icon, str) and icon.startswith(":material/"), (first.value, icon)
        validate_material_icon(icon)  # raises on a name Streamlit does not know
        icons[first.value] = icon
    assert len(set(icons.values())) == len(icons), "two pages share an icon"
    (config,) = _calls(tree, "set_page_config")
    page_icon = _keyword(config, "page_icon")
    assert isinstance(page_icon, str) and page_icon.startswith(":material/")
    validate_material_icon(page_icon)


def test_no_emoji_in_any_dashboards_python_file() -> None:
    found = []
    for path in sorted(DASHBOARDS.rglob("*.py")):
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            for ch in EMOJI.findall(line):
                found.append(f"{path.relative_to(REPO)}:{lineno}: U+{ord(ch):04X} {ch}")
    assert not found, "emoji (use :material/...: icons):\n" + "\n".join(found)


def test_meshlens_ui_hides_developer_options_with_known_streamlit_options() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data-dir", default="d")
    ui.configure(parser)
    cmd = ui.command(parser.parse_args([]))
    assert cmd[1:5] == ["-m", "streamlit", "run", str(APP)]
    opts = dict(zip(cmd[5::2], cmd[6::2], strict=True))
    known = st_config.get_config_options()
    unknown = [flag for flag in opts if flag[2:] not in known]
    assert not unknown, f"not options of the installed Streamlit: {unknown}"
    assert opts["--client.toolbarMode"] in ("viewer", "minimal")  # no Deploy, rerun, cache menu
    assert opts["--client.showErrorDetails"] == "none"
    assert opts["--client.showErrorLinks"] == "false"
    assert opts["--server.enableXsrfProtection"] == "true"
    assert opts["--server.enableAgentApi"] == "false"


def _all_text(at: AppTest) -> str:
    parts: list[object] = [m.value for m in at.markdown] + [c.value for c in at.caption]
    parts += [t.value for t in at.title] + [e.value for e in at.error]
    parts += [e.message for e in at.exception] + [e.value for e in at.exception]
    return "\n".join(str(p) for p in parts)


def _boom(*_args: object, **_kwargs: object) -> None:
    raise RuntimeError("cannot open /work/main/secret/store.duckdb")


def _assert_short_error(at: AppTest) -> None:
    assert not at.exception, [e.message for e in at.exception]
    assert [e.value for e in at.error] == [
        "This page failed (RuntimeError). The details are in the server log."
    ]
    text = _all_text(at)
    assert "Traceback" not in text and "/work/" not in text and "secret" not in text


def test_a_failing_page_shows_a_short_error_without_traceback_or_path(
    data_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pages catch the data layer's errors themselves; this is the net for everything else
    (here: the first Streamlit call of every page fails)."""
    monkeypatch.delenv("MESHLENS_UI_TOKEN", raising=False)
    at = AppTest.from_file(str(APP), default_timeout=60)
    with monkeypatch.context() as m:
        m.setattr(st, "title", _boom)
        at.run()
    _assert_short_error(at)
    # The navigation is still there: the next page works.
    at.switch_page("views/sql.py").run()
    assert not at.error, [e.value for e in at.error]
    assert at.title[0].value.endswith("SQL")


def test_a_failing_sidebar_shows_a_short_error(
    data_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MESHLENS_UI_TOKEN", raising=False)
    monkeypatch.setattr(controls, "sidebar", _boom)
    _assert_short_error(AppTest.from_file(str(APP), default_timeout=60).run())


def test_st_stop_in_a_page_is_not_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The Mesh page stops early on an empty store (st.stop): the safety net lets it through."""
    monkeypatch.delenv("MESHLENS_UI_TOKEN", raising=False)
    monkeypatch.setenv("MESHLENS_DATA_DIR", str(tmp_path))
    at = AppTest.from_file(str(APP), default_timeout=60).run()
    assert not at.exception, [e.message for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    assert any("No traffic" in i.value for i in at.info)
