"""Golden signals: known counts, errors and latencies per bucket; saturation from metrics."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pyarrow as pa
import pytest

from meshlens.analytics.catalog import connect
from meshlens.analytics.errors import AnalyticsError
from meshlens.analytics.signals import golden_signals
from meshlens.analytics.window import TimeWindow
from meshlens.cli import main
from meshlens.collector.store.parquet_write import write_table
from tests.analytics.requests_factory import T0, call, store, wl

PP = wl("bookinfo", "productpage-v1", "productpage", "v1")
R1 = wl("bookinfo", "reviews-v1", "reviews", "v1")
R2 = wl("bookinfo", "reviews-v2", "reviews", "v2")
SVC = "reviews.bookinfo.svc.cluster.local"
WINDOW = TimeWindow(T0, T0 + timedelta(minutes=2))


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rows = []
    # Minute 0: v1 10 ok (1..10 ms); v2 8 ok (100 ms) + 2 x 503 + 2 never reached (UF).
    rows += call(PP, R1, SVC, n=10, durations=[float(i) for i in range(1, 11)], spacing_s=5)
    rows += call(PP, R2, SVC, n=8, durations=[100.0] * 8, spacing_s=5)
    rows += call(
        PP, R2, SVC, n=2, code=503, durations=[100.0] * 2, start=T0 + timedelta(seconds=45)
    )
    rows += call(
        PP,
        R2,
        SVC,
        n=2,
        code=503,
        flags="UF",
        reporters=("source",),
        durations=[1.0] * 2,
        start=T0 + timedelta(seconds=50),
    )
    # Minute 1: v1 6 requests, one with no response.
    rows += call(PP, R1, SVC, n=5, start=T0 + timedelta(seconds=60))
    rows += call(PP, R1, SVC, n=1, code=0, flags="DC", start=T0 + timedelta(seconds=90))
    data = store(tmp_path_factory.mktemp("signals"), rows)
    metrics = pa.table(
        {
            "ts": pa.array(
                [T0 + timedelta(seconds=s) for s in (10, 40, 70)], pa.timestamp("us", tz="UTC")
            ),
            "name": [
                "process.cpu.utilization",
                "process.cpu.utilization",
                "envoy_cluster_upstream_rq_active",
            ],
            "kind": ["gauge"] * 3,
            "service_name": ["reviews"] * 3,
            "value": [0.2, 0.4, 7.0],
            "resource_attributes": ['{"service.version": "v1"}'] * 3,
        }
    )
    write_table(data, "metrics", metrics, "test", 2)
    return data


def signals(data: Path, **kw: object) -> list[dict[str, object]]:
    conn = connect(data, WINDOW)
    try:
        return golden_signals(conn, WINDOW, **kw).to_dicts()  # type: ignore[arg-type]
    finally:
        conn.close()


def test_per_service_per_minute(data: Path) -> None:
    rows = signals(data, by=("service",))
    assert [(r["bucket"], r["service"], r["requests"], r["errors"]) for r in rows] == [
        (T0, "reviews", 22, 4),
        (T0 + timedelta(minutes=1), "reviews", 6, 1),
    ]
    assert rows[0]["rps"] == pytest.approx(22 / 60)
    assert rows[0]["error_ratio"] == pytest.approx(4 / 22)


def test_by_version_latency_quantiles_are_exact(data: Path) -> None:
    rows = {(r["bucket"], r["version"]): r for r in signals(data, by=("service", "version"))}
    v1 = rows[(T0, "v1")]
    assert (v1["requests"], v1["errors"]) == (10, 0)
    assert (v1["p50_ms"], v1["p90_ms"], v1["p99_ms"]) == pytest.approx((5.5, 9.1, 9.91))
    v2 = rows[(T0, "v2")]
    # Never-reached requests count as errors; latency from destination reports (100 ms).
    assert (v2["requests"], v2["errors"], v2["p50_ms"]) == (12, 4, 100.0)
    assert rows[(T0 + timedelta(minutes=1), "v1")]["error_ratio"] == pytest.approx(1 / 6)


def test_saturation_from_metrics(data: Path) -> None:
    rows = signals(data, by=("service",))
    assert rows[0]["cpu_utilization"] == pytest.approx(0.3)
    assert rows[1]["inflight_requests"] == 7.0
    by_version = {(r["bucket"], r["version"]): r for r in signals(data, by=("service", "version"))}
    assert by_version[(T0, "v1")]["cpu_utilization"] == pytest.approx(0.3)
    assert by_version[(T0, "v2")]["cpu_utilization"] is None


def test_step_and_service_filter(data: Path) -> None:
    rows = signals(data, by=("workload",), step_s=120, service="reviews")
    assert {r["workload"]: r["requests"] for r in rows} == {"reviews-v1": 16, "reviews-v2": 12}
    assert signals(data, by=("service",), service="nope") == []


def test_bad_arguments(data: Path) -> None:
    with pytest.raises(AnalyticsError, match=r"unknown --by dimension 'pod'"):
        signals(data, by=("pod",))
    with pytest.raises(AnalyticsError, match=r"--step must be positive"):
        signals(data, step_s=0)


def test_cli_json_and_table(data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["signals", "--data-dir", str(data), "--from", T0.isoformat(), "--since", "2m"]
    assert main([*args, "--format", "json", "--by", "service,version"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc[0]["bucket"] == T0.isoformat() and doc[0]["version"] == "v1"
    assert main([*args, "--step", "2m"]) == 0
    out = capsys.readouterr().out
    assert "reviews" in out and "28" in out


def test_null_and_unknown_version_are_one_group_with_exact_latency(tmp_path: Path) -> None:
    # Stored NULL and 'unknown' are both 'unknown': grouping the latency scan by the stored
    # values would split the group, so the quantiles must come from the merged rows.
    unversioned = wl("bookinfo", "reviews-v1", "reviews", "unknown")
    rows = call(PP, unversioned, SVC, n=4, durations=[1.0, 2.0, 3.0, 4.0])
    rows += call(PP, unversioned, SVC, n=4, code=503, durations=[5.0, 6.0, 7.0, 8.0])
    for r in rows[8:]:
        r["destination_version"] = None
    data = store(tmp_path, rows)
    (row,) = signals(data, by=("service", "version"))
    assert (row["version"], row["requests"], row["errors"]) == ("unknown", 8, 4)
    assert row["p50_ms"] == pytest.approx(4.5)
