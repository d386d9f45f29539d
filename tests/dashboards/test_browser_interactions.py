"""Every interaction of the pages, in a real browser: `meshlens ui` on the seeded store (and, for
the Canary actions, on a store of its own with a rollout still in progress), headless Chromium.

Clicks are real mouse clicks (the Mesh graph's nodes and edges at the pixel Plotly draws them),
and what is checked is what the user sees: headings, captions, tables, the URL, and for the
Canary actions the command file the gate will read.

    .venv/bin/pytest -q -p no:cacheprovider tests/dashboards/test_browser_interactions.py
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from playwright.sync_api import Locator, Page, expect

from meshlens.analytics.gate import state as gate_state
from meshlens.dashboards.auth_rules import SignIn, app_env
from meshlens.dashboards.commands import ui as ui_command
from meshlens.localmesh.ports import free_port
from tests.dashboards.browser import (
    Browser,
    choose,
    click_and_wait,
    click_plotly_point,
    exceptions,
    heading,
    open_url,
    page_text,
    plotly_points,
    wait_charts,
    wait_rerun,
)
from tests.dashboards.browser_fixtures import UI_TOKEN, clean_env, serve_ui
from tests.dashboards.canary_store import seed_canary
from tests.dashboards.conftest import TRACE_IDS

REPO = Path(__file__).resolve().parents[2]
NODE = "wl:bookinfo/reviews-v2"  # a workload of the seeded store with traffic in and out
EDGE = "wl:bookinfo/reviews-v2>wl:bookinfo/ratings-v1"
ROLLOUT = "reviews-fqdn"  # progressing in canary_store: every action is offered

pytestmark = [pytest.mark.integration, pytest.mark.slow]


# -- helpers -------------------------------------------------------------------------------
def _query(page: Page) -> dict[str, list[str]]:
    return parse_qs(urlsplit(page.url).query)


def _main(page: Page) -> Locator:
    return page.get_by_test_id("stMain")


def _sidebar(page: Page) -> Locator:
    return page.get_by_test_id("stSidebar")


def _subheadings(page: Page) -> list[str]:
    return _main(page).get_by_role("heading", level=3).all_inner_texts()


def _clean(page: Page) -> None:
    assert exceptions(page) == []
    text = page_text(page)
    for bad in ("Traceback", "/tmp/", "/work/"):
        assert bad not in text, (bad, text[:3000])


def _mesh_caption(page: Page) -> str:
    """The graph's caption: 'start → end UTC · n nodes · m edges · ...'."""
    cap = _main(page).get_by_test_id("stCaptionContainer").filter(has_text="nodes ·")
    return cap.first.inner_text()


def _grid(frame: Locator) -> tuple[list[str], list[list[str]]]:
    """Columns and rendered rows of one st.dataframe (like browser.table, for a locator)."""
    grid = frame.locator('table[role="grid"]')
    grid.wait_for(state="attached")
    rows = [r.locator("td").all_text_contents() for r in grid.locator("tbody tr").all()]
    return grid.locator("th").all_text_contents(), rows


def _close(page: Page) -> None:
    page.context.close()


# -- 1. Mesh: click a node, an edge; the URL reopens the selection; follow a link ------------
def test_mesh_click_node_and_edge_select_them_and_the_url_reopens_it(
    browser: Browser,
    ui_url: str,
) -> None:
    page = browser.open_app(ui_url)
    try:
        assert "Select a node or an edge" in page_text(page)
        click_plotly_point(page, "node", NODE)
        assert "reviews-v2" in _subheadings(page), _subheadings(page)
        assert _query(page).get("node") == [NODE], page.url
        text = page_text(page)
        assert "Inbound ·" in text and "Outbound ·" in text, text[-2000:]
        # Both directions have traffic: one table each in the details' Traffic tab.
        tab = _main(page).get_by_role("tabpanel").filter(has_text="Inbound ·")
        assert tab.get_by_test_id("stDataFrame").count() == 2
        _columns, rows = _grid(tab.get_by_test_id("stDataFrame").first)
        assert rows, "the inbound table is empty"
        _clean(page)

        click_plotly_point(page, "edge", EDGE)
        assert "reviews-v2 → ratings-v1" in _subheadings(page), _subheadings(page)
        assert _query(page).get("edge") == [EDGE] and "node" not in _query(page), page.url
        assert "By version" in page_text(page)
        _clean(page)
        shared = page.url
    finally:
        _close(page)

    # The copied link in a new browser context: the same edge is selected.
    again = open_url(browser, shared)
    try:
        assert "reviews-v2 → ratings-v1" in _subheadings(again), _subheadings(again)
        sel = again.get_by_role("combobox", name="Selected", exact=True)
        assert sel.input_value() == "edge: reviews-v2 → ratings-v1"
        # The details' "Service" link (the edge's destination) opens the Service page.
        click_and_wait(_main(again).get_by_role("link", name="Service"))
        assert "Service" in heading(again), heading(again)
        box = again.get_by_role("combobox", name="Service (canonical name)", exact=True)
        assert box.input_value() == "ratings"
        assert _query(again).get("service") == ["ratings"], again.url
        _clean(again)
    finally:
        _close(again)


