"""The Prometheus source against a real Prometheus holding backfilled Istio-format series.

The test writes OpenMetrics text for a window three hours ago, turns it into TSDB blocks with
`promtool tsdb create-blocks-from openmetrics`, starts /usr/bin/prometheus on a free loopback
port over that directory and waits for /-/ready.
"""

from __future__ import annotations

import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from meshlens.analytics.errors import PrometheusError
from meshlens.analytics.prometheus_source import (
    histogram_quantile,
    prometheus_graph,
    prometheus_signals,
)
from meshlens.analytics.window import TimeWindow
from meshlens.localmesh.ports import free_port

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC).replace(second=0, microsecond=0)
END = NOW - timedelta(hours=3)
START = END - timedelta(minutes=10)
WINDOW = TimeWindow(START, END)

BASE = {
    "source_workload_namespace": "bookinfo",
    "source_workload": "productpage-v1",
    "source_canonical_service": "productpage",
    "source_canonical_revision": "v1",
    "source_principal": "spiffe://cluster.local/ns/bookinfo/sa/productpage",
    "destination_service_namespace": "bookinfo",
    "destination_service": "reviews.bookinfo.svc.cluster.local",
    "destination_service_name": "reviews",
    "destination_workload_namespace": "bookinfo",
    "destination_canonical_service": "reviews",
    "destination_principal": "unknown",
    "request_protocol": "http",
    "grpc_response_status": "",
    "response_flags": "-",
    "connection_security_policy": "mutual_tls",
}
R1 = {**BASE, "destination_workload": "reviews-v1", "destination_canonical_revision": "v1"}
R2 = {**BASE, "destination_workload": "reviews-v2", "destination_canonical_revision": "v2"}
TCP = {
    **BASE,
    "source_workload": "ratings-v1",
    "source_canonical_service": "ratings",
    "destination_service": "mongodb.bookinfo.svc.cluster.local",
    "destination_service_name": "mongodb",
    "destination_workload": "mongodb-v1",
    "destination_canonical_service": "mongodb",
    "destination_canonical_revision": "v1",
}
for k in ("request_protocol", "grpc_response_status"):
    TCP.pop(k)
# name -> [(labels, per-second rate)]
SERIES: dict[str, list[tuple[dict[str, str], float]]] = {
    "istio_requests_total": [
        ({**R1, "reporter": rep, "response_code": "200"}, 10.0) for rep in ("source", "destination")
    ]
    + [({**R1, "reporter": rep, "response_code": "503"}, 1.0) for rep in ("source", "destination")]
    + [({**R2, "reporter": "source", "response_code": "503", "response_flags": "UF"}, 0.5)],
    "istio_request_duration_milliseconds_bucket": [
        ({**R1, "reporter": "destination", "response_code": "200", "le": le}, rate)
        for le, rate in (
            ("5", 2.0),
            ("10", 6.0),
            ("25", 10.0),
            ("50", 11.0),
            ("100", 11.0),
            ("+Inf", 11.0),
        )
    ],
    "istio_tcp_connections_opened_total": [({**TCP, "reporter": "destination"}, 0.1)],
    "istio_tcp_received_bytes_total": [({**TCP, "reporter": "destination"}, 100.0)],
}


