"""Issue 18, item 11: SQL spill files stay in the data directory, capped, and unreadable by SQL.

Before: DuckDB spilled to `.tmp` in the server's working directory, up to 90% of that disk, and
the sandbox allowed the whole data directory, which DuckDB's temp directory would sit in.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from meshlens.analytics.errors import QueryError, QueryRejected
from meshlens.analytics.sql import TEMP_DIR_NAME, run_query


@pytest.fixture
def store(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    part = data / "requests" / "dt=2026-11-25" / "hr=10"
    part.mkdir(parents=True)
    pq.write_table(pa.table({"request_id": ["a", "b"]}), part / "local_0_0.parquet")
    return data


@pytest.fixture
def planted(store: Path) -> Path:
    """A file in the spill root, as another query's spill would be, and one in the WAL dir."""
    other = store / TEMP_DIR_NAME / "w123" / "q-other"
    other.mkdir(parents=True)
    (other / "secret.csv").write_text("a,b\n1,2\n")
    (store / TEMP_DIR_NAME / "secret.csv").write_text("a,b\n1,2\n")
    (store / "wal").mkdir()
    (store / "wal" / "secret.csv").write_text("a,b\n1,2\n")
    return store


def test_spill_directory_is_private_under_the_data_dir(
    store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    r = run_query(store, "SELECT current_setting('temp_directory') AS d", temp_limit="123MiB")
    spill = Path(r.rows[0][0])
    assert spill.parent == (store / TEMP_DIR_NAME).resolve()
    assert spill.name.startswith("q-")
    limit = run_query(store, "SELECT current_setting('max_temp_directory_size')", temp_limit="1GiB")
    assert limit.rows[0][0] == "1.0 GiB"


def test_spill_directory_root_can_be_chosen(store: Path, tmp_path: Path) -> None:
    root = tmp_path / "data" / TEMP_DIR_NAME / "w42"
    r = run_query(store, "SELECT current_setting('temp_directory')", temp_root=root)
    assert Path(r.rows[0][0]).parent == root.resolve()


def test_a_query_larger_than_memory_spills_into_the_data_dir_within_its_cap(
    store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    sort = "SELECT count(*) FROM (SELECT md5(i::VARCHAR) m FROM range(3000000) t(i) ORDER BY m)"
    assert run_query(store, sort, memory_limit="64MB", timeout_s=60).rows == ((3_000_000,),)
    assert not (tmp_path / ".tmp").exists()  # nothing in the working directory
    with pytest.raises(QueryError, match=r"max_temp_directory_size"):
        run_query(store, sort, memory_limit="64MB", temp_limit="1MiB", timeout_s=60)
    # DuckDB removes a query's spill directory when the query's connection closes.
    assert not list((store / TEMP_DIR_NAME).glob("q-*/*"))


@pytest.mark.parametrize(
    "query",
    [
        "SELECT * FROM read_csv('{data}/.tmp-query/secret.csv')",
        "SELECT * FROM read_csv('{data}/.tmp-query/w123/q-other/secret.csv')",
        "SELECT * FROM glob('{data}/.tmp-query/*')",
        "SELECT * FROM glob('{data}/.tmp-query/**')",
        "SELECT * FROM glob('{data}/*')",
        "SELECT * FROM read_csv('{data}/wal/secret.csv')",
        "SELECT * FROM read_csv('{data}/requests/../.tmp-query/secret.csv')",
    ],
)
def test_sql_cannot_read_the_spill_directory(planted: Path, query: str) -> None:
    with pytest.raises(QueryRejected, match=r"file access outside the data directory"):
        run_query(planted, query.format(data=planted))


def test_store_tables_stay_readable(planted: Path) -> None:
    pattern = f"{planted}/requests/*/*/*.parquet"
    assert run_query(planted, f"SELECT count(*) FROM read_parquet('{pattern}')").rows == ((2,),)