def test_mesh_node_link_opens_its_service(
    browser: Browser,
    ui_url: str,
) -> None:
    page = open_url(browser, f"{ui_url}/?node={NODE}")
    try:
        assert "reviews-v2" in _subheadings(page), _subheadings(page)
        click_and_wait(_main(page).get_by_role("link", name="Service"))
        assert "Service" in heading(page)
        box = page.get_by_role("combobox", name="Service (canonical name)", exact=True)
        assert box.input_value() == "reviews"
        assert _query(page).get("service") == ["reviews"], page.url
        _clean(page)
    finally:
        _close(page)


# -- 2. Mesh: edge labels, level, hidden nodes ---------------------------------------------
def test_mesh_edge_labels_level_and_hidden_nodes_change_the_figure_and_url(
    browser: Browser,
    ui_url: str,
) -> None:
    page = browser.open_app(ui_url)
    try:
        wait_charts(page)
        edges = [p for p in plotly_points(page) if p["kind"] == "edge"]
        assert edges and all(p["text"] == "" for p in edges)  # no labels by default

        choose(page, "Edge labels", "rps")
        wait_charts(page)
        assert _query(page).get("labels") == ["rps"], page.url
        edges = [p for p in plotly_points(page) if p["kind"] == "edge"]
        # Every HTTP edge gets its rate (mongodb's is TCP only: no request rate to show).
        labelled = {str(p["id"]): str(p["text"]) for p in edges if "mongodb" not in str(p["id"])}
        assert labelled and all(t.endswith(" rps") for t in labelled.values()), labelled
        assert labelled[EDGE][0].isdigit(), labelled

        nodes = {p["id"] for p in plotly_points(page) if p["kind"] == "node"}
        assert "wl:bookinfo/reviews-v1" in nodes, nodes
        choose(page, "Hide", "reviews-v1")
        # The multiselect may send its value when its list closes: wait for the URL.
        page.wait_for_url(re.compile(r"[?&]hide="))
        wait_rerun(page)
        wait_charts(page)
        nodes = {p["id"] for p in plotly_points(page) if p["kind"] == "node"}
        assert "wl:bookinfo/reviews-v1" not in nodes and NODE in nodes, nodes
        assert _query(page).get("hide") == ["wl:bookinfo/reviews-v1"], page.url
        drawn = " ".join(str(p["text"]) for p in plotly_points(page))
        assert "reviews-v1" not in drawn and "reviews-v2" in drawn

        choose(page, "Graph level", "service")
        wait_charts(page)
        assert _query(page).get("level") == ["service"], page.url
        kinds = {str(p["id"]).split(":")[0] for p in plotly_points(page) if p["kind"] == "node"}
        assert "wl" not in kinds and "svc" in kinds, kinds
        _clean(page)
    finally:
        _close(page)


