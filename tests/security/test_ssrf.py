"""POST /api/v1/canary/analyze never makes the collector contact a URL the caller chose (it used
to GET any `config.prometheus_url`, and its errors told open ports from closed ones)."""

from __future__ import annotations

import http.server
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from meshlens.analytics.errors import CanaryConfigError
from meshlens.analytics.judge.api import judge_routes
from meshlens.analytics.judge.config import parse_request_config
from meshlens.httpd import RunningHttpServer, start_http_server
from tests.collector.conftest import ServeProcess

PROMQL_CONFIG: dict[str, Any] = {
    "source": "prometheus",
    "metrics": [{"name": "error-rate", "kind": "error_rate", "critical": True}],
}
BODY: dict[str, Any] = {"service": "reviews", "baseline": "v1", "canary": "v2", "since": "10m"}


class Victim:
    """An HTTP server on 127.0.0.1 that counts requests and answers 500 to each."""

    def __init__(self) -> None:
        self.hits: list[str] = []
        hits = self.hits

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                hits.append(self.path)
                self.send_response(500)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"no")

            do_POST = do_GET

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)


@pytest.fixture
def victim() -> Iterator[Victim]:
    v = Victim()
    try:
        yield v
    finally:
        v.close()


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"  # closed once the socket is


@pytest.fixture
def api_factory(tmp_path: Path) -> Iterator[Callable[[str], str]]:
    servers: list[RunningHttpServer] = []

    def start(prometheus_url: str) -> str:
        settings = {"data_dir": str(tmp_path / "data"), "canary_prometheus_url": prometheus_url}
        servers.append(start_http_server("127.0.0.1", 0, judge_routes(settings)))
        return f"http://127.0.0.1:{servers[-1].port}/api/v1/canary/analyze"

    yield start
    for s in servers:
        s.stop()


def test_request_cannot_choose_prometheus_url(
    api_factory: Callable[[str], str], victim: Victim
) -> None:
    url = api_factory("")
    answers = []
    for target in (victim.url, closed_port_url()):
        config = {**PROMQL_CONFIG, "prometheus_url": target}
        resp = requests.post(url, json={**BODY, "config": config}, timeout=30)
        assert resp.status_code == 400
        answers.append(resp.json()["error"].replace(target, "<url>"))
    assert victim.hits == []
    assert "request.config: prometheus_url: an API request cannot choose a URL" in answers[0]
    assert answers[0] == answers[1]  # open and closed ports look alike


def test_other_url_refused_even_with_operator_prometheus(
    api_factory: Callable[[str], str], victim: Victim
) -> None:
    url = api_factory("http://127.0.0.1:9/prom")
    config = {**PROMQL_CONFIG, "prometheus_url": victim.url}
    resp = requests.post(url, json={**BODY, "config": config}, timeout=30)
    assert resp.status_code == 400 and "cannot choose a URL" in resp.json()["error"]
    assert victim.hits == []


def test_operator_prometheus_is_used_and_failures_do_not_leak(
    api_factory: Callable[[str], str], victim: Victim
) -> None:
    url = api_factory(victim.url)
    for config in (PROMQL_CONFIG, {**PROMQL_CONFIG, "prometheus_url": victim.url + "/"}):
        resp = requests.post(url, json={**BODY, "config": config}, timeout=60)
        assert resp.status_code == 502, resp.text
        error = resp.json()["error"]
        assert error == "the configured Prometheus failed to answer; see the collector log"
    assert victim.hits and all(h.startswith("/api/v1/query") for h in victim.hits)


def test_nested_url_like_fields_are_refused() -> None:
    config = {"metrics": [{"name": "m", "kind": "promql", "query": "up", "endpoint": "http://x"}]}
    with pytest.raises(CanaryConfigError, match=r"metrics\[0\]\.endpoint: an API request cannot"):
        parse_request_config(config, "http://prom:9090", "request.config")
    plain = parse_request_config({"mode": "kayenta"}, "http://prom:9090/", "request.config")
    assert plain.prometheus_url == "http://prom:9090"


def test_serve_takes_the_operator_url_from_the_environment(
    serve_factory: Callable[..., ServeProcess], victim: Victim
) -> None:
    sp = serve_factory(env={"MESHLENS_CANARY_PROMETHEUS_URL": victim.url})
    resp = requests.post(
        sp.api_url("/api/v1/canary/analyze"), json={**BODY, "config": PROMQL_CONFIG}, timeout=60
    )
    assert resp.status_code == 502, resp.text
    assert victim.url not in resp.text and victim.hits
