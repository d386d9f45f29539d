"""Time windows: every query runs over an explicit [start, end) and never reads the clock itself.

`--since 15m` means [now - 15m, now) where `now` is injected by the caller (the CLI passes the
wall clock once, tests pass a fixed instant), `--from/--to` give absolute bounds (ISO 8601, UTC
when no offset is given), and `--from` with `--since` means [from, from + since).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from meshlens.analytics.errors import WindowError
from meshlens.settings import parse_duration

DEFAULT_SINCE = "15m"


@dataclass(frozen=True, slots=True)
class TimeWindow:
    """[start, end) in UTC."""

    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise WindowError("start and end must be timezone-aware")
        if self.end <= self.start:
            raise WindowError(
                f"end {self.end.isoformat()} is not after start {self.start.isoformat()}"
            )

    @property
    def seconds(self) -> float:
        return (self.end - self.start).total_seconds()

    def to_json(self) -> dict[str, object]:
        return {
            "start": self.start.astimezone(UTC).isoformat(),
            "end": self.end.astimezone(UTC).isoformat(),
            "seconds": self.seconds,
        }


def parse_time(text: str) -> datetime:
    """ISO 8601 ('2026-11-25T10:00:00Z', '2026-11-25 10:00', '...+02:00') or epoch seconds; UTC
    when no offset is given."""
    raw = text.strip()
    try:
        value = datetime.fromtimestamp(float(raw), tz=UTC)
    except (OverflowError, OSError):  # a number, but not a year 1..9999 instant (or inf)
        raise WindowError(f"time {text!r} is out of range (years 1 to 9999)") from None
    except ValueError:
        try:
            value = datetime.fromisoformat(raw.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            raise WindowError(
                f"not a time: {text!r} (use ISO 8601 like 2026-11-25T10:00:00Z or epoch seconds)"
            ) from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def _duration(text: str, what: str) -> timedelta:
    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        raise WindowError(f"{what}: {exc}") from None
    if seconds <= 0:
        raise WindowError(f"{what} must be positive, got {text!r}")
    try:
        return timedelta(seconds=seconds)
    except OverflowError:
        raise WindowError(f"{what} {text!r} is too long") from None


def _spanned(start: datetime, end: datetime | None, span: timedelta, what: str) -> TimeWindow:
    """[start, start + span) or, with `end`, [end - span, end): a WindowError, not an
    OverflowError, when a bound falls outside years 1..9999."""
    try:
        return TimeWindow(start, start + span) if end is None else TimeWindow(end - span, end)
    except OverflowError:
        raise WindowError(f"{what} reaches outside years 1 to 9999; ask for less") from None


def parse_window(
    since: str | None = None,
    from_: str | datetime | None = None,
    to: str | datetime | None = None,
    *,
    now: datetime,
) -> TimeWindow:
    """The window for CLI/API arguments. With nothing given: the last DEFAULT_SINCE before now."""
    if now.tzinfo is None:
        raise WindowError("now must be timezone-aware")
    start = parse_time(from_) if isinstance(from_, str) else from_
    end = parse_time(to) if isinstance(to, str) else to
    if since is not None and start is not None and end is not None:
        raise WindowError("give at most two of --since, --from and --to")
    if since is not None:
        span = _duration(since, "--since")
        if start is not None:
            return _spanned(start, None, span, f"--since {since!r}")
        return _spanned(now, end or now, span, f"--since {since!r}")
    if start is None:
        span = _duration(DEFAULT_SINCE, "default window")
        return _spanned(now, end or now, span, f"the default window {DEFAULT_SINCE}")
    return TimeWindow(start, end or now)


def add_window_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("time window (default: the last 15m)")
    g.add_argument(
        "--since", default=None, help="window length ending at --to or now, e.g. 15m, 2h"
    )
    g.add_argument(
        "--from", dest="from_", default=None, help="window start (ISO 8601, UTC default)"
    )
    g.add_argument("--to", default=None, help="window end (ISO 8601); default now")


def window_from_args(args: argparse.Namespace, now: datetime | None = None) -> TimeWindow:
    """The CLI's window; the wall clock is read here, once, and only when not given."""
    return parse_window(
        getattr(args, "since", None),
        getattr(args, "from_", None),
        getattr(args, "to", None),
        now=now or datetime.now(UTC),
    )
