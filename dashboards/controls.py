"""Sidebar controls shared by every page: the time range (relative or absolute, kept in the URL
so a shared link reopens it), auto-refresh, how fresh the store is, and how the range sits
against the store's data. Pages read the values through the functions below."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Final

import streamlit as st

from meshlens.dashboards import data, time_range
from meshlens.dashboards.time_range import RangeError, TimeRange

_LOG = logging.getLogger("meshlens.ui")
FRESHNESS_TICK_S: Final = 10
REFRESH: Final = {"off": None, "10s": 10, "30s": 30, "1m": 60}
MODES: Final = ("Relative", "Absolute")
_APPLIED: Final = "_meshlens_range"  # the TimeRange every page uses (the last valid one)
_K_MODE, _K_LAST, _K_FROM, _K_TO = "range_mode", "range_last", "range_from", "range_to"
_SEEDED: Final = "_range_seeded"
_FRESH_BADGE: Final = {
    "fresh": ":green-badge[:material/sensors: {}]",
    "stale": ":orange-badge[:material/schedule: {} (stale)]",
    "dead": ":red-badge[:material/sensors_off: {} (stopped?)]",
}


def sidebar() -> None:
    """Drawn once by app.py before the page runs; values live in st.session_state."""
    st.sidebar.markdown("### meshlens")
    st.sidebar.caption(f"store: `{data.data_dir().name or data.data_dir()}`")
    rng = _range_controls()
    st.sidebar.selectbox(
        "Auto-refresh",
        list(REFRESH),
        index=2,
        key="refresh",
        disabled=not rng.relative,
        help="Only a relative range follows live traffic; an absolute range stays put.",
    )
    with st.sidebar:
        _live_freshness()
    _coverage(rng)


# -- the time range ------------------------------------------------------------------------
def _range_controls() -> TimeRange:
    """Relative/absolute pickers, seeded from the URL on a session's first run; writes the
    applied range back to the URL. An invalid choice keeps the last valid range and says so."""
    state = st.session_state
    if _APPLIED not in state:
        try:
            state[_APPLIED] = time_range.from_query(st.query_params.to_dict())
        except RangeError as exc:
            st.sidebar.error(
                f"Time range in the URL: {exc}. Showing last {time_range.DEFAULT_LAST}.",
                icon=":material/error:",
            )
            state[_APPLIED] = TimeRange()
        state[_K_MODE] = MODES[0] if state[_APPLIED].relative else MODES[1]
    applied: TimeRange = state[_APPLIED]
    # Widgets that were not drawn last run lost their state: seed them from the applied range.
    if _K_MODE not in state:
        state[_K_MODE] = MODES[0] if applied.relative else MODES[1]
    if _K_LAST not in state:
        state[_K_LAST] = applied.last or time_range.DEFAULT_LAST
    if _K_FROM not in state or _K_TO not in state:
        lo, hi = applied.bounds(data.rounded_now(60))
        state[_K_FROM] = lo.astimezone(UTC).replace(tzinfo=None, second=0, microsecond=0)
        state[_K_TO] = hi.astimezone(UTC).replace(tzinfo=None, second=0, microsecond=0)
        # The pickers show whole minutes; while they hold what they were seeded with, the
        # applied range stays exact (a URL's 13:30:17 must not become 13:30 on a rerun).
        state[_SEEDED] = (state[_K_FROM], state[_K_TO])

    mode = st.sidebar.radio("Time range", MODES, key=_K_MODE, horizontal=True)
    chosen: TimeRange | None
    if mode == MODES[0]:
        last = st.sidebar.selectbox(
            "Range", list(time_range.RELATIVE), key=_K_LAST, format_func=lambda k: f"last {k}"
        )
        chosen = time_range.relative(str(last))
    else:
        start = st.sidebar.datetime_input(
            "From (UTC)", key=_K_FROM, step=timedelta(minutes=1), format="YYYY-MM-DD"
        )
        end = st.sidebar.datetime_input(
            "To (UTC)", key=_K_TO, step=timedelta(minutes=1), format="YYYY-MM-DD"
        )
        chosen = None
        if start is None or end is None:
            st.sidebar.error("Pick both 'From' and 'To'.", icon=":material/error:")
        elif not applied.relative and state.get(_SEEDED) == (start, end):
            chosen = applied  # untouched pickers: keep the exact range
        else:
            try:
                chosen = time_range.absolute(start, end)
                state[_SEEDED] = None  # from now on the pickers are the range
            except RangeError as exc:
                st.sidebar.error(
                    f"{exc}. The pages still show {applied.label()}.", icon=":material/error:"
                )
    if chosen is not None and chosen != applied:
        state[_APPLIED] = applied = chosen
    _write_query(applied)
    return applied


def _write_query(rng: TimeRange) -> None:
    """Put the range in the URL (only the keys that changed: each write is a browser update)."""
    wanted = rng.to_query()
    for key in ("last", "from", "to"):
        if key not in wanted and key in st.query_params:
            del st.query_params[key]
    for key, value in wanted.items():
        if st.query_params.get(key) != value:
            st.query_params[key] = value


def current_range() -> TimeRange:
    applied = st.session_state.get(_APPLIED)
    if isinstance(applied, TimeRange):
        return applied
    try:  # a page run without the sidebar (tests): the URL, else the default
        return time_range.from_query(st.query_params.to_dict())
    except RangeError:
        return TimeRange()


def range_query() -> dict[str, str]:
    """The URL query parameters of the current range, for links between pages."""
    return current_range().to_query()


def window_seconds() -> int:
    return int(current_range().seconds)


def current_window(end: datetime | None = None) -> data.Window:
    """The window pages query: the chosen range; with `end` (time travel), a window of the
    range's length ending there."""
    rng = current_range()
    if end is not None:
        return data.Window.ending(end, rng.seconds)
    if rng.relative:
        return data.Window.ending(data.rounded_now(), rng.seconds)
    lo, hi = rng.bounds(data.rounded_now())
    return data.Window(lo.isoformat(), hi.isoformat())


