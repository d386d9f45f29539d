"""Time-based retention: delete whole hour partitions older than the retention period.

A partition directory is first renamed to a hidden name (readers list only `hr=HH`), so a
reader never sees half of a partition, then removed. Leftovers of an interrupted removal and
stale temporary files of crashed writers are cleaned up on the way. Every table of the schema
(the gate's `verdicts` included), the stored paired traffic and every writer's files are
covered: a partition goes by its hour, whoever wrote it. A partition whose date cannot be
parsed is skipped, not fatal.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path
from typing import Final

from meshlens.collector.store.compaction import partition_end
from meshlens.collector.store.layout import PAIRED_TABLE, partitions
from meshlens.collector.store.schema import TABLES

log = logging.getLogger(__name__)

EXPIRED_PREFIX: Final = ".expired-"
STALE_TMP_SECONDS: Final = 3600.0


def expire(data_dir: Path, *, now: float, retention: float) -> int:
    """Delete partitions whose hour ended more than `retention` seconds before `now`; returns
    how many were deleted."""
    removed = 0
    cutoff = now - retention
    for table in (*TABLES, PAIRED_TABLE):
        for dt, hr, d in list(partitions(data_dir, table)):
            try:
                end = partition_end(dt, hr)
            except ValueError:  # dt=2026-02-30 was not written by us; leave it to the operator
                log.warning("retention: skipping %s: not a valid date and hour", d)
                continue
            if end <= cutoff:
                hidden = d.with_name(f"{EXPIRED_PREFIX}{d.name}-{time.time_ns()}")
                try:
                    os.rename(d, hidden)
                except FileNotFoundError:
                    continue
                shutil.rmtree(hidden, ignore_errors=True)
                removed += 1
                log.info("retention: deleted %s/dt=%s/hr=%s", table, dt, hr)
            else:
                _clean_stale(d, now)
        _clean_days(data_dir / table, cutoff)
    return removed


def _clean_stale(d: Path, now: float) -> None:
    """Remove temporary files a crashed writer left behind (names start with '.')."""
    try:
        entries = list(os.scandir(d))
    except FileNotFoundError:
        return
    for e in entries:
        if e.name.startswith(".") and ".tmp-" in e.name:
            try:
                if e.stat().st_mtime + STALE_TMP_SECONDS < now:
                    os.unlink(e.path)
            except FileNotFoundError:
                pass


def _clean_days(root: Path, cutoff: float) -> None:
    """Remove interrupted expirations, and expired day directories left empty."""
    if not root.is_dir():
        return
    for day in root.iterdir():
        if not day.is_dir():
            continue
        for e in day.iterdir():
            if e.name.startswith(EXPIRED_PREFIX):
                shutil.rmtree(e, ignore_errors=True)
        if day.name.startswith("dt=") and _day_end(day.name[3:]) <= cutoff:
            try:
                day.rmdir()  # only succeeds when empty
            except OSError:
                pass


def _day_end(dt: str) -> float:
    try:
        return partition_end(dt, "23")
    except ValueError:
        return float("inf")
