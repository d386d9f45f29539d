"""Issue 18 item 13: with no --auth-token, a web page the operator opens cannot call the API
(cross-site simple requests, DNS rebinding), while the real clients still can: Flagger
webhooks, Argo's Web provider (Host meshlens.meshlens:8080), Kayenta-mode and SQL callers
posting JSON, Prometheus scraping /metrics."""

from __future__ import annotations

import json

import pytest
import requests

from meshlens.analytics.gate.state import pending_commands, queue_command
from meshlens.collector.http_guard import host_allowed, same_origin_refusal, split_host
from meshlens.httpd import HttpOptions, Request, Response, Route, dispatch
from tests.collector.conftest import ServeProcess, http_get, http_post

JSON = {"Content-Type": "application/json"}
ALLOWED = ("localhost", "*.localhost", "meshlens.meshlens", "*.svc", "*.svc.cluster.local")
FLAGGER_ROLLBACK = {"name": "reviews", "namespace": "default", "phase": "Progressing"}


def test_host_names_a_rebinding_page_cannot_take() -> None:
    for host in ("127.0.0.1", "::1", "10.1.2.3", "localhost", "app.localhost", "meshlens"):
        assert host_allowed(host, ALLOWED), host
    for host in ("meshlens.meshlens", "meshlens.meshlens.svc.cluster.local", "x.ns.svc"):
        assert host_allowed(host, ALLOWED), host
    for host in ("evil.example", "localhost.evil.example", "svc.evil.example", ""):
        assert not host_allowed(host, ALLOWED), host
    assert host_allowed("evil.example", ("*",))
    assert split_host("[::1]:8080") == ("::1", "8080")
    assert split_host("Meshlens.Meshlens:8080") == ("meshlens.meshlens", "8080")


def test_refusals_name_the_header_at_fault() -> None:
    def refused(method: str, **headers: str) -> str:
        hdrs = {"host": "127.0.0.1:8080", **{k.replace("_", "-"): v for k, v in headers.items()}}
        r = same_origin_refusal(method, hdrs, ALLOWED, has_body=method == "POST")
        return f"{r.status} {r.message}" if r else "ok"

    assert refused("GET", host="rebound.example:8080").startswith(
        "403 Host 'rebound.example:8080' is not an allowed name"
    )
    assert refused("POST", origin="http://evil.example", content_type="application/json") == (
        "403 cross-origin request refused: Origin 'http://evil.example' is not Host "
        "'127.0.0.1:8080'"
    )
    assert refused("POST", origin="null").startswith("403 cross-origin request refused")
    for simple in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; b=1"):
        assert refused("POST", content_type=simple).startswith(f"415 Content-Type '{simple}'")
    assert refused("POST", content_type="application/json; charset=utf-8") == "ok"
    assert refused("POST", content_type="application/merge-patch+json") == "ok"
    assert refused("POST", origin="http://127.0.0.1:8080", content_type="application/json") == "ok"
    assert refused("POST") == "ok"  # scripts that send no Content-Type (no browser does)
    assert refused("GET") == "ok"
    # http://h is http://h:80: the default port may be left out on either side
    r = same_origin_refusal(
        "GET", {"host": "localhost", "origin": "http://localhost:80"}, (), False
    )
    assert r is None


def test_the_guard_is_off_with_a_token_and_on_open_paths() -> None:
    routes = [
        Route("POST", "/x", lambda r: Response.json({})),
        Route("GET", "/healthz", lambda r: Response.json({})),
    ]
    foreign = {"host": "evil.example", "content-type": "text/plain"}
    guarded = HttpOptions(same_origin=True)
    assert dispatch(routes, guarded, Request("POST", "/x", {}, foreign, b"{}")).status == 403
    assert dispatch(routes, guarded, Request("GET", "/healthz", {}, foreign, b"")).status == 200
    token = HttpOptions(same_origin=True, auth_token="t")
    hdrs = {**foreign, "authorization": "Bearer t"}
    assert dispatch(routes, token, Request("POST", "/x", {}, hdrs, b"{}")).status == 200


@pytest.mark.integration
def test_a_web_page_cannot_consume_a_queued_abort(running_serve: ServeProcess) -> None:
    sp = running_serve
    url = sp.api_url("/gate/flagger/rollback")
    queue_command(sp.data_dir, "reviews", "abort", reason="bad deploy")
    body = json.dumps(FLAGGER_ROLLBACK).encode()
    # What a page can send without a preflight: text/plain or a form, with its Origin.
    page = {"Origin": "http://evil.example", "Content-Type": "text/plain;charset=UTF-8"}
    status, answer, _ = http_post(url, body, page)
    assert status == 403 and b"cross-origin request refused" in answer
    status, answer, _ = http_post(url, body, {"Content-Type": "text/plain"})
    assert status == 415 and b"send application/json" in answer
    status, _, _ = http_post(url, body, {**JSON, "Host": f"rebound.example:{sp.api_port}"})
    assert status == 403
    assert [c["command"] for _, c in pending_commands(sp.data_dir, "reviews")] == ["abort"]
    # Flagger itself: JSON, no Origin, the abort is its rollback.
    resp = requests.post(url, json=FLAGGER_ROLLBACK, timeout=30)
    assert resp.status_code == 200 and resp.json()["action"] == "rollback", resp.text
    assert pending_commands(sp.data_dir, "reviews") == []


@pytest.mark.integration
def test_rebinding_cannot_read_data_and_real_clients_still_can(running_serve: ServeProcess) -> None:
    sp = running_serve
    sql = json.dumps({"sql": "SELECT 42 AS x"}).encode()
    rebound = {"Host": f"rebound.example:{sp.api_port}"}
    status, answer, _ = http_post(sp.api_url("/api/v1/sql"), sql, {**JSON, **rebound})
    assert status == 403 and b"not an allowed name" in answer
    assert http_get(sp.api_url("/api/v1/graph?since=5m"), rebound)[0] == 403
    # A same-origin page on an allowed host, scripts, Prometheus, Argo's Host header.
    own = {"Origin": f"http://127.0.0.1:{sp.api_port}", **JSON}
    status, answer, _ = http_post(sp.api_url("/api/v1/sql"), sql, own)
    assert status == 200 and json.loads(answer)["rows"] == [{"x": 42}]
    assert http_post(sp.api_url("/api/v1/sql"), sql, JSON)[0] == 200
    assert http_get(sp.api_url("/metrics"))[0] == 200
    argo = {"Host": "meshlens.meshlens:8080", "User-Agent": "Go-http-client/1.1"}
    assert http_get(sp.api_url("/api/v1/graph?since=5m"), argo)[0] == 200
    assert http_get(sp.api_url("/healthz"), rebound)[0] == 200  # probes: nothing to read
