"""The generated Grafana dashboards: committed JSON is current, and every PromQL expression of
every panel parses and returns data on a real Prometheus that scraped a real `meshlens serve`
(fed with requests, spans and verdicts) and an exporter of Istio standard metrics."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from meshlens.collector.store.parquet_write import write_table
from meshlens.dashboards.commands.grafana import stale_files
from meshlens.dashboards.grafana import OUTPUT_DIR, build_all
from meshlens.dashboards.grafana.builder import expressions
from meshlens.localmesh.ports import free_port
from meshlens.synth import synthetic_requests
from tests.collector.conftest import start_serve
from tests.dashboards.conftest import seed
from tests.dashboards.istio_series import start_istio_exporter

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"

# Concrete values for the dashboards' template variables, per dashboard file.
COMMON_VARS = {
    "__rate_interval": "20s",
    "qrep": "destination",
    "srcns": ".*",
    "srcwl": ".*",
    "dstns": ".*",
    "dstwl": ".*",
    "dstsvc": ".*",
    "rollout": ".*",
    "server": ".*",
    "service_name": ".*",
    "namespace": "bookinfo",
    "workload": "reviews-v2",
}
DASHBOARD_VARS = {
    "istio-service.json": {"service": "reviews.bookinfo.svc.cluster.local"},
    "meshlens-canary.json": {"service": "reviews"},
}


def substitute(expr: str, values: dict[str, str]) -> str:
    def repl(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2)
        if name not in values:
            raise KeyError(f"no test value for ${name} in {expr}")
        return values[name]

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", repl, expr)


def test_committed_dashboards_equal_a_fresh_build() -> None:
    assert stale_files(OUTPUT_DIR) == [], "run: meshlens grafana build"


def test_dashboards_cover_istio_parity_and_mtls_split() -> None:
    built = build_all()
    titles = {name: {p.get("title") for p in d["panels"]} for name, d in built.items()}
    assert {
        "Traffic Volume",
        "Success Rate",
        "4xxs",
        "5xxs",
        "HTTP/gRPC Workloads",
        "TCP Workloads",
    } <= titles["istio-mesh.json"]
    assert "Incoming Requests By Source And Response Code" in titles["istio-service.json"]
    assert "Outgoing Requests By Destination And Response Code" in titles["istio-workload.json"]
    for name in ("istio-service.json", "istio-workload.json"):
        exprs = expressions(built[name])
        mtls = [e for e in exprs if 'connection_security_policy="mutual_tls"' in e]
        plain = [e for e in exprs if 'connection_security_policy!="mutual_tls"' in e]
        assert len(mtls) == len(plain) >= 20
    uids = [d["uid"] for d in built.values()]
    assert len(set(uids)) == len(uids)


# -- the live check ------------------------------------------------------------------------
def _get(url: str, timeout: float = 10.0) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        data: dict[str, Any] = json.loads(resp.read())
    return data


def _post(url: str, body: bytes, ctype: str) -> int:
    req = urllib.request.Request(url, data=body, headers={"Content-Type": ctype})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def _wait(pred: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _otlp_traces(n: int, seq: int, *, bad: bool = False) -> bytes:
    now = time.time_ns()
    spans = []
    for i in range(n):
        tid = f"{seq:016x}{i:016x}"
        spans.append(
            {
                "traceId": tid if not bad or i else "abcd",
                "spanId": f"{i + 1:016x}",
                "name": "GET /api",
                "kind": 2,
                "startTimeUnixNano": str(now - 5_000_000),
                "endTimeUnixNano": str(now),
                "status": {"code": 2 if i % 5 == 0 else 0},
            }
        )
    return json.dumps(
        {
            "resourceSpans": [
                {
                    "resource": {
                        "attributes": [{"key": "service.name", "value": {"stringValue": "shop"}}]
                    },
                    "scopeSpans": [{"spans": spans}],
                }
            ]
        }
    ).encode()


class Feeder(threading.Thread):
    """Keeps traffic flowing: proxy request rows into the store, OTLP spans over HTTP."""

    def __init__(self, data_dir: Path, otlp_url: str) -> None:
        super().__init__(daemon=True)
        self.data_dir, self.otlp_url = data_dir, otlp_url
        self.stop = threading.Event()
        self.errors: list[str] = []

    def run(self) -> None:
        seq = 0
        while not self.stop.is_set():
            seq += 1
            now = datetime.now(UTC)
            rows = synthetic_requests(400, start=now - timedelta(seconds=2), duration_s=2, seed=seq)
            write_table(self.data_dir, "requests", rows, node="feed", lo=seq, fsync=False)
            status = _post(
                self.otlp_url, _otlp_traces(20, seq, bad=seq % 3 == 0), "application/json"
            )
            if status != 200:
                self.errors.append(f"OTLP POST answered {status}")
            self.stop.wait(0.5)


@pytest.fixture
def prometheus_stack(tmp_path: Path) -> Iterator[str]:
    """Prometheus (1s scrapes) over meshlens serve and the Istio exporter; yields its URL."""
    data_dir = tmp_path / "store"
    data_dir.mkdir()
    seed(data_dir, datetime.now(UTC), n=5000)
    serve = start_serve(data_dir)
    istio_port, istio_server = start_istio_exporter()
    feeder = Feeder(data_dir, serve.otlp_url("/v1/traces"))
    feeder.start()
    prom_port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        f"  - job_name: meshlens\n"
        f"    static_configs: [{{targets: ['127.0.0.1:{serve.api_port}']}}]\n"
        f"  - job_name: istio\n    static_configs: [{{targets: ['127.0.0.1:{istio_port}']}}]\n"
    )
    log = open(tmp_path / "prometheus.log", "wb")  # noqa: SIM115
    prom = subprocess.Popen(
        [
            PROMETHEUS,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{prom_port}",
            "--log.level=warn",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{prom_port}"
    try:

        def ready() -> bool:
            assert prom.poll() is None, (tmp_path / "prometheus.log").read_text()
            try:
                targets = _get(f"{url}/api/v1/targets")["data"]["activeTargets"]
            except OSError:
                return False
            return len(targets) == 2 and all(t["health"] == "up" for t in targets)

        _wait(ready, 30, "Prometheus targets up")
        # Enough samples for rate() over 20s windows, and derived counters that moved.
        _wait(
            lambda: _instant(url, "sum(rate(traces_service_graph_request_total[20s])) > 0"),
            45,
            "service-graph counters increasing",
        )
        _wait(lambda: _instant(url, "sum(rate(istio_requests_total[20s])) > 0"), 20, "istio")
        assert not feeder.errors, feeder.errors
        yield url
    finally:
        feeder.stop.set()
        feeder.join(10)
        prom.terminate()
        try:
            prom.wait(15)
        except subprocess.TimeoutExpired:
            prom.kill()
        log.close()
        istio_server.shutdown()  # type: ignore[attr-defined]
        assert serve.stop() == 0, serve.log()


def _instant(url: str, expr: str) -> list[Any]:
    q = urllib.parse.urlencode({"query": expr})
    body = _get(f"{url}/api/v1/query?{q}")
    assert body["status"] == "success", body
    result: list[Any] = body["data"]["result"]
    return result


def _label_values(url: str, query: str) -> list[str]:
    m = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", query.strip())
    assert m, query
    q = urllib.parse.urlencode({"match[]": m.group(1)})
    body = _get(f"{url}/api/v1/label/{m.group(2)}/values?{q}")
    values: list[str] = body["data"]
    return values


@pytest.mark.integration
def test_every_dashboard_expression_returns_data_on_real_prometheus(
    prometheus_stack: str,
) -> None:
    url = prometheus_stack
    failures: list[str] = []
    checked = 0
    for name, dashboard in build_all().items():
        values = {**COMMON_VARS, **DASHBOARD_VARS.get(name, {})}
        for expr in expressions(dashboard):
            concrete = substitute(expr, values)
            q = urllib.parse.urlencode({"query": concrete})
            try:
                body = _get(f"{url}/api/v1/query?{q}")
            except urllib.error.HTTPError as exc:
                failures.append(f"{name}: {concrete}\n  -> HTTP {exc.code}: {exc.read()[:300]!r}")
                continue
            checked += 1
            if body.get("status") != "success" or not body["data"]["result"]:
                failures.append(f"{name}: {concrete}\n  -> no data")
        for var in dashboard.get("templating", {}).get("list", []):
            if var.get("type") != "query":
                continue
            concrete = substitute(str(var["query"]), values)
            checked += 1
            if not _label_values(url, concrete):
                failures.append(f"{name}: variable {var['name']}: {concrete} -> no values")
    assert checked > 150
    assert not failures, f"{len(failures)} of {checked} failed:\n" + "\n".join(failures)


def test_grafana_command_builds_and_detects_stale_files(tmp_path: Path) -> None:
    import argparse

    from meshlens.dashboards.commands import grafana as cmd

    assert cmd.run(argparse.Namespace(action="build", out=tmp_path)) == 0
    assert sorted(p.name for p in tmp_path.glob("*.json")) == sorted(build_all())
    assert cmd.run(argparse.Namespace(action="check", out=tmp_path)) == 0
    (tmp_path / "istio-mesh.json").write_text("{}")
    assert cmd.run(argparse.Namespace(action="check", out=tmp_path)) == 1


def test_provisioning_points_grafana_at_the_generated_dashboards() -> None:
    import yaml

    root = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "provisioning"
    ds = yaml.safe_load((root / "datasources" / "meshlens.yaml").read_text())
    assert [d["type"] for d in ds["datasources"]] == ["prometheus"]
    prov = yaml.safe_load((root / "dashboards" / "meshlens.yaml").read_text())
    assert prov["providers"][0]["type"] == "file"
    assert prov["providers"][0]["options"]["path"]
    for dashboard in build_all().values():
        ds_vars = [v for v in dashboard["templating"]["list"] if v["type"] == "datasource"]
        assert [v["query"] for v in ds_vars] == ["prometheus"]
