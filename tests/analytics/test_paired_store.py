"""Hours stored already paired (analytics/paired_store.py) must read exactly as the live SQL view
(analytics/pairing.py): same rows, same columns, each request once, stale or broken stored hours
ignored until maintenance stores them again."""

from __future__ import annotations

import math
import shutil
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from meshlens.analytics import paired_store
from meshlens.analytics.catalog import connect
from meshlens.analytics.pairing import CLIENT_DURATION_COLUMN, COLUMNS, PAIRED_COLUMN
from meshlens.analytics.pairing_frame import merge_expr, merge_pairs
from meshlens.analytics.window import TimeWindow
from meshlens.collector.store.parquet_write import write_table
from meshlens.collector.store.retention import expire
from meshlens.collector.store.schema import REQUESTS
from meshlens.synth import synthetic_requests
from tests.analytics.requests_factory import call, wl

H10 = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
H11, H12, H13 = H10 + timedelta(hours=1), H10 + timedelta(hours=2), H10 + timedelta(hours=3)
MS = timedelta(milliseconds=1)
# Covers every report; and one that starts and ends mid-hour.
ALL = TimeWindow(H10 - timedelta(hours=1), H13 + timedelta(hours=1))
MID = TimeWindow(H10 + timedelta(minutes=20), H12 + timedelta(minutes=40))
FAR_FUTURE = time.time() + 30 * 86400

PP = wl("default", "productpage-v1", "productpage", "v1")
DETAILS = wl("default", "details-v1", "details", "v1")
REVIEWS = wl("default", "reviews-v2", "reviews", "v2")
MONGO = wl("default", "mongodb-v1", "mongodb", "v1")


def _svc(name: str) -> str:
    return f"{name}.default.svc.cluster.local"


def _write_rows(data: Path, rows: list[dict[str, Any]], node: str, lo: int) -> list[Path]:
    cols = {f.name: [r.get(f.name) for r in rows] for f in REQUESTS}
    return write_table(data, "requests", pa.table(cols, schema=REQUESTS), node=node, lo=lo)


def _at(rows: list[dict[str, Any]], reporter: str) -> list[dict[str, Any]]:
    return [r for r in rows if r["reporter"] == reporter]


def _crossing() -> list[dict[str, Any]]:
    """A request whose client reports at 11:59:59.990 and whose server reports at
    12:00:00.010: the paired row's time (the server's) is in hour 12."""
    rows = call(PP, REVIEWS, _svc("reviews"), ids="cross")
    rows[0]["ts"] = H12 - 10 * MS  # source
    rows[1]["ts"] = H12 + 10 * MS  # destination
    return rows


