from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from meshlens.analytics.errors import WindowError
from meshlens.analytics.window import TimeWindow, parse_time, parse_window

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def test_since_ends_at_injected_now() -> None:
    assert parse_window("15m", now=NOW) == TimeWindow(NOW - timedelta(minutes=15), NOW)


def test_default_is_last_15_minutes() -> None:
    assert parse_window(now=NOW).seconds == 900


def test_from_to_and_from_since() -> None:
    w = parse_window(None, "2026-11-25T10:00:00Z", "2026-11-25T11:00", now=NOW)
    assert (w.start.hour, w.end.hour, w.seconds) == (10, 11, 3600)
    w2 = parse_window("30m", "2026-11-25T10:00:00+02:00", None, now=NOW)
    assert w2.start == datetime(2026, 11, 25, 8, 0, tzinfo=UTC) and w2.seconds == 1800
    assert parse_window("1h", None, "2026-11-25T10:00:00Z", now=NOW).start.hour == 9


def test_epoch_seconds() -> None:
    assert parse_time("0") == datetime(1970, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"since": "abc"}, r"--since: not a duration"),
        ({"since": "0s"}, r"must be positive"),
        ({"from_": "yesterday"}, r"not a time: 'yesterday'"),
        ({"from_": "2026-11-25T12:00:00Z", "to": "2026-11-25T11:00:00Z"}, r"is not after start"),
        ({"since": "1h", "from_": "2026-11-25T10:00Z", "to": "2026-11-25T11:00Z"}, r"at most two"),
    ],
)
def test_bad_windows(kw: dict[str, str], match: str) -> None:
    with pytest.raises(WindowError, match=match):
        parse_window(now=NOW, **kw)  # type: ignore[arg-type]
