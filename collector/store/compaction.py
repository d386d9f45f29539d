"""Merge a partition's small Parquet files into one file covering their sequence range.

Readers hide every file whose (node, lo..hi) range lies inside another file's range in the same
partition (`layout.visible`), so writing `<node>_<lo>_<hi>.parquet` atomically makes the inputs
invisible in one step; the inputs are deleted after a grace period so queries that already
listed them still find them.

Safety rule: only files whose `hi` is below the lowest sequence number still in the WAL are
merged. A segment still in the WAL will write `<node>_<s>_<s>.parquet` later; if a merged range
spanned `s`, that file would be hidden and its rows lost. New segments always get higher numbers,
so ranges of merged files never contain a future segment.

Only this collector's own node is compacted; other writers (gate, importer) own their names.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

import pyarrow.parquet as pq

from collector.store.layout import SegmentFile, list_table_files, segment_file_name, visible
from collector.store.schema import TABLES
from collector.store.writer import ROW_GROUP_SIZE, conform, fsync_dir, parquet_options

log = logging.getLogger(__name__)

TARGET_BYTES: Final = 256 * 1024 * 1024  # stop adding inputs to one output past this size


@dataclass(frozen=True, slots=True)
class CompactionResult:
    outputs: int = 0
    inputs: int = 0
    deleted: int = 0


def partition_end(dt: str, hr: str) -> float:
    """Unix time at which the partition's hour ends."""
    start = datetime.strptime(f"{dt} {hr}", "%Y-%m-%d %H").replace(tzinfo=UTC)
    return start.timestamp() + 3600.0


def plan(files: list[SegmentFile], below_seq: int, target_bytes: int) -> list[list[SegmentFile]]:
    """Runs of consecutive visible files (by range) to merge, each of 2+ files.

    `files` are one partition's files of one node. A file at or above `below_seq` breaks a run,
    and so does the size target, so an output's range covers its inputs and nothing else."""
    runs: list[list[SegmentFile]] = []
    run: list[SegmentFile] = []
    size = 0
    for f in visible(files):
        try:
            fsize = f.path.stat().st_size
        except FileNotFoundError:
            fsize = -1
        if f.hi >= below_seq or fsize < 0:
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


def merge(table: str, inputs: list[SegmentFile]) -> Path:
    """Write the inputs' rows (in range order) to the covering file; atomic, fsynced."""
    out = inputs[0].path.with_name(segment_file_name(inputs[0].node, inputs[0].lo, inputs[-1].hi))
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    schema = TABLES[table]
    try:
        with pq.ParquetWriter(tmp, schema, **parquet_options(table)) as writer:
            for f in inputs:
                writer.write_table(
                    conform(table, pq.read_table(f.path)), row_group_size=ROW_GROUP_SIZE
                )
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(out.parent)
    return out


def delete_covered(files: list[SegmentFile], now: float, grace: float) -> int:
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
    of partitions whose hour ended more than `compact_after` seconds ago."""
    outputs = inputs = deleted = 0
    for table in TABLES:
        parts: dict[tuple[str, str], list[SegmentFile]] = {}
        for f in list_table_files(data_dir, table):
            if f.node == node:
                parts.setdefault((f.dt, f.hr), []).append(f)
        for (dt, hr), files in parts.items():
            deleted += delete_covered(files, now, grace)
            if partition_end(dt, hr) + compact_after > now:
                continue
            for run in plan(files, below_seq, target_bytes):
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
