"""The app's time range, pure: relative ("last 1h") or absolute (from .. to, UTC), its URL form
(`?last=1h` or `?from=...&to=...`), the data's own span inside it, chart buckets that are
whole, and how fresh the store is. No Streamlit here, so all of it is tested directly."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final, Literal

RELATIVE: Final = {
    "5m": 300,
    "15m": 900,
    "1h": 3600,
    "6h": 21600,
    "24h": 86400,
    "7d": 604800,
}
DEFAULT_LAST: Final = "15m"
# Ages past which the newest row of the store is called stale (amber) and dead (red).
STALE_AFTER_S: Final = 60.0
DEAD_AFTER_S: Final = 900.0


class RangeError(ValueError):
    """A time range the user (or a shared URL) gave that cannot be used; the message says why."""


@dataclass(frozen=True, slots=True)
class TimeRange:
    """Either `last` (a key of RELATIVE) or both `start` and `end` (UTC, start < end)."""

    last: str | None = DEFAULT_LAST
    start: datetime | None = None
    end: datetime | None = None

    @property
    def relative(self) -> bool:
        return self.last is not None

    @property
    def seconds(self) -> float:
        if self.last is not None:
            return float(RELATIVE[self.last])
        assert self.start is not None and self.end is not None
        return (self.end - self.start).total_seconds()

    def bounds(self, now: datetime) -> tuple[datetime, datetime]:
        """[start, end) of the range; a relative range ends at `now`."""
        if self.last is not None:
            end = now.astimezone(UTC)
            return end - timedelta(seconds=RELATIVE[self.last]), end
        assert self.start is not None and self.end is not None
        return self.start, self.end

    def to_query(self) -> dict[str, str]:
        """The URL query parameters that reopen this range."""
        if self.last is not None:
            return {"last": self.last}
        assert self.start is not None and self.end is not None
        return {"from": format_instant(self.start), "to": format_instant(self.end)}

    def label(self) -> str:
        if self.last is not None:
            return f"last {self.last}"
        assert self.start is not None and self.end is not None
        return f"{self.start:%Y-%m-%d %H:%M:%S} → {self.end:%Y-%m-%d %H:%M:%S} UTC"


def relative(last: str) -> TimeRange:
    if last not in RELATIVE:
        raise RangeError(f"unknown relative range {last!r}: use one of {', '.join(RELATIVE)}")
    return TimeRange(last=last)


def absolute(start: datetime, end: datetime) -> TimeRange:
    start, end = as_utc(start), as_utc(end)
    if start >= end:
        raise RangeError(
            f"'from' ({format_instant(start)}) must be before 'to' ({format_instant(end)})"
        )
    return TimeRange(last=None, start=start, end=end)


def as_utc(when: datetime) -> datetime:
    """A naive datetime (what date/time pickers return) is taken as UTC."""
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def format_instant(when: datetime) -> str:
    return as_utc(when).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def parse_instant(text: str, name: str) -> datetime:
    """An ISO 8601 date or timestamp; without an offset it is UTC."""
    try:
        return as_utc(datetime.fromisoformat(text.strip()))
    except ValueError:
        raise RangeError(
            f"{name}={text!r} is not an ISO timestamp (e.g. 2026-01-31T13:00:00Z)"
        ) from None


def _one(params: Mapping[str, str | list[str]], key: str) -> str | None:
    value = params.get(key)
    if isinstance(value, list):
        return value[-1] if value else None
    return value


def from_query(params: Mapping[str, str | list[str]]) -> TimeRange:
    """The range a URL names: `from` and `to` (absolute) win over `last`; neither: the default.
    Raises RangeError with the reason for anything it cannot use."""
    start, end = _one(params, "from"), _one(params, "to")
    if start is not None or end is not None:
        if not start or not end:
            raise RangeError("an absolute range needs both 'from' and 'to' in the URL")
        return absolute(parse_instant(start, "from"), parse_instant(end, "to"))
    last = _one(params, "last")
    return relative(last.strip()) if last else TimeRange()


# -- the data inside the range -------------------------------------------------------------
def effective_span(
    start: datetime, end: datetime, extent: tuple[datetime, datetime] | None
) -> tuple[datetime, datetime] | None:
    """The part of [start, end) that the store has data for: max(start, first data) ..
    min(end, last data); None when they do not overlap. Rates divide by this span, so a
    window longer than the data does not dilute them."""
    if extent is None:
        return None
    first, last = extent
    lo, hi = max(start, first), min(end, last)
    return (lo, hi) if lo <= hi else None


def span_seconds(span: tuple[datetime, datetime] | None, floor_s: float = 1.0) -> float:
    """Seconds of a span, at least `floor_s` (one request has a zero-length span)."""
    if span is None:
        return floor_s
    return max(floor_s, (span[1] - span[0]).total_seconds())


def whole_buckets(start: datetime, end: datetime, step_s: int) -> tuple[datetime, datetime] | None:
    """[start, end) shrunk to whole buckets of `step_s` aligned to the epoch: the bucket a
    start falls inside of, and the bucket holding the end (now, or the data's last row), are
    partial and would draw as a false dip, so both are left out. None: no whole bucket."""
    step = int(step_s)
    lo = -(-int(start.timestamp()) // step) * step  # ceil
    if lo < start.timestamp():
        lo += step
    hi = int(end.timestamp()) // step * step  # floor
    if hi <= lo:
        return None
    return datetime.fromtimestamp(lo, tz=UTC), datetime.fromtimestamp(hi, tz=UTC)


def step_for(seconds: float, points: int = 60) -> int:
    """A chart step that gives about `points` buckets, rounded to a readable size."""
    raw = seconds / points
    for nice in (10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200):
        if raw <= nice:
            return nice
    return 86400


@dataclass(frozen=True, slots=True)
class Coverage:
    """How the range sits against the store's data: `kind` is "outside" (no data in it) or
    "partial" (the data covers only part of it), with the text to show."""

    kind: Literal["outside", "partial"]
    text: str


def coverage(
    start: datetime,
    end: datetime,
    extent: tuple[datetime, datetime] | None,
    *,
    live: bool,
) -> Coverage | None:
    """None when the data covers the range (or the store is empty: the freshness line says
    that). A live range always runs a few seconds past the last row, so its end is not
    flagged; the freshness line tells how old that row is."""
    if extent is None:
        return None
    first, last = extent
    where = f"the store has data from {_short(first)} to {_short(last)} UTC"
    if end <= first:
        return Coverage("outside", f"No data in this range: it ends before the first row; {where}.")
    if start > last:
        return Coverage("outside", f"No data in this range: it starts after the last row; {where}.")
    slack = max(60.0, 0.02 * (end - start).total_seconds())
    before = (first - start).total_seconds() > slack
    after = not live and (end - last).total_seconds() > slack
    if not (before or after):
        return None
    covered = human_seconds(span_seconds(effective_span(start, end, extent)))
    total = human_seconds((end - start).total_seconds())
    return Coverage(
        "partial",
        f"Data covers {covered} of this {total} range; {where}. Rates are per second of data.",
    )


def _short(when: datetime) -> str:
    return f"{as_utc(when):%Y-%m-%d %H:%M:%S}"


def human_seconds(seconds: float) -> str:
    s = max(0, round(seconds))
    if s < 120:
        return f"{s} s"
    if s < 7200:
        return f"{s // 60} min"
    if s < 2 * 86400:
        return f"{s // 3600} h"
    return f"{s // 86400} d"


# -- freshness -----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Freshness:
    """How old the newest row of the store is: level "fresh", "stale", "dead" or "empty"."""

    level: Literal["fresh", "stale", "dead", "empty"]
    text: str


def freshness(last: datetime | None, now: datetime) -> Freshness:
    if last is None:
        return Freshness("empty", "no data yet")
    age = (now - last).total_seconds()
    text = f"last data {human_seconds(age)} ago" if age >= 0 else "last data just now"
    if age > DEAD_AFTER_S:
        return Freshness("dead", text)
    if age > STALE_AFTER_S:
        return Freshness("stale", text)
    return Freshness("fresh", text)