# -- 3. Time range ---------------------------------------------------------------------------
def test_time_range_absolute_goes_into_the_url_and_last_1h_opens_selected(
    browser: Browser,
    ui_url: str,
) -> None:
    page = browser.open_app(ui_url)
    try:
        assert _query(page).get("last") == ["15m"], page.url
        before = _mesh_caption(page)
        click_and_wait(_sidebar(page).get_by_text("Absolute", exact=True))
        q = _query(page)
        assert "last" not in q and "from" in q and "to" in q, page.url
        start = datetime.fromisoformat(q["from"][0].replace("Z", "+00:00"))
        end = datetime.fromisoformat(q["to"][0].replace("Z", "+00:00"))
        assert (end - start).total_seconds() == 900, (start, end)
        assert _sidebar(page).get_by_text("From (UTC)").is_visible()
        after = _mesh_caption(page)
        # The graph now covers exactly the absolute range (whole minutes of the pickers).
        # (The end shows its date when the range crosses midnight UTC.)
        end_fmt = "%H:%M:%S" if start.date() == end.date() else "%Y-%m-%d %H:%M:%S"
        covers = f"{start:%Y-%m-%d %H:%M:%S} → {end.strftime(end_fmt)} UTC"
        assert after.startswith(covers), (after, q)
        # The caption changed, unless the relative range already ended on a whole minute ("now"
        # is rounded to 10 s, so one time in six the two ranges are the same).
        assert after != before or before.startswith(covers), (before, after)
        _clean(page)
    finally:
        _close(page)

    page = open_url(browser, f"{ui_url}/?last=1h")
    try:
        box = _sidebar(page).get_by_role("combobox", name="Range", exact=True)
        assert box.input_value() == "last 1h"
        cap = _mesh_caption(page)
        lo, _, rest = cap.partition(" → ")
        t0 = datetime.strptime(lo, "%Y-%m-%d %H:%M:%S")
        hi = rest.partition(" UTC")[0]  # with its date when the hour crosses midnight UTC
        t1 = datetime.strptime(hi if len(hi) > 8 else f"{lo[:10]} {hi}", "%Y-%m-%d %H:%M:%S")
        assert (t1 - t0).total_seconds() % 86400 == 3600, cap
        assert _query(page).get("last") == ["1h"], page.url
        _clean(page)
    finally:
        _close(page)


# -- 4. Canary actions -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def canary_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store of this module's own whose rollout is in progress: actions are offered, and the
    commands queued here touch no other test's store."""
    return seed_canary(tmp_path_factory.mktemp("canary_store"))


@pytest.fixture(scope="module")
def canary_ui(
    canary_store: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Path]]:
    """`meshlens ui` on loopback (sign-in optional) with UI_TOKEN, on the canary store."""
    env = {**clean_env(), "MESHLENS_UI_TOKEN": UI_TOKEN}
    port = free_port()
    argv = [sys.executable, "-m", "meshlens", "ui", "--port", str(port)]
    argv += ["--data-dir", str(canary_store)]
    log = tmp_path_factory.mktemp("canary_ui") / "ui.log"
    with serve_ui(argv, env, log, port) as url:
        yield url, canary_store


