"""The app in a real browser: `meshlens ui` on the seeded store, headless Chromium (Playwright).

Every page opens through the sidebar without an exception box or a traceback and is
photographed; the interactions that exist work (navigation, an SQL query, the Canary rollout).
Selectors are roles and texts the user sees, not layout CSS, so a page redesign keeps them.

    MESHLENS_UPDATE_SCREENSHOTS=1 .venv/bin/pytest -q -p no:cacheprovider \
        tests/dashboards/test_browser.py        # rewrites dashboards/screenshots/<page>.png
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import Page

from tests.dashboards.browser import (
    Browser,
    click_and_wait,
    exceptions,
    heading,
    navigate,
    page_text,
    screenshot,
    table,
    wait_charts,
)

REPO = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO / "dashboards" / "screenshots"

# (sidebar title, screenshot name)
PAGES = [
    ("Mesh", "mesh"),
    ("Service", "service"),
    ("Canary", "canary"),
    ("SQL", "sql"),
    ("Requests & traces", "traces"),
    ("Security", "security"),
    ("Routing", "routing"),
]

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _shot_path(name: str, tmp_path: Path) -> Path:
    if os.environ.get("MESHLENS_UPDATE_SCREENSHOTS") == "1":
        return SCREENSHOTS / f"{name}.png"
    return tmp_path / f"{name}.png"


def _open(chromium: Browser, url: str, title: str) -> Page:
    """The app at its default page, then `title` through the sidebar (as a user gets there)."""
    page = chromium.open_app(url)
    if title != PAGES[0][0]:
        navigate(page, title)
    return page


def _assert_clean(page: Page, title: str) -> None:
    assert exceptions(page) == []
    text = page_text(page)
    assert "Traceback" not in text, text[:3000]
    assert title in heading(page), (heading(page), text[:2000])


def _not_blank(path: Path) -> None:
    img = Image.open(path).convert("RGB")
    assert img.size[0] == 1400 and img.size[1] >= 900, img.size
    pixels = np.asarray(img, dtype=np.int32)
    busy = int((pixels.sum(axis=2) < 600).sum())
    assert busy > 0.01 * pixels.shape[0] * pixels.shape[1], busy


@pytest.mark.parametrize(("title", "name"), PAGES, ids=[n for _, n in PAGES])
def test_page_opens_without_errors_and_is_photographed(
    browser: Browser,
    ui_url: str,
    title: str,
    name: str,
    tmp_path: Path,
) -> None:
    page = _open(browser, ui_url, title)
    try:
        _assert_clean(page, title)
        shot = screenshot(page, _shot_path(name, tmp_path), full_height=True)
        _assert_clean(page, title)  # nothing failed while the charts were drawing
    finally:
        page.context.close()
    _not_blank(shot)


def test_sidebar_lists_every_page_and_navigation_changes_page_and_url(
    browser: Browser,
    ui_url: str,
) -> None:
    page = browser.open_app(ui_url)
    try:
        links = page.get_by_test_id("stSidebar").get_by_role("link").all_inner_texts()
        for title, _ in PAGES:
            assert any(title in link for link in links), (title, links)
        start_url = page.url
        navigate(page, "Service")
        assert "Service" in heading(page)
        assert page.url != start_url
        navigate(page, "Mesh")
        assert "Mesh" in heading(page)
        assert exceptions(page) == []
    finally:
        page.context.close()


def test_mesh_page_draws_the_service_graph(
    browser: Browser,
    ui_url: str,
) -> None:
    page = browser.open_app(ui_url)
    try:
        charts = page.locator('[data-testid="stGraphVizChart"], [data-testid="stPlotlyChart"]')
        charts.first.wait_for(state="visible", timeout=30_000)
        wait_charts(page)
        drawn = " ".join(charts.all_text_contents()) + page_text(page)
        assert "productpage" in drawn and "reviews" in drawn
        assert exceptions(page) == []
    finally:
        page.context.close()


def test_sql_page_runs_the_example_query_and_shows_a_table(
    browser: Browser,
    ui_url: str,
) -> None:
    page = _open(browser, ui_url, "SQL")
    try:
        query = page.get_by_role("textbox").filter(has_text="requests")
        assert query.count() >= 1  # an example query is loaded
        before = page.get_by_test_id("stDataFrame").count()
        click_and_wait(page.get_by_role("button", name="Run", exact=True))
        assert exceptions(page) == []
        assert page.get_by_test_id("stDataFrame").count() > before
        columns, rows = table(page)
        assert columns and rows, (columns, rows)
        assert all(len(r) == len(columns) for r in rows)
        assert "Traceback" not in page_text(page)
    finally:
        page.context.close()


def test_canary_page_shows_the_rollout(
    browser: Browser,
    ui_url: str,
) -> None:
    page = _open(browser, ui_url, "Canary")
    try:
        text = page_text(page)
        assert "reviews-v3" in text, text[:2000]
        assert "failed" in text  # the live gate state of the seeded rollout
        assert exceptions(page) == []
    finally:
        page.context.close()
