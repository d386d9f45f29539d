"""The app's time range without Streamlit: parsing, the URL round trip, validation, the data's
own span, whole chart buckets, coverage and freshness."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from meshlens.dashboards import time_range as tr

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


def test_default_and_relative_ranges() -> None:
    assert tr.from_query({}) == tr.TimeRange(last="15m")
    rng = tr.from_query({"last": "7d"})
    assert rng.relative and rng.seconds == 7 * 86400
    start, end = rng.bounds(T0)
    assert end == T0 and start == T0 - timedelta(days=7)
    assert rng.label() == "last 7d"


def test_absolute_range_from_the_url() -> None:
    rng = tr.from_query({"from": "2026-03-01T10:00:00Z", "to": "2026-03-01T11:30:00+00:00"})
    assert not rng.relative
    assert rng.bounds(T0) == (T0 - timedelta(hours=2), T0 - timedelta(minutes=30))
    assert rng.seconds == 5400
    # Without an offset a timestamp is UTC; `from`/`to` win over `last`.
    naive = tr.from_query({"from": "2026-03-01T10:00", "to": "2026-03-01T11:30", "last": "5m"})
    assert naive == rng


@pytest.mark.parametrize(
    "rng",
    [
        tr.TimeRange(last="1h"),
        tr.absolute(T0 - timedelta(days=3, seconds=17), T0),
    ],
)
def test_url_round_trip(rng: tr.TimeRange) -> None:
    query = rng.to_query()
    assert set(query) in ({"last"}, {"from", "to"})
    assert tr.from_query(query) == rng


def test_absolute_query_uses_iso_timestamps() -> None:
    query = tr.absolute(T0, T0 + timedelta(hours=1)).to_query()
    assert query == {"from": "2026-03-01T12:00:00Z", "to": "2026-03-01T13:00:00Z"}


@pytest.mark.parametrize(
    ("params", "needle"),
    [
        ({"from": "2026-03-01T12:00:00Z", "to": "2026-03-01T12:00:00Z"}, "must be before"),
        ({"from": "2026-03-01T13:00:00Z", "to": "2026-03-01T12:00:00Z"}, "must be before"),
        ({"from": "2026-03-01T13:00:00Z"}, "both 'from' and 'to'"),
        ({"from": "yesterday", "to": "2026-03-01T12:00:00Z"}, "not an ISO timestamp"),
        ({"last": "3w"}, "unknown relative range '3w'"),
    ],
)
def test_bad_ranges_are_rejected_with_a_reason(params: dict[str, str], needle: str) -> None:
    with pytest.raises(tr.RangeError, match=needle):
        tr.from_query(params)


def test_from_after_to_message_names_both_times() -> None:
    with pytest.raises(tr.RangeError) as err:
        tr.absolute(T0, T0 - timedelta(minutes=5))
    assert "'from' (2026-03-01T12:00:00Z) must be before 'to' (2026-03-01T11:55:00Z)" in str(
        err.value
    )


def test_effective_span_is_the_data_inside_the_window() -> None:
    extent = (T0 - timedelta(minutes=10), T0 - timedelta(seconds=5))
    # A 7-day window over 10 minutes of data: the span is the data's.
    assert tr.effective_span(T0 - timedelta(days=7), T0, extent) == extent
    # A window inside the data is itself.
    inner = (T0 - timedelta(minutes=5), T0 - timedelta(minutes=1))
    assert tr.effective_span(*inner, extent) == inner
    # No overlap, or no data: None (and a rate's divisor of 1 s).
    assert tr.effective_span(T0, T0 + timedelta(hours=1), extent) is None
    assert tr.effective_span(T0 - timedelta(hours=1), T0, None) is None
    assert tr.span_seconds(None) == 1.0
    assert tr.span_seconds(extent) == 595.0


def test_whole_buckets_drop_the_partial_ends() -> None:
    # Data from 12:00:07 to 12:05:42 with a 60 s step: 12:01..12:05 are the whole buckets.
    lo, hi = T0 + timedelta(seconds=7), T0 + timedelta(minutes=5, seconds=42)
    assert tr.whole_buckets(lo, hi, 60) == (T0 + timedelta(minutes=1), T0 + timedelta(minutes=5))
    # Already aligned: nothing is dropped at the start; the end bucket [12:05, 12:06) is whole
    # only if the span reaches 12:06.
    assert tr.whole_buckets(T0, T0 + timedelta(minutes=6), 60) == (
        T0,
        T0 + timedelta(minutes=6),
    )
    # Fractional seconds count: 12:00:00.5 is inside the first bucket.
    assert tr.whole_buckets(T0 + timedelta(milliseconds=500), T0 + timedelta(minutes=3), 60) == (
        T0 + timedelta(minutes=1),
        T0 + timedelta(minutes=3),
    )
    # Less than one whole bucket.
    assert tr.whole_buckets(T0 + timedelta(seconds=10), T0 + timedelta(seconds=70), 60) is None


def test_whole_buckets_are_aligned_to_the_step() -> None:
    lo, hi = tr.whole_buckets(T0 + timedelta(seconds=3), T0 + timedelta(hours=2, seconds=1), 900)
    assert lo.timestamp() % 900 == 0 and hi.timestamp() % 900 == 0
    assert hi <= T0 + timedelta(hours=2, seconds=1) and lo >= T0 + timedelta(seconds=3)


def test_step_for_gives_about_sixty_readable_buckets() -> None:
    assert tr.step_for(300) == 10
    assert tr.step_for(900) == 15
    assert tr.step_for(3600) == 60
    assert tr.step_for(7 * 86400) == 10800


def test_coverage_says_when_the_range_is_longer_than_or_outside_the_data() -> None:
    extent = (T0 - timedelta(hours=1), T0 - timedelta(seconds=5))
    assert tr.coverage(T0 - timedelta(minutes=15), T0, extent, live=True) is None
    assert tr.coverage(T0 - timedelta(hours=2), T0, None, live=True) is None
    longer = tr.coverage(T0 - timedelta(days=7), T0, extent, live=True)
    assert longer is not None and longer.kind == "partial"
    assert "Data covers 59 min of this 7 d range" in longer.text
    assert "2026-03-01 11:00:00" in longer.text  # the store's extent is shown
    before = tr.coverage(T0 - timedelta(days=2), T0 - timedelta(days=1), extent, live=False)
    assert before is not None and before.kind == "outside" and "ends before" in before.text
    after = tr.coverage(T0 + timedelta(hours=1), T0 + timedelta(hours=2), extent, live=False)
    assert after is not None and after.kind == "outside" and "starts after" in after.text
    # An absolute range that runs an hour past the last row is flagged; a live one is not.
    tail = (T0 - timedelta(minutes=30), T0 + timedelta(hours=1))
    assert tr.coverage(*tail, extent, live=False) is not None
    assert tr.coverage(T0 - timedelta(minutes=30), T0, extent, live=True) is None


def test_freshness_levels() -> None:
    assert tr.freshness(None, T0) == tr.Freshness("empty", "no data yet")
    assert tr.freshness(T0 - timedelta(seconds=12), T0) == tr.Freshness(
        "fresh", "last data 12 s ago"
    )
    assert tr.freshness(T0 - timedelta(minutes=4), T0).level == "stale"
    assert tr.freshness(T0 - timedelta(hours=3), T0) == tr.Freshness("dead", "last data 3 h ago")