@pytest.fixture(scope="module")
def canary_ui_required(
    canary_store: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """The app as `meshlens ui` runs it beyond loopback (sign-in required, UI_TOKEN), served on
    loopback: the launcher's Streamlit command line and app environment, started directly."""
    port = free_port()
    args = argparse.Namespace(port=port, host="127.0.0.1", ui_oidc_secrets="")
    env = {**clean_env(), "MESHLENS_DATA_DIR": str(canary_store)}
    env.update(app_env(SignIn("required", UI_TOKEN)))
    log = tmp_path_factory.mktemp("canary_ui_required") / "ui.log"
    with serve_ui(ui_command.command(args), env, log, port) as url:
        yield url


def test_canary_abort_asks_for_a_reason_and_queues_the_command(
    browser: Browser,
    canary_ui: tuple[str, Path],
) -> None:
    url, store = canary_ui
    page = open_url(browser, f"{url}/canary?rollout={ROLLOUT}")
    try:
        assert "signed in as" in page_text(page)
        assert gate_state.pending_commands(store, ROLLOUT) == []
        click_and_wait(_main(page).get_by_role("button", name="Abort"))
        assert f"Abort rollout {ROLLOUT}?" in page_text(page)
        assert gate_state.pending_commands(store, ROLLOUT) == []  # nothing before Confirm
        reason = _main(page).get_by_role("textbox", name="Reason (recorded with the command)")
        reason.fill("latency budget burning")
        reason.press("Enter")
        wait_rerun(page)
        click_and_wait(_main(page).get_by_role("button", name="Confirm abort"))

        queued = gate_state.pending_commands(store, ROLLOUT)
        assert len(queued) == 1, queued
        path, body = queued[0]
        assert body["command"] == "abort", body
        assert body.get("reason") == "latency budget burning", body
        assert body.get("by"), body
        text = page_text(page)
        assert "abort queued by" in text, text[-3000:]
        assert "Queued commands" in text
        cols, rows = _grid(_main(page).get_by_test_id("stDataFrame").first)
        assert "command" in cols and any("abort" in r for r in rows), (cols, rows)
        _clean(page)
    finally:
        _close(page)
        for path, _body in gate_state.pending_commands(store, ROLLOUT):
            gate_state.consume(path)  # the other tests of this store expect no queued command


def test_canary_actions_are_disabled_without_sign_in(
    browser: Browser,
    canary_ui: tuple[str, Path],
) -> None:
    url, store = canary_ui
    page = open_url(browser, f"{url}/canary?rollout={ROLLOUT}", signed_in=False)
    try:
        text = page_text(page)
        assert "sign in to act" in text, text[:3000]
        assert "signed in as" not in text
        for name in ("Pause", "Promote", "Abort"):
            expect(_main(page).get_by_role("button", name=name)).to_be_disabled()
        # The sidebar offers the sign-in instead.
        assert _sidebar(page).get_by_text("Sign in").count() >= 1
        assert gate_state.pending_commands(store, ROLLOUT) == []
        _clean(page)
    finally:
        _close(page)


# -- 5. Requests & traces --------------------------------------------------------------------
def _span_table(page: Page) -> tuple[list[str], list[list[str]]]:
    frames = _main(page).get_by_test_id("stDataFrame")
    for i in range(frames.count()):
        if not frames.nth(i).is_visible():
            continue
        cols, rows = _grid(frames.nth(i))
        if "span" in cols and "depth" in cols:
            return cols, rows
    raise AssertionError("no span table on the page")


def _trace_shown(page: Page) -> str:
    subs = [s for s in _subheadings(page) if s.startswith("timeline")]
    assert subs, _subheadings(page)
    return subs[0].split("Trace", 1)[1].strip()


def test_traces_search_by_trace_id_shows_a_labelled_waterfall(
    browser: Browser,
    ui_url: str,
) -> None:
    page = browser.open_app(ui_url, "traces")
    try:
        tid = TRACE_IDS[3]  # the trace with an error span (ratings)
        box = _main(page).get_by_role("textbox", name="Request id or trace id")
        box.fill(tid)
        box.press("Enter")
        wait_rerun(page)
        wait_charts(page)
        assert _trace_shown(page) == tid
        assert _query(page).get("trace") == [tid], page.url
        text = page_text(page)
        assert "5 spans · 3 services" in text, text[:3000]
        assert "1 error spans" in text
        assert _main(page).get_by_test_id("stVegaLiteChart").count() >= 1  # the waterfall
        cols, rows = _span_table(page)
        labels = [r[cols.index("span")] for r in rows]
        assert len(labels) == 5 and all(labels), labels
        for service in ("productpage", "reviews", "ratings"):
            assert any(service in label for label in labels), labels
        _clean(page)
    finally:
        _close(page)


def _click_row(page: Page, frame: Locator, row: int) -> None:
    """Click the `row`-th data row (0-based) of a st.dataframe: its row-selection cell, at the
    grid's left edge (the data editor draws rows on a canvas; its accessible table gives the
    row height)."""
    frame.scroll_into_view_if_needed()
    box = frame.bounding_box()
    assert box is not None
    grid = frame.locator('table[role="grid"]')
    header = grid.locator("thead tr").first.bounding_box()
    first = grid.locator("tbody tr").first.bounding_box()
    row_h = first["height"] if first and first["height"] > 0 else 35.0
    head_h = header["height"] if header and header["height"] > 0 else 35.0
    page.mouse.click(box["x"] + 15, box["y"] + head_h + row_h * (row + 0.5))
    wait_rerun(page)


def test_traces_clicking_a_result_row_opens_that_trace(
    browser: Browser,
    ui_url: str,
) -> None:
    page = browser.open_app(ui_url, "traces")
    try:
        click_and_wait(_main(page).get_by_role("tab", name="Traces"))
        panel = _main(page).get_by_role("tabpanel").filter(has_text="Root spans")
        frame = panel.get_by_test_id("stDataFrame")
        grid = frame.locator('table[role="grid"]')
        grid.wait_for(state="attached")
        cols = grid.locator("th").all_text_contents()
        rows = [r.locator("td").all_text_contents() for r in grid.locator("tbody tr").all()]
        assert "trace_id" in cols and len(rows) >= 3, (cols, rows)
        first_shown = _trace_shown(page)
        wanted = rows[2][cols.index("trace_id")]
        assert wanted != first_shown
        _click_row(page, frame, 2)
        wait_charts(page)
        assert _trace_shown(page) == wanted, (_trace_shown(page), wanted)
        assert _query(page).get("trace") == [wanted], page.url
        _clean(page)
    finally:
        _close(page)


# -- 6. SQL ----------------------------------------------------------------------------------
def _query_box(page: Page) -> Locator:
    return _main(page).get_by_role("textbox", name="Query")


def _run_sql(page: Page, sql: str) -> None:
    box = _query_box(page)
    box.fill(sql)
    box.press("Control+Enter")  # commits the text area's value
    wait_rerun(page)
    click_and_wait(_main(page).get_by_role("button", name="Run", exact=True))


def test_sql_schema_browser_puts_a_starter_query_in_the_box(
    browser: Browser,
    ui_url: str,
) -> None:
    page = browser.open_app(ui_url, "sql")
    try:
        pick = re.compile(r"^spans \(\d+ columns\)$")
        choose(_sidebar(page), "Table or view", pick, typed="spans")
        # The sidebar lists the columns of spans (the grid redraws just after the rerun).
        grid = _sidebar(page).get_by_test_id("stDataFrame").first.locator('table[role="grid"]')
        expect(grid.locator("td").filter(has_text=re.compile("^span_id$"))).to_have_count(1)
        assert grid.locator("td").filter(has_text=re.compile("^source_workload$")).count() == 0
        click_and_wait(_sidebar(page).get_by_role("button", name="Query spans"))
        assert _query_box(page).input_value() == "SELECT * FROM spans LIMIT 100"
        _clean(page)
    finally:
        _close(page)


def test_sql_group_by_2_charts_and_a_syntax_error_is_a_clean_message(
    browser: Browser,
    ui_url: str,
) -> None:
    page = browser.open_app(ui_url, "sql")
    try:
        _run_sql(
            page,
            "SELECT count(*) AS n, destination_workload FROM requests GROUP BY 2 ORDER BY 1 DESC",
        )
        wait_charts(page)
        _clean(page)
        cols, rows = _grid(_main(page).get_by_test_id("stDataFrame").last)
        assert cols[:2] == ["n", "destination_workload"] and rows, (cols, rows)
        chart = _main(page).get_by_test_id("stExpander").filter(has_text="Quick chart")
        assert chart.get_by_test_id("stVegaLiteChart").count() == 1
        assert chart.get_by_role("combobox", name="x", exact=True).input_value() == (
            "destination_workload"
        )

        _run_sql(page, "SELEC count(*) FROM requests")
        errors = _main(page).get_by_test_id("stAlert").all_inner_texts()
        assert errors and "syntax error" in " ".join(errors).lower(), errors
        assert _main(page).get_by_test_id("stVegaLiteChart").count() == 0
        _clean(page)
    finally:
        _close(page)


# -- 7. Service ------------------------------------------------------------------------------
def test_service_from_the_url_and_changing_it_updates_the_url(
    browser: Browser,
    ui_url: str,
) -> None:
    page = open_url(browser, f"{ui_url}/service?service=reviews")
    try:
        box = page.get_by_role("combobox", name="Service (canonical name)", exact=True)
        assert box.input_value() == "reviews"
        assert "versions: v1, v2, v3" in page_text(page)
        choose(page, "Service (canonical name)", "ratings")
        assert box.input_value() == "ratings"
        assert _query(page).get("service") == ["ratings"], page.url
        text = page_text(page)
        assert "versions: v1 ·" in text, text[:3000]
        _clean(page)
    finally:
        _close(page)


def test_canary_where_sign_in_is_required_an_anonymous_visitor_gets_the_form_not_the_buttons(
    browser: Browser,
    canary_ui_required: str,
    canary_store: Path,
) -> None:
    page = open_url(browser, f"{canary_ui_required}/canary?rollout={ROLLOUT}", signed_in=False)
    try:
        assert "Sign in to meshlens" in heading(page), heading(page)
        assert _main(page).get_by_role("button", name="Abort").count() == 0
        assert "reviews" not in page_text(page)  # no page content before the sign-in
        assert _sidebar(page).get_by_role("link", name="Canary").count() == 0
        form = _main(page).get_by_test_id("stForm")
        form.get_by_role("textbox", name="Your name").fill("alice")
        form.get_by_role("textbox", name="Token").fill(UI_TOKEN)
        click_and_wait(form.get_by_role("button", name="Sign in"))
        # The deep link survives the sign-in: the Canary page, with its actions usable. (The
        # sign-in reruns the script once more: wait for the page rather than for one run.)
        title = _main(page).get_by_role("heading", level=1)
        expect(title).to_contain_text("Canary", timeout=30_000)
        wait_rerun(page)
        expect(_main(page).get_by_role("button", name="Abort")).to_be_enabled()
        assert "signed in as alice" in page_text(page)
        assert gate_state.pending_commands(canary_store, ROLLOUT) == []
        _clean(page)
    finally:
        _close(page)
