"""The freshness line every page gets from the sidebar: how old the newest request is, or how to
send data when the store is empty (never a green "no problem" then)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pytest
from streamlit.testing.v1 import AppTest

from meshlens.dashboards import data
from tests.dashboards.conftest import seed
from tests.dashboards.test_app import APP


def _run(ddir: Path, page: str, monkeypatch: pytest.MonkeyPatch) -> AppTest:
    monkeypatch.setenv("MESHLENS_DATA_DIR", str(ddir))
    at = AppTest.from_file(APP, default_timeout=60)
    at.switch_page(page)
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    return at


def _sidebar_text(at: AppTest) -> str:
    parts = [m.value for m in at.sidebar.markdown] + [c.value for c in at.sidebar.caption]
    parts += [w.value for w in at.sidebar.warning] + [e.value for e in at.sidebar.error]
    return "\n".join(str(p) for p in parts)


def test_last_data_time_reads_the_newest_row_without_a_scan(tmp_path: Path) -> None:
    seed(tmp_path, datetime.now(UTC), n=2000)
    newest = data.last_data_time(str(tmp_path))
    row = (
        duckdb.connect()
        .execute(f"SELECT max(ts) FROM read_parquet('{tmp_path}/requests/*/*/*.parquet')")
        .fetchone()
    )
    assert row is not None
    expected = row[0]
    assert newest == expected.astimezone(UTC)
    assert data.last_data_time(str(tmp_path / "nothing-here")) is None


def test_fresh_store_shows_a_green_last_data_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed(tmp_path, datetime.now(UTC), n=2000)  # the newest row is about 30 s old
    at = _run(tmp_path, "views/service.py", monkeypatch)
    badges = [m.value for m in at.sidebar.markdown if "last data" in m.value]
    assert len(badges) == 1, _sidebar_text(at)
    assert badges[0].startswith(":green-badge[") and " s ago" in badges[0]
    assert "No data yet" not in _sidebar_text(at)


def test_old_store_shows_a_red_last_data_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed(tmp_path, datetime.now(UTC) - timedelta(hours=3), n=500)
    at = _run(tmp_path, "views/service.py", monkeypatch)
    badges = [m.value for m in at.sidebar.markdown if "last data" in m.value]
    assert badges and badges[0].startswith(":red-badge[") and "last data 3 h ago" in badges[0]
    # The default 15 min range has no data: the sidebar says where the data is.
    assert any("No data in this range" in w.value for w in at.sidebar.warning)


@pytest.mark.parametrize("page", ["views/service.py", "views/security.py", "views/routing.py"])
def test_empty_store_says_how_to_send_data_and_nothing_is_green(
    page: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = _run(tmp_path, page, monkeypatch)
    warnings = [w.value for w in at.sidebar.warning]
    assert any(
        "No data yet" in w and "meshlens serve" in w and "4317" in w and "meshlens import" in w
        for w in warnings
    ), warnings
    assert not at.success, [s.value for s in at.success]
    assert not any("green-badge" in m.value for m in at.markdown)


def test_a_config_no_request_met_is_not_a_green_verdict(data_env: Path) -> None:
    at = AppTest.from_file(APP, default_timeout=60)
    at.switch_page("views/routing.py")
    at.run()
    text = at.text_area(key="routing_yaml").value
    assert "namespace: bookinfo" in text  # the example is put where the traffic is
    at.text_area(key="routing_yaml").set_value(
        text.replace("namespace: bookinfo", "namespace: nowhere")
    ).run()
    assert not at.exception
    assert not at.success, [s.value for s in at.success]
    assert any("nothing was verified" in w.value for w in at.warning)


def test_a_wrong_istio_config_path_is_an_error_not_a_hint(
    data_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MESHLENS_ISTIO_CONFIG", str(data_env / "no-such.yaml"))
    at = AppTest.from_file(APP, default_timeout=60)
    at.switch_page("views/security.py")
    at.run()
    assert not at.exception
    errors = [e.value for e in at.error]
    assert any("MESHLENS_ISTIO_CONFIG` is set but it names no file" in e for e in errors), errors
    assert not any(str(data_env) in e for e in errors)  # no server path
