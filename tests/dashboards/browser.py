"""The app in a real browser: Playwright driving the machine's Chromium (/usr/bin/chromium; never
`playwright install`, the Python package bundles only its driver).

One `Browser` per test session (launching Chromium costs about a second); every `open_app` gets a
fresh browser context, so each page test is its own Streamlit session (no cookies or widget
state shared between tests).

Streamlit renders after websocket round trips, so instead of sleeping we watch what its frontend
writes into the DOM: `[data-testid="stApp"]` carries `data-test-script-state` (initial ->
running -> notRunning in Streamlit 1.67). An init script counts the runs that start, so
`wait_rerun` can tell "the rerun my click caused has finished" from "nothing has started yet".
"""

from __future__ import annotations

import shutil
from pathlib import Path
from re import Pattern
from types import TracebackType
from urllib.parse import urlencode, urljoin

from playwright.sync_api import Browser as PwBrowser
from playwright.sync_api import Locator, Page, Playwright, ViewportSize, sync_playwright
from playwright.sync_api import TimeoutError as PlaywrightTimeout

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# What this machine needs: no setuid sandbox in containers, no GPU, and nothing that phones home
# (a blocked network would stall those requests).
FLAGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
VIEWPORT: ViewportSize = {"width": 1400, "height": 900}
FIRST_RUN_S = 90.0  # the first page of a fresh server on a loaded 2-core CI machine
TIMEOUT_S = 30.0  # clicks, reruns, charts

APP = '[data-testid="stApp"]'
IDLE = f'{APP}[data-test-script-state="notRunning"]'
# Idle and drawn: heavy elements (charts, tables) load their code lazily and show a skeleton
# until then, after the run itself has finished.
_SETTLED = f"""
() => !!document.querySelector('{IDLE}')
  && !document.querySelector('[data-testid="stSkeleton"]')
"""
EXCEPTION = '[data-testid="stException"]'

# Counts script runs as the frontend reports them (see the module docstring). Runs in every
# document of the context before Streamlit's own code.
_RUN_COUNTER = """
(() => {
  window.__mlStarted = 0;
  window.__mlMark = 0;
  let last = null;
  const look = () => {
    const app = document.querySelector('[data-testid="stApp"]');
    const state = app ? app.getAttribute('data-test-script-state') : null;
    if (state === 'running' && last !== 'running') window.__mlStarted += 1;
    last = state;
  };
  new MutationObserver(look).observe(document, {
    subtree: true, childList: true, attributes: true,
    attributeFilter: ['data-test-script-state'],
  });
})();
"""

# Every chart on the page has drawn something: Vega-Lite (altair) a canvas or svg, Plotly its
# main svg, Graphviz its svg. Screenshots taken earlier show empty frames.
_CHARTS_DRAWN = """
() => {
  const all = (sel) => Array.from(document.querySelectorAll(sel));
  const vega = all('[data-testid="stVegaLiteChart"]').every(e => e.querySelector('canvas, svg'));
  const plotly = all('[data-testid="stPlotlyChart"]').every(e => e.querySelector('.main-svg'));
  const dot = all('[data-testid="stGraphVizChart"]').every(e => e.querySelector('svg'));
  return vega && plotly && dot;
}
"""


_CONTENT_HEIGHT = """
() => Math.max(...['stMain', 'stSidebarContent'].map(id => {
  const e = document.querySelector(`[data-testid="${id}"]`);
  return e ? Math.ceil(e.scrollHeight) : 0;
}))
"""