def is_live() -> bool:
    """True for a relative range (it follows now)."""
    return current_range().relative


def refresh_every() -> int | None:
    """Auto-refresh interval in seconds; None for an absolute range (nothing new to show)."""
    if not current_range().relative:
        return None
    return REFRESH.get(str(st.session_state.get("refresh", "30s")))


def ddir() -> str:
    return str(data.data_dir())


# -- freshness and coverage ----------------------------------------------------------------
def freshness() -> None:
    """'last data 12 s ago' (green, amber when stale, red when it stopped), or how to send
    data when the store is empty: an empty store never looks like a healthy one. Draws into
    the current container (the sidebar calls it inside `with st.sidebar`)."""
    try:
        last = data.last_data_time(ddir())
    except Exception as exc:  # an unreadable store must not break every page
        _LOG.exception("reading the store's newest time failed")
        st.error(
            f"Cannot read the store ({type(exc).__name__}); the details are in the server log.",
            icon=":material/error:",
        )
        return
    fresh = time_range.freshness(last, datetime.now(UTC))
    if fresh.level == "empty":
        st.warning(
            "No data yet — point Envoy's access log service at `meshlens serve` "
            f"(gRPC port {data.ingest_port()}), or load access logs with `meshlens import`.",
            icon=":material/hourglass_empty:",
        )
        return
    assert last is not None
    st.markdown(_FRESH_BADGE[fresh.level].format(fresh.text))
    st.caption(f"newest request {last:%Y-%m-%d %H:%M:%S} UTC")


# The sidebar's freshness line ticks on its own: pages refresh only their own fragments, and
# "12 s ago" must not stay 12 s for ever. Reading it is cheap (Parquet footers, cached 5 s).
_live_freshness = st.fragment(run_every=FRESHNESS_TICK_S)(freshness)


def _coverage(rng: TimeRange) -> None:
    try:
        extent = data.time_extent(ddir())
    except Exception:  # freshness() already said the store is unreadable
        return
    window = current_window()
    note = time_range.coverage(window.tw.start, window.tw.end, extent, live=rng.relative)
    if note is None:
        return
    if note.kind == "outside":
        st.sidebar.warning(note.text, icon=":material/event_busy:")
    else:
        st.sidebar.info(note.text, icon=":material/date_range:")
