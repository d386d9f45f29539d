from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from meshlens.collector.store.layout import (
    check_node,
    list_table_files,
    parse_wal_segment_name,
    segment_file_name,
    visible_files,
    wal_segment_path,
)
from meshlens.collector.store.parquet_write import conform, write_table
from meshlens.collector.store.records import Record, RecordKind
from meshlens.collector.store.schema import REQUESTS, TABLES


def _rows(*hours: int) -> pa.Table:
    ts = [datetime(2026, 1, 1, h, 30, tzinfo=UTC) for h in hours]
    return pa.table(
        {"ts": pa.array(ts, pa.timestamp("us", tz="UTC")), "duration_ms": [float(h) for h in hours]}
    )


def test_write_table_partitions_by_hour_and_names_files_by_segment(tmp_path: Path) -> None:
    written = write_table(tmp_path, "requests", _rows(10, 11, 10), "local", 7)
    rel = sorted(str(p.relative_to(tmp_path)) for p in written)
    assert rel == [
        "requests/dt=2026-01-01/hr=10/local_0000000000000007_0000000000000007.parquet",
        "requests/dt=2026-01-01/hr=11/local_0000000000000007_0000000000000007.parquet",
    ]
    first = pq.read_table(written[0])
    assert first.schema.equals(REQUESTS, check_metadata=False)
    assert first.num_rows == 2


def test_rewriting_the_same_segment_is_idempotent(tmp_path: Path) -> None:
    write_table(tmp_path, "requests", _rows(10, 10), "local", 1)
    write_table(tmp_path, "requests", _rows(10, 10), "local", 1)  # replay after a crash
    files = visible_files(tmp_path, "requests")
    assert len(files) == 1
    assert pq.read_table(files[0]).num_rows == 2


def test_compacted_file_hides_the_files_it_covers(tmp_path: Path) -> None:
    for seq in (1, 2, 3):
        write_table(tmp_path, "requests", _rows(10), "local", seq)
    write_table(tmp_path, "requests", _rows(10, 10), "local", 1, 2)  # compaction of 1..2
    names = [p.name for p in visible_files(tmp_path, "requests")]
    assert names == [segment_file_name("local", 1, 2), segment_file_name("local", 3)]
    assert len(list_table_files(tmp_path, "requests")) == 4  # inputs still on disk (grace)


def test_other_nodes_are_never_hidden(tmp_path: Path) -> None:
    write_table(tmp_path, "requests", _rows(10), "local", 2)
    write_table(tmp_path, "requests", _rows(10), "import-ab12", 1, 5)
    assert len(visible_files(tmp_path, "requests")) == 2


def test_visible_files_prunes_by_window(tmp_path: Path) -> None:
    write_table(tmp_path, "requests", _rows(9, 10, 11), "local", 1)
    got = visible_files(
        tmp_path,
        "requests",
        datetime(2026, 1, 1, 10, 0, tzinfo=UTC),
        datetime(2026, 1, 1, 10, 59, tzinfo=UTC),
    )
    assert [p.parent.name for p in got] == ["hr=10"]


def test_temporary_files_are_not_visible(tmp_path: Path) -> None:
    write_table(tmp_path, "requests", _rows(10), "local", 1)
    part = visible_files(tmp_path, "requests")[0].parent
    (part / ".local_0000000000000002_0000000000000002.parquet.tmp-1").write_bytes(b"partial")
    assert len(visible_files(tmp_path, "requests")) == 1


def test_conform_fills_missing_columns_with_nulls() -> None:
    t = conform("requests", _rows(1))
    assert t.schema.names == TABLES["requests"].names
    assert t.column("source_workload").null_count == 1


def test_rows_without_time_are_rejected(tmp_path: Path) -> None:
    t = pa.table({"ts": pa.array([None], pa.timestamp("us", tz="UTC"))})
    with pytest.raises(ValueError, match=r"requests\.ts has 1 null values"):
        write_table(tmp_path, "requests", t, "local", 1)


def test_node_names_are_validated() -> None:
    assert check_node("collector-0") == "collector-0"
    with pytest.raises(ValueError, match="invalid store node name 'Bad_Name'"):
        check_node("Bad_Name")


def test_wal_segment_names_round_trip(tmp_path: Path) -> None:
    path = wal_segment_path(tmp_path, "local", 42)
    assert parse_wal_segment_name(path.name) == ("local", 42)
    assert parse_wal_segment_name("junk.wal") is None


def test_record_envelope_round_trip() -> None:
    rec = Record(RecordKind.ENVOY_ALS, 123, b"payload", b"ctx")
    assert Record.decode(rec.encode()) == rec
    with pytest.raises(ValueError, match="shorter than its header"):
        Record.decode(b"\x01")
