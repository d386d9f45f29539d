from __future__ import annotations

import os
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa

from meshlens.collector.store.compaction import compact_node
from meshlens.collector.store.layout import list_table_files, visible_files
from meshlens.collector.store.parquet_write import write_table
from meshlens.collector.store.retention import expire
from meshlens.collector.store.store import Store, StoreOptions
from tests.collector.store.fake_decoder import DECODERS, KIND
from tests.collector.store.rows import bodies

HOUR = datetime(2026, 1, 2, 3, tzinfo=UTC)
T0 = HOUR.timestamp()
LATER = T0 + 10 * 3600  # well past the partition's end


def _rows(ids: list[str], when: datetime = HOUR) -> pa.Table:
    ts = int(when.timestamp() * 1e6)
    return pa.table(
        {
            "ts": pa.array([ts + i for i in range(len(ids))], pa.int64()).cast(
                pa.timestamp("us", tz="UTC")
            ),
            "body": ids,
            "service_name": ["t"] * len(ids),
        }
    )


def _write(d: Path, seq: int, node: str = "local", when: datetime = HOUR) -> None:
    write_table(d, "logs", _rows([f"{node}{seq}a", f"{node}{seq}b"], when), node, seq)


def _names(d: Path) -> list[str]:
    return [p.name for p in visible_files(d, "logs")]


def test_compaction_merges_and_hides_inputs_then_deletes_them(tmp_path: Path) -> None:
    for seq in range(1, 6):
        _write(tmp_path, seq)
    before = Counter(bodies(tmp_path))
    res = compact_node(tmp_path, "local", now=LATER, compact_after=60, below_seq=100, grace=60)
    assert (res.outputs, res.inputs, res.deleted) == (1, 5, 0)
    assert _names(tmp_path) == ["local_0000000000000001_0000000000000005.parquet"]
    assert Counter(bodies(tmp_path)) == before
    assert len(list_table_files(tmp_path, "logs")) == 6  # inputs kept for running queries
    # Inside the grace period nothing is deleted; after it the inputs go.
    out = visible_files(tmp_path, "logs")[0]
    os.utime(out, (LATER - 30, LATER - 30))
    res = compact_node(tmp_path, "local", now=LATER, compact_after=60, below_seq=100, grace=60)
    assert res.deleted == 0
    os.utime(out, (LATER - 61, LATER - 61))
    res = compact_node(tmp_path, "local", now=LATER, compact_after=60, below_seq=100, grace=60)
    assert (res.outputs, res.deleted) == (0, 5)
    assert [f.path for f in list_table_files(tmp_path, "logs")] == [out]
    assert Counter(bodies(tmp_path)) == before


def test_compaction_never_spans_a_segment_still_in_the_wal(tmp_path: Path) -> None:
    for seq in (1, 2, 3, 5, 6):
        _write(tmp_path, seq)
    # Segment 4 is still in the WAL: its file would be hidden by a 1..6 file.
    compact_node(tmp_path, "local", now=LATER, compact_after=60, below_seq=4, grace=60)
    assert _names(tmp_path) == [
        "local_0000000000000001_0000000000000003.parquet",
        "local_0000000000000005_0000000000000005.parquet",
        "local_0000000000000006_0000000000000006.parquet",
    ]
    _write(tmp_path, 4)  # converted later: must be visible
    assert "local4a" in bodies(tmp_path)
    compact_node(tmp_path, "local", now=LATER, compact_after=60, below_seq=7, grace=60)
    assert _names(tmp_path) == ["local_0000000000000001_0000000000000006.parquet"]
    assert sorted(bodies(tmp_path)) == sorted(f"local{s}{x}" for s in range(1, 7) for x in "ab")


def test_late_data_is_merged_into_the_next_compaction(tmp_path: Path) -> None:
    _write(tmp_path, 1)
    _write(tmp_path, 2)
    compact_node(tmp_path, "local", now=LATER, compact_after=60, below_seq=100, grace=0)
    _write(tmp_path, 9)  # late rows for the same hour
    compact_node(tmp_path, "local", now=LATER, compact_after=60, below_seq=100, grace=0)
    assert _names(tmp_path) == ["local_0000000000000001_0000000000000009.parquet"]
    assert Counter(bodies(tmp_path)) == Counter(
        ["local1a", "local1b", "local2a", "local2b", "local9a", "local9b"]
    )


def test_young_partitions_and_other_nodes_are_left_alone(tmp_path: Path) -> None:
    _write(tmp_path, 1)
    _write(tmp_path, 2)
    _write(tmp_path, 3, node="gate")
    _write(tmp_path, 4, node="gate")
    res = compact_node(
        tmp_path, "local", now=T0 + 3600 + 30, compact_after=60, below_seq=100, grace=0
    )
    assert res.outputs == 0
    res = compact_node(tmp_path, "local", now=LATER, compact_after=60, below_seq=100, grace=0)
    assert res.outputs == 1
    assert sorted(_names(tmp_path)) == [
        "gate_0000000000000003_0000000000000003.parquet",
        "gate_0000000000000004_0000000000000004.parquet",
        "local_0000000000000001_0000000000000002.parquet",
    ]