class Browser:
    """Headless Chromium through Playwright; `token` is added to every URL the app is opened at
    (the app's sign-in reads it; a server without sign-in ignores it)."""

    def __init__(self, token: str | None = None, executable: str = CHROMIUM) -> None:
        self.token = token
        self._pw: Playwright = sync_playwright().start()
        try:
            self._browser: PwBrowser = self._pw.chromium.launch(
                executable_path=executable, args=list(FLAGS), headless=True
            )
        except BaseException:
            self._pw.stop()
            raise

    def open_app(self, url: str, path: str = "", timeout: float = FIRST_RUN_S) -> Page:
        """A new page at `url`/`path` (e.g. "sql"), returned once the first script run has
        finished."""
        context = self._browser.new_context(viewport=VIEWPORT)
        context.set_default_timeout(TIMEOUT_S * 1000)
        context.add_init_script(_RUN_COUNTER)
        page = context.new_page()
        target = urljoin(url.rstrip("/") + "/", path.lstrip("/"))
        if self.token:
            target += "?" + urlencode({"token": self.token})
        page.goto(target)
        # The first run: it has started (state leaves "initial") and finished.
        page.wait_for_function("() => window.__mlStarted > 0", timeout=timeout * 1000)
        settle(page, timeout)
        return page

    def close(self) -> None:
        try:
            for context in self._browser.contexts:
                context.close()
            self._browser.close()
        finally:
            self._pw.stop()

    def __enter__(self) -> Browser:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def settle(page: Page, timeout: float = TIMEOUT_S) -> None:
    """Wait until no script runs and no element is still loading its code; runs started so
    far count as seen by `wait_rerun`."""
    page.wait_for_function(_SETTLED, timeout=timeout * 1000)
    page.evaluate("() => { window.__mlMark = window.__mlStarted; }")


def wait_rerun(page: Page, timeout: float = TIMEOUT_S, start_within: float = 5.0) -> None:
    """After an interaction: wait for the script run it caused to finish. When no run starts
    within `start_within` seconds (an interaction that does not rerun), return."""
    try:
        page.wait_for_function(
            "() => window.__mlStarted > window.__mlMark", timeout=start_within * 1000
        )
    except PlaywrightTimeout:
        pass
    settle(page, timeout)


def click_and_wait(target: Locator, timeout: float = TIMEOUT_S) -> None:
    target.click()
    wait_rerun(target.page, timeout)


def navigate(page: Page, title: str, timeout: float = TIMEOUT_S) -> None:
    """Switch page through the sidebar link whose text contains `title` (robust to icons)."""
    click_and_wait(page.get_by_test_id("stSidebar").get_by_role("link", name=title), timeout)


def wait_charts(page: Page, timeout: float = TIMEOUT_S) -> None:
    page.wait_for_function(_CHARTS_DRAWN, timeout=timeout * 1000)


def exceptions(page: Page) -> list[str]:
    """Texts of the exception boxes Streamlit shows (empty when the page ran cleanly)."""
    return page.locator(EXCEPTION).all_inner_texts()


def page_text(page: Page) -> str:
    return page.locator(APP).inner_text()


def heading(page: Page) -> str:
    """The page's title (h1) text; icons are part of it (an emoji or a Material icon name)."""
    main = page.get_by_test_id("stMain")
    return " ".join(main.get_by_role("heading", level=1).all_inner_texts())


def table(page: Page, index: int = 0) -> tuple[list[str], list[list[str]]]:
    """Column names and rows of the index-th st.dataframe, read from the accessible grid the
    data editor keeps next to its canvas (only the rows it has rendered: the visible ones)."""
    grid = page.get_by_test_id("stDataFrame").nth(index).locator('table[role="grid"]')
    grid.wait_for(state="attached")
    columns = grid.locator("th").all_text_contents()
    rows = [row.locator("td").all_text_contents() for row in grid.locator("tbody tr").all()]
    return columns, rows


def screenshot(page: Page, path: Path, full_height: bool = False, max_height: int = 4000) -> Path:
    """A PNG once the app is idle and its charts are drawn: the viewport, or with `full_height`
    the whole page (Streamlit scrolls inside its main element, not the document, so the window
    is made as tall as that content, up to `max_height`, for the picture)."""
    settle(page)
    wait_charts(page)
    size = page.viewport_size or VIEWPORT
    if full_height:
        tall = page.evaluate(_CONTENT_HEIGHT)
        if tall > size["height"]:
            page.set_viewport_size({"width": size["width"], "height": min(tall, max_height)})
            settle(page)
            wait_charts(page)
    # The pointer off the sidebar and charts: no hover tooltips or buttons in the picture.
    page.mouse.move(size["width"] - 5, 150)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        page.screenshot(path=str(path), animations="disabled", caret="hide")
    finally:
        page.set_viewport_size(size)
    return path