def _edge_rows() -> list[dict[str, Any]]:
    rows = _crossing()
    # The other way round (clock skew): server 11:59:59.995, client 12:00:00.005 -> hour 11.
    skew = call(PP, DETAILS, _svc("details"), ids="skew")
    skew[0]["ts"], skew[1]["ts"] = H12 + 5 * MS, H12 - 5 * MS
    rows += skew
    # Retried: one client report, two server attempts with the same id.
    t = H10 + timedelta(minutes=30, milliseconds=123)
    retry = call(PP, DETAILS, _svc("details"), ids="retry", start=t)
    extra = _at(call(PP, DETAILS, _svc("details"), ids="retry", start=t), "destination")
    extra[0]["ts"] = t + 400 * MS
    extra[0]["duration_ms"] = 3.0
    rows += retry + extra
    # A key repeated on both sides (a hop made 3 times with one id), in time order.
    same = call(
        PP,
        REVIEWS,
        _svc("reviews"),
        n=3,
        ids="same",
        spacing_s=0.25,
        durations=[5.0, 6.0, 7.0],
        start=H11 + timedelta(minutes=1),
    )
    for r in same:
        r["request_id"] = "same"
    rows += same
    # The same, around the 11:00 boundary.
    same2 = call(
        PP,
        REVIEWS,
        _svc("reviews"),
        n=2,
        ids="same2",
        spacing_s=0.02,
        durations=[8.0, 9.0],
        start=H11 - 10 * MS,
    )
    for r in same2:
        r["request_id"] = "same2"
    rows += same2
    # No request id: TCP (server counts, client not); a client that never reached a proxy (UH,
    # id NULL) counts; a server alone without id counts; a client alone without id, known
    # destination and no flag does not count.
    rows += call(
        PP,
        MONGO,
        "mongodb.default.svc.cluster.local",
        protocol="tcp",
        start=H10 + timedelta(minutes=40),
    )
    uh = call(
        PP,
        wl("default", "unknown", "unknown", "unknown"),
        _svc("reviews"),
        flags="UH",
        code=503,
        reporters=("source",),
        start=H11 + timedelta(minutes=5),
    )
    uh[0]["request_id"] = None
    rows += uh
    lone_server = call(
        PP, REVIEWS, _svc("reviews"), reporters=("destination",), start=H11 + timedelta(minutes=6)
    )
    lone_server[0]["request_id"] = None
    rows += lone_server
    rows += call(
        PP,
        REVIEWS,
        _svc("reviews"),
        reporters=("source",),
        ids="",
        start=H11 + timedelta(minutes=7),
    )
    rows[-1]["request_id"] = ""
    # Id'd reports with one side only.
    rows += call(
        PP,
        REVIEWS,
        _svc("reviews"),
        reporters=("source",),
        ids="client-only",
        code=503,
        flags="UF",
        start=H11 + timedelta(minutes=8),
    )
    rows += call(
        wl("unknown", "unknown", "unknown", "unknown"),
        REVIEWS,
        _svc("reviews"),
        reporters=("destination",),
        ids="server-only",
        start=H11 + timedelta(minutes=9),
    )
    # Identity unknown ('unknown', '' or NULL) on one side or both.
    ident = call(PP, REVIEWS, _svc("reviews"), ids="ident", start=H12 + timedelta(minutes=3))
    ident[0].update(
        destination_workload="unknown",
        destination_version="",
        destination_canonical_service=None,
        source_principal="unknown",
    )
    ident[1].update(
        source_workload=None,
        source_namespace="",
        source_version="unknown",
        source_canonical_service="unknown",
        upstream_cluster="inbound|9080||",
    )
    rows += ident
    both = call(PP, REVIEWS, _svc("reviews"), ids="both", start=H12 + timedelta(minutes=4))
    both[0].update(source_version="", destination_version=None, upstream_cluster=None)
    both[1].update(source_version=None, destination_version="", upstream_cluster="")
    rows += both
    return rows


def _seed(data: Path, *, synth_n: int = 6000) -> Path:
    """Synthetic bookinfo over 10:00-13:00 in 4 files per hour (2 nodes; the two reports of a
    request often in different files) plus the hand-made edge cases in 2 more."""
    table = synthetic_requests(synth_n, start=H10, duration_s=3 * 3600 - 1, seed=7)
    idx = pa.array(range(table.num_rows))
    for k in range(4):
        part = table.filter(pa.compute.equal(pa.compute.bit_wise_and(idx, 3), k))
        write_table(data, "requests", part, node="a" if k % 2 == 0 else "b", lo=k + 1)
    edges = _edge_rows()
    _write_rows(data, _at(edges, "source"), node="edge", lo=1)
    _write_rows(data, _at(edges, "destination"), node="edge", lo=2)
    return data


def _traffic(data: Path, window: TimeWindow | None, sql: str = "SELECT * FROM traffic") -> Any:
    with connect(data, window) as conn:
        rel = conn.execute(sql)
        names = [d[0] for d in rel.description]
        return names, rel.fetchall()


def _key(v: Any) -> tuple[bool, str]:
    return (v is None, str(v))


def _split(names: list[str], rows: list[tuple[Any, ...]]) -> tuple[list[Any], list[Any]]:
    """Rows sorted by their full value; non-float columns as tuples, floats apart."""
    fl = [i for i, n in enumerate(names) if n in ("duration_ms", CLIENT_DURATION_COLUMN)]
    other = [i for i in range(len(names)) if i not in fl]
    keyed = sorted(
        rows, key=lambda r: tuple(_key(r[i]) for i in other) + tuple(_key(r[i]) for i in fl)
    )
    exact = [tuple(r[i] for i in other) for r in keyed]
    floats = [math.nan if r[i] is None else r[i] for r in keyed for i in fl]
    return exact, floats