def test_size_target_splits_outputs(tmp_path: Path) -> None:
    for seq in range(1, 7):
        _write(tmp_path, seq)
    size = visible_files(tmp_path, "logs")[0].stat().st_size
    compact_node(
        tmp_path,
        "local",
        now=LATER,
        compact_after=60,
        below_seq=100,
        grace=0,
        target_bytes=size * 3,
    )
    assert _names(tmp_path) == [
        "local_0000000000000001_0000000000000003.parquet",
        "local_0000000000000004_0000000000000006.parquet",
    ]
    assert len(bodies(tmp_path)) == 12


def test_retention_deletes_old_partitions_only(tmp_path: Path) -> None:
    old = datetime(2026, 1, 1, 5, tzinfo=UTC)
    new = datetime(2026, 1, 9, 5, tzinfo=UTC)
    _write(tmp_path, 1, when=old)
    _write(tmp_path, 2, when=new)
    stale_tmp = tmp_path / "logs" / "dt=2026-01-09" / "hr=05" / ".x.parquet.tmp-1"
    stale_tmp.write_bytes(b"junk")
    os.utime(stale_tmp, (0, 0))
    now = datetime(2026, 1, 9, 6, 30, tzinfo=UTC).timestamp()
    assert expire(tmp_path, now=now, retention=7 * 86400) == 1
    assert bodies(tmp_path) == ["local2a", "local2b"]
    assert not (tmp_path / "logs" / "dt=2026-01-01").exists()
    assert not stale_tmp.exists()
    assert expire(tmp_path, now=now, retention=7 * 86400) == 0


def test_store_maintenance_compacts_converted_segments(tmp_path: Path) -> None:
    ts_us = int(HOUR.timestamp() * 1e6)
    opts = StoreOptions(
        decode_workers=0,
        decoders=DECODERS,
        maintenance_interval=3600,
        compact_after=60,
        compact_grace=0,
        retention=0,
    )
    with Store(tmp_path, opts) as s:
        for i in range(4):
            s.append(KIND, f"m{i}@{ts_us + i}".encode())
            assert s.wait_converted(30)
        assert len(visible_files(tmp_path, "logs")) == 4
        s.append(KIND, b"current")  # a segment still in the WAL blocks nothing older
        s.maintain()
        assert len(visible_files(tmp_path, "logs")) == 1 + (bodies(tmp_path).count("current"))
        s.maintain()
        st = s.stats()
        assert (st.compactions, st.files_compacted, st.files_deleted) == (1, 4, 4)
        assert s.wait_converted(30)
    assert sorted(bodies(tmp_path)) == ["current", "m0", "m1", "m2", "m3"]


def test_readers_never_see_duplicates_or_lose_rows_during_ingest_and_compaction(
    tmp_path: Path,
) -> None:
    """A reader lists visible files and scans them with DuckDB while records are appended
    (old timestamps, so their partition is compactable) and compaction runs: every scan sees
    each row at most once, and never fewer rows than the scan before."""
    import threading

    import duckdb

    ts_us = int(HOUR.timestamp() * 1e6)
    opts = StoreOptions(
        decode_workers=0,
        decoders=DECODERS,
        maintenance_interval=3600,
        compact_after=0,
        compact_grace=60,
        retention=0,
        flush_interval=0.02,
    )
    stop = threading.Event()
    seen: list[tuple[int, int]] = []
    errors: list[BaseException] = []

    def read() -> None:
        con = duckdb.connect()
        while not stop.is_set():
            try:
                files = [str(p) for p in visible_files(tmp_path, "logs")]
                if files:
                    n, d = con.execute(
                        "select count(*), count(distinct body) from read_parquet(?)", [files]
                    ).fetchone()  # type: ignore[misc]
                    seen.append((n, d))
            except BaseException as exc:
                errors.append(exc)
                return

    with Store(tmp_path, opts) as s:
        reader = threading.Thread(target=read)
        reader.start()
        for i in range(300):
            s.append(KIND, f"c{i}@{ts_us + i}".encode())
            if i % 50 == 49:
                s.maintain()
        assert s.wait_converted(30)
        s.maintain()
        stop.set()
        reader.join(30)
        assert s.stats().compactions >= 1
    assert not errors, errors
    assert seen and all(n == d for n, d in seen), "a scan counted a row twice"
    counts = [n for n, _ in seen]
    assert counts == sorted(counts), "a scan saw fewer rows than an earlier one"
    assert Counter(bodies(tmp_path)) == Counter(f"c{i}" for i in range(300))
