"""The Security and Routing pages (Istio config against traffic) through AppTest."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from tests.dashboards.test_app import APP, _frame


def _page(page: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    at.switch_page(page)
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    return at


def _findings(at: AppTest, key: str) -> list[str]:
    for el in at.dataframe:
        if el.key == key:
            return [str(m) for m in el.value["finding"]]
    return []


def test_security_page_mtls_tables_and_what_if(data_env: Path) -> None:
    at = _page("views/security.py")
    assert at.title[0].value.endswith("Security")
    ns = _frame(at, "namespace", "mtls_ratio")
    assert len(ns) >= 1
    ids = _frame(at, "principal", "workload")
    assert any(str(p).startswith("spiffe://") for p in ids["principal"])
    callers = _frame(at, "caller", "decision")
    assert set(callers["decision"]) <= {"allow", "deny"}
    strict = _findings(at, "mtls_findings")

    # Editing the config changes the verdicts: PERMISSIVE turns STRICT problems into warnings.
    text = at.text_area(key="security_yaml").value.replace("mode: STRICT", "mode: PERMISSIVE")
    at.text_area(key="security_yaml").set_value(text).run()
    assert not at.exception
    permissive = _findings(at, "mtls_findings")
    assert permissive != strict or not strict


def test_security_page_shows_config_errors(data_env: Path) -> None:
    at = _page("views/security.py")
    at.text_area(key="security_yaml").set_value(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n"
        "metadata: {name: p}\nspec: {action: CUSTOM}\n"
    ).run()
    assert not at.exception
    assert any("CUSTOM" in e.value for e in at.error)


def test_routing_page_compares_split(data_env: Path) -> None:
    at = _page("views/routing.py")
    rows = _frame(at, "configured", "observed")
    assert {"v2", "v3"} <= set(rows["version"])
    assert at.error or at.success  # a verdict line is always shown


@pytest.mark.parametrize("page", ["views/security.py", "views/routing.py"])
def test_istio_pages_on_an_empty_store(
    page: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MESHLENS_DATA_DIR", str(tmp_path))
    _page(page)


def test_security_page_focuses_on_the_service_the_mesh_page_links(data_env: Path) -> None:
    """The Mesh page links with ?service=NAME: the identity table keeps that service's rows."""
    at = AppTest.from_file(APP, default_timeout=60)
    at.switch_page("views/security.py")
    at.query_params["service"] = "reviews"
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    ids = _frame(at, "principal", "workload")
    assert len(ids) >= 1
    assert all(str(w).startswith("reviews") for w in ids["workload"]), ids["workload"].tolist()
    at.toggle(key="sec_focus").set_value(False).run()
    everyone = _frame(at, "principal", "workload")
    assert len(everyone) > len(ids)
