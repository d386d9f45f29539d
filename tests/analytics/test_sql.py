"""The SQL sandbox: one SELECT, DuckDB's guards, timeout, row cap (every escape tried)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from meshlens.analytics.errors import QueryError, QueryRejected, QueryTimeout
from meshlens.analytics.sql import run_query
from meshlens.analytics.window import TimeWindow
from meshlens.cli import main
from meshlens.collector.store.parquet_write import write_table

T0 = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)


@pytest.fixture
def store(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    rows = pa.table(
        {
            "ts": pa.array(
                [datetime(2026, 11, 25, 10, m, tzinfo=UTC) for m in range(5)]
                + [datetime(2026, 11, 25, 11, 30, tzinfo=UTC)],
                pa.timestamp("us", tz="UTC"),
            ),
            "duration_ms": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
            "reporter": ["destination"] * 6,
            "protocol": ["http"] * 6,
            "response_code": [200, 200, 503, 200, 404, 200],
            "request_id": [f"r{i}" for i in range(6)],
        }
    )
    write_table(data, "requests", rows, "test", 1)
    return data


def test_select_returns_columns_rows_and_elapsed(store: Path) -> None:
    r = run_query(store, "SELECT response_code, count(*) AS n FROM requests GROUP BY 1 ORDER BY 1")
    assert r.columns == ("response_code", "n")
    assert r.rows == ((200, 4), (404, 1), (503, 1))
    assert r.truncated is False
    assert r.elapsed_s > 0


def test_every_table_and_derived_view_exists_even_without_files(tmp_path: Path) -> None:
    for view in ("requests", "spans", "metrics", "logs", "verdicts", "traffic", "edges", "signals"):
        assert run_query(tmp_path, f"SELECT count(*) FROM {view}").rows == ((0,),)
    cols = run_query(tmp_path, "SELECT * FROM spans").columns
    assert "parent_span_id" in cols and "attributes" in cols


def test_row_cap_sets_truncated(store: Path) -> None:
    r = run_query(store, "SELECT * FROM range(100)", max_rows=7)
    assert len(r.rows) == 7 and r.truncated
    exact = run_query(store, "SELECT * FROM range(7)", max_rows=7)
    assert len(exact.rows) == 7 and not exact.truncated


def test_window_filters_rows(store: Path) -> None:
    w = TimeWindow(T0, datetime(2026, 11, 25, 10, 3, tzinfo=UTC))
    assert run_query(store, "SELECT count(*) FROM requests", window=w).rows == ((3,),)


def test_timeout_interrupts_a_long_query(store: Path) -> None:
    with pytest.raises(QueryTimeout, match=r"interrupted after the 0\.5s time limit") as ei:
        run_query(
            store, "SELECT count(*) FROM range(10000000000) t(a) WHERE a % 7 = 1", timeout_s=0.5
        )
    assert ei.value.timeout_s == 0.5


@pytest.mark.parametrize(
    ("sql", "match"),
    [
        ("SELECT 1; SELECT 2", r"2 statements given"),
        ("COPY (SELECT 1) TO '/tmp/x.csv'", r"COPY statement not allowed"),
        ("COPY requests FROM '/etc/passwd'", r"COPY statement not allowed"),
        ("EXPORT DATABASE '/tmp/x'", r"EXPORT statement not allowed"),
        ("ATTACH '/tmp/x.db' AS x", r"ATTACH statement not allowed"),
        ("INSTALL httpfs", r"LOAD statement not allowed: extensions cannot be"),
        ("LOAD httpfs", r"LOAD statement not allowed: extensions cannot be"),
        ("SET enable_external_access = true", r"SET statement not allowed"),
        ("RESET lock_configuration", r"statement not allowed"),
        ("PRAGMA enable_profiling", r"PRAGMA statement not allowed"),
        ("CREATE TABLE t AS SELECT 1", r"CREATE statement not allowed"),
        ("INSERT INTO requests (reporter) VALUES ('x')", r"INSERT statement not allowed"),
        ("DELETE FROM requests", r"DELETE statement not allowed"),
        ("DROP VIEW requests", r"DROP statement not allowed"),
        ("CALL pragma_version()", r"CALL statement not allowed"),
        ("", r"empty query"),
        ("SELECT * FROM read_csv('/etc/passwd')", r"file access outside the data directory"),
        ("SELECT * FROM read_text('/etc/passwd')", r"file access outside the data directory"),
        ("SELECT * FROM read_blob('/etc/hostname')", r"file access outside the data directory"),
        ("SELECT * FROM glob('/etc/*')", r"file access outside the data directory"),
        ("SELECT * FROM read_parquet('/tmp/../etc/x.parquet')", r"file access outside"),
    ],
)
def test_sandbox_rejects(store: Path, sql: str, match: str) -> None:
    with pytest.raises(QueryRejected, match=match):
        run_query(store, sql)


def test_replacement_scans_of_paths_find_nothing(store: Path) -> None:
    with pytest.raises(QueryError, match=r"/etc/passwd does not exist"):
        run_query(store, "SELECT * FROM '/etc/passwd'")


def test_configuration_is_locked_and_external_access_off(store: Path) -> None:
    r = run_query(
        store,
        "SELECT name, value FROM duckdb_settings() WHERE name IN "
        "('lock_configuration', 'enable_external_access', 'autoload_known_extensions', "
        "'autoinstall_known_extensions') ORDER BY name",
    )
    assert dict(r.rows) == {
        "autoinstall_known_extensions": "false",
        "autoload_known_extensions": "false",
        "enable_external_access": "false",
        "lock_configuration": "true",
    }


def test_files_inside_the_data_dir_stay_readable(store: Path) -> None:
    pattern = f"{store}/requests/*/*/*.parquet"
    assert run_query(store, f"SELECT count(*) FROM read_parquet('{pattern}')").rows == ((6,),)


def test_syntax_error_is_a_query_error(store: Path) -> None:
    with pytest.raises(QueryError, match=r"syntax error"):
        run_query(store, "SELEC 1")
    with pytest.raises(QueryError, match=r"no_such_table"):
        run_query(store, "SELECT * FROM no_such_table")


def test_cli_json_is_an_array_of_row_objects(
    store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = main(
        [
            "sql",
            "--data-dir",
            str(store),
            "--format",
            "json",
            "SELECT response_code AS code, count(*) AS n FROM requests GROUP BY 1 ORDER BY 1",
        ]
    )
    assert rc == 0
    assert json.loads(capsys.readouterr().out) == [
        {"code": 200, "n": 4},
        {"code": 404, "n": 1},
        {"code": 503, "n": 1},
    ]


def test_cli_table_csv_and_window(store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sql", "--data-dir", str(store), "SELECT count(*) AS n FROM requests"]) == 0
    assert capsys.readouterr().out.split() == ["n", "-", "6"]
    assert (
        main(
            [
                "sql",
                "--data-dir",
                str(store),
                "--format",
                "csv",
                "--from",
                "2026-11-25T11:00:00Z",
                "SELECT count(*) AS n FROM requests",
            ]
        )
        == 0
    )
    assert capsys.readouterr().out == "n\n1\n"
    assert (
        main(
            [
                "sql",
                "--data-dir",
                str(store),
                "--format",
                "csv",
                "--from",
                "2026-11-25T10:00:00Z",
                "--to",
                "2026-11-25T10:02:00Z",
                "SELECT count(*) AS n FROM requests",
            ]
        )
        == 0
    )
    assert capsys.readouterr().out == "n\n2\n"


def test_cli_max_rows_and_parquet_output(
    store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "o.parquet"
    rc = main(
        [
            "sql",
            "--data-dir",
            str(store),
            "--format",
            "parquet",
            "--max-rows",
            "2",
            "--output",
            str(out),
            "SELECT * FROM requests ORDER BY ts",
        ]
    )
    assert rc == 0
    assert "truncated to 2 rows" in capsys.readouterr().err
    t = pq.read_table(out)
    assert t.num_rows == 2 and "destination_workload" in t.column_names


def test_cli_exit_codes(store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sql", "--data-dir", str(store), "DROP VIEW requests"]) == 2
    assert "DROP statement not allowed" in capsys.readouterr().err
    assert (
        main(
            [
                "sql",
                "--data-dir",
                str(store),
                "--timeout",
                "200ms",
                "SELECT count(*) FROM range(10000000000) t(a) WHERE a % 7 = 1",
            ]
        )
        == 1
    )
    assert "time limit" in capsys.readouterr().err