# -- helpers of the interaction tests (tests/dashboards/test_browser_interactions.py) -------
def open_url(
    browser: Browser, url: str, timeout: float = FIRST_RUN_S, signed_in: bool = True
) -> Page:
    """Like `Browser.open_app`, for a full URL that may carry its own query (`?last=1h`); the
    browser's token is added as one more parameter unless `signed_in` is False (an anonymous
    visitor)."""
    context = browser._browser.new_context(viewport=VIEWPORT)
    context.set_default_timeout(TIMEOUT_S * 1000)
    context.add_init_script(_RUN_COUNTER)
    page = context.new_page()
    if browser.token and signed_in:
        url += ("&" if "?" in url else "?") + urlencode({"token": browser.token})
    page.goto(url)
    page.wait_for_function("() => window.__mlStarted > 0", timeout=timeout * 1000)
    settle(page, timeout)
    return page


# Viewport position of every point of the first Plotly chart that carries customdata
# ([kind, id] on the Mesh graph), from Plotly's own axes (data -> pixel), plus its text.
_PLOTLY_POINTS = """
() => {
  const gd = document.querySelector('[data-testid="stPlotlyChart"] .js-plotly-plot');
  if (!gd || !gd._fullLayout || !gd._fullData) return [];
  const fl = gd._fullLayout, r = gd.getBoundingClientRect(), out = [];
  gd._fullData.forEach((t) => (t.customdata || []).forEach((cd, i) => {
    if (!Array.isArray(cd) || cd.length !== 2) return;
    out.push({
      kind: String(cd[0]), id: String(cd[1]),
      text: Array.isArray(t.text) ? String(t.text[i] ?? '') : '',
      x: r.left + fl._size.l + fl.xaxis.l2p(t.x[i]),
      y: r.top + fl._size.t + fl.yaxis.l2p(t.y[i]),
    });
  }));
  return out;
}
"""


def plotly_points(page: Page) -> list[dict[str, object]]:
    """[{kind, id, text, x, y}] of the first Plotly chart's points with customdata."""
    points: list[dict[str, object]] = page.evaluate(_PLOTLY_POINTS)
    return points


def click_plotly_point(page: Page, kind: str, ident: str, timeout: float = TIMEOUT_S) -> None:
    """A real mouse click on the point [kind, ident] of the first Plotly chart (scrolled into
    view first), then wait for the rerun it causes."""
    wait_charts(page)
    page.get_by_test_id("stPlotlyChart").first.scroll_into_view_if_needed()
    hits = [p for p in plotly_points(page) if p["kind"] == kind and p["id"] == ident]
    assert hits, f"no point {kind} {ident!r} in the chart"
    x, y = float(str(hits[0]["x"])), float(str(hits[0]["y"]))
    page.mouse.move(x, y)  # plotly picks the point under the pointer on hover
    page.mouse.click(x, y)
    wait_rerun(page, timeout)


def choose(
    scope: Page | Locator,
    label: str,
    option: str | Pattern[str],
    timeout: float = TIMEOUT_S,
    typed: str = "",
) -> None:
    """Pick `option` (its whole text, or a pattern) in the selectbox or multiselect labelled
    `label`, then wait for the rerun; `typed` filters a long (virtualised) list first. A
    multiselect's list stays open after a pick, and while it is open the rest of the page is
    hidden from the accessibility tree: Escape closes it."""
    page = scope if isinstance(scope, Page) else scope.page
    box = scope.get_by_role("combobox", name=label, exact=True)
    box.click()
    if typed:
        box.fill(typed)
    page.get_by_role("option", name=option, exact=True).click()
    wait_rerun(page, timeout)
    if box.get_attribute("aria-expanded") == "true":
        box.press("Escape")
        wait_rerun(page, timeout)
