"""The timestamp window of live ingest, applied to decoded tables (issue 18).

Rows are partitioned by the hour of their time column, so one request with rows spread over
2,000 future hours made 2,000 partitions. Relative to the record's receipt time (not the clock
when it is converted, so converting a segment again gives the same rows):

- later than receipt + `max_future`: stored at the receipt time (a client's clock is wrong; the
  row is kept, where queries of "now" find it). Spans keep their duration.
- earlier than receipt - `max_age` (off by default): dropped. Late data is normal (exporter
  retry queues), and retention already expires old partitions, so the default keeps any age.

Both are counted (`limits.count`) and logged. `meshlens import` writes Parquet directly and is
not limited. Pure apart from those counters.
"""

from __future__ import annotations

import logging
from typing import Any, Final

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from meshlens.collector.decode import limits
from meshlens.collector.store.schema import TIME_COLUMN

log = logging.getLogger(__name__)
_US_PER_S: Final = 1_000_000
# The column that moves with a clamped time column (spans keep their duration).
_FOLLOWERS: Final = {"spans": "end_ts"}


def _int_us(col: Any) -> np.ndarray[Any, Any]:
    return np.asarray(pc.fill_null(col.cast(pa.int64()), 0).to_numpy(), dtype=np.int64)


def apply_table(
    name: str,
    table: pa.Table,
    received_us: int | np.ndarray[Any, Any],
    lim: limits.DecodeLimits | None = None,
) -> pa.Table:
    """`table` with its time column inside the window around `received_us` (per row, or one
    value for all rows; <= 0 means unknown: no window)."""
    col_name = TIME_COLUMN.get(name)
    if col_name is None or table.num_rows == 0:
        return table
    lim = lim or limits.current()
    if lim.max_future_s <= 0 and lim.max_age_s <= 0:
        return table
    received = np.broadcast_to(np.asarray(received_us, dtype=np.int64), (table.num_rows,))
    known = received > 0
    ts = _int_us(table.column(col_name))
    late = np.zeros(table.num_rows, dtype=bool)
    if lim.max_future_s > 0:
        late = known & (ts > received + int(lim.max_future_s * _US_PER_S))
    old = np.zeros(table.num_rows, dtype=bool)
    if lim.max_age_s > 0:
        old = known & (ts < received - int(lim.max_age_s * _US_PER_S))
    n_late, n_old = int(late.sum()), int(old.sum())
    if not n_late and not n_old:
        return table
    if n_late:
        typ = table.schema.field(col_name).type
        new_ts = np.where(late, received, ts)
        follower = _FOLLOWERS.get(name)
        if follower is not None and follower in table.column_names:
            end = _int_us(table.column(follower))
            moved = np.where(late, new_ts + np.maximum(end - ts, 0), end)
            i = table.column_names.index(follower)
            ftyp = table.schema.field(follower).type
            table = table.set_column(i, follower, pa.array(moved, pa.int64()).cast(ftyp))
        i = table.column_names.index(col_name)
        table = table.set_column(i, col_name, pa.array(new_ts, pa.int64()).cast(typ))
        limits.count("timestamps_clamped", n_late)
        log.warning(
            "%s: %d rows stamped more than %ss after receipt stored at their receipt time",
            name,
            n_late,
            lim.max_future_s,
        )
    if n_old:
        table = table.filter(pa.array(~old))
        limits.count("rows_too_old", n_old)
        log.warning(
            "%s: %d rows stamped more than %ss before receipt dropped", name, n_old, lim.max_age_s
        )
    return table


def apply(tables: dict[str, pa.Table], received_ns: int) -> dict[str, pa.Table]:
    """Every table of one record's decode, windowed around the record's receipt time."""
    received_us = received_ns // 1000
    return {name: apply_table(name, t, received_us) for name, t in tables.items()}
