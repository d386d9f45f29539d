"""Merge a partition's small Parquet files into one file covering their sequence range.

Readers hide every file whose (node, lo..hi) range lies inside another file's range in the same
partition (`layout.visible`), so writing `<node>_<lo>_<hi>.parquet` atomically makes the inputs
invisible in one step; the inputs are deleted after a grace period so queries that already
listed them still find them.

Safety rule: only files whose `hi` is below the lowest sequence number still in the WAL are
merged. A segment still in the WAL will write `<node>_<s>_<s>.parquet` later; if a merged range
spanned `s`, that file would be hidden and its rows lost. New segments always get higher numbers,
so ranges of merged files never contain a future segment.

Which files: this collector's own node (bounded by `below_seq` as above), and the writers
whose numbers are wall-clock microseconds and never come from a WAL: the gate (`gate`, one
file per decision or webhook call) and the importer (`import-*`). Their bound is time: only
files numbered, and last modified, more than `compact_after` ago are merged, so a file being
written now cannot land inside a merged range. Other collectors' nodes are never touched: their
WAL may still hold a segment we cannot see.

Which partitions: any, past or future (clock-skewed clients), once the hour ended
`compact_after` ago, or once no file arrived for `compact_after` (a quiet partition), or when
FILES_WITHOUT_WAITING files piled up in a partition still being written.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

import pyarrow.parquet as pq

from meshlens.collector.store.layout import (
    ParquetSegment,
    is_time_numbered,
    list_table_files,
    segment_file_name,
    visible,
)
from meshlens.collector.store.parquet_write import ROW_GROUP_SIZE, conform, parquet_options
from meshlens.collector.store.schema import TABLES
from meshlens.durable_file import write_atomic

log = logging.getLogger(__name__)

TARGET_BYTES: Final = 256 * 1024 * 1024  # stop adding inputs to one output past this size
# A partition still receiving files is merged once it has this many: enough that rewriting the
# previous output each time costs little, few enough that a scan does not open thousands.
FILES_WITHOUT_WAITING: Final = 64


@dataclass(frozen=True, slots=True)
class CompactionResult:
    outputs: int = 0
    inputs: int = 0
    deleted: int = 0


def partition_end(dt: str, hr: str) -> float:
    """Unix time at which the partition's hour ends."""
    start = datetime.strptime(f"{dt} {hr}", "%Y-%m-%d %H").replace(tzinfo=UTC)
    return start.timestamp() + 3600.0


def plan(
    files: list[ParquetSegment],
    below_seq: int,
    target_bytes: int,
    settled_before: float | None = None,
) -> list[list[ParquetSegment]]:
    """Runs of consecutive visible files (by range) to merge, each of 2+ files.

    `files` are one partition's files of one node. A file at or above `below_seq` breaks a run,
    and so does one modified at or after `settled_before` (when given) and the size target, so
    an output's range covers its inputs and nothing else."""
    runs: list[list[ParquetSegment]] = []
    run: list[ParquetSegment] = []
    size = 0
    for f in visible(files):
        try:
            st = f.path.stat()
            fsize, recent = st.st_size, settled_before is not None and st.st_mtime >= settled_before
        except FileNotFoundError:
            fsize, recent = -1, False
        if f.hi >= below_seq or fsize < 0 or recent:
            runs.append(run)
            run, size = [], 0
            continue
        if run and size + fsize > target_bytes:
            runs.append(run)
            run, size = [], 0
        run.append(f)
        size += fsize
    runs.append(run)
    return [r for r in runs if len(r) >= 2]


def merge(table: str, inputs: list[ParquetSegment]) -> Path:
    """Write the inputs' rows (in range order) to the covering file; atomic, fsynced."""
    out = inputs[0].path.with_name(segment_file_name(inputs[0].node, inputs[0].lo, inputs[-1].hi))
    schema = TABLES[table]

    def write(tmp: Path) -> None:
        with pq.ParquetWriter(tmp, schema, **parquet_options(table)) as writer:
            for f in inputs:
                writer.write_table(
                    conform(table, pq.read_table(f.path)), row_group_size=ROW_GROUP_SIZE
                )

    write_atomic(out, write, fsync_parent=True)
    return out


def delete_covered(files: list[ParquetSegment], now: float, grace: float) -> int:
    """Remove files hidden by a covering file that has existed for `grace` seconds."""
    shown = visible(files)
    deleted = 0
    for f in files:
        if f in shown:
            continue
        for g in shown:
            if g.covers(f):
                try:
                    if g.path.stat().st_mtime + grace <= now:
                        f.path.unlink()
                        deleted += 1
                except FileNotFoundError:
                    pass
                break
    return deleted


def due(dt: str, hr: str, files: list[ParquetSegment], now: float, compact_after: float) -> bool:
    """Whether a partition's files (one node) should be merged now: see the module doc."""
    shown = visible(files)
    if len(shown) < 2:
        return False
    if len(shown) >= FILES_WITHOUT_WAITING:
        return True
    try:
        if partition_end(dt, hr) + compact_after <= now:
            return True
    except ValueError:  # an impossible date (dt=2026-02-30): judged by its files alone
        pass
    newest = 0.0
    for f in shown:
        try:
            newest = max(newest, f.path.stat().st_mtime)
        except FileNotFoundError:
            pass
    return newest + compact_after <= now


def compact_node(
    data_dir: Path,
    node: str,
    *,
    now: float,
    compact_after: float,
    below_seq: int,
    grace: float,
    target_bytes: int = TARGET_BYTES,
) -> CompactionResult:
    """One pass over every table: delete expired compaction inputs, then merge the small files
    of due partitions (`due`) of `node` and of the time-numbered writers (gate, importer)."""
    outputs = inputs = deleted = 0
    # Time-numbered writers: numbers (µs) and files older than compact_after are settled.
    settled_us = int((now - compact_after) * 1_000_000)
    for table in TABLES:
        parts: dict[tuple[str, str, str], list[ParquetSegment]] = {}
        for f in list_table_files(data_dir, table):
            if f.node == node or is_time_numbered(f.node):
                parts.setdefault((f.dt, f.hr, f.node), []).append(f)
        for (dt, hr, owner), files in parts.items():
            deleted += delete_covered(files, now, grace)
            if not due(dt, hr, files, now, compact_after):
                continue
            if owner == node:
                runs = plan(files, below_seq, target_bytes)
            else:
                runs = plan(files, settled_us, target_bytes, settled_before=now - compact_after)
            for run in runs:
                t0 = time.monotonic()
                out = merge(table, run)
                outputs += 1
                inputs += len(run)
                log.info(
                    "compacted %d files of %s dt=%s hr=%s into %s in %.2fs",
                    len(run),
                    table,
                    dt,
                    hr,
                    out.name,
                    time.monotonic() - t0,
                )
    return CompactionResult(outputs, inputs, deleted)