def openmetrics() -> str:
    t0 = START - timedelta(minutes=5)
    stamps = [t0 + timedelta(seconds=15 * i) for i in range(int(20 * 60 / 15) + 1)]
    lines = []
    families: dict[str, list[str]] = {}
    for name, series in SERIES.items():
        family = name.removesuffix("_total").removesuffix("_bucket")
        for labels, rate in series:
            text = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
            for ts in stamps:
                value = rate * (ts - t0).total_seconds()
                families.setdefault(family, []).append(
                    f"{name}{{{text}}} {value} {ts.timestamp():.0f}"
                )
    for family, samples in families.items():
        kind = "histogram" if family.endswith("milliseconds") else "counter"
        lines.append(f"# TYPE {family} {kind}")
        lines.extend(samples)
    lines.append("# EOF")
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    binary, promtool = shutil.which("prometheus"), shutil.which("promtool")
    assert binary and promtool, (
        "prometheus and promtool must be installed (apt-get install prometheus)"
    )
    root = tmp_path_factory.mktemp("prom")
    (root / "input.om").write_text(openmetrics())
    data = root / "data"
    subprocess.run(
        [promtool, "tsdb", "create-blocks-from", "openmetrics", str(root / "input.om"), str(data)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    (root / "prometheus.yml").write_text("global:\n  scrape_interval: 1h\nscrape_configs: []\n")
    port = free_port()
    log = (root / "prometheus.log").open("w")
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={root / 'prometheus.yml'}",
            f"--storage.tsdb.path={data}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--storage.tsdb.retention.time=30d",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"{url}/-/ready", timeout=1) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(
                    "prometheus did not become ready:\n"
                    + (root / "prometheus.log").read_text()[-2000:]
                )
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()


def test_graph_from_istio_metrics(prometheus: str) -> None:
    g = prometheus_graph(prometheus, WINDOW, level="workload")
    assert g.source == "prometheus"
    r1 = g.edge("wl:bookinfo/productpage-v1", "wl:bookinfo/reviews-v1")
    # 11 rps for 600 s, counted once although both reporters sent it.
    assert r1.requests == pytest.approx(6600, rel=0.03)
    assert r1.error_rate == pytest.approx(1 / 11, rel=0.01)
    assert r1.mtls_ratio == pytest.approx(1.0)
    assert r1.p50_ms == pytest.approx(9.375, rel=0.01)  # interpolated in the (5, 10] bucket
    r2 = g.edge("wl:bookinfo/productpage-v1", "wl:bookinfo/reviews-v2")
    assert r2.requests == pytest.approx(300, rel=0.03) and r2.source_reported == r2.requests
    assert r2.responses[0].flags == "UF"
    tcp = g.edge("wl:bookinfo/ratings-v1", "wl:bookinfo/mongodb-v1", "tcp")
    assert tcp.requests == pytest.approx(60, abs=2)
    assert tcp.request_bytes == pytest.approx(60000, rel=0.03)
    assert g.node("wl:bookinfo/reviews-v1").health == "Degraded"
    app = prometheus_graph(prometheus, WINDOW, level="app")
    assert app.edge("app:bookinfo/productpage", "app:bookinfo/reviews").requests == pytest.approx(
        6900, rel=0.03
    )


def test_signals_from_istio_metrics(prometheus: str) -> None:
    df = prometheus_signals(prometheus, WINDOW, by=("service", "version"), step_s=300)
    rows = {(r["bucket"], r["version"]): r for r in df.to_dicts()}
    assert set(rows) == {(START, "v1"), (START + timedelta(minutes=5), "v1")}
    first = rows[(START, "v1")]
    assert first["requests"] == pytest.approx(3300, rel=0.03)
    assert first["error_ratio"] == pytest.approx(1 / 11, rel=0.02)
    assert first["p50_ms"] == pytest.approx(9.375, rel=0.02)


def test_unreachable_prometheus_is_a_clear_error() -> None:
    with pytest.raises(PrometheusError, match=r"Prometheus at http://127.0.0.1:9/"):
        prometheus_graph(f"http://127.0.0.1:{9}/", WINDOW)


def test_histogram_quantile_matches_prometheus_rules() -> None:
    b = {5.0: 2.0, 10.0: 6.0, float("inf"): 6.0}
    assert histogram_quantile(0.5, b) == pytest.approx(5 + 5 * (3 - 2) / 4)
    assert histogram_quantile(0.99, {1.0: 0.0, float("inf"): 4.0}) == 1.0
    assert histogram_quantile(0.5, {}) is None


def test_cli_graph_and_signals_with_prometheus_url(
    prometheus: str, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from meshlens.cli import main

    window = ["--from", START.isoformat(), "--to", END.isoformat()]
    assert main(["graph", "--prometheus-url", prometheus, *window, "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["source"] == "prometheus"
    assert (
        main(
            ["signals", "--prometheus-url", prometheus, *window, "--step", "5m", "--format", "json"]
        )
        == 0
    )
    assert json.loads(capsys.readouterr().out)[0]["service"] == "reviews"