def _assert_same(got: Any, want: Any) -> None:
    (gn, gr), (wn, wr) = got, want
    assert gn == wn
    assert len(gr) == len(wr)
    g_exact, g_fl = _split(gn, gr)
    w_exact, w_fl = _split(wn, wr)
    assert g_exact == w_exact
    assert g_fl == pytest.approx(w_fl, nan_ok=True)


def _live(data: Path, window: TimeWindow | None, tmp: Path) -> Any:
    """`traffic` as paired live from the same requests files (a copy without stored hours)."""
    copy = tmp / f"live-{time.monotonic_ns()}"
    shutil.copytree(data / "requests", copy / "requests")
    assert not (copy / "traffic").exists()
    return _traffic(copy, window)


def _types(data: Path, window: TimeWindow | None) -> list[tuple[str, str]]:
    with connect(data, window) as conn:
        return [(r[0], r[1]) for r in conn.execute("DESCRIBE SELECT * FROM traffic").fetchall()]


def _hour_path(data: Path, hour: datetime) -> Path:
    return paired_store.paired_path(data, hour)


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store seeded once and left all live (tests that store copy it first)."""
    return _seed(tmp_path_factory.mktemp("paired") / "data")


@pytest.fixture
def store(seeded: Path, tmp_path: Path) -> Path:
    data = tmp_path / "data"
    shutil.copytree(seeded, data)
    return data


# ---- 1. equivalence -------------------------------------------------------------------------


@pytest.mark.parametrize("window", [ALL, MID], ids=["all", "mid-hour"])
def test_stored_hours_read_exactly_as_the_live_pairing(store: Path, window: TimeWindow) -> None:
    assert paired_store.plan(store, window).stored == ()
    before = _traffic(store, window)
    types_before = _types(store, window)
    assert len(before[1]) > 1000
    assert {PAIRED_COLUMN, CLIENT_DURATION_COLUMN} <= set(before[0])

    assert paired_store.store_settled_hours(store, now=FAR_FUTURE, settle=0) == 3
    p = paired_store.plan(store, window)
    # Otherwise this test would compare the live view with itself.
    assert len(p.stored) + len(p.stored_partial) == 3
    if window is MID:
        assert p.live == ()
        assert len(p.stored) == 1 and len(p.stored_partial) == 2
    else:  # live only outside the data's hours
        assert p.live == ((ALL.start, H10), (H13, ALL.end))
    after = _traffic(store, window)
    _assert_same(after, before)
    assert _types(store, window) == types_before
    # A second pass finds everything current.
    assert paired_store.store_settled_hours(store, now=FAR_FUTURE, settle=0) == 0


def test_pair_hour_rows_match_the_sql_view_hour_by_hour(store: Path) -> None:
    files = paired_store.request_files(store)
    assert sorted(files) == [H10, H11, H12]
    for hour in sorted(files):
        table = paired_store.pair_hour(files, hour)
        assert table.schema.names == [*COLUMNS, PAIRED_COLUMN, CLIENT_DURATION_COLUMN]
        ts = table.column("ts").to_pylist()
        assert all(hour <= t < hour + timedelta(hours=1) for t in ts)
        # STORED_ORDER: minutes in order (row-group time statistics); in a minute, each edge's
        # rows in one run, in time order
        minutes = [t.replace(second=0, microsecond=0) for t in ts]
        assert minutes == sorted(minutes)
        names = list(paired_store.STORED_ORDER)
        rows = table.select(names).to_pylist()
        groups = [(m, tuple(r.values())) for m, r in zip(minutes, rows, strict=True)]
        runs = [g for i, g in enumerate(groups) if i == 0 or g != groups[i - 1]]
        assert len(runs) == len(set(runs)) < len(groups)
        for i in range(len(groups) - 1):
            if groups[i] == groups[i + 1]:
                assert ts[i] <= ts[i + 1]
        want = _traffic(store, TimeWindow(hour, hour + timedelta(hours=1)))
        with connect(store) as conn:
            conn.register("_t", table)
            rel = conn.execute("SELECT * FROM _t")
            got = [d[0] for d in rel.description], rel.fetchall()
        _assert_same(got, want)


def test_edge_cases_pair_as_the_rules_say_before_and_after_storing(store: Path) -> None:
    sql = (
        "SELECT request_id, reporter, paired, duration_ms, client_duration_ms FROM traffic "
        "WHERE request_id IN ('retry-0', 'same', 'same2', 'client-only-0', 'server-only-0') "
        "ORDER BY request_id, ts"
    )
    want = [
        ("client-only-0", "source", False, 11.0, 11.0),
        ("retry-0", "destination", True, 10.0, 11.0),
        ("retry-0", "destination", False, 3.0, None),
        ("same", "destination", True, 5.0, 6.0),
        ("same", "destination", True, 6.0, 7.0),
        ("same", "destination", True, 7.0, 8.0),
        ("same2", "destination", True, 8.0, 9.0),
        ("same2", "destination", True, 9.0, 10.0),
        ("server-only-0", "destination", False, 10.0, None),
    ]
    no_id = (
        "SELECT protocol, reporter, response_flags FROM traffic WHERE coalesce(request_id, '') = ''"
        " AND source_workload = 'productpage-v1' ORDER BY ALL"
    )
    no_id_want = [
        ("http", "destination", "-"),
        ("http", "source", "UH"),
        ("tcp", "destination", "-"),
    ]
    ident = (
        "SELECT source_workload, source_namespace, source_version, source_canonical_service, "
        "destination_workload, destination_version, destination_canonical_service, "
        "source_principal, upstream_cluster FROM traffic "
        "WHERE request_id IN ('ident-0', 'both-0') ORDER BY request_id"
    )
    ident_want = [
        (
            "productpage-v1",
            "default",
            "v1",
            "productpage",
            "reviews-v2",
            "v2",
            "reviews",
            "spiffe://cluster.local/ns/default/sa/productpage",
            "inbound|9080||",
        ),
        # Client '' and server NULL: the client's ''. Server '' and client NULL: ''.
        (
            "productpage-v1",
            "default",
            "",
            "productpage",
            "reviews-v2",
            "",
            "reviews",
            "spiffe://cluster.local/ns/default/sa/productpage",
            "",
        ),
    ]
    ident_want = [ident_want[1], ident_want[0]]  # 'both-0' < 'ident-0'
    for stored in (False, True):
        if stored:
            assert paired_store.store_settled_hours(store, now=FAR_FUTURE, settle=0) == 3
            assert len(paired_store.plan(store, ALL).stored) == 3
        assert _traffic(store, ALL, sql)[1] == want
        assert _traffic(store, ALL, no_id)[1] == no_id_want
        assert _traffic(store, ALL, ident)[1] == ident_want


# ---- 2. a request crossing an hour boundary ----------------------------------------------


def test_a_request_crossing_the_hour_is_counted_once_on_its_servers_side(store: Path) -> None:
    q = "SELECT count(*), bool_and(paired), min(ts) FROM traffic WHERE request_id = 'cross-0'"
    before_hr = TimeWindow(H10, H12)
    from_hr = TimeWindow(H12, H13)
    for stored in (False, True):
        if stored:
            paired_store.store_settled_hours(store, now=FAR_FUTURE, settle=0)
            assert len(paired_store.plan(store, ALL).stored) == 3
        assert _traffic(store, ALL, q)[1] == [(1, True, H12 + 10 * MS)]
        assert _traffic(store, before_hr, q)[1] == [(0, None, None)]
        assert _traffic(store, from_hr, q)[1] == [(1, True, H12 + 10 * MS)]
        # The skewed one: server at 11:59:59.995 -> counted before the boundary.
        skew = "SELECT count(*), bool_and(paired) FROM traffic WHERE request_id = 'skew-0'"
        assert _traffic(store, before_hr, skew)[1] == [(1, True)]
        assert _traffic(store, from_hr, skew)[1] == [(0, None)]
    # With hour 11 stored and hour 12 stale (paired live) it is still counted once. (A late
    # file at 12:30 touches only hour 12's stored range, so hour 11 stays stored.)
    _write_rows(
        store,
        call(PP, DETAILS, _svc("details"), ids="late", start=H12 + timedelta(minutes=30)),
        node="late",
        lo=1,
    )
    p = paired_store.plan(store, ALL)
    assert p.stored == (_hour_path(store, H10), _hour_path(store, H11))
    assert _traffic(store, ALL, q)[1] == [(1, True, H12 + 10 * MS)]


# ---- 3. staleness ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("late_at", "stale"),
    [
        (H11 + timedelta(minutes=9), [H11]),
        (H12 + timedelta(minutes=9), [H12]),
        # Within MARGIN of 12:00: its reports may pair with hour 12's, so both are stale.
        (H12 - timedelta(seconds=30), [H11, H12]),
    ],
    ids=["mid-hour", "next-hour", "at-the-boundary"],
)
def test_a_late_file_makes_the_stored_hours_it_touches_live_until_stored_again(
    store: Path, tmp_path: Path, late_at: datetime, stale: list[datetime]
) -> None:
    assert paired_store.store_settled_hours(store, now=FAR_FUTURE, settle=0) == 3
    count = "SELECT count(*) FROM traffic"
    n_before = _traffic(store, ALL, count)[1][0][0]
    # A late pair and a late server report alone (its client reported in time, in the store).
    late = call(PP, REVIEWS, _svc("reviews"), ids="late", start=late_at)
    late += _at(
        call(PP, REVIEWS, _svc("reviews"), ids="late2", start=late_at + timedelta(seconds=20)),
        "destination",
    )
    _write_rows(store, late, node="late", lo=1)
    p = paired_store.plan(store, ALL)
    stored_now = {_hour_path(store, h) for h in (H10, H11, H12) if h not in stale}
    assert set(p.stored) == stored_now
    assert not {_hour_path(store, h) for h in stale} & set(p.stored + p.stored_partial)
    assert _traffic(store, ALL, count)[1][0][0] == n_before + 2
    _assert_same(_traffic(store, ALL), _live(store, ALL, tmp_path))
    _assert_same(_traffic(store, MID), _live(store, MID, tmp_path))
    # Maintenance stores the stale hours again; the result is again the live pairing.
    assert paired_store.store_settled_hours(store, now=FAR_FUTURE, settle=0) == len(stale)
    assert len(paired_store.plan(store, ALL).stored) == 3
    _assert_same(_traffic(store, ALL), _live(store, ALL, tmp_path))
    _assert_same(_traffic(store, MID), _live(store, MID, tmp_path))


# ---- 4. the settle rule ----------------------------------------------------------------------


def _upto(data: Path, hour: datetime) -> datetime | None:
    return paired_store.stored_upto(data, paired_store.request_files(data), hour)


def test_an_hour_is_stored_as_far_as_it_settled_and_again_each_step(
    store: Path, tmp_path: Path
) -> None:
    # 12:30: hours 10 and 11 whole; hour 12, still being written, up to 12:29 (MARGIN before).
    now = H12 + timedelta(minutes=30)
    assert paired_store.store_settled_hours(store, now=now.timestamp(), settle=0) == 3
    assert [_upto(store, h) for h in (H10, H11, H12)] == [H11, H12, now - timedelta(minutes=1)]
    p = paired_store.plan(store, ALL)
    assert (now - timedelta(minutes=1), ALL.end) in p.live
    _assert_same(_traffic(store, ALL), _live(store, ALL, tmp_path))
    _assert_same(_traffic(store, MID), _live(store, MID, tmp_path))
    # Not a STEP later: nothing to do; a minute later the prefix grows.
    later = now + timedelta(seconds=30)
    assert paired_store.store_settled_hours(store, now=later.timestamp(), settle=0) == 0
    later = now + timedelta(minutes=1)
    assert paired_store.store_settled_hours(store, now=later.timestamp(), settle=0) == 1
    assert _upto(store, H12) == now
    # With settle = 10 min at 13:05, hour 12 reaches 12:54; the day after, all of it.
    now = H13 + timedelta(minutes=5)
    assert paired_store.store_settled_hours(store, now=now.timestamp(), settle=600) == 1
    assert _upto(store, H12) == H12 + timedelta(minutes=54)
    assert paired_store.store_settled_hours(store, now=FAR_FUTURE, settle=600) == 1
    assert _upto(store, H12) == H13
    _assert_same(_traffic(store, ALL), _live(store, ALL, tmp_path))


def test_new_reports_after_a_stored_prefix_leave_it_current(store: Path, tmp_path: Path) -> None:
    """The hour being written gets new files all the time: those with reports after the
    stored part (beyond MARGIN) do not make it stale; one with an older report does."""
    now = H12 + timedelta(minutes=30)
    assert paired_store.store_settled_hours(store, now=now.timestamp(), settle=0) == 3
    newer = call(PP, REVIEWS, _svc("reviews"), ids="new", start=H12 + timedelta(minutes=45))
    _write_rows(store, newer, node="new", lo=1)
    assert _upto(store, H12) == now - timedelta(minutes=1)
    _assert_same(_traffic(store, ALL), _live(store, ALL, tmp_path))
    older = call(PP, REVIEWS, _svc("reviews"), ids="old", start=H12 + timedelta(minutes=10))
    _write_rows(store, older, node="old", lo=1)
    assert _upto(store, H12) is None
    _assert_same(_traffic(store, ALL), _live(store, ALL, tmp_path))


# ---- 5. corrupt or foreign stored files ---------------------------------------------------


def test_a_corrupt_stored_hour_is_ignored_and_replaced(store: Path, tmp_path: Path) -> None:
    assert paired_store.store_settled_hours(store, now=FAR_FUTURE, settle=0) == 3
    bad = _hour_path(store, H11)
    bad.write_bytes(b"PAR1 this is not a parquet file at all" * 10)
    assert paired_store.stored_state(bad) is None
    assert bad not in paired_store.plan(store, ALL).stored
    _assert_same(_traffic(store, ALL), _live(store, ALL, tmp_path))
    _assert_same(_traffic(store, MID), _live(store, MID, tmp_path))
    assert paired_store.store_settled_hours(store, now=FAR_FUTURE, settle=0) == 1
    assert bad in paired_store.plan(store, ALL).stored
    _assert_same(_traffic(store, ALL), _live(store, ALL, tmp_path))


def test_a_stored_hour_with_another_digest_is_ignored_and_replaced(
    store: Path, tmp_path: Path
) -> None:
    assert paired_store.store_settled_hours(store, now=FAR_FUTURE, settle=0) == 3
    path = _hour_path(store, H11)
    good = paired_store.stored_state(path)
    assert good is not None
    # Made under other rules: fewer rows, another digest. Reading it would lose rows.
    table = pq.read_table(path)
    meta = dict(table.schema.metadata or {})
    meta[b"meshlens.paired_inputs"] = b"0" * 64
    table = table.slice(0, table.num_rows // 2).replace_schema_metadata(meta)
    pq.write_table(table, path)
    state = paired_store.stored_state(path)
    assert state is not None and state[0] == "0" * 64
    assert path not in paired_store.plan(store, ALL).stored
    _assert_same(_traffic(store, ALL), _live(store, ALL, tmp_path))
    assert paired_store.store_settled_hours(store, now=FAR_FUTURE, settle=0) == 1
    assert paired_store.stored_state(path) == good
    assert path in paired_store.plan(store, ALL).stored
    _assert_same(_traffic(store, ALL), _live(store, ALL, tmp_path))


# ---- 6. orphans and retention --------------------------------------------------------------


def _part(data: Path, table: str, hour: datetime) -> Path:
    return data / table / f"dt={hour:%Y-%m-%d}" / f"hr={hour:%H}"


def test_a_stored_hour_without_requests_is_removed(store: Path, tmp_path: Path) -> None:
    assert paired_store.store_settled_hours(store, now=FAR_FUTURE, settle=0) == 3
    shutil.rmtree(_part(store, "requests", H10))
    assert paired_store.store_settled_hours(store, now=FAR_FUTURE, settle=0) == 1  # hour 11
    assert not _hour_path(store, H10).exists()
    assert _hour_path(store, H11).exists() and _hour_path(store, H12).exists()
    _assert_same(_traffic(store, ALL), _live(store, ALL, tmp_path))


def test_retention_expires_stored_hours_too(store: Path) -> None:
    assert paired_store.store_settled_hours(store, now=FAR_FUTURE, settle=0) == 3
    # Everything that ended by 11:00 is older than the retention.
    removed = expire(store, now=(H11 + timedelta(hours=1)).timestamp(), retention=3600)
    assert removed == 2  # requests and traffic of hour 10
    assert not _part(store, "traffic", H10).exists()
    assert not _part(store, "requests", H10).exists()
    assert _hour_path(store, H11).exists() and _hour_path(store, H12).exists()


# ---- 7. no window ------------------------------------------------------------------------


def test_no_window_counts_as_an_all_covering_window(store: Path) -> None:
    count = "SELECT count(*), count(*) FILTER (WHERE paired) FROM traffic"
    live_all = _traffic(store, ALL, count)[1]
    assert _traffic(store, None, count)[1] == live_all
    assert paired_store.store_settled_hours(store, now=FAR_FUTURE, settle=0) == 3
    assert len(paired_store.plan(store, None).stored) == 3
    assert _traffic(store, None, count)[1] == live_all
    assert _traffic(store, ALL, count)[1] == live_all
    _assert_same(_traffic(store, None), _traffic(store, ALL))


# ---- 8. the merge rules on polars -----------------------------------------------------------


def test_merge_expr_takes_each_column_from_the_side_that_knows_it() -> None:
    frame = pl.DataFrame(
        {
            "d": ["unknown", "", None, "srv", None, "srv", "unknown"],
            "s": ["cli", "cli", "cli", "cli", None, "", None],
            "d_present": [True, True, True, True, True, True, False],
        }
    )

    def merged(column: str) -> list[Any]:
        return frame.select(merge_expr(column)).to_series().to_list()

    # Source first: the client's when known, else coalesce(server, client).
    assert merged("source_workload") == ["cli", "cli", "cli", "cli", None, "srv", "unknown"]
    # Server known first: the server's when known, else coalesce(client, server).
    assert merged("destination_workload") == ["cli", "cli", "cli", "srv", None, "srv", "unknown"]
    # Measurements: the server's whenever it has a report, known or not.
    assert merged("response_flags") == ["unknown", "", None, "srv", None, "srv", None]
    # The key: either side.
    assert merged("request_id") == ["unknown", "", "cli", "srv", None, "srv", "unknown"]


def test_merge_pairs_gathers_and_merges_by_the_pair_index() -> None:
    # Rows: 0 server, 1 client (a pair); 2 client alone; 3 server alone.
    rows: dict[str, list[Any]] = {name: [None] * 4 for name in COLUMNS}
    rows["reporter"] = ["destination", "source", "source", "destination"]
    rows["duration_ms"] = [10.0, 11.0, 2.0, None]
    rows["source_workload"] = ["unknown", "productpage-v1", "", None]
    rows["destination_workload"] = ["reviews-v2", "unknown", "unknown", ""]
    rows["destination_version"] = ["", "v1", None, "v3"]
    rows["response_flags"] = [None, "-", "UH", "-"]
    rows["request_id"] = ["r1", "r1", "r2", None]
    frame = pl.DataFrame(
        rows, schema={f.name: pl.String for f in REQUESTS} | {"duration_ms": pl.Float64}
    )

    out = merge_pairs(
        frame.get_column,
        pl.Series("di", [0, None, 3], dtype=pl.Int64),
        pl.Series("si", [1, 2, None], dtype=pl.Int64),
    )
    assert out.columns == [*COLUMNS, PAIRED_COLUMN, CLIENT_DURATION_COLUMN]
    got = out.select(
        "reporter",
        "source_workload",
        "destination_workload",
        "destination_version",
        "response_flags",
        "request_id",
        PAIRED_COLUMN,
    ).rows()
    assert got == [
        ("destination", "productpage-v1", "reviews-v2", "v1", None, "r1", True),
        ("source", "", "unknown", None, "UH", "r2", False),
        ("destination", None, "", "v3", "-", None, False),
    ]
    durations = out.get_column("duration_ms").to_list()
    assert durations[:2] == pytest.approx([10.0, 2.0]) and durations[2] is None
    clients = out.get_column(CLIENT_DURATION_COLUMN).to_list()
    assert clients[:2] == pytest.approx([11.0, 2.0]) and clients[2] is None


# ---- schema evolution ----------------------------------------------------------------------


def test_an_hour_with_a_file_older_than_the_schema_is_stored_as_read_live(
    store: Path,
) -> None:
    # A requests file written before a column existed (no `authority`, `destination_port`):
    # the live view fills NULLs (union_by_name), and so must the stored pairing's column reads.
    rows = call(PP, REVIEWS, _svc("reviews"), ids="old", start=H10 + timedelta(minutes=20))
    old_schema = pa.schema([f for f in REQUESTS if f.name not in ("authority", "destination_port")])
    table = pa.table({f.name: [r.get(f.name) for r in rows] for f in old_schema}, schema=old_schema)
    part = store / "requests" / f"dt={H10:%Y-%m-%d}" / f"hr={H10:%H}"
    pq.write_table(table, part / "0old_0000000000000001_0000000000000001.parquet")
    before = _traffic(store, ALL)
    assert paired_store.store_settled_hours(store, now=FAR_FUTURE, settle=0) == 3
    assert len(paired_store.plan(store, ALL).stored) == 3
    _assert_same(_traffic(store, ALL), before)


def test_meshlens_sql_reads_the_stored_hours_inside_its_sandbox(store: Path) -> None:
    """The SQL sandbox lets queries read the table directories only: the stored hours'
    directory must be readable too, or every query on `traffic` is rejected."""
    from meshlens.analytics.sql import run_query

    live = run_query(store, "SELECT count(*) AS n FROM traffic", window=ALL)
    assert paired_store.store_settled_hours(store, now=FAR_FUTURE, settle=0) == 3
    assert paired_store.plan(store, ALL).stored
    stored = run_query(store, "SELECT count(*) AS n FROM traffic", window=ALL)
    assert stored.rows == live.rows and live.rows[0][0] > 0


def test_the_collectors_maintenance_stores_settled_hours_and_counts_them(store: Path) -> None:
    """What `meshlens serve` wires: the store's maintenance pass calls the pairing (in a
    spawned child) after compaction and retention, and counts the hours it stored
    (hours_paired on /metrics)."""
    import functools

    from meshlens.collector.store.store import Store, StoreOptions

    s = Store(
        store,
        StoreOptions(node="m", maintenance_interval=3600.0, retention=0.0),
        after_maintenance=functools.partial(
            paired_store.store_settled_hours, store, settle=0.0, in_child=True
        ),
    )
    s.start()
    try:
        s.maintain(now=FAR_FUTURE)
        assert s.stats().hours_paired == 3
        s.maintain(now=FAR_FUTURE)  # nothing changed: nothing stored again
        assert s.stats().hours_paired == 3
    finally:
        s.close()
    assert paired_store.plan(store, ALL).stored


def test_an_unreadable_hour_is_skipped_and_the_others_are_stored(
    store: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A requests file that cannot be read stops only its own hour (and the neighbours whose
    pairing reads it); readers pair those live, and the rest is stored."""
    part = store / "requests" / f"dt={H10:%Y-%m-%d}" / f"hr={H10:%H}"
    (part / "zz_0000000000000001_0000000000000001.parquet").write_bytes(b"not parquet")
    stored = paired_store.store_settled_hours(store, now=FAR_FUTURE, settle=0)
    assert stored == 1  # hour 12: hours 10 and 11 read the broken file
    assert "could not store the paired traffic" in caplog.text
    assert [p.parent.name for p in paired_store.plan(store, ALL).stored] == ["hr=12"]
