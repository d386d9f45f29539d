"""Dense bursts through real Envoy sidecars: ~600 requests per version within seconds, reported
by the sidecars over gRPC ALS to a real `meshlens serve`, then judged by `meshlens canary
analyze` over a 10-minute window. A fixed 10 s block saw one block and said "inconclusive";
blocks from the data judge the burst: a clear regression fails.

reviews v1 (baseline): 0.5% errors; v2: 8% errors; v3: +40 ms on every request.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests

from meshlens.analytics.catalog import connect
from meshlens.analytics.window import TimeWindow
from meshlens.cli import main
from meshlens.localmesh.bootstrap import Collector
from meshlens.localmesh.mesh import LocalMesh
from tests.analytics.gate.envoy_harness import Upstream
from tests.collector.conftest import start_serve, wait_for

pytestmark = pytest.mark.integration

PER_VERSION = 600


@pytest.fixture(scope="module")
def burst(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    work: Path = tmp_path_factory.mktemp("burst")
    data = work / "data"
    serve = start_serve(data)
    apps = {
        "v1": Upstream("v1", error_every=200),  # 0.5%
        "v2": Upstream("v2", error_every=12),  # 8.3%
        "v3": Upstream("v3", delay_ms=40.0),
    }
    mesh = LocalMesh(work, Collector("127.0.0.1", serve.grpc_port, flush_interval_s=0.1))
    for version, app in apps.items():
        mesh.add_workload("reviews", version, app_port=app.port)
    pp = mesh.add_workload("productpage", "v1", app_port=apps["v1"].port)
    mesh.connect(pp, "reviews")
    start = datetime.now(UTC) - timedelta(seconds=5)
    try:
        mesh.start()
        url = mesh.outbound_url(pp, "reviews") + "/reviews/0"
        sessions = [requests.Session() for _ in range(12)]

        def call(i: int) -> str:
            r = sessions[i % len(sessions)].get(url, headers={"Host": "reviews:9080"}, timeout=10)
            return r.headers.get("x-version", str(r.status_code))

        with ThreadPoolExecutor(len(sessions)) as pool:
            sent = Counter(pool.map(call, range(3 * PER_VERSION)))
        elapsed = (datetime.now(UTC) - start).total_seconds()
        window = TimeWindow(start - timedelta(minutes=5), start + timedelta(minutes=5))

        def landed() -> bool:
            conn = connect(data, window)
            try:
                row = conn.execute(
                    "SELECT count(*) FROM traffic WHERE destination_service_name = 'reviews'"
                ).fetchone()
            finally:
                conn.close()
            return row is not None and row[0] >= sum(sent.values())

        wait_for(landed, 30, "the burst's requests in the store")
        yield {"data": data, "window": window, "sent": sent, "elapsed": elapsed}
    finally:
        mesh.stop()
        for app in apps.values():
            app.stop()
        rc = serve.stop()
        assert rc == 0, serve.log()


def _analyze(run: dict[str, Any], canary: str, capsys: pytest.CaptureFixture[str]) -> Any:
    w: TimeWindow = run["window"]
    rc = main(
        [
            "canary",
            "analyze",
            "--service",
            "reviews",
            "--baseline",
            "v1",
            "--canary",
            canary,
            "--data-dir",
            str(run["data"]),
            "--from",
            w.start.isoformat(),
            "--to",
            w.end.isoformat(),
            "--format",
            "json",
        ]
    )
    out = json.loads(capsys.readouterr().out)
    return rc, out


def _reasons(out: dict[str, Any]) -> list[str]:
    return [f"{m['name']}: {m['classification']}: {m.get('reason')}" for m in out["metrics"]]


def test_the_burst_is_dense(burst: dict[str, Any]) -> None:
    # Hundreds of requests per version within seconds, inside a 10-minute window.
    assert all(burst["sent"][v] > PER_VERSION * 0.7 for v in ("v1", "v2", "v3")), burst["sent"]
    assert burst["elapsed"] < 60


def test_a_burst_with_8_percent_errors_fails(
    burst: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    rc, out = _analyze(burst, "v2", capsys)
    assert rc == 1 and out["verdict"] == "fail", out["reason"]
    err = next(m for m in out["metrics"] if m["name"] == "error-rate")
    assert err["classification"] == "high" and err["critical"]
    assert err["details"]["block_s"] < 10  # blocks from the data, not a fixed 10 s
    # The share test fails it; the rate ratio's interval excludes 1.
    assert err["details"]["rate_ratio_ci"][0] > 1


def test_a_burst_40_ms_slower_fails(
    burst: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    rc, out = _analyze(burst, "v3", capsys)
    assert rc == 1 and out["verdict"] == "fail", [out["reason"], *_reasons(out), burst]
    by = {m["name"]: m for m in out["metrics"]}
    assert by["latency-distribution"]["classification"] == "high", _reasons(out)
    # The p50's own interval is sometimes still open on this short burst when the machine is
    # busy (seen as "not settled ... [-90%, +inf] over 20 0.2s blocks" in 1 of ~4 full runs,
    # never alone): it must then not pass, and the verdict above still fails on the rest.
    p50 = by["latency-p50"]
    assert p50["classification"] in ("high", "inconclusive"), p50["reason"]
    assert p50["canary"] > p50["baseline"] + 30
