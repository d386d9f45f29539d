"""Compaction and retention reach every partition (past, current, far future, odd dates) and
every writer the product has: the collector's WAL node, the gate/webhook verdicts (`gate`) and
the importer (`import-*`); never another collector's node."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa

from meshlens.analytics.gate.record import record_rows
from meshlens.collector.store.compaction import FILES_WITHOUT_WAITING, compact_node
from meshlens.collector.store.layout import (
    GATE_NODE,
    list_table_files,
    partition_dir,
    visible_files,
)
from meshlens.collector.store.parquet_write import write_table
from meshlens.collector.store.retention import expire
from tests.collector.store.rows import read_table

COMPACT_AFTER = 120.0


def _logs(when: datetime, n: int = 2) -> pa.Table:
    ts = int(when.timestamp() * 1e6)
    return pa.table(
        {
            "ts": pa.array([ts + i for i in range(n)], pa.int64()).cast(
                pa.timestamp("us", tz="UTC")
            ),
            "body": [f"r{i}" for i in range(n)],
        }
    )


def _write(d: Path, node: str, lo: int, when: datetime, *, age: float = 0.0, rows: int = 2) -> None:
    """One small file; `age` seconds old by its modification time."""
    for p in write_table(d, "logs", _logs(when, rows), node, lo, fsync=False):
        if age:
            t = time.time() - age
            os.utime(p, (t, t))


def _compact(d: Path, now: float | None = None) -> int:
    return compact_node(
        d,
        "local",
        now=time.time() if now is None else now,
        compact_after=COMPACT_AFTER,
        below_seq=10**6,
        grace=0,
    ).outputs


def _visible(d: Path, table: str = "logs") -> int:
    return len(visible_files(d, table))


def test_a_future_partition_is_compacted_once_it_went_quiet(tmp_path: Path) -> None:
    future = datetime.now(UTC) + timedelta(hours=2000)  # a client with a broken clock
    for seq in (1, 2, 3):
        _write(tmp_path, "local", seq, future, age=600)
    assert _compact(tmp_path) == 1
    assert _visible(tmp_path) == 1 and read_table(tmp_path).num_rows == 6


def test_a_partition_still_written_waits_for_quiet_or_many_files(tmp_path: Path) -> None:
    now_hour = datetime.now(UTC)
    _write(tmp_path, "local", 1, now_hour)
    _write(tmp_path, "local", 2, now_hour)
    assert _compact(tmp_path) == 0  # files still arriving: merging now would rewrite often
    for seq in range(3, FILES_WITHOUT_WAITING + 1):
        _write(tmp_path, "local", seq, now_hour)
    assert _compact(tmp_path) == 1
    assert _visible(tmp_path) == 1
    assert read_table(tmp_path).num_rows == 2 * FILES_WITHOUT_WAITING


def test_gate_and_webhook_verdicts_are_compacted(tmp_path: Path) -> None:
    when = datetime.now(UTC) - timedelta(hours=3)
    rows = [{"ts": when, "rollout": "r", "action": "hold", "details": "{}"}]
    for _ in range(200):  # 200 Flagger webhook calls
        record_rows(tmp_path, rows)
    assert _visible(tmp_path, "verdicts") == 200
    assert _compact(tmp_path) == 0  # just written: a writer may still be finishing one
    assert _compact(tmp_path, now=time.time() + COMPACT_AFTER + 1) == 1
    assert _visible(tmp_path, "verdicts") == 1
    assert read_table(tmp_path, "verdicts").num_rows == 200


def test_a_gate_file_written_during_compaction_is_never_inside_a_merged_range(
    tmp_path: Path,
) -> None:
    when = datetime.now(UTC) - timedelta(hours=3)
    old_us = int((time.time() - 3600) * 1e6)
    _write(tmp_path, GATE_NODE, old_us, when, age=3600)
    _write(tmp_path, GATE_NODE, old_us + 1, when, age=3600)
    _write(tmp_path, GATE_NODE, int(time.time() * 1e6), when)  # being written now
    assert _compact(tmp_path) == 1
    files = sorted(f.path.name for f in list_table_files(tmp_path, "logs"))
    merged = f"gate_{old_us:016d}_{old_us + 1:016d}.parquet"
    assert merged in files and _visible(tmp_path) == 2  # the merged pair + the new file


def test_importer_files_are_compacted_other_collectors_are_not(tmp_path: Path) -> None:
    when = datetime.now(UTC) - timedelta(hours=5)
    lo = int((time.time() - 3600) * 1e6)
    for i in range(3):
        _write(tmp_path, "import-ab12cd", lo + i, when, age=3600)
        _write(tmp_path, "other", lo + i, when, age=3600)  # another collector's WAL node
    assert _compact(tmp_path) == 1
    nodes = sorted(f.node for f in list_table_files(tmp_path, "logs") if f.lo == lo)
    assert nodes == ["import-ab12cd", "import-ab12cd", "other"]  # input + output; other x1
    assert _visible(tmp_path) == 4


def test_retention_expires_every_table_by_partition_time_and_survives_odd_names(
    tmp_path: Path,
) -> None:
    old = datetime.now(UTC) - timedelta(days=30)
    record_rows(tmp_path, [{"ts": old, "rollout": "r", "action": "hold", "details": "{}"}])
    _write(tmp_path, "local", 1, old)
    odd = tmp_path / "spans" / "dt=2026-02-30" / "hr=01"  # matches the pattern, not a date
    odd.mkdir(parents=True)
    assert _compact(tmp_path) == 0  # an odd partition does not stop compaction either
    assert expire(tmp_path, now=time.time(), retention=7 * 86400.0) == 2
    assert _visible(tmp_path) == 0 and _visible(tmp_path, "verdicts") == 0
    assert odd.is_dir()  # not ours to judge; skipped with a warning


def test_partitions_before_year_1000_are_named_so_readers_and_retention_see_them(
    tmp_path: Path,
) -> None:
    ancient = datetime(5, 6, 7, 8, tzinfo=UTC)  # a protobuf Timestamp can say so
    assert partition_dir(tmp_path, "logs", ancient).parent.name == "dt=0005-06-07"
    _write(tmp_path, "local", 1, ancient, rows=1)
    assert _visible(tmp_path) == 1
    assert expire(tmp_path, now=time.time(), retention=86400.0) == 1
    assert _visible(tmp_path) == 0
