"""The window's paired traffic, materialized once for a page's loaders, answers exactly as the
`traffic` view over the files does, inside the window and inside a narrower range of it."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import duckdb
import pytest

from meshlens.analytics.catalog import connect
from meshlens.analytics.window import TimeWindow
from meshlens.dashboards.data import common

QUERY = """SELECT destination_workload, source_workload, count(*) AS n,
                  round(sum(duration_ms), 3) AS d, count(*) FILTER (WHERE paired) AS paired
           FROM traffic GROUP BY ALL ORDER BY ALL"""
EDGES = "SELECT * FROM edges ORDER BY ALL"


def _window(ddir: Path) -> common.Window:
    conn = connect(ddir)
    try:
        last = conn.execute("SELECT max(ts) FROM requests").fetchall()[0][0]
    finally:
        conn.close()
    return common.Window.ending(last + timedelta(seconds=1), 1800)


def _rows(conn: duckdb.DuckDBPyConnection, sql: str) -> list[tuple[object, ...]]:
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


@pytest.mark.parametrize("narrow", [False, True])
def test_materialized_traffic_answers_as_the_files(seeded_dir: Path, narrow: bool) -> None:
    window = _window(seeded_dir)
    tw = window.tw
    sub = TimeWindow(tw.start + timedelta(minutes=5), tw.end - timedelta(minutes=5))
    bounds = sub if narrow else tw
    assert common._window_traffic(str(seeded_dir), window) is not None  # it fits: materialized
    fast = common.traffic_connection(str(seeded_dir), window, sub if narrow else None)
    plain = connect(seeded_dir, bounds)
    assert _rows(fast, QUERY) == _rows(plain, QUERY)
    fast = common.traffic_connection(str(seeded_dir), window, sub if narrow else None)
    plain = connect(seeded_dir, bounds)
    expected = _rows(plain, EDGES)
    assert expected and _rows(fast, EDGES) == expected


def test_a_window_too_large_to_keep_reads_the_files(
    seeded_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(common, "MAX_MATERIALIZED_REPORTS", 10)
    window = _window(seeded_dir)
    common._window_traffic.clear()
    assert common._window_traffic(str(seeded_dir), window) is None
    fast = common.traffic_connection(str(seeded_dir), window)
    assert _rows(fast, QUERY) == _rows(connect(seeded_dir, window.tw), QUERY)
    common._window_traffic.clear()
