"""The store, the window and the caching rules every loader shares."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import pandas as pd
import streamlit as st

from meshlens.analytics import signals
from meshlens.analytics.catalog import connect
from meshlens.analytics.objectstore_source import table_partitions
from meshlens.analytics.window import TimeWindow

DATA_DIR_ENV: Final = "MESHLENS_DATA_DIR"
TTL_S: Final = 10
WINDOW_STEP_S: Final = 10  # "now" is rounded to this, so cached entries are shared
MAX_ROWS: Final = 500
LEVELS: Final = ("workload", "app", "versioned-app", "service")
WINDOWS: Final = {"5m": 300, "15m": 900, "1h": 3600, "6h": 21600, "24h": 86400}


def data_dir() -> Path:
    return Path(os.environ.get(DATA_DIR_ENV, "meshlens-data"))


@dataclass(frozen=True, slots=True)
class Window:
    """A hashable [start, end) for cache keys (ISO strings) with its TimeWindow."""

    start: str
    end: str

    @classmethod
    def ending(cls, end: datetime, seconds: float) -> Window:
        end = end.astimezone(UTC)
        return cls((end - timedelta(seconds=seconds)).isoformat(), end.isoformat())

    @property
    def tw(self) -> TimeWindow:
        return TimeWindow(datetime.fromisoformat(self.start), datetime.fromisoformat(self.end))

    @property
    def seconds(self) -> float:
        return self.tw.seconds


def rounded_now(step: int = WINDOW_STEP_S) -> datetime:
    now = datetime.now(UTC).timestamp()
    return datetime.fromtimestamp((int(now) // step + 1) * step, tz=UTC)


def _df(conn: Any, sql: str, params: dict[str, Any] | None = None) -> pd.DataFrame:
    return conn.execute(sql, params or {}).df()


def _p(window: Window) -> dict[str, Any]:
    tw = window.tw
    return {"start": tw.start, "end": tw.end}


# -- store extent (time travel) ------------------------------------------------------------
@st.cache_data(ttl=TTL_S, show_spinner=False)
def time_extent(ddir: str) -> tuple[datetime, datetime] | None:
    """First and last request time, read from the partition names plus the newest partition
    only (no full scan)."""
    parts = table_partitions(ddir, "requests")  # a local directory or s3://bucket/prefix
    if not parts:
        return None
    first_dt, first_hr = parts[0]
    last_dt, last_hr = parts[-1]
    lo = datetime.fromisoformat(f"{first_dt}T{first_hr}:00:00+00:00")
    hi_hour = datetime.fromisoformat(f"{last_dt}T{last_hr}:00:00+00:00")
    conn = connect(Path(ddir), TimeWindow(lo, hi_hour + timedelta(hours=1)))
    try:
        row = conn.execute("SELECT max(ts) FROM requests WHERE ts >= $h", {"h": hi_hour}).fetchone()
        first = conn.execute(
            "SELECT min(ts) FROM requests WHERE ts < $h",
            {"h": lo + timedelta(hours=1)},
        ).fetchone()
    finally:
        conn.close()
    last = row[0] if row and row[0] is not None else hi_hour
    start = first[0] if first and first[0] is not None else lo
    return start.astimezone(UTC), last.astimezone(UTC)


# The "requests to this service" predicate (analytics.signals owns the rule), for $svc.
TO_SERVICE: Final = signals.to_service("$svc")
