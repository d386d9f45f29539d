"""SQL sandbox escape suite, end to end through both surfaces: `meshlens sql` (exit code 2 for a
rejected query, 1 for a failed or interrupted one, message on stderr) and `POST /api/v1/sql` on
a real `meshlens serve` (400 rejected/failed, 408 interrupted). tests/analytics/test_sql.py
tests `run_query` itself; this checks what a user or a remote client actually gets."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from meshlens.cli import main
from meshlens.collector.store.parquet_write import write_table
from tests.collector.conftest import REPO, ServeProcess, _serve_env, http_post
from tests.reliability.harness import launch

FILE = r"file access outside the data directory is not allowed"
ONE_SELECT = r"Expected a single SELECT statement"
JSON_CT = {"Content-Type": "application/json"}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("sandbox")
    data = root / "data"
    t = pa.table(
        {
            "ts": pa.array(
                [datetime(2026, 11, 25, 10, m, tzinfo=UTC) for m in range(3)],
                pa.timestamp("us", tz="UTC"),
            ),
            "response_code": [200, 503, 200],
            "reporter": ["destination"] * 3,
        }
    )
    write_table(data, "requests", t, "test", 1)
    # a real Parquet file next to (not inside) the data directory: only the sandbox stops it
    pq.write_table(pa.table({"secret": ["outside"]}), root / "outside.parquet")
    (root / "outside.csv").write_text("secret\noutside\n")
    return data


@pytest.fixture(scope="module")
def api(store: Path) -> Iterator[ServeProcess]:
    sp = launch(store)
    yield sp
    if sp.proc.poll() is None:
        assert sp.stop() == 0, sp.log()[-3000:]


def cli(
    store: Path, sql: str, *flags: str, capsys: pytest.CaptureFixture[str]
) -> tuple[int, str, str]:
    rc = main(["sql", "--data-dir", str(store), *flags, sql])
    out, err = capsys.readouterr()
    return rc, out, err


def post(
    api: ServeProcess, body: dict[str, Any], timeout: float = 60.0
) -> tuple[int, dict[str, Any]]:
    status, raw, _ = http_post(
        api.api_url("/api/v1/sql"), json.dumps(body).encode(), JSON_CT, timeout=timeout
    )
    return status, json.loads(raw)


OUTSIDE = "{root}/outside"
ESCAPES: list[tuple[str, str, int]] = [  # (sql, message, CLI exit code)
    ("SELECT * FROM read_csv('/etc/passwd')", FILE, 2),
    ("SELECT * FROM read_csv_auto('/etc/passwd')", FILE, 2),
    ("SELECT * FROM read_text('/etc/passwd')", FILE, 2),
    ("SELECT * FROM read_blob('/etc/hostname')", FILE, 2),
    ("SELECT * FROM read_json_auto('/etc/os-release')", FILE, 2),
    ("SELECT * FROM glob('/*')", FILE, 2),
    ("SELECT * FROM glob('**')", FILE, 2),
    ("SELECT * FROM read_parquet('{root}/outside.parquet')", FILE, 2),
    ("SELECT * FROM read_parquet('{data}/../outside.parquet')", FILE, 2),
    ("SELECT * FROM read_csv('{data}/../outside.csv')", FILE, 2),
    ("SELECT * FROM parquet_metadata('{root}/outside.parquet')", FILE, 2),
    ("SELECT * FROM sniff_csv('/etc/passwd')", FILE, 2),
    ("SELECT * FROM read_csv('https://example.com/x.csv')", FILE, 2),
    ("SELECT * FROM duckdb_secrets()", FILE, 2),
    ("SELECT * FROM query('SELECT * FROM read_text(''/etc/passwd'')')", FILE, 2),
    ("SELECT * FROM '/etc/passwd'", r"does not exist", 1),
    ("COPY (SELECT 1) TO '{root}/copied.csv'", r"COPY statement not allowed", 2),
    ("COPY requests TO '{root}/copied.parquet' (FORMAT parquet)", r"COPY statement not allowed", 2),
    ("EXPORT DATABASE '{root}/exported'", r"EXPORT statement not allowed", 2),
    ("ATTACH '{root}/x.duckdb' AS x", r"ATTACH statement not allowed", 2),
    ("ATTACH ':memory:' AS m", r"ATTACH statement not allowed", 2),
    ("INSTALL httpfs", r"extensions cannot be installed or loaded", 2),
    ("LOAD httpfs", r"extensions cannot be installed or loaded", 2),
    ("SET enable_external_access = true", r"SET statement not allowed", 2),
    ("SET lock_configuration = false", r"SET statement not allowed", 2),
    ("RESET lock_configuration", r"statement not allowed", 2),
    ("PRAGMA enable_profiling", r"PRAGMA statement not allowed", 2),
    ("CALL pragma_version()", r"CALL statement not allowed", 2),
    ("CREATE TABLE t AS SELECT 1", r"CREATE statement not allowed", 2),
    ("CREATE MACRO m(x) AS x", r"statement not allowed", 2),
    ("INSERT INTO requests (reporter) VALUES ('x')", r"INSERT statement not allowed", 2),
    ("DROP VIEW requests", r"DROP statement not allowed", 2),
    ("SELECT 1; SELECT 2", r"2 statements given", 2),
    ("SELECT 1; COPY (SELECT 1) TO '{root}/x.csv'", r"2 statements given", 2),
    ("SELECT * FROM query('COPY (SELECT 1) TO ''{root}/q.csv''')", ONE_SELECT, 1),
    ("SELECT * FROM query('SET lock_configuration = false')", ONE_SELECT, 1),
    ("SELECT * FROM query('ATTACH '':memory:'' AS m')", ONE_SELECT, 1),
]


def _fill(sql: str, store: Path) -> str:
    return sql.format(root=store.parent, data=store)


@pytest.mark.parametrize(("sql", "match", "rc"), ESCAPES, ids=[e[0][:48] for e in ESCAPES])
def test_escape_is_refused_by_meshlens_sql(
    store: Path, sql: str, match: str, rc: int, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = cli(store, _fill(sql, store), capsys=capsys)
    assert code == rc, (out, err)
    assert "outside" not in out
    assert re.search(match, err), err
    assert "Traceback" not in err
    assert "root:" not in out + err and "secret" not in out
    _nothing_written(store)


@pytest.mark.parametrize(("sql", "match", "rc"), ESCAPES, ids=[e[0][:48] for e in ESCAPES])
def test_escape_is_refused_by_the_http_api(
    api: ServeProcess, store: Path, sql: str, match: str, rc: int
) -> None:
    status, body = post(api, {"sql": _fill(sql, store)})
    assert status == 400, body
    assert re.search(match, body["error"]), body
    assert "root:" not in json.dumps(body)
    _nothing_written(store)


def _nothing_written(store: Path) -> None:
    names = {p.name for p in store.parent.iterdir()}
    assert names <= {"data", "outside.parquet", "outside.csv", "data-serve.log"}, names


# ---- limits: rows, time, memory --------------------------------------------------------------


def test_large_result_is_capped_with_truncated(
    store: Path, api: ServeProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = cli(store, "SELECT * FROM range(5000000)", "--format", "csv", capsys=capsys)
    assert code == 0 and "truncated to 10000 rows" in err
    assert len(out.splitlines()) == 10001  # header + the default cap
    status, body = post(api, {"sql": "SELECT * FROM range(5000000)"})
    assert status == 200 and body["truncated"] is True and body["row_count"] == 1000
    status, body = post(api, {"sql": "SELECT * FROM range(5000000)", "max_rows": 10})
    assert status == 200 and body["truncated"] is True and body["row_count"] == 10


RUNAWAY = [
    "SELECT sum(a.range * b.range) FROM range(100000) a, range(100000) b",
    "WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r) SELECT count(*) FROM r",
]


@pytest.mark.parametrize("sql", RUNAWAY, ids=["cross-join", "recursive-cte"])
def test_runaway_query_is_interrupted(
    store: Path, api: ServeProcess, sql: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = cli(store, sql, "--timeout", "1s", capsys=capsys)
    assert code == 1 and "interrupted after the 1s time limit" in err, err
    status, body = post(api, {"sql": sql, "timeout": 1}, timeout=30)
    assert status == 408 and "time limit" in body["error"], body


def test_huge_memory_is_cut_by_the_memory_limit(
    store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = cli(
        store,
        "SELECT string_agg(repeat('x', 1000), ',') FROM range(5000000)",
        "--memory-limit",
        "256MB",
        capsys=capsys,
    )
    assert code == 1 and "Out of Memory" in err, err


def test_meshlens_sql_subprocess_exit_codes(store: Path) -> None:
    """The same through a real process: what a shell script sees."""
    env = {**_serve_env(None)}
    for sql, rc, needle in [
        ("SELECT * FROM read_text('/etc/passwd')", 2, "outside the data directory"),
        (RUNAWAY[0], 1, "time limit"),
    ]:
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "meshlens",
                "sql",
                "--data-dir",
                str(store),
                "--timeout",
                "1s",
                sql,
            ],
            capture_output=True,
            text=True,
            cwd=REPO,
            env=env,
            timeout=60,
        )
        assert out.returncode == rc, out.stderr
        assert needle in out.stderr and "Traceback" not in out.stderr


# ---- the API must not let a client lift the server's limits ----------------------------------


def test_api_client_cannot_lift_the_row_cap(api: ServeProcess) -> None:
    """`max_rows` from the request body is used as given (analytics/api.py `sql`): a client
    can ask for every row of any query; the server's cap (DEFAULT_MAX_ROWS) must hold."""
    status, body = post(api, {"sql": "SELECT * FROM range(20000)", "max_rows": 10**9})
    assert status == 400 or (body["row_count"] <= 10_000 and body["truncated"]), {
        k: v for k, v in body.items() if k != "rows"
    }


@pytest.mark.parametrize("timeout", ["inf", "nan", -1, 1e300])
def test_api_rejects_a_timeout_that_disables_the_time_limit(
    api: ServeProcess, timeout: object
) -> None:
    """ "timeout": "inf" / 1e300 crash the interrupt timer thread (OverflowError in
    threading.Timer): the query then runs with no time limit at all."""
    status, body = post(api, {"sql": "SELECT 1", "timeout": timeout})
    assert status == 400, body


def test_api_huge_max_rows_is_a_400_not_a_500(api: ServeProcess) -> None:
    status, body = post(api, {"sql": "SELECT 1", "max_rows": 1e300})
    assert status == 400, body
