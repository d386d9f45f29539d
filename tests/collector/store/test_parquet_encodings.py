"""The Parquet writer's per-column encodings, read back from the files' metadata: deltas for
times and integers, byte-stream-split for floats, dictionaries for repetitive strings; and the
rows read back unchanged (pyarrow and DuckDB)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from meshlens.collector.store.parquet_write import column_encodings, write_table
from meshlens.collector.store.schema import TABLES


def _spans(n: int) -> pa.Table:
    start = datetime(2026, 1, 1, 10, tzinfo=UTC).timestamp()
    cols: dict[str, list[object]] = {
        "trace_id": [f"{i:032x}" for i in range(n)],
        "span_id": [f"{i:016x}" for i in range(n)],
        "parent_span_id": [""] * n,
        "name": ["GET /api"] * n,
        "start_ts": [datetime.fromtimestamp(start + i / 1000, tz=UTC) for i in range(n)],
        "end_ts": [datetime.fromtimestamp(start + i / 1000 + 0.01, tz=UTC) for i in range(n)],
        "duration_ms": [10.0 + (i % 97) / 7 for i in range(n)],
        "service_name": [f"svc-{i % 3}" for i in range(n)],
        "http_status_code": [200 + (i % 2) * 300 for i in range(n)],
    }
    return pa.table(cols)


def _encodings(path: Path) -> dict[str, set[str]]:
    md = pq.ParquetFile(path).metadata
    out: dict[str, set[str]] = {}
    for rg in range(md.num_row_groups):
        for i in range(md.num_columns):
            col = md.row_group(rg).column(i)
            out.setdefault(col.path_in_schema, set()).update(col.encodings)
    return out


def test_column_encodings_by_type() -> None:
    spans = column_encodings("spans")
    assert spans["start_ts"] == spans["end_ts"] == "DELTA_BINARY_PACKED"
    assert spans["duration_ms"] == "BYTE_STREAM_SPLIT"
    assert "trace_id" not in spans  # strings stay PLAIN (zstd does the rest)
    req = column_encodings("requests")
    assert req["ts"] == "DELTA_BINARY_PACKED" and req["duration_ms"] == "BYTE_STREAM_SPLIT"
    # dictionary columns get no explicit encoding (pyarrow refuses both)
    assert "source_workload" not in req


def test_written_files_use_them_and_read_back(tmp_path: Path) -> None:
    data = _spans(5000)
    (path,) = write_table(tmp_path, "spans", data, "n", 1, fsync=False)
    enc = _encodings(path)
    assert "DELTA_BINARY_PACKED" in enc["start_ts"]
    assert "DELTA_BINARY_PACKED" in enc["end_ts"]
    assert "BYTE_STREAM_SPLIT" in enc["duration_ms"]
    assert "RLE_DICTIONARY" in enc["service_name"]
    assert "RLE_DICTIONARY" not in enc["trace_id"]
    back = pq.read_table(path)
    assert back.schema.equals(TABLES["spans"])
    assert back.column("duration_ms").to_pylist() == data.column("duration_ms").to_pylist()
    assert back.column("start_ts").to_pylist() == data.column("start_ts").to_pylist()
    with duckdb.connect() as conn:
        (got,) = conn.execute(f"SELECT count(*), sum(duration_ms) FROM '{path}'").fetchall()
    assert got[0] == 5000
    assert abs(got[1] - sum(data.column("duration_ms").to_pylist())) < 1e-6
